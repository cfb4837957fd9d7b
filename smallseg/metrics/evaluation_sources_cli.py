"""The options ``smallseg evaluate`` gains for the label formats of :mod:`smallseg.metrics.evaluation_sources`
(vector / box ground truth, a labelled area, a quick-look plot), and the call they lead to."""

from __future__ import annotations


def add_source_arguments(p) -> None:
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
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write a quick-look PNG: matched predictions green, false positives red, missed GT blue")


def uses_sources(args) -> bool:
    """True when ``args`` need :func:`evaluate_sources` (a GT that is not a label raster / COCO, an area, a plot)."""
    from smallseg.data.labels.auto import label_kind

    from smallseg.metrics.evaluation_volume import is_volume

    kind = label_kind(args.gt)
    if kind == "volume" and is_volume(args.gt):
        return True
    coco_json = str(args.gt).lower().endswith(".json") and str(args.pred).lower().endswith(".json")
    return bool(args.area or args.plot or args.class_field) or (kind not in ("label_image", "volume")
                                                                 and not coco_json)


def evaluate_from_args(args, **evaluate_kwargs):
    """Run :func:`evaluate_sources` with the parsed options (``evaluate_kwargs``: the plain evaluate options)."""
    from smallseg.metrics.evaluation_sources import evaluate_sources

    names = [n.strip() for n in args.class_names.split(",") if n.strip()] if args.class_names else None
    return evaluate_sources(args.gt, args.pred, area=args.area, class_field=args.class_field, class_names=names,
                            layer=args.layer, box_iou=args.box_iou, image=args.image, plot=args.plot,
                            **evaluate_kwargs)
