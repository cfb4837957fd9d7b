"""``smallseg demo``: a synthetic scene, tile-and-predict on it, and its scores."""

from __future__ import annotations

from smallseg.cli.options import add_device, errors_as_flags, subcommand
from smallseg.cli.tile_and_predict import as_flags
from smallseg.errors import SmallsegError
from smallseg.shipped import builtin_models_help


def add_demo(subparsers) -> None:
    p = subcommand(
        subparsers, "demo", _run_demo,
        help="generate a sample aerial scene, find its objects with the shipped model, and score them",
        description=(
            "The whole job on a scene with known answers: writes a synthetic GeoTIFF scene with exact ground "
            "truth, runs tile-and-predict on it with the shipped remote-sensing model (or --model), and scores "
            "the result (COCO AP, AP_small, Boundary AP, F1, count error). Everything goes into --out."
        ),
    )
    p.add_argument("--out", default="smallseg-demo", help="output folder (default: smallseg-demo)")
    p.add_argument("--size", type=int, default=1024, help="scene side in pixels (default: 1024)")
    p.add_argument("--seed", type=int, default=7, help="scene seed; the same seed gives the same scene (default: 7)")
    p.add_argument("--pixel-size-m", type=float, default=0.4,
                   help="ground sampling distance of the scene in metres (default: 0.4)")
    p.add_argument("--model", default="remote-sensing",
                   help=f"built-in model name ({builtin_models_help()}) or checkpoint path (default: remote-sensing)")
    add_device(p, "auto")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4; on a CPU at most 4 x 256² px per pass, so 1 "
                        "tile of 512² px: larger passes are slower per pixel there)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_demo(args) -> int:
    from smallseg.pipeline.demo import run_demo
    from smallseg.pipeline.geotiff import GeoTiffOptions

    if args.size < 64:
        raise SmallsegError(f"--size {args.size}: use at least 64 px")
    with errors_as_flags(as_flags):  # same flag names as tile-and-predict
        options = GeoTiffOptions(device=args.device, batch_size=args.batch_size, progress=not args.quiet)
        result = run_demo(args.out, size_px=args.size, seed=args.seed, pixel_size_m=args.pixel_size_m,
                          model=args.model, options=options, overwrite=args.overwrite)
    print(result.table)
    print(f"scene:       {result.scene_image} (ground truth beside it)")
    print(f"prediction:  {result.prediction_dir}/ (open the .gpkg over the scene in QGIS; quick-look PNG inside)")
    print(f"scores:      {result.evaluation_json}")
    return 0

