"""The ``smallseg`` command line: parses options and calls the Python API. Nothing else lives here.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its options (every option
has help text) and ``_run_<name>(args) -> int`` calls the library. User errors arrive as
:class:`smallseg.errors.SmallsegError` and are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from smallseg import __version__
from smallseg.cluster.cli import add_cluster_args, open_cluster, split_rows
from smallseg.errors import SmallsegError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``smallseg COMMAND: error: ... (see --help)``), like every other
    error of the command line, instead of the usage block followed by the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="smallseg",
        description=(
            "Find and outline small objects (cars, buildings, nuclei, nodules) in images far larger "
            "than a GPU tile, and score the results."
        ),
    )
    parser.add_argument("--version", action="version", version=f"smallseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The everyday jobs first, then scoring and data, then model making.
    order = ["demo", "tile_and_predict", "dicom_batch", "evaluate", "synth", "train", "finetune", "tune_decode"]
    rank = {f"_add_{name}": i for i, name in enumerate(order)}
    for add in sorted(_SUBCOMMANDS, key=lambda fn: rank.get(fn.__name__, len(order))):
        add(subparsers)
    return parser


# Subcommands register themselves here, in the order `smallseg --help` lists them.
_SUBCOMMANDS: list = []


def _subcommand(add_fn):
    _SUBCOMMANDS.append(add_fn)
    return add_fn


@_subcommand
def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
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
    p.add_argument("--device", default=None,
                   help="auto (CUDA if available), cpu, cuda or cuda:N; overrides the config's device")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs from the config")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="override optim.steps_per_epoch")
    p.add_argument("--batch-size", type=int, default=None, help="override optim.batch_size")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (for batch jobs)")
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from smallseg.train.loop import load_train_config, train

    config = load_train_config(args.config)
    for option, field in (("epochs", "epochs"), ("steps_per_epoch", "steps_per_epoch"), ("batch_size", "batch_size")):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                raise SmallsegError(f"--{option.replace('_', '-')} {value}: must be at least 1")
            setattr(config.optim, field, value)
    if args.resume and args.overwrite:
        raise SmallsegError("--resume and --overwrite: choose one (continue the run in --out, or replace it)")
    try:
        result = train(config, args.out or f"runs/{config.name}", resume=args.resume, device=args.device,
                       progress=not args.quiet, overwrite=args.overwrite)
    except SmallsegError as exc:  # the library names keyword arguments; here they are flags
        raise SmallsegError(str(exc).replace("resume=True", "--resume").replace("overwrite=True", "--overwrite")
                            .replace("another run folder", "another --out")) from None
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


@_subcommand
def _add_synth(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic images with exact ground truth (remote sensing, CT, nuclei)",
        description=(
            "Write deterministic synthetic data: item i uses seed SEED + i, and the same options give "
            "byte-identical files. See datasets/README.md for formats and units."
        ),
    )
    p.set_defaults(run=lambda args: (p.print_help(), 0)[1])
    gens = p.add_subparsers(dest="generator", metavar="GENERATOR")

    def common(g, size_help, size_nargs, size_default):
        g.add_argument("--out", required=True, help="output folder (created)")
        g.add_argument("--seed", type=int, default=0, help="seed of the first item; item i uses seed + i (default 0)")
        g.add_argument("--count", type=int, default=1, help="number of items to write (default 1)")
        g.add_argument("--size", type=int, nargs=size_nargs, default=size_default, metavar="N", help=size_help)

    rs = gens.add_parser("remote-sensing", help="GeoTIFF aerial scenes with cars and small buildings",
                         description="Image GeoTIFF + instance-id GeoTIFF (uint32) + class GeoTIFF (uint8: "
                                     "1 car, 2 building) + objects CSV per scene; optional COCO tiles.")
    common(rs, "scene height and width in px (default 1024 1024)", 2, [1024, 1024])
    rs.add_argument("--pixel-size-m", type=float, default=0.5, help="ground sampling distance, m/px (0.1-2; default 0.5)")
    rs.add_argument("--bands", type=int, default=3, choices=[3, 4], help="3 = RGB, 4 = RGB + NIR (default 3)")
    rs.add_argument("--dtype", default="uint8", choices=["uint8", "uint16"],
                    help="uint8 display stretch or uint16 linear 12-bit (default uint8)")
    rs.add_argument("--nodata-collar", action="store_true", help="surround the valid area with a nodata (0) collar")
    rs.add_argument("--density", type=float, default=1.0, help="how built-up: 0.3 rural ... 1.5 dense (default 1)")
    rs.add_argument("--crs", default="EPSG:32633", help="projected CRS with metre units (default EPSG:32633)")
    rs.add_argument("--window-px", type=int, default=1024,
                    help="render/write window side, multiple of 16; bounds memory for big scenes (default 1024)")
    rs.add_argument("--coco-tile-px", type=int, default=0,
                    help="also cut tiles of this size and write coco/annotations.json (default 0 = no tiles)")
    rs.add_argument("--coco-overlap-px", type=int, default=64, help="overlap between COCO tiles in px (default 64)")
    rs.set_defaults(run=_run_synth_remote_sensing)

    ct = gens.add_parser("ct", help="chest-CT-like DICOM series with lung nodules",
                         description="Per case: dicom/ series (int16 HU), labels.nii.gz (nodule ids), "
                                     "nodules.json and nodules.csv (centre LPS mm, diameter mm, volume mm3).")
    common(ct, "voxels along x, y, z (default 256 256 64)", 3, [256, 256, 64])
    ct.add_argument("--spacing-mm", type=float, nargs=3, default=[0.7, 0.7, 1.25], metavar="MM",
                    help="voxel spacing x y z in mm (default 0.7 0.7 1.25)")
    ct.add_argument("--nodules", type=int, default=6, help="nodules per case (default 6)")
    ct.add_argument("--diameter-range-mm", type=float, nargs=2, default=[3.0, 15.0], metavar="MM",
                    help="min and max nodule diameter in mm (default 3 15)")
    ct.add_argument("--noise-hu", type=float, default=15.0, help="image noise standard deviation, HU (default 15)")
    ct.set_defaults(run=_run_synth_ct)

    nu = gens.add_parser("nuclei", help="fluorescence-microscopy nuclei images with label TIFFs",
                         description="Per image: <stem>_image.tif, <stem>_labels.tif (uint16 ids), "
                                     "<stem>_nuclei.csv.")
    common(nu, "image height and width in px (default 256 256)", 2, [256, 256])
    nu.add_argument("--diameter-px", type=float, default=16.0, help="mean nucleus diameter in px (default 16)")
    nu.add_argument("--dtype", default="uint16", choices=["uint8", "uint16"],
                    help="uint16 camera counts or uint8 scaled (default uint16)")
    nu.add_argument("--cluster-fraction", type=float, default=0.6, help="share of nuclei in touching clusters (default 0.6)")
    nu.add_argument("--out-of-focus", type=float, default=0.1, help="share of out-of-focus nuclei (default 0.1)")
    nu.set_defaults(run=_run_synth_nuclei)

    rc = gens.add_parser("recipe", help="regenerate the splits of a YAML recipe (e.g. datasets/synthetic.yaml)",
                         description="Generate every generator/split of a recipe; see datasets/README.md.")
    rc.add_argument("recipe", help="recipe YAML, e.g. datasets/synthetic.yaml")
    rc.add_argument("--out", required=True, help="root output folder (created)")
    rc.add_argument("--kind", action="append", choices=["remote_sensing", "ct", "nuclei"],
                    help="only this generator (repeatable; default all)")
    rc.add_argument("--split", action="append", help="only this split, e.g. train (repeatable; default all)")
    rc.add_argument("--limit", type=int, default=None, help="at most this many items per split (smoke runs)")
    rc.set_defaults(run=_run_synth_recipe)


def _check_count(args) -> None:
    if args.count < 1:
        raise SmallsegError(f"--count {args.count}: must be at least 1")


def _run_synth_remote_sensing(args) -> int:
    from smallseg.data.recipe import generate_remote_sensing_split

    _check_count(args)
    written = generate_remote_sensing_split(
        args.out, seed=args.seed, count=args.count, height=args.size[0], width=args.size[1],
        pixel_size_m=args.pixel_size_m, bands=args.bands, dtype=args.dtype, nodata_collar=args.nodata_collar,
        density=args.density, crs=args.crs, window_px=args.window_px, coco_tile_px=args.coco_tile_px,
        coco_overlap_px=args.coco_overlap_px, progress=print,
    )
    print(f"wrote {len(written)} scene(s) to {args.out}")
    return 0


def _run_synth_ct(args) -> int:
    from smallseg.data.recipe import generate_ct_split

    _check_count(args)
    cases = generate_ct_split(
        args.out, seed=args.seed, count=args.count, size_xyz=tuple(args.size), spacing_mm=tuple(args.spacing_mm),
        nodule_count=args.nodules, diameter_range_mm=tuple(args.diameter_range_mm), noise_hu=args.noise_hu,
        progress=print,
    )
    print(f"wrote {len(cases)} case(s) to {args.out}")
    return 0


def _run_synth_nuclei(args) -> int:
    from smallseg.data.recipe import generate_nuclei_split

    _check_count(args)
    written = generate_nuclei_split(
        args.out, seed=args.seed, count=args.count, height=args.size[0], width=args.size[1],
        mean_diameter_px=args.diameter_px, dtype=args.dtype, cluster_fraction=args.cluster_fraction,
        out_of_focus_fraction=args.out_of_focus, progress=print,
    )
    print(f"wrote {len(written)} image(s) to {args.out}")
    return 0


def _run_synth_recipe(args) -> int:
    from smallseg.data.recipe import generate_from_recipe

    if args.limit is not None and args.limit < 1:
        raise SmallsegError(f"--limit {args.limit}: must be at least 1")
    generate_from_recipe(args.recipe, args.out, kinds=args.kind, splits=args.split, limit=args.limit,
                         progress=print)
    print(f"done: {args.out}")
    return 0


@_subcommand
def _add_dicom_batch(subparsers) -> None:
    p = subparsers.add_parser(
        "dicom-batch",
        help="find objects in every DICOM series under a folder",
        description=(
            "Walk ROOT, group DICOM files into series and split each series into stacks by slice orientation, "
            "position and size (as dcm2niix does: a localizer, a 3-plane scout or a radial MR gives several "
            "stacks; a radiograph or localizer is a 2-D image). Predict each stack slice by slice and link the "
            "slices into 3-D objects. Writes OUT/<folder>/labels.nii.gz (object ids, the stack's geometry), "
            "objects.csv (volume in mm3, or area in mm2 for projection images; diameter, LPS centroid, slice "
            "range per object; a geometry_note column when a spacing had to be assumed) and done.json. The "
            "folder is the Series Instance UID (a safe prefix plus a hash for UIDs that are not plain digits and "
            "dots; _stackK for stack K). OUT/summary.csv has one row per stack and per non-image series or file "
            "(columns series_uid, stack, path, status, modality, files, objects, seconds, message, folder): "
            "status ok, skipped (not DICOM, SEG/SR/RTSTRUCT/DICOMDIR, no pixel data) or failed (one-line reason). "
            "An unreadable file in a series is dropped with a note when the rest still forms a stack. OUT is "
            "locked while the batch runs; an OUT holding an earlier batch needs --resume or --overwrite."
        ),
        epilog="exit status: 0 every image stack done, 1 some inputs failed (a failed row, a dropped file, or a "
               "full disk that stopped the batch) while others were done, 2 bad usage or nothing processed",
    )
    p.add_argument("root", metavar="ROOT", help="folder searched recursively for DICOM files")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per stack, plus summary.csv)")
    p.add_argument("--model", default="medical",
                   help="built-in model name or checkpoint path (.safetensors) (default: medical)")
    p.add_argument("--series-uid", default=None, metavar="UID",
                   help="process only the series with this Series Instance UID (all its stacks)")
    p.add_argument("--modalities", default=None, metavar="LIST",
                   help="process only these DICOM modalities, comma-separated, e.g. CT,MR (others are skipped "
                        "with the reason; default: all). Stacks of a modality the model was not trained on get "
                        "a note in their row and one line on the console")
    p.add_argument("--preset", default=None,
                   choices=["lung", "soft_tissue", "mediastinum", "bone", "brain", "percentile", "raw"],
                   help="intensity mapping before the model (default: the one stored in the checkpoint, else lung "
                        "for CT and percentile for other modalities; raw = no mapping)")
    p.add_argument("--normalize", default="model", choices=["model", "percentile", "fixed", "none"],
                   help="how voxel values become model input, fitted once per stack: model (default: what the "
                        "checkpoint declares, e.g. the lung window for CT and per-volume percentiles otherwise); "
                        "percentile: the --percentiles of the stack's voxels map to 0 and 1; fixed: the "
                        "checkpoint's input_scale/mean/std on raw values; none: raw values. Not with --preset")
    p.add_argument("--percentiles", default=None, metavar="LO,HI",
                   help="percentiles (0-100) for --normalize percentile, e.g. 1,99.5 (implies --normalize percentile)")
    p.add_argument("--resume", action="store_true",
                   help="keep stacks whose outputs are complete for the same model, options and input files; do "
                        "the rest")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every stack when OUT holds an earlier batch (without --resume or --overwrite such "
                        "an OUT is refused)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write OUT/<folder>/seg.dcm, a DICOM Segmentation (needs highdicom)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in px (default: the model's; a smaller slice is one tile)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop detections scoring below this, 0-1 (default: the model's decoding setting)")
    p.add_argument("--min-slices", type=int, default=1, help="drop 3-D objects seen in fewer slices (default: 1)")
    p.add_argument("--link-overlap", type=float, default=0.5,
                   help="link objects of adjacent slices sharing at least this fraction of the smaller one "
                        "(default: 0.5)")
    p.add_argument("--max-gb", type=float, default=4.0,
                   help="fail series whose pixels would need more memory than this many GB (default: 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-series lines")
    add_cluster_args(p, unit="image stack")
    p.set_defaults(run=_run_dicom_batch)


# Phrases of dicom-batch's library messages that name a keyword argument -> the flag.
_DICOM_BATCH_PHRASES = {"resume=True": "--resume", "overwrite=True": "--overwrite", "series_uid ": "--series-uid ",
                        "modalities:": "--modalities:", "model '": "--model '", "device '": "--device '"}


# BatchOptions field -> dicom-batch flag, for library messages that begin with the field's name.
_DICOM_BATCH_FIELDS = {"preset": "--preset", "batch_size": "--batch-size", "min_slices": "--min-slices",
                       "min_score": "--min-score", "link_min_overlap": "--link-overlap", "max_gb": "--max-gb",
                       "tile_size_px": "--tile", "dicom_seg=True": "--dicom-seg"}


def _dicom_batch_flags(message: str) -> str:
    head, _, rest = message.partition(" ")
    if head in _DICOM_BATCH_FIELDS and rest:
        message = f"{_DICOM_BATCH_FIELDS[head]} {rest}"
    for phrase, flag in _DICOM_BATCH_PHRASES.items():
        message = message.replace(phrase, flag)
    for name, flag in _DICOM_BATCH_FIELDS.items():
        if "_" in name:  # identifiers, never English words: safe to replace anywhere in the text
            message = re.sub(rf"\b{re.escape(name)}\b", flag, message)
    return message


def _percentiles_flag(text: str | None) -> tuple[float, float] | None:
    """``--percentiles LO,HI`` -> (lo, hi); a malformed value is one line."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise SmallsegError(f"--percentiles {text}: give LO,HI in 0-100, e.g. 1,99.8")
    return values


