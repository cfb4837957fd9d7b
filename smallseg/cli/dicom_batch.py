"""``smallseg dicom-batch``: its options, and library messages translated to its flags."""

from __future__ import annotations

import sys

from smallseg.cli.cluster import add_cluster_args, open_cluster
from smallseg.cli.options import FlagNames, add_device, errors_as_flags, percentiles_flag, subcommand
from smallseg.shipped import auto_model_help, builtin_models_help


def add_dicom_batch(subparsers) -> None:
    p = subcommand(
        subparsers, "dicom-batch", _run_dicom_batch,
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
    p.add_argument("--model", default="auto",
                   help=f"built-in model name ({builtin_models_help()}), checkpoint path (.safetensors), or auto "
                        f"(default): the built-in model for the modality of the stacks to be processed "
                        f"({auto_model_help()}; said in a note)")
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
    add_device(p, "cpu")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4; on a CPU at most 4 x 256² px per pass, so 1 "
                        "tile of 512² px: larger passes are slower per pixel there)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in px (default: the model's; a smaller slice is one tile)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop detections scoring below this, 0-1 (default: the model's decoding setting)")
    p.add_argument("--min-slices", type=int, default=None,
                   help="drop 3-D objects seen in fewer slices (default: the model's, 2 for ct: one-slice objects "
                        "are mostly vessels there; else 1)")
    p.add_argument("--link-overlap", type=float, default=0.5,
                   help="link objects of adjacent slices sharing at least this fraction of the smaller one "
                        "(default: 0.5)")
    p.add_argument("--max-gb", type=float, default=4.0,
                   help="fail series whose pixels would need more memory than this many GB (default: 4)")
    p.add_argument("--tta", nargs="?", const="d4", default=None, choices=["d4", "flips"],
                   help="test-time augmentation: average the model's maps over the 8 flips/90-degree rotations "
                        "(d4, the default with --tta) or 4 flips, slice by slice before decoding (8x / 4x the "
                        "model's time). Default: off")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-series lines")
    add_cluster_args(p, unit="image stack")


# BatchOptions field -> dicom-batch flag (and phrases of its messages that name a keyword argument).
as_flags = FlagNames(
    {"preset": "--preset", "batch_size": "--batch-size", "min_slices": "--min-slices", "min_score": "--min-score",
     "link_min_overlap": "--link-overlap", "max_gb": "--max-gb", "tile_size_px": "--tile",
     "normalize": "--normalize", "percentiles": "--percentiles", "tta": "--tta",
     "dicom_seg=True": "--dicom-seg"},
    {"resume=True": "--resume", "overwrite=True": "--overwrite", "series_uid ": "--series-uid ",
     "modalities:": "--modalities:", "model '": "--model '", "device '": "--device '"})


def _run_dicom_batch(args) -> int:
    from tqdm.auto import tqdm

    from smallseg.pipeline.dicom_batch import run_dicom_batch

    def report(row) -> None:  # one line per stack / non-image series, as it finishes
        if not args.quiet:
            tqdm.write(as_flags(row.line()), file=sys.stderr)

    modalities = [m for m in args.modalities.split(",")] if args.modalities is not None else None
    with errors_as_flags(as_flags), open_cluster(args) as client:
        result = run_dicom_batch(args.root, args.out, args.model, resume=args.resume, overwrite=args.overwrite,
                                 progress=not args.quiet, series_uid=args.series_uid, modalities=modalities,
                                 preset=args.preset, device=args.device, batch_size=args.batch_size,
                                 tile_size_px=args.tile, min_score=args.min_score, min_slices=args.min_slices,
                                 link_min_overlap=args.link_overlap, dicom_seg=args.dicom_seg,
                                 max_gb=args.max_gb, on_result=report, client=client,
                                 normalize=args.normalize, percentiles=percentiles_flag(args.percentiles),
                                 tta=args.tta)
    for note in result.notes:
        print(f"smallseg {args.command}: note: {as_flags(note)}", file=sys.stderr)
    if result.stopped:
        print(f"smallseg {args.command}: error: {as_flags(result.stopped)}", file=sys.stderr)
    if not result.count("ok") and not result.stopped:  # a stopped batch has said why, in one line
        print(f"smallseg {args.command}: error: no image stack was processed under {args.root} (see "
              f"{result.summary_path})", file=sys.stderr)
    print(result.summary())
    return result.exit_code

