"""``smallseg finetune``: the command-line face of :func:`smallseg.train.finetune.finetune` (options only)."""

from __future__ import annotations

from smallseg.cli.options import FlagNames, add_device, errors_as_flags, subcommand
from smallseg.errors import SmallsegError
from smallseg.shipped import builtin_models_help

# FinetuneOptions' field names in the library's messages -> this subcommand's flags.
_FLAGS = FlagNames(
    {"minutes": "--minutes", "val_fraction": "--val-fraction", "out": "--out", "batch_size": "--batch-size",
     "steps_per_epoch": "--steps-per-epoch", "lr": "--lr", "class_field": "--class-field",
     "ema_decay": "--ema-decay"},
    {"resume=True": "--resume", "another out path": "another --out"})


def parse_classes(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """``--classes`` values -> (class of objects whose labels name none, ``{label name: model name}``).

    ``nucleus`` alone names the class of every unnamed object; ``bldg=building`` renames a label class.
    """
    default, renames = None, {}
    for value in values or []:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" in part:
                source, _, target = part.partition("=")
                if not source.strip() or not target.strip():
                    raise SmallsegError(f"--classes {part!r}: write LABEL_NAME=MODEL_CLASS, e.g. bldg=building")
                renames[source.strip()] = target.strip()
            elif default is not None and default != part:
                raise SmallsegError(f"--classes: two default classes ({default!r}, {part!r}); give one, and "
                                    "LABEL=CLASS for renames")
            else:
                default = part
    return default, renames


def add_finetune(subparsers) -> None:
    """Declare ``smallseg finetune`` and its options."""
    p = subcommand(
        subparsers, "finetune", _run_finetune,
        help="fine-tune a model on your own labels (GeoPackage/GeoJSON, boxes, label images, NIfTI) in one command",
        description=(
            "Fine-tune a shipped model (or a checkpoint) on labelled images without a YAML config. Labels: vector "
            "polygons (.gpkg .geojson .shp .fgb), boxes (DeepForest .csv, Pascal VOC .xml, COCO .json), instance "
            "label images (.tif .png) or label volumes (.nii.gz .nrrd .mha). Validation is the bottom strip of each "
            "image's labelled rows (never trained on); augmentation, early stopping and decode tuning are built "
            "in. Prints the validation F1@0.5 / AP before and after, progress with ETA, and writes OUT, "
            "OUT.curve.png (training curve) and OUT.finetune/ (for --resume)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (GeoTIFF, TIFF/PNG, image volume)")
    p.add_argument("--labels", nargs="+", required=True, metavar="LABELS",
                   help="label files, one per IMAGE in the same order")
    p.add_argument("--area", default=None,
                   help="labelled area, for every image: a pixel box (rows=0:256, cols=100:400), a mask raster or a "
                        "vector file; outside it, pixels that are in no labelled object are ignored")
    p.add_argument("--init", default="medical",
                   help=f"model to start from: a built-in one ({builtin_models_help()}) or a .safetensors path "
                        "(default: medical)")
    p.add_argument("--out", required=True, metavar="OUT.safetensors", help="the fine-tuned checkpoint (written atomically)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget in minutes (default: 15)")
    p.add_argument("--resume", action="store_true", help="continue a killed run of the same --out")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME|LABEL=CLASS",
                   help="the model class of objects whose labels name none (e.g. nucleus), and/or renames of label "
                        "class names to the model's (bldg=building)")
    p.add_argument("--class-field", default=None, help="vector labels: the attribute holding each polygon's class")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of each image's labelled rows held out (bottom strip) for validation (default: 0.2)")
    p.add_argument("--lr", type=float, default=5e-4,
                   help="AdamW learning rate (default: 5e-4; try 1e-4 when the init model was trained on scenes "
                        "like yours and 5e-4 makes it worse)")
    p.add_argument("--batch-size", type=int, default=4, help="crops per step (default: 4)")
    p.add_argument("--steps-per-epoch", type=int, default=20, help="steps between validations (default: 20)")
    p.add_argument("--patience", type=int, default=10,
                   help="stop after this many epochs without a better validation F1, counted in the second half "
                        "of the schedule (0: never; default: 10)")
    p.add_argument("--ema-decay", type=float, default=0.98,
                   help="validate and keep a moving average of the weights, decayed by this factor per step "
                        "(0: the raw weights; default: 0.98, about the last 50 steps)")
    add_device(p, "cpu")
    p.add_argument("--no-tune", action="store_true", help="keep the init model's decode settings (no tuning)")
    p.add_argument("--seed", type=int, default=0, help="crop / augmentation seed (default: 0)")


def _run_finetune(args) -> int:
    """Run ``smallseg finetune`` from parsed arguments; returns the exit status."""
    from smallseg.train.finetune import FinetuneOptions, finetune

    if args.patience < 0:  # 0 is this flag's "off" (FinetuneOptions' None)
        raise SmallsegError(f"--patience {args.patience}: must be 0 (off) or more")
    default, renames = parse_classes(args.classes)
    with errors_as_flags(_FLAGS):
        options = FinetuneOptions(
            images=tuple(args.images), labels=tuple(args.labels), out=args.out, init=args.init, area=args.area,
            minutes=args.minutes, class_name=default, class_map=renames, class_field=args.class_field,
            val_fraction=args.val_fraction, lr=args.lr, batch_size=args.batch_size,
            steps_per_epoch=args.steps_per_epoch, patience=args.patience or None, seed=args.seed,
            ema_decay=args.ema_decay or None,
            device=args.device, tune=not args.no_tune, resume=args.resume,
        )
        result = finetune(options, progress=lambda message: print(message, flush=True))
    print(f"F1@0.5 {result.before.get('F1')} -> {result.after.get('F1')}, AP {result.before.get('AP')} -> "
          f"{result.after.get('AP')} on the validation strip; checkpoint: {result.checkpoint}")
    return 0