def _run_dicom_batch(args) -> int:
    from tqdm.auto import tqdm

    from smallseg.pipeline.dicom_batch import run_dicom_batch

    def report(row) -> None:  # one line per stack / non-image series, as it finishes
        if not args.quiet:
            tqdm.write(_dicom_batch_flags(row.line()), file=sys.stderr)

    modalities = [m for m in args.modalities.split(",")] if args.modalities is not None else None
    try:
        with open_cluster(args) as client:
            result = run_dicom_batch(args.root, args.out, args.model, resume=args.resume, overwrite=args.overwrite,
                                     progress=not args.quiet, series_uid=args.series_uid, modalities=modalities,
                                     preset=args.preset, device=args.device, batch_size=args.batch_size,
                                     tile_size_px=args.tile, min_score=args.min_score, min_slices=args.min_slices,
                                     link_min_overlap=args.link_overlap, dicom_seg=args.dicom_seg,
                                     max_gb=args.max_gb, on_result=report, client=client,
                                     normalize=args.normalize, percentiles=_percentiles_flag(args.percentiles))
    except SmallsegError as exc:
        raise SmallsegError(_dicom_batch_flags(str(exc))) from None
    for note in result.notes:
        print(f"smallseg {args.command}: note: {note}", file=sys.stderr)
    if result.stopped:
        print(f"smallseg {args.command}: error: {_dicom_batch_flags(result.stopped)}", file=sys.stderr)
    if not result.count("ok") and not result.stopped:  # a stopped batch has said why, in one line
        print(f"smallseg {args.command}: error: no image stack was processed under {args.root} (see "
              f"{result.summary_path})", file=sys.stderr)
    print(result.summary())
    return result.exit_code


