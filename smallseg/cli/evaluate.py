"""``smallseg evaluate``: scores of a prediction against ground truth. Label rasters and COCO JSON go to
:func:`smallseg.metrics.evaluation.evaluate`; the label formats of :mod:`smallseg.metrics.evaluation_sources`
(vector / box ground truth, a labelled area, a quick-look plot) to its ``evaluate_sources``."""

from __future__ import annotations

from smallseg.cli.options import FlagNames, errors_as_flags, subcommand

# evaluate()'s argument names in its messages -> this subcommand's flags.
_FLAGS = FlagNames(
    {"size_buckets": "--size-buckets", "boundary_width": "--boundary-width", "boundary": "--boundary",
     "pixel_size": "--pixel-size", "max_dets": "--max-dets", "gt_classes": "--gt-classes",
     "pred_classes": "--pred-classes", "pred_objects": "--pred-objects", "gt_objects": "--gt-objects",
     "area": "--area", "plot": "--plot", "class_field": "--class-field", "box_iou": "--box-iou"},
    {"boundary='fixed'": "--boundary fixed", "image=NAME": "--image NAME", "plot=FILE.png": "--plot FILE.png"})


def add_evaluate(subparsers) -> None:
    p = subcommand(
        subparsers, "evaluate", _run_evaluate,
        help="score a prediction against ground truth (COCO AP, AP_small, Boundary AP/IoU, F1, count error)",
        description=(
            "Score instance predictions of small objects. GT and PRED are instance label rasters (0 = background, "
            "k = object k: GeoTIFF, NIfTI/MHA/NRRD, PNG/TIFF) or COCO JSON (GT dataset + PRED results list). Scores "
            "of a raster prediction come from its object table (CSV id,score[,class_id]; default STEM.objects.csv "
            "beside STEM.instances.tif). Reports COCO mask AP/AP50/AP75/AP_small/medium/large and AR "
            "(pycocotools, every detection counted, no maxDets=100 cap), Boundary AP and mean Boundary IoU, "
            "precision/recall/F1 at IoU 0.5 and the counting error, as a table (and JSON with --json)."
        ),
    )
    p.add_argument("gt", metavar="GT", help="ground truth: label raster or COCO dataset .json")
    p.add_argument("pred", metavar="PRED", help="prediction: label raster or COCO results .json")
    p.add_argument("--json", metavar="OUT.json", default=None,
                   help="also write every number and the settings used to this JSON file (written atomically)")
    p.add_argument("--gt-classes", default=None,
                   help="classes of the ground truth: a class raster, or a CSV table with id,class_id (default: "
                        "class_id of the table beside GT, e.g. STEM.objects.csv beside STEM.instances.tif; "
                        "without any, scoring is class-agnostic and the report says so)")
    p.add_argument("--class-agnostic", action="store_true",
                   help="score every object as one class (outlines only), whatever the classes say")
    p.add_argument("--pred-classes", default=None,
                   help="class raster of the prediction (default: class_id of the object table, else class 1)")
    p.add_argument("--pred-objects", default=None,
                   help="object table CSV of the prediction (id,score[,class_id]); default: STEM.objects.csv "
                        "beside STEM.instances.tif (or NAME.objects.csv beside NAME.tif) if present")
    p.add_argument("--gt-objects", default=None,
                   help="object table CSV of the ground truth (id[,class_id][,iscrowd]) for classes / crowd regions")
    p.add_argument("--size-buckets", default="32^2,96^2px",
                   help="SMALL_MAX,MEDIUM_MAX with unit px, m2 (GeoTIFF CRS) or mm2 (NIfTI spacing): areas below "
                        "SMALL_MAX are small, below MEDIUM_MAX medium (default: 32^2,96^2px = COCO)")
    p.add_argument("--boundary", choices=["fixed", "reference"], default="fixed",
                   help="boundary width mode: fixed (--boundary-width, default 2px; suits small objects) or "
                        "reference (2%% of the image diagonal, Boundary IoU's definition = faster-coco-eval)")
    p.add_argument("--boundary-width", default=None,
                   help="fixed boundary width d: pixels (2px) or physical (0.6m, 1mm) (default: 2px)")
    p.add_argument("--max-dets", type=int, default=None,
                   help="detections kept per image and class, top by score (default: all of them, at least 100)")
    p.add_argument("--pixel-size", default=None,
                   help="square pixel side (e.g. 0.3m, 0.5mm) for inputs without CRS/spacing, for m2/mm2 buckets "
                        "and physical boundary widths")
    _add_source_arguments(p)  # vector/box GT, --area, --plot (#15)


