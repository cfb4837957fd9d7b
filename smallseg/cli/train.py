"""``smallseg train`` (a YAML config) and ``smallseg tune-decode`` (decoding thresholds of a trained model)."""

from __future__ import annotations

from smallseg.cli.options import FlagNames, add_device, errors_as_flags, require_at_least, subcommand
from smallseg.errors import SmallsegError

# The training loop names keyword arguments; here they are flags.
_FLAGS = FlagNames({}, {"resume=True": "--resume", "overwrite=True": "--overwrite",
                        "another run folder": "another --out"})


def add_train(subparsers) -> None:
    p = subcommand(
        subparsers, "train", _run_train,
        help="train a model from a YAML config",
        description=(
            "Train a smallseg model (encoder -> FPN fusion -> LFE -> centroid/distance heads) as a YAML config "
            "says (see configs/). Writes last/best checkpoints (.safetensors with the model config inside), "
            "state.pt for --resume and history.jsonl with losses and validation AP_small / Boundary AP per epoch."
        ),
    )
    p.add_argument("config", help="training config YAML, e.g. configs/remote-sensing.yaml")
    p.add_argument("--out", default=None, help="run folder for checkpoints and logs (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out after its last finished epoch (same result as not stopping)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (without it, and without --resume, such a folder is refused)")
    add_device(p, None, note="overrides the config's device")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs from the config")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="override optim.steps_per_epoch")
    p.add_argument("--batch-size", type=int, default=None, help="override optim.batch_size")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (for batch jobs)")


def _run_train(args) -> int:
    from smallseg.train.loop import load_train_config, train

    config = load_train_config(args.config)
    overrides = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size}
    require_at_least(1, **overrides)
    for field, value in overrides.items():
        if value is not None:
            setattr(config.optim, field, value)
    if args.resume and args.overwrite:
        raise SmallsegError("--resume and --overwrite: choose one (continue the run in --out, or replace it)")
    with errors_as_flags(_FLAGS):
        result = train(config, args.out or f"runs/{config.name}", resume=args.resume, device=args.device,
                       progress=not args.quiet, overwrite=args.overwrite)
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0



def add_tune_decode(subparsers) -> None:
    p = subcommand(
        subparsers, "tune-decode", _run_tune_decode,
        help="choose a trained model's decoding thresholds on validation images and store them in it",
        description=(
            "Grid-search the decoding thresholds (foreground probability, distance-map peak, score) of a trained "
            "model on the validation images of a training config (its data.val section), maximising --metric, "
            "then, with those fixed, how eagerly vote clusters merge into one object (models whose vectors "
            "scatter split large objects into fragments otherwise), and write a checkpoint that carries the "
            "chosen settings (every pipeline reads them from there)."
        ),
    )
    p.add_argument("checkpoint", help="trained model (.safetensors)")
    p.add_argument("config", help="training config YAML whose data.val lists the validation images")
    p.add_argument("--out", required=True, help="checkpoint to write (may equal the input to update it in place)")
    p.add_argument("--metric", default="AP",
                   help="metric to maximise: AP, AP50, AP_small, F1, ... (default: AP); settings within 0.01 of the "
                        "best value count as tied, and the one with the best F1 among them wins")
    p.add_argument("--storage-dtype", default="float32", choices=["float32", "float16"],
                   help="weight precision in the written file (float16 halves its size)")
    p.add_argument("--modality", default=None,
                   help="tune for images of this DICOM modality only (e.g. CT), on the data.val entries marked "
                        "'modality: CT'; the settings are stored for that modality (dicom-batch uses them for "
                        "such series) and the model's default settings stay as they are")


def _run_tune_decode(args) -> int:
    from smallseg.train.loop import class_mapping, load_source, load_train_config
    from smallseg.train.tune import write_tuned_checkpoint

    config = load_train_config(args.config)
    specs = list(config.data.get("val") or [])
    if args.modality:
        specs = [spec for spec in specs if isinstance(spec, dict)
                 and str(spec.get("modality", "")).upper() == args.modality.upper()]
        if not specs:
            raise SmallsegError(f"{args.config}: no data.val entry is marked 'modality: {args.modality}'; mark "
                                f"the validation images of that modality to tune on them")
    images = [im for spec in specs for im in load_source(spec, config.source_dir, class_mapping(config.model))]
    if not images:
        raise SmallsegError(f"{args.config}: data.val lists no validation images to tune on")
    path, best, rows = write_tuned_checkpoint(args.checkpoint, images, args.out, metric=args.metric,
                                              storage_dtype=args.storage_dtype, modality=args.modality)
    top = sorted(rows, key=lambda r: -(r[args.metric] or 0))[:5]
    for row in top:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"chosen: {best} -> {path}")
    return 0