@_subcommand
def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
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
    from smallseg.metrics.evaluation_sources_cli import add_source_arguments  # vector/box GT, --area, --plot (#15)

    add_source_arguments(p)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from smallseg.metrics.evaluation import evaluate
    from smallseg.metrics.evaluation_sources_cli import evaluate_from_args, uses_sources

    score = evaluate_from_args if uses_sources(args) else (lambda a, **kw: evaluate(a.gt, a.pred, **kw))
    result = score(args, gt_classes=args.gt_classes, pred_classes=args.pred_classes,
                   pred_objects=args.pred_objects, gt_objects=args.gt_objects, size_buckets=args.size_buckets,
                   boundary=args.boundary, boundary_width=args.boundary_width, max_dets=args.max_dets,
                   pixel_size=args.pixel_size, class_agnostic=args.class_agnostic)
    print(result.format_table())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    return 0


@_subcommand
def _add_tile_and_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "tile-and-predict",
        help="find objects in GeoTIFFs of any size (streamed in tiles, stitched exactly, georeferenced outputs)",
        description=(
            "Predict each INPUT (GeoTIFF, plain TIFF/PNG, or a folder of them) tile row by tile row in bounded "
            "memory, stitch objects across tile borders exactly once, and write into --out, named after the "
            "input: STEM.instances.tif (uint32 ids), STEM.classes.tif (uint8, 255 = nodata), STEM.gpkg (polygons "
            "in the input CRS), STEM.geojson (RFC 7946: WGS 84 lon/lat), STEM.objects.csv, STEM.quicklook.png and "
            "STEM.run.json, written last as the 'finished' marker. A killed or interrupted run continues with "
            "--resume and gives the same bytes. An input without valid pixels gives empty outputs and a warning. "
            "One line per input. Each scene's outputs are locked while it runs (OUT/.STEM.lock): a second run on "
            "the same scene is refused, naming the process that writes it."
        ),
        epilog="exit status: 0 every input done (or already finished with --resume), 1 some inputs failed (the "
               "others are done), 2 bad usage or no input done",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="raster file(s) or folder(s) (their *.tif, *.tiff, *.png files, not recursive)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--model", default="remote-sensing",
                   help="built-in model name or checkpoint path (.safetensors) (default: remote-sensing)")
    p.add_argument("--tile", type=int, default=None, help="tile side in px (default: the model's training tile)")
    p.add_argument("--overlap", type=int, default=None,
                   help="tile overlap in px (default: twice the model's largest object radius plus its centroid "
                        "error, so every object is whole in the tile that owns it)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA (faster, slightly different scores)")
    p.add_argument("--tta", nargs="?", const="d4", default=None, choices=["d4", "flips"],
                   help="test-time augmentation: average the model's maps over the 8 flips/90-degree rotations "
                        "(d4, the default with --tta) or 4 flips, tile by tile before decoding (8x / 4x the "
                        "model's time; seams as without). Default: off")
    p.add_argument("--decode-workers", type=int, default=1,
                   help="CPU threads turning the model's outputs into objects while it runs (default: 1). On a GPU "
                        "the model outpaces one decoder: use about as many as there are free CPU cores. Outputs "
                        "do not depend on it")
    p.add_argument("--bands", default=None,
                   help="file bands in the model's order, comma separated: 1-based numbers (3,2,1; 1,1,1 feeds one "
                        "band to all three) or colour names (red,green,blue: the band whose colour interpretation "
                        "says so). Default: by colour interpretation (a B,G,R,alpha file is read as R,G,B with the "
                        "alpha as the valid mask; a 1-band image is replicated to an RGB model, with a note), else "
                        "file order")
    p.add_argument("--normalize", default="model", choices=["model", "percentile", "fixed", "none"],
                   help="how pixel values become model input. model (default): what the checkpoint declares (the "
                        "medical model: per-image percentiles; the remote-sensing model: x/255, or per-band "
                        "percentiles for data that is not 8-bit); percentile: per band, the --percentiles of the "
                        "scene's valid pixels map to 0 and 1 (any data type: 11/12/16-bit satellite data, "
                        "microscopy); fixed: the checkpoint's input_scale, mean and std (behaviour before "
                        "normalisations were declared); none: raw values. The values applied go into run.json")
    p.add_argument("--percentiles", default=None, metavar="LO,HI",
                   help="percentiles (0-100) for --normalize percentile, e.g. 2,98 (default: 1,99.8; implies "
                        "--normalize percentile)")
    p.add_argument("--strict", action="store_true",
                   help="refuse inputs the model cannot be trusted on (a constant or empty band, a pixel size more "
                        "than 10x outside the training range) instead of writing a result marked "
                        "\"reliable\": false in run.json")
    p.add_argument("--nodata", type=float, default=None,
                   help="treat this value as nodata (pixels equal to it in every band), overriding the file's")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop objects scoring below this, 0-1 (default: the model's decoding setting)")
    p.add_argument("--min-area", type=int, default=None,
                   help="drop objects with fewer pixels in their tile (default: the model's decoding setting)")
    p.add_argument("--simplify", type=float, default=0.0, metavar="TOL_PX",
                   help="simplify the GeoPackage/GeoJSON outlines with this tolerance in px, keeping topology: touching "
                        "objects keep one shared edge, never an overlap or a gap (default 0: exact pixel outlines; "
                        "changes areas slightly; the rasters and CSV areas are unchanged)")
    p.add_argument("--regularise-buildings", action="store_true",
                   help="outlines of the model's 'building' class that are nearly rectangular become rectangles "
                        "(right angles, the building's orientation, its area); touching buildings are left as "
                        "simplified. Default: off")
    p.add_argument("--formats", default="tif,gpkg,geojson,csv,png,json",
                   help="outputs to write, comma list of tif,gpkg,geojson,csv,png,json (default: all; the run.json "
                        "marker is always written)")
    p.add_argument("--cog", action="store_true", help="write the rasters as Cloud Optimized GeoTIFFs (with overviews)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last finished tile row; inputs already "
                        "finished there are skipped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished (or interrupted) run in --out instead of refusing")
    p.add_argument("--quiet", action="store_true", help="no progress bar (for batch jobs); one line per input stays")
    add_cluster_args(p, unit="scene", split=True)
    p.set_defaults(run=_run_tile_and_predict)


# Python option names in library messages -> tile-and-predict's flags.
_TILE_AND_PREDICT_FLAGS = {
    "tile_size_px": "--tile", "overlap_px": "--overlap", "batch_size": "--batch-size", "device": "--device",
    "decode_workers": "--decode-workers", "bands": "--bands", "nodata": "--nodata", "min_score": "--min-score",
    "min_area_px": "--min-area", "formats": "--formats", "cog": "--cog", "resume": "--resume",
    "overwrite": "--overwrite", "normalize": "--normalize", "percentiles": "--percentiles", "strict": "--strict",
    "tta": "--tta",
}
# Phrases of library messages that name a keyword argument -> the flag.
_TILE_AND_PREDICT_PHRASES = {"overwrite=True": "--overwrite", "resume=True": "--resume", "bands=[...]": "--bands"}


def _as_flags(message: str) -> str:
    """A library message with its Python option names spelled as tile-and-predict's flags."""
    head, _, rest = message.partition(" ")
    if head in _TILE_AND_PREDICT_FLAGS and rest:
        message = f"{_TILE_AND_PREDICT_FLAGS[head]} {rest}"
    for phrase, flag in _TILE_AND_PREDICT_PHRASES.items():
        message = message.replace(phrase, flag)
    # bands=(3, 2, 1) in smallseg.bands' messages -> --bands 3,2,1
    message = re.sub(r"\bbands=\(([0-9, ]+)\)", lambda m: "--bands " + m.group(1).replace(" ", "").rstrip(","),
                     message)
    message = message.replace("normalize='fixed'", "--normalize fixed")
    for name, flag in _TILE_AND_PREDICT_FLAGS.items():
        if "_" in name:  # identifiers, never English words: safe to replace anywhere in the text
            message = re.sub(rf"\b{name}\b", flag, message)
    return message


def _outline_options(args):
    """--simplify / --regularise-buildings as OutlineOptions (None when both are off)."""
    from smallseg.outline import OutlineOptions

    if not args.simplify and not args.regularise_buildings:
        return None
    try:
        return OutlineOptions(simplify_px=args.simplify,
                              regularise_class_names=("building",) if args.regularise_buildings else ())
    except SmallsegError as exc:
        raise SmallsegError(f"--{exc}") from None


def _run_tile_and_predict(args) -> int:
    import warnings

    # GDAL's block cache defaults to 5 % of RAM and fills up as a huge scene streams by; a few block rows
    # is all this pipeline reuses. Read once, at GDAL's first raster access, so set it before any.
    os.environ.setdefault("GDAL_CACHEMAX", "64")
    from smallseg.pipeline.geotiff import GeoTiffOptions, PredictionResult, predict_geotiffs

    bands = args.bands or None  # numbers and/or colour names, checked by GeoTiffOptions
    percentiles = _percentiles_flag(args.percentiles)
    show = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"smallseg {args.command}: warning: {message}", file=sys.stderr)

    def report(path, outcome) -> None:
        if isinstance(outcome, PredictionResult):
            if not outcome.skipped:
                for note in outcome.run.get("notes", []):
                    print(f"smallseg {args.command}: note: {_as_flags(note)}", file=sys.stderr)
            print(outcome.summary())
        else:
            hint = "; the run can be continued with --resume" if outcome.resumable else ""
            print(f"smallseg {args.command}: error: {_as_flags(outcome.message)}{hint}", file=sys.stderr)

    warnings.showwarning = one_line_warning
    try:
        options = GeoTiffOptions(
            tile_size_px=args.tile, overlap_px=args.overlap, batch_size=args.batch_size, device=args.device,
            amp=args.amp, decode_workers=args.decode_workers, bands=bands, nodata=args.nodata,
            min_score=args.min_score, min_area_px=args.min_area, formats=args.formats, cog=args.cog,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, normalize=args.normalize,
            outline=_outline_options(args),
            percentiles=percentiles, strict=args.strict, tta=args.tta)
        split = split_rows(args)  # checked before a cluster is started
        with warnings.catch_warnings(), open_cluster(args) as client:
            warnings.simplefilter("always", UserWarning)
            batch = predict_geotiffs(args.inputs, args.out, model=args.model, options=options, on_done=report,
                                     on_row_done=getattr(args, "on_row_done", None), client=client,
                                     split_rows=split)
    except SmallsegError as exc:
        raise SmallsegError(_as_flags(str(exc))) from None
    finally:
        warnings.showwarning = show
    if len(batch.inputs) > 1:
        print(f"{batch.summary()}; outputs in {args.out}")
    return batch.exit_code


