"""``smallseg synth``: the synthetic-data generators' options (remote-sensing, ct, nuclei, recipe)."""

from __future__ import annotations

from smallseg.cli.options import FlagNames, errors_as_flags, require_at_least, subcommand

# The generators' argument names -> the generator subcommands' flags. Not for recipe: a recipe YAML uses the
# generators' own argument names, so its messages keep them.
_FLAGS = FlagNames(
    {"pixel_size_m": "--pixel-size-m", "bands": "--bands", "dtype": "--dtype", "density": "--density",
     "crs": "--crs", "window_px": "--window-px", "tile_size_px": "--coco-tile-px", "overlap_px": "--coco-overlap-px",
     "mean_diameter_px": "--diameter-px", "spacing_mm": "--spacing-mm", "diameter_range_mm": "--diameter-range-mm",
     "size_xyz": "--size"},
    {"height x width": "--size"})
_RECIPE_FLAGS = FlagNames({"kinds": "--kind"})


def add_synth(subparsers) -> None:
    p = subcommand(
        subparsers, "synth", lambda args: (p.print_help(), 0)[1],
        help="generate synthetic images with exact ground truth (remote sensing, CT, nuclei)",
        description=(
            "Write deterministic synthetic data: item i uses seed SEED + i, and the same options give "
            "byte-identical files. See datasets/README.md for formats and units."
        ),
    )
    gens = p.add_subparsers(dest="generator", metavar="GENERATOR")

    def common(g, size_help, size_nargs, size_default):
        g.add_argument("--out", required=True, help="output folder (created)")
        g.add_argument("--seed", type=int, default=0, help="seed of the first item; item i uses seed + i (default 0)")
        g.add_argument("--count", type=int, default=1, help="number of items to write (default 1)")
        g.add_argument("--size", type=int, nargs=size_nargs, default=size_default, metavar="N", help=size_help)

    rs = subcommand(gens, "remote-sensing", _run_synth_remote_sensing,
                    help="GeoTIFF aerial scenes with cars and small buildings",
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

    ct = subcommand(gens, "ct", _run_synth_ct,
                    help="chest-CT-like DICOM series with lung nodules",
                    description="Per case: dicom/ series (int16 HU), labels.nii.gz (nodule ids), "
                                "nodules.json and nodules.csv (centre LPS mm, diameter mm, volume mm3).")
    common(ct, "voxels along x, y, z (default 256 256 64)", 3, [256, 256, 64])
    ct.add_argument("--spacing-mm", type=float, nargs=3, default=[0.7, 0.7, 1.25], metavar="MM",
                    help="voxel spacing x y z in mm (default 0.7 0.7 1.25)")
    ct.add_argument("--nodules", type=int, default=6, help="nodules per case (default 6)")
    ct.add_argument("--diameter-range-mm", type=float, nargs=2, default=[3.0, 15.0], metavar="MM",
                    help="min and max nodule diameter in mm (default 3 15)")
    ct.add_argument("--noise-hu", type=float, default=15.0, help="image noise standard deviation, HU (default 15)")

    nu = subcommand(gens, "nuclei", _run_synth_nuclei,
                    help="fluorescence-microscopy nuclei images with label TIFFs",
                    description="Per image: <stem>_image.tif, <stem>_labels.tif (uint16 ids), "
                                "<stem>_nuclei.csv.")
    common(nu, "image height and width in px (default 256 256)", 2, [256, 256])
    nu.add_argument("--diameter-px", type=float, default=16.0, help="mean nucleus diameter in px (default 16)")
    nu.add_argument("--dtype", default="uint16", choices=["uint8", "uint16"],
                    help="uint16 camera counts or uint8 scaled (default uint16)")
    nu.add_argument("--cluster-fraction", type=float, default=0.6, help="share of nuclei in touching clusters (default 0.6)")
    nu.add_argument("--out-of-focus", type=float, default=0.1, help="share of out-of-focus nuclei (default 0.1)")

    rc = subcommand(gens, "recipe", _run_synth_recipe,
                    help="regenerate the splits of a YAML recipe (e.g. datasets/synthetic.yaml)",
                    description="Generate every generator/split of a recipe; see datasets/README.md.")
    rc.add_argument("recipe", help="recipe YAML, e.g. datasets/synthetic.yaml")
    rc.add_argument("--out", required=True, help="root output folder (created)")
    rc.add_argument("--kind", action="append", choices=["remote_sensing", "ct", "nuclei"],
                    help="only this generator (repeatable; default all)")
    rc.add_argument("--split", action="append", help="only this split, e.g. train (repeatable; default all)")
    rc.add_argument("--limit", type=int, default=None, help="at most this many items per split (smoke runs)")


def _generate(args, generate, noun: str, **params) -> int:
    """One generator's split with the options every generator has (--out, --seed, --count); the generators'
    messages name their arguments, which become this command's flags."""
    require_at_least(1, count=args.count)
    with errors_as_flags(_FLAGS):
        written = generate(args.out, seed=args.seed, count=args.count, progress=print, **params)
    print(f"wrote {len(written)} {noun}(s) to {args.out}")
    return 0


def _run_synth_remote_sensing(args) -> int:
    from smallseg.data.recipe import generate_remote_sensing_split

    return _generate(args, generate_remote_sensing_split, "scene", height=args.size[0], width=args.size[1],
                     pixel_size_m=args.pixel_size_m, bands=args.bands, dtype=args.dtype,
                     nodata_collar=args.nodata_collar, density=args.density, crs=args.crs, window_px=args.window_px,
                     coco_tile_px=args.coco_tile_px, coco_overlap_px=args.coco_overlap_px)


def _run_synth_ct(args) -> int:
    from smallseg.data.recipe import generate_ct_split

    return _generate(args, generate_ct_split, "case", size_xyz=tuple(args.size), spacing_mm=tuple(args.spacing_mm),
                     nodule_count=args.nodules, diameter_range_mm=tuple(args.diameter_range_mm),
                     noise_hu=args.noise_hu)


def _run_synth_nuclei(args) -> int:
    from smallseg.data.recipe import generate_nuclei_split

    return _generate(args, generate_nuclei_split, "image", height=args.size[0], width=args.size[1],
                     mean_diameter_px=args.diameter_px, dtype=args.dtype, cluster_fraction=args.cluster_fraction,
                     out_of_focus_fraction=args.out_of_focus)


def _run_synth_recipe(args) -> int:
    from smallseg.data.recipe import generate_from_recipe

    require_at_least(1, limit=args.limit)
    with errors_as_flags(_RECIPE_FLAGS):
        generate_from_recipe(args.recipe, args.out, kinds=args.kind, splits=args.split, limit=args.limit,
                             progress=print)
    print(f"done: {args.out}")
    return 0