def _run_evaluate(args) -> int:
    from smallseg.metrics.evaluation import evaluate

    score = _evaluate_sources if _uses_sources(args) else (lambda a, **kw: evaluate(a.gt, a.pred, **kw))
    with errors_as_flags(_FLAGS):
        result = score(args, gt_classes=args.gt_classes, pred_classes=args.pred_classes,
                       pred_objects=args.pred_objects, gt_objects=args.gt_objects, size_buckets=args.size_buckets,
                       boundary=args.boundary, boundary_width=args.boundary_width, max_dets=args.max_dets,
                       pixel_size=args.pixel_size, class_agnostic=args.class_agnostic)
    result.warnings[:] = [_FLAGS(w) for w in result.warnings]  # printed and in --json: as the user typed them
    print(result.format_table())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    return 0


def _add_source_arguments(p) -> None:
    """Declare the label-source options on the ``evaluate`` parser ``p``."""
    p.add_argument("--area", default=None,
                   help="labelled area: a pixel box (rows=0:256), a mask raster or a vector file; GT objects with no "
                        "pixel inside it and predictions mostly outside it are not scored")
    p.add_argument("--class-field", default=None,
                   help="vector GT: the attribute holding each polygon's class name (mapped to --class-names, "
                        "default: the class names of the prediction's object table)")
    p.add_argument("--class-names", default=None, metavar="A,B",
                   help="the model's class names in class-id order (for --class-field)")
    p.add_argument("--layer", default=None, help="vector GT: the layer of a multi-layer file")
    p.add_argument("--box-iou", type=float, default=0.4,
                   help="box GT (DeepForest .csv, Pascal VOC .xml, COCO bbox .json): IoU of a match (default 0.4, "
                        "as the NEON tree-crown benchmark)")
    p.add_argument("--image", default=None,
                   help="box GT listing several images: the image whose boxes to score (default: the one named "
                        "like the prediction)")
    p.add_argument("--plot", default=None, metavar="FILE.png|DIR",
                   help="FILE.png: a quick-look (matched predictions green, false positives red, missed GT blue); "
                        "DIR: that quick-look plus precision-recall curves per size bucket (PNG + CSV, "
                        "pycocotools' arrays) and a TP/FP score histogram (needs matplotlib: smallseg[plot])")


def _uses_sources(args) -> bool:
    """True when ``args`` need :func:`evaluate_sources` (a GT that is not a label raster / COCO, an area, a plot)."""
    from smallseg.data.labels.auto import label_kind

    from smallseg.metrics.evaluation_volume import is_volume

    kind = label_kind(args.gt)
    if kind == "volume" and is_volume(args.gt):
        return True
    coco_json = str(args.gt).lower().endswith(".json") and str(args.pred).lower().endswith(".json")
    return bool(args.area or args.plot or args.class_field) or (kind not in ("label_image", "volume")
                                                                 and not coco_json)


def _evaluate_sources(args, **evaluate_kwargs):
    """Run :func:`evaluate_sources` with the parsed options (``evaluate_kwargs``: the plain evaluate options)."""
    from smallseg.metrics.evaluation_sources import evaluate_sources

    names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    return evaluate_sources(args.gt, args.pred, area=args.area, class_field=args.class_field, class_names=names,
                            layer=args.layer, box_iou=args.box_iou, image=args.image, plot=args.plot,
                            **evaluate_kwargs)