@_subcommand
def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
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
                   help="built-in model name or checkpoint path (default: remote-sensing)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from smallseg.pipeline.demo import run_demo

    if args.size < 64:
        raise SmallsegError(f"--size {args.size}: use at least 64 px")
    try:
        result = run_demo(args.out, size_px=args.size, seed=args.seed, pixel_size_m=args.pixel_size_m,
                          model=args.model, device=args.device, batch_size=args.batch_size,
                          overwrite=args.overwrite, progress=not args.quiet)
    except SmallsegError as exc:  # same flag names as tile-and-predict
        raise SmallsegError(_as_flags(str(exc))) from None
    print(result.table)
    print(f"scene:       {result.scene_image} (ground truth beside it)")
    print(f"prediction:  {result.prediction_dir}/ (open the .gpkg over the scene in QGIS; quick-look PNG inside)")
    print(f"scores:      {result.evaluation_json}")
    return 0


@_subcommand
def _add_finetune(subparsers) -> None:  # smallseg/train/finetune_cli.py (#15)
    from smallseg.train.finetune_cli import add_finetune

    add_finetune(subparsers)


@_subcommand
def _add_tune_decode(subparsers) -> None:
    p = subparsers.add_parser(
        "tune-decode",
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
    p.set_defaults(run=_run_tune_decode)


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


def main(argv: list[str] | None = None, *, on_row_done=None) -> int:
    """Run the command line ``argv``; returns the exit status.

    ``on_row_done`` (for embedding and tests): tile-and-predict calls it with (input path, n) each time tile rows
    0..n-1 of that input are checkpointed.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.on_row_done = on_row_done
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except SmallsegError as exc:
        print(f"smallseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smallseg {args.command}: interrupted; no output was marked complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
