"""Write synthetic datasets to disk: one generator, a first seed and a count per split, from a YAML recipe.

Item ``i`` of a split uses seed ``seed + i``. A parameter given as a list cycles over the items (item ``i``
takes element ``i % len``), which is how one split mixes pixel sizes, densities or collars. The recipe
(``datasets/synthetic.yaml``) looks like::

    remote_sensing:
      params: {height: 1024, width: 1024, pixel_size_m: [0.3, 0.5, 0.8]}   # shared by all splits
      splits:
        train: {seed: 100000, count: 32}
        val:   {seed: 200000, count: 8, nodata_collar: true}                # overrides per split
    ct:      {params: {...}, splits: {...}}
    nuclei:  {params: {...}, splits: {...}}

Output layout under ``out_dir``::

    remote_sensing/<split>/scene_<seed>_{image,instances,classes}.tif, scene_<seed>_objects.csv
    remote_sensing/<split>/coco/annotations.json + coco/images/   (tiles of every scene of the split)
    ct/<split>/case_<seed>/dicom/slice_0001.dcm..., labels.nii.gz, nodules.json, nodules.csv
    nuclei/<split>/nuclei_<seed>_{image,labels}.tif, nuclei_<seed>_nuclei.csv
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import yaml

from smallseg.data.coco_json import merge_coco_datasets, write_coco_tiles
from smallseg.data.medical import make_ct_volume, write_ct_case
from smallseg.data.microscopy import make_nuclei_image, write_nuclei_image
from smallseg.data.remote_sensing import write_remote_sensing_scene
from smallseg.errors import SmallsegError, one_line

KINDS = ("remote_sensing", "ct", "nuclei")

_RS_PARAMS = {"height", "width", "pixel_size_m", "bands", "dtype", "nodata_collar", "crs", "density",
              "window_px", "coco_tile_px", "coco_overlap_px"}
_CT_PARAMS = {"size_xyz", "spacing_mm", "nodule_count", "diameter_range_mm", "ellipsoid_fraction",
              "ground_glass_fraction", "noise_hu"}
_NUCLEI_PARAMS = {"height", "width", "mean_diameter_px", "nuclei_count", "cluster_fraction",
                  "out_of_focus_fraction", "dtype", "photons_per_unit", "read_noise"}
_PARAMS = {"remote_sensing": _RS_PARAMS, "ct": _CT_PARAMS, "nuclei": _NUCLEI_PARAMS}


# Parameters whose value is itself a list (a size, a spacing, a range): these cycle only when given as a
# list of lists.
_VECTOR_PARAMS = {"size_xyz", "spacing_mm", "diameter_range_mm"}


def _item_params(params: dict, i: int) -> dict:
    """The parameters of item ``i``: list values cycle (element ``i % len``), scalars are shared."""
    out = {}
    for key, value in params.items():
        if key in _VECTOR_PARAMS:
            out[key] = tuple(value[i % len(value)]) if value and isinstance(value[0], list) else tuple(value)
        else:
            out[key] = value[i % len(value)] if isinstance(value, list) else value
    return out


def generate_remote_sensing_split(out_dir: str | os.PathLike, *, seed: int, count: int,
                                  progress: Callable[[str], None] | None = None, **params) -> list[Path]:
    """Write ``count`` remote-sensing scenes (seeds ``seed..seed+count-1``) and one COCO JSON of their tiles.

    Args:
        out_dir: split folder.
        seed, count: first seed and number of scenes.
        params: :func:`smallseg.data.remote_sensing.write_remote_sensing_scene` options (lists cycle over
            scenes), plus ``coco_tile_px`` (0 = no COCO tiles, default 512) and ``coco_overlap_px`` (64).

    Returns:
        Paths of the scenes' image GeoTIFFs.
    """
    out_dir = Path(out_dir)
    written, coco_parts = [], []
    for i in range(count):
        p = _item_params(params, i)
        tile = int(p.pop("coco_tile_px", 512))
        overlap = int(p.pop("coco_overlap_px", 64))
        height, width = int(p.pop("height", 1024)), int(p.pop("width", 1024))
        paths = write_remote_sensing_scene(out_dir / f"scene_{seed + i}", height, width, seed=seed + i, **p)
        written.append(paths.image)
        if tile:
            coco_parts.append(write_coco_tiles(paths.image, paths.instances, paths.classes, out_dir / "coco",
                                               tile_size_px=tile, overlap_px=min(overlap, tile - 1),
                                               json_name=f"scene_{seed + i}.json"))
        if progress:
            progress(f"remote_sensing {out_dir.name}: scene {i + 1}/{count} (seed {seed + i})")
    if coco_parts:
        merge_coco_datasets(coco_parts, out_dir / "coco" / "annotations.json")
        for part in coco_parts:
            part.unlink()
    return written


def generate_ct_split(out_dir: str | os.PathLike, *, seed: int, count: int,
                      progress: Callable[[str], None] | None = None, **params) -> list[Path]:
    """Write ``count`` CT cases (DICOM series + NIfTI labels + nodule tables), seeds ``seed..``.

    Args:
        params: :func:`smallseg.data.medical.make_ct_volume` options (lists of vectors cycle over cases).

    Returns:
        The case folders.
    """
    out_dir = Path(out_dir)
    cases = []
    for i in range(count):
        case_dir = out_dir / f"case_{seed + i}"
        if case_dir.exists():
            shutil.rmtree(case_dir)  # a re-run replaces the case whole (DICOM writer refuses non-empty)
        volume = make_ct_volume(seed=seed + i, **_item_params(params, i))
        write_ct_case(volume, case_dir, seed=seed + i)
        cases.append(case_dir)
        if progress:
            progress(f"ct {out_dir.name}: case {i + 1}/{count} (seed {seed + i}, {len(volume.nodules)} nodules)")
    return cases


def generate_nuclei_split(out_dir: str | os.PathLike, *, seed: int, count: int,
                          progress: Callable[[str], None] | None = None, **params) -> list[Path]:
    """Write ``count`` nuclei images with label TIFFs, seeds ``seed..``.

    Args:
        params: :func:`smallseg.data.microscopy.make_nuclei_image` options (lists cycle over images).

    Returns:
        Paths of the image TIFFs.
    """
    out_dir = Path(out_dir)
    written = []
    for i in range(count):
        p = _item_params(params, i)
        height, width = int(p.pop("height", 256)), int(p.pop("width", 256))
        item = make_nuclei_image(height, width, seed=seed + i, **p)
        written.append(write_nuclei_image(item, out_dir / f"nuclei_{seed + i}")["image"])
        if progress and ((i + 1) % 10 == 0 or i + 1 == count):
            progress(f"nuclei {out_dir.name}: {i + 1}/{count} images")
    return written


_GENERATORS = {"remote_sensing": generate_remote_sensing_split, "ct": generate_ct_split,
               "nuclei": generate_nuclei_split}


def load_recipe(path: str | os.PathLike) -> dict:
    """Read and check a recipe: known kinds and parameters, a seed and count per split, disjoint seed ranges.

    Returns:
        ``{kind: {split: {"seed", "count", **params}}}`` with shared params merged into each split.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SmallsegError(f"{path}: cannot read the recipe ({one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise SmallsegError(f"{path}: a recipe is a mapping of {', '.join(KINDS)}")
    out: dict = {}
    for kind, spec in raw.items():
        if kind not in KINDS:
            raise SmallsegError(f"{path}: unknown generator {kind!r}; use {', '.join(KINDS)}")
        shared = dict(spec.get("params") or {})
        splits = spec.get("splits") or {}
        if not splits:
            raise SmallsegError(f"{path}: {kind} has no splits")
        ranges = []
        out[kind] = {}
        for split, entry in splits.items():
            entry = dict(entry or {})
            if "seed" not in entry or "count" not in entry:
                raise SmallsegError(f"{path}: {kind}.{split} needs a seed and a count")
            params = {**shared, **{k: v for k, v in entry.items() if k not in ("seed", "count")}}
            unknown = set(params) - _PARAMS[kind]
            if unknown:
                raise SmallsegError(f"{path}: {kind}.{split}: unknown parameter(s) {sorted(unknown)}; "
                                    f"known: {sorted(_PARAMS[kind])}")
            seed, count = int(entry["seed"]), int(entry["count"])
            for other, (s0, c0) in ranges:
                if seed < s0 + c0 and s0 < seed + count:
                    raise SmallsegError(f"{path}: {kind}.{split} seeds {seed}..{seed + count - 1} overlap "
                                        f"{kind}.{other}; give each split its own seed range")
            ranges.append((split, (seed, count)))
            out[kind][split] = {"seed": seed, "count": count, **params}
    return out


def generate_from_recipe(
    recipe_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kinds: list[str] | None = None,
    splits: list[str] | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[Path]]]:
    """Generate the datasets a recipe describes.

    Args:
        recipe_path: YAML recipe (see module docstring).
        out_dir: root output folder.
        kinds: only these generators (default all in the recipe).
        splits: only these splits (default all).
        limit: at most this many items per split (a quick smoke run; seeds are unchanged).
        progress: called with one line per finished item.

    Returns:
        ``{kind: {split: [written paths]}}``. Also writes ``<out_dir>/recipe.json`` (the resolved recipe).
    """
    recipe = load_recipe(recipe_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in kinds or []:
        if name not in recipe:
            raise SmallsegError(f"kinds {name}: not in {recipe_path} (it has {', '.join(recipe)})")
    result: dict = {}
    for kind, kind_splits in recipe.items():
        if kinds and kind not in kinds:
            continue
        for split, entry in kind_splits.items():
            if splits and split not in splits:
                continue
            params = dict(entry)
            seed, count = params.pop("seed"), params.pop("count")
            if limit is not None:
                count = min(count, limit)
            written = _GENERATORS[kind](out_dir / kind / split, seed=seed, count=count, progress=progress, **params)
            result.setdefault(kind, {})[split] = written
    (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    return result
