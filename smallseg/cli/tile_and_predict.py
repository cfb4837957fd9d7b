"""``smallseg tile-and-predict``: its options, and library messages translated to its flags (also used by
``demo``, which takes the same flags)."""

from __future__ import annotations

import os
import re
import sys

from smallseg.cli.cluster import add_cluster_args, open_cluster, split_rows
from smallseg.cli.options import FlagNames, add_device, percentiles_flag, subcommand
from smallseg.errors import SmallsegError
from smallseg.shipped import builtin_models_help


def add_tile_and_predict(subparsers) -> None:
    p = subcommand(
        subparsers, "tile-and-predict", _run_tile_and_predict,
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
                   help=f"built-in model name ({builtin_models_help()}) or checkpoint path (.safetensors) "
                        "(default: remote-sensing)")
    p.add_argument("--tile", type=int, default=None, help="tile side in px (default: the model's training tile)")
    p.add_argument("--overlap", type=int, default=None,
                   help="tile overlap in px (default: twice the model's largest object radius plus its centroid "
                        "error, so every object is whole in the tile that owns it)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4; on a CPU at most 4 x 256² px per pass, so 1 "
                        "tile of 512² px: larger passes are slower per pixel there)")
    add_device(p, "auto")
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
    p.add_argument("--no-resample", action="store_true",
                   help="predict at the input's own pixels. Default: a georeferenced scene whose ground pixel size "
                        "is outside the model's training range (up to 10x) is predicted resampled to the range's "
                        "centre (sqrt(lo*hi)), and every output is written back on the input's grid (run.json "
                        "input.resample says what was done)")
    p.add_argument("--resample-to", type=float, default=None, metavar="M",
                   help="predict at this ground pixel size in metres whenever the input's differs (at most 10x), "
                        "instead of the centre of the model's training range (the shipped remote-sensing model: "
                        "0.43 m; it does best near 0.4 m)")
    p.add_argument("--modality", default=None, metavar="CODE",
                   help="what the image shows, for a model with classes per modality (the medical model: none / SM "
                        "= microscopy -> nucleus, CT -> nodule): objects of other modalities' classes are "
                        "relabelled. Default: an image without a DICOM modality (microscopy)")
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
    p.add_argument("--subpixel", action="store_true",
                   help="sub-pixel GeoPackage/GeoJSON outlines from the model's boundary head (a model trained with "
                        "boundary_head: signed_distance; others are refused) where an object meets background; pixel edges "
                        "between touching objects, which stay shared. Changes areas slightly; not with --simplify "
                        "or --regularise-buildings, nor on a resampled scene (--no-resample). Default: off")
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


# Python option names in library messages -> tile-and-predict's flags (and phrases naming a keyword argument).
_FLAGS = FlagNames(
    {"tile_size_px": "--tile", "overlap_px": "--overlap", "batch_size": "--batch-size", "device": "--device",
     "decode_workers": "--decode-workers", "bands": "--bands", "nodata": "--nodata", "min_score": "--min-score",
     "min_area_px": "--min-area", "formats": "--formats", "cog": "--cog", "resume": "--resume",
     "overwrite": "--overwrite", "normalize": "--normalize", "percentiles": "--percentiles", "strict": "--strict",
     "tta": "--tta", "resample": "--no-resample", "resample_to_m": "--resample-to", "modality": "--modality",
     "simplify_px": "--simplify", "regularise_class_names": "--regularise-buildings"},
    {"overwrite=True": "--overwrite", "subpixel=True": "--subpixel", "resume=True": "--resume", "bands=[...]": "--bands",
     "normalize='fixed'": "--normalize fixed", "resample=False": "--no-resample"})


def as_flags(message: str) -> str:
    """A library message with its Python option names spelled as tile-and-predict's flags."""
    # bands=(3, 2, 1) in smallseg.bands' messages -> --bands 3,2,1
    message = re.sub(r"\bbands=\(([0-9, ]+)\)", lambda m: "--bands " + m.group(1).replace(" ", "").rstrip(","),
                     message)
    return _FLAGS(message)


def _outline_options(args):
    """--simplify / --regularise-buildings / --subpixel as OutlineOptions (None when all are off)."""
    from smallseg.outline import OutlineOptions

    if not args.simplify and not args.regularise_buildings and not args.subpixel:
        return None
    return OutlineOptions(simplify_px=args.simplify,  # its messages name the fields: as_flags spells the flags
                          regularise_class_names=("building",) if args.regularise_buildings else (),
                          subpixel=args.subpixel)


def _run_tile_and_predict(args) -> int:
    import warnings

    # GDAL's block cache defaults to 5 % of RAM and fills up as a huge scene streams by; a few block rows
    # is all this pipeline reuses. Read once, at GDAL's first raster access, so set it before any.
    os.environ.setdefault("GDAL_CACHEMAX", "64")
    from smallseg.pipeline.geotiff import GeoTiffOptions, PredictionResult, predict_geotiffs

    bands = args.bands or None  # numbers and/or colour names, checked by GeoTiffOptions
    percentiles = percentiles_flag(args.percentiles)
    show = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"smallseg {args.command}: warning: {as_flags(str(message))}", file=sys.stderr)

    def report(path, outcome) -> None:
        if isinstance(outcome, PredictionResult):
            if not outcome.skipped:
                for note in outcome.run.get("notes", []):
                    print(f"smallseg {args.command}: note: {as_flags(note)}", file=sys.stderr)
            print(outcome.summary())
        else:
            hint = "; the run can be continued with --resume" if outcome.resumable else ""
            print(f"smallseg {args.command}: error: {as_flags(outcome.message)}{hint}", file=sys.stderr)

    warnings.showwarning = one_line_warning
    try:
        options = GeoTiffOptions(
            tile_size_px=args.tile, overlap_px=args.overlap, batch_size=args.batch_size, device=args.device,
            amp=args.amp, decode_workers=args.decode_workers, bands=bands, nodata=args.nodata,
            min_score=args.min_score, min_area_px=args.min_area, formats=args.formats, cog=args.cog,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, normalize=args.normalize,
            outline=_outline_options(args),
            percentiles=percentiles, strict=args.strict, tta=args.tta, resample=not args.no_resample,
            resample_to_m=args.resample_to, modality=args.modality)
        split = split_rows(args)  # checked before a cluster is started
        with warnings.catch_warnings(), open_cluster(args) as client:
            warnings.simplefilter("always", UserWarning)
            batch = predict_geotiffs(args.inputs, args.out, model=args.model, options=options, on_done=report,
                                     on_row_done=getattr(args, "on_row_done", None), client=client,
                                     split_rows=split)
    except SmallsegError as exc:
        raise SmallsegError(as_flags(str(exc))) from None
    finally:
        warnings.showwarning = show
    if len(batch.inputs) > 1:
        print(f"{batch.summary()}; outputs in {args.out}")
    return batch.exit_code

