"""Slice-wise prediction of a medical volume, linked into 3-D objects measured in millimetres.

The flow, one axial slice at a time (only the previous slice's labels are kept for linking)::

    Volume (Z, Y, X) ─normalisation (fitted once on the whole volume)─▶ model-input slices
        ─predict_array (tiled, stitched)─▶ 2-D Instances per slice
        ─link_slices (same class, overlap ≥ threshold, one-to-one)─▶ (Z, Y, X) uint32 labels + object table

Intensities. One :class:`~smallseg.normalize.Normalization` per volume (:func:`choose_volume_normalization`),
fitted *once* on the whole volume and applied to every slice (and every tile), so neighbouring slices and tiles
share one mapping. It is, first found: an explicit ``preset`` (``lung``, ``soft_tissue``, ..., ``percentile``,
``raw``: the mapping, then the model's mean/std); ``normalize=`` / ``percentiles=`` (``percentile``, ``fixed``,
``none``); what the checkpoint declares for the volume's modality (the shipped medical model: the -1350..150 HU
lung window for CT, per-volume 1-99.5 % percentiles otherwise), else its declared default; for checkpoints that
declare nothing, the legacy preset (``config.training["intensity_preset"]``, else ``lung`` for CT and
``percentile`` otherwise) in front of ``input_scale`` / ``norm_mean`` / ``norm_std`` - the input those
checkpoints always saw.

Linking. A 2-D object in slice ``z`` continues a 3-D object of slice ``z - 1`` when both have the same class and
their masks overlap by at least ``link_min_overlap`` of the *smaller* mask (intersection over smaller: the
cross-sections of a sphere shrink towards its poles, so IoU would cut a nodule's cap off). Candidate pairs are
accepted greedily, largest overlap first (ties: larger intersection, then lower ids), each object taking at most
one partner on each side: the result does not depend on anything but the slice labels. New 3-D ids are given in
order of first appearance (slice, then the slice's id order) and are dense ``1..N``.

Measurements per 3-D object (all from the voxels of the final label volume):

- ``voxels``; ``volume_mm3`` = voxels x voxel volume (for 2-D images ``area_mm2`` = pixels x pixel area);
- ``equivalent_diameter_mm``: diameter of the sphere (2-D: circle) of that volume (area);
- ``centroid_lps_mm``: :func:`~smallseg.io.medical.index_to_lps_mm` of the mean voxel-centre index;
- ``score``: the voxel-weighted mean of its 2-D objects' scores (a big confident cross-section counts more than
  a faint cap); ``max_slice_score`` is kept too;
- ``slice_range`` (first, last slice, inclusive) and the half-open voxel bounding box.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.medical import IntensityPreset, Volume, get_preset, index_to_lps_mm
from smallseg.io.tables import VolumeObjects
from smallseg.models.config import slice_indices
from smallseg.models.registry import resolve_device
from smallseg.models.tta import with_tta
from smallseg.normalize import Normalization, NormStats, choose_normalization, normalizations_of
from smallseg.pipeline.array import decode_config_for, predict_array
from smallseg.pipeline.classes import keep_classes, modality_classes
from smallseg.pipeline.options import RAW_PRESET, PredictOptions, VolumeOptions
from smallseg.tiling.grid import overlap_for

__all__ = [
    "RAW",
    "VolumeObjects",
    "VolumeOptions",
    "VolumePrediction",
    "choose_preset",
    "choose_volume_normalization",
    "normalization_record",
    "link_slices",
    "predict_volume",
]

RAW = RAW_PRESET  # preset name: feed raw values to config.normalise, no intensity mapping
DEFAULT_CT_PRESET = "lung"
DEFAULT_OTHER_PRESET = "percentile"


# --------------------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class VolumePrediction:
    """Objects found in a volume.

    Attributes:
        labels: (Z, Y, X) (or (Y, X) for a 2-D image) uint32 object ids, 0 = background, on ``volume``'s grid.
        objects: the per-object table (row ``i`` is label value ``objects.ids[i]``).
        volume: the input; its spacing, origin and direction are the labels' geometry.
        window: the resolved intensity window the slices were mapped with (``None`` for ``preset="raw"``).
        preset_source: where the preset came from (``"argument"``, ``"checkpoint"``, ``"default for CT"``...).
        warnings: the volume's reading warnings (missing slices, uneven spacing...).
        decode: the decoding settings used (the model's, for the volume's modality, plus overrides).
        normalization: the :class:`~smallseg.normalize.Normalization` every slice was given to the model with.
        norm_stats: its stats, fitted once on the whole volume (``norm_stats.reliable`` is False for a
            constant or empty volume).
        options: the settings it was predicted with.
    """

    labels: np.ndarray
    objects: VolumeObjects
    volume: Volume
    window: IntensityPreset | None
    preset_source: str
    warnings: list[str] = field(default_factory=list)
    decode: DecodeConfig | None = None
    normalization: Normalization | None = None
    norm_stats: NormStats | None = None
    options: VolumeOptions | None = None


# --------------------------------------------------------------------------------------------------------------
# Intensity preset
# --------------------------------------------------------------------------------------------------------------


def choose_preset(volume: Volume, model: torch.nn.Module | None,
                  preset: IntensityPreset | str | None = None) -> tuple[IntensityPreset | None, str]:
    """The intensity preset for ``volume``, resolved to a fixed window on the whole volume.

    Args:
        volume: the image (its modality picks the default).
        model: a SmallObjectNet; ``model.config.training["intensity_preset"]`` is used when present.
        preset: an :class:`IntensityPreset`, a name from ``PRESETS`` (``lung``, ``soft_tissue``, ...,
            ``percentile``), ``"raw"``, or ``None`` (checkpoint's, else the modality default).

    Returns:
        (window preset with fixed ``low``/``high`` in the volume's units, or ``None`` for raw; where it came from).
    """
    source = "argument"
    if preset is None:
        training = getattr(getattr(model, "config", None), "training", None) or {}
        stored = training.get("intensity_preset")
        if stored is not None:
            if isinstance(stored, str):
                preset = stored
            elif isinstance(stored, dict):
                preset = IntensityPreset.from_dict(stored)
            else:
                raise SmallsegError(f"model config training.intensity_preset: expected a dict or a name, got "
                                    f"{type(stored).__name__}")
            source = "checkpoint"
        elif volume.modality.upper() == "CT":
            preset, source = DEFAULT_CT_PRESET, "default for CT"
        else:
            preset, source = DEFAULT_OTHER_PRESET, f"default for {volume.modality or 'non-CT images'}"
    if isinstance(preset, str):
        if preset == RAW:
            return None, source
        preset = get_preset(preset)
    if not isinstance(preset, IntensityPreset):
        raise SmallsegError(f"preset: expected a preset name or an IntensityPreset, got {type(preset).__name__}")
    # Once, on the whole volume: neighbouring slices and tiles must share one mapping.
    return preset.resolve(volume.array), source


# --------------------------------------------------------------------------------------------------------------
# Linking and measuring
# --------------------------------------------------------------------------------------------------------------


def _link_pairs(prev_labels: np.ndarray, prev_class: np.ndarray, prev_area: np.ndarray, labels: np.ndarray,
                cls: np.ndarray, area: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one links (prev id, id) between two adjacent slices' label images, greedy by overlap.

    ``prev_class``/``cls`` and ``prev_area``/``area`` are lookup arrays indexed by label value.
    """
    both = (prev_labels != 0) & (labels != 0)
    if not both.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = prev_labels[both].astype(np.int64)
    b = labels[both].astype(np.int64)
    stride = int(b.max()) + 1
    codes, inter = np.unique(a * stride + b, return_counts=True)
    a, b = codes // stride, codes % stride
    same = prev_class[a] == cls[b]
    smaller = np.minimum(prev_area[a], area[b])
    overlap = inter / np.maximum(smaller, 1)
    keep = same & (overlap >= min_overlap)
    a, b, inter, overlap = a[keep], b[keep], inter[keep], overlap[keep]
    order = np.lexsort((b, a, -inter, -overlap))  # primary key last: largest overlap first
    used_a: set[int] = set()
    used_b: set[int] = set()
    out_a, out_b = [], []
    for i in order:  # candidates are few (objects that touch across slices): a plain loop is fine
        ai, bi = int(a[i]), int(b[i])
        if ai in used_a or bi in used_b:
            continue
        used_a.add(ai)
        used_b.add(bi)
        out_a.append(ai)
        out_b.append(bi)
    return np.asarray(out_a, np.int64), np.asarray(out_b, np.int64)


def link_slices(slices: Iterable[Instances], like: Volume, *, class_names: list[str] | None = None,
                link_min_overlap: float = 0.5, min_slices: int = 1) -> tuple[np.ndarray, VolumeObjects]:
    """Link per-slice 2-D objects into 3-D objects and measure them in millimetres.

    Args:
        slices: one :class:`Instances` per axial slice of ``like``, in slice order (z = 0, 1, ...), each with
            (Y, X) labels; any ids (a generator keeps one slice alive at a time). A 2-D ``like`` takes exactly
            one.
        like: the volume the slices come from: spatial shape and geometry (spacing, origin, direction).
        class_names: name of class ``k`` at index ``k - 1`` (default ``class_1``, ``class_2``...).
        link_min_overlap: two same-class objects in adjacent slices are one 3-D object when they share at least
            this fraction of the smaller one's pixels (see the module docstring).
        min_slices: drop 3-D objects present in fewer slices.

    Returns:
        (labels (Z, Y, X) / (Y, X) uint32 with dense ids 1..N, the :class:`VolumeObjects` table).
    """
    if not 0.0 < link_min_overlap <= 1.0:
        raise SmallsegError(f"link_min_overlap {link_min_overlap}: must be in (0, 1]")
    if min_slices < 1:
        raise SmallsegError(f"min_slices {min_slices}: must be at least 1")
    is_2d = like.ndim_spatial == 2
    shape = like.spatial_shape
    n_slices, plane = (1, shape) if is_2d else (shape[0], shape[1:])
    labels3d = np.zeros((n_slices, *plane), np.uint32)
    yy, xx = np.indices(plane, dtype=np.float64)

    # One row per 2-D object: its 3-D id and its contribution to the measurements (reduced at the end).
    rows: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("id3", "z", "area", "sy", "sx", "score", "cls", "y0", "x0", "y1", "x1")}
    next_id = 1
    prev = None  # (labels, class lookup, area lookup, 3-D id lookup)
    z = -1
    for z, inst in enumerate(slices):
        if z >= n_slices:
            raise SmallsegError(f"link_slices: more slices than the volume's {n_slices}")
        lab = np.asarray(inst.labels)
        if lab.shape != plane:
            raise SmallsegError(f"link_slices: slice {z} has shape {lab.shape}, the volume's slices are {plane}")
        size = int(lab.max(initial=0)) + 1
        ids = np.asarray(inst.ids, np.int64)
        ids = ids[ids < size]
        flat = lab.ravel().astype(np.int64)
        area = np.bincount(flat, minlength=size)
        cls = np.zeros(size, np.int32)
        score = np.zeros(size, np.float64)
        valid = np.asarray(inst.ids, np.int64) < size
        cls[ids] = np.asarray(inst.class_ids)[valid]
        score[ids] = np.asarray(inst.scores)[valid]
        ids = ids[area[ids] > 0]  # objects with no pixel left (e.g. after stitching) do not exist
        map3d = np.zeros(size, np.int64)
        if prev is not None and len(ids):
            pa, pb = _link_pairs(prev[0], prev[1], prev[2], lab, cls, area, link_min_overlap)
            map3d[pb] = prev[3][pa]
        new = ids[map3d[ids] == 0]
        map3d[new] = np.arange(next_id, next_id + len(new))
        next_id += len(new)
        labels3d[z] = map3d[lab]
        if len(ids):
            sy = np.bincount(flat, weights=yy.ravel(), minlength=size)
            sx = np.bincount(flat, weights=xx.ravel(), minlength=size)
            boxes = ndimage.find_objects(lab.astype(np.int64, copy=False))
            y0 = np.array([boxes[i - 1][0].start for i in ids])
            y1 = np.array([boxes[i - 1][0].stop for i in ids])
            x0 = np.array([boxes[i - 1][1].start for i in ids])
            x1 = np.array([boxes[i - 1][1].stop for i in ids])
            for key, value in (("id3", map3d[ids]), ("z", np.full(len(ids), z)), ("area", area[ids]),
                               ("sy", sy[ids]), ("sx", sx[ids]), ("score", score[ids]), ("cls", cls[ids]),
                               ("y0", y0), ("x0", x0), ("y1", y1), ("x1", x1)):
                rows[key].append(np.asarray(value))
        prev = (lab, cls, area, map3d)
    if z + 1 != n_slices:
        raise SmallsegError(f"link_slices: {z + 1} slices given, the volume has {n_slices}")

    n = next_id - 1
    cols = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in rows.items()}
    idx = cols["id3"].astype(np.int64) - 1
    voxels = np.bincount(idx, weights=cols["area"], minlength=n).astype(np.int64)
    n_slices_per = np.bincount(idx, minlength=n)
    keep = n_slices_per >= min_slices
    # Renumber the kept objects 1..M in order (no-op when nothing is dropped).
    remap = np.zeros(n + 1, np.uint32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    if not keep.all():
        labels3d = remap[labels3d]

    def reduce_sum(col: str) -> np.ndarray:
        return np.bincount(idx, weights=cols[col], minlength=n)

    def reduce(col: str, fn, init) -> np.ndarray:
        out = np.full(n, init, np.float64)
        fn.at(out, idx, cols[col].astype(np.float64))
        return out

    w = np.maximum(voxels, 1)
    cz = np.bincount(idx, weights=cols["z"] * cols["area"], minlength=n) / w
    cy, cx = reduce_sum("sy") / w, reduce_sum("sx") / w
    mean_score = np.bincount(idx, weights=cols["score"] * cols["area"], minlength=n) / w
    max_score = reduce("score", np.maximum, -np.inf)
    class_ids = reduce("cls", np.maximum, 0).astype(np.int32)  # linked objects share one class
    z0, z1 = reduce("z", np.minimum, np.inf), reduce("z", np.maximum, -np.inf)
    y0, x0 = reduce("y0", np.minimum, np.inf), reduce("x0", np.minimum, np.inf)
    y1, x1 = reduce("y1", np.maximum, -np.inf), reduce("x1", np.maximum, -np.inf)

    k = keep
    voxel_volume = like.voxel_volume_mm3
    names = list(class_names or [])
    name_of = [names[c - 1] if 0 < c <= len(names) else f"class_{c}" for c in class_ids[k].tolist()]
    if is_2d:
        labels_out = labels3d[0]
        centroid_index = np.stack([cy[k], cx[k]], axis=1)
        area_mm2 = voxels[k] * voxel_volume
        volume_mm3 = None
        diameter = 2.0 * np.sqrt(area_mm2 / math.pi)
        bbox = np.stack([y0[k], x0[k], y1[k], x1[k]], axis=1).astype(np.int64)
        slice_range = np.zeros((int(k.sum()), 2), np.int64)
    else:
        labels_out = labels3d
        centroid_index = np.stack([cz[k], cy[k], cx[k]], axis=1)
        volume_mm3 = voxels[k] * voxel_volume
        area_mm2 = None
        diameter = np.cbrt(6.0 * volume_mm3 / math.pi)
        slice_range = np.stack([z0[k], z1[k]], axis=1).astype(np.int64)
        bbox = np.stack([z0[k], y0[k], x0[k], z1[k] + 1, y1[k], x1[k]], axis=1).astype(np.int64)
    centroid_lps = (index_to_lps_mm(like, centroid_index) if len(centroid_index)
                    else np.zeros((0, like.ndim_spatial)))
    table = VolumeObjects(
        ids=np.arange(1, int(k.sum()) + 1, dtype=np.int64),
        class_ids=class_ids[k],
        class_names=name_of,
        scores=mean_score[k].astype(np.float32),
        max_slice_scores=max_score[k].astype(np.float32),
        voxels=voxels[k],
        volume_mm3=volume_mm3,
        area_mm2=area_mm2,
        equivalent_diameter_mm=diameter,
        centroid_index=centroid_index,
        centroid_lps_mm=np.asarray(centroid_lps, np.float64).reshape(-1, like.ndim_spatial),
        slice_range=slice_range,
        bbox=bbox,
    )
    return labels_out, table


def choose_volume_normalization(volume: Volume, model: torch.nn.Module, preset: IntensityPreset | str | None = None,
                                normalize: str | Normalization | None = "model",
                                percentiles: tuple[float, float] | None = None
                                ) -> tuple[Normalization, NormStats, IntensityPreset | None, str]:
    """The normalisation of ``volume`` for ``model``, fitted once on the whole volume.

    First that applies: an explicit ``preset`` (the legacy presets, with the model's mean/std after them); a
    ``normalize`` other than ``"model"`` or ``percentiles`` (:func:`~smallseg.normalize.choose_normalization`);
    what the checkpoint declares for the volume's modality, else its default; else (a checkpoint that declares
    nothing) the legacy preset of :func:`choose_preset` in front of ``input_scale``/``norm_mean``/``norm_std``.

    Returns:
        (normalisation, its stats on the volume, the equivalent resolved window for reports or None, where the
        choice came from).
    """
    config = model.config
    modality = volume.modality or None
    declared_default, declared_by = normalizations_of(config)
    declared = declared_default is not None or (modality or "").upper() in declared_by
    if preset is None and declared and normalize in (None, "model") and percentiles is None:
        norm, source = choose_normalization(config, "model", modality=modality), "checkpoint"
    elif preset is None and (normalize not in (None, "model") or percentiles is not None):
        choice = "percentile" if normalize in (None, "model") else normalize
        norm, source = choose_normalization(config, choice, percentiles=percentiles, modality=modality), "argument"
    else:  # an explicit preset, or a checkpoint that declares nothing: the presets as they always were
        window, source = choose_preset(volume, model, preset)
        if window is None:  # raw
            norm = choose_normalization(config, "fixed")
        else:
            mean_std = choose_normalization(config, "fixed")
            norm = Normalization.from_legacy_config(config.input_scale, mean_std.mean, mean_std.std, preset=window)
    array = volume.array
    if array.ndim == volume.ndim_spatial + 1:  # trailing channel axis
        array = np.moveaxis(array, -1, 0)
    else:
        array = array[None]
    # Once, on the whole volume: neighbouring slices and tiles share one mapping.
    stats = norm.fit(array)
    window = None
    if norm.kind == "percentile" and stats.lo is not None and len(stats.lo) == 1 and stats.hi[0] > stats.lo[0]:
        window = IntensityPreset.window(stats.lo[0], stats.hi[0], name=norm.name)
    elif norm.kind == "window" and len(norm.windows) == 1:
        c, w = norm.windows[0]
        window = IntensityPreset.window(c - w / 2.0, c + w / 2.0, name=norm.name)
    return norm, stats, window, source


def normalization_record(prediction: "VolumePrediction") -> dict | None:
    """What a volume was normalised with, JSON-able (``done.json``): the normalisation, its fitted stats."""
    if prediction.normalization is None:
        return None
    stats = prediction.norm_stats
    return {"applied": prediction.normalization.to_dict(), "described": prediction.normalization.describe(),
            "stats": stats.to_dict() if stats is not None else None,
            "reliable": stats.reliable if stats is not None else True}


# --------------------------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------------------------


def slice_input(volume: Volume, z: int, slice_context: int = 0) -> np.ndarray:
    """The model input for axial slice ``z``: (C, Y, X), its bands, or with ``slice_context = k`` the bands of
    slices ``z - k .. z + k`` in that order (indices clamped to the volume: the end slices repeat), as a
    2.5-D model (``ModelConfig.slice_context``) was trained. A 2-D image is its own only slice."""
    is_2d = volume.ndim_spatial == 2
    n_slices = 1 if is_2d else volume.spatial_shape[0]
    planes = []
    for i in slice_indices(z, slice_context, n_slices):
        plane = volume.array if is_2d else volume.array[i]
        planes.append(np.moveaxis(plane, -1, 0) if plane.ndim == 3 else plane[None])
    return planes[0] if len(planes) == 1 else np.concatenate(planes, axis=0)


def repeated_stats(stats: NormStats, slices: int) -> NormStats:
    """Per-band normalisation stats of a volume repeated for each of the ``slices`` slices of one input."""
    if slices == 1:
        return stats
    rep = (lambda v: None if v is None else tuple(v) * slices)  # noqa: E731
    return replace(stats, lo=rep(stats.lo), hi=rep(stats.hi), degenerate=tuple(stats.degenerate) * slices,
                   reasons=tuple(stats.reasons) * slices)


def _slice_tile_size(model: torch.nn.Module, plane: tuple[int, int], tile_size_px: int | None) -> int | None:
    """A slice smaller than the model's tile is predicted as one tile of the slice's size (rounded up to 32),
    not padded to the full training tile: same result region, a fraction of the compute."""
    if tile_size_px is not None:
        return tile_size_px
    config = model.config
    side = 32 * math.ceil(max(plane) / 32)
    if side < config.tile_size_px and overlap_for(config.max_distance_px) < side:
        return side
    return None


def predict_volume(volume: Volume, model: torch.nn.Module, options: VolumeOptions | None = None,
                   **overrides) -> VolumePrediction:
    """Find objects in a volume slice by slice (2-D model) and link them into 3-D objects.

    Settings come as a :class:`~smallseg.pipeline.options.VolumeOptions` or as its fields by keyword (on top of
    ``options``), as for :func:`~smallseg.pipeline.array.predict_array`: ``predict_volume(ct, model,
    preset="lung", min_slices=2, tta="flips")``.

    Args:
        volume: a (Z, Y, X) volume (axial slices are predicted) or a (Y, X) 2-D image, optionally with a
            trailing channel axis; e.g. from :func:`smallseg.io.medical.read_volume`.
        model: a SmallObjectNet whose ``config.in_channels`` equals the volume's channels (1 for CT/MR).
        options: intensity mapping (``preset`` or ``normalize`` / ``percentiles``, see the module docstring),
            linking (``min_slices``, ``link_min_overlap``, ``by_modality``: keep only the classes the model has
            for the volume's modality, :func:`modality_classes`; CT objects of the shipped medical model are
            nodules, never nuclei) and each slice's prediction settings (tiling, batch, device, ``decode`` on
            top of the model's settings for the volume's modality, ``tta``); see
            :class:`~smallseg.pipeline.options.VolumeOptions`.
        **overrides: fields of :class:`~smallseg.pipeline.options.VolumeOptions`.

    Returns:
        :class:`VolumePrediction`: uint32 labels on the volume's grid and the per-object table (mm, LPS).
    """
    options = VolumeOptions.build(options, "predict_volume", **overrides)
    if options.min_slices is None:  # the model's own (a CT model drops one-slice vessel blips), else 1
        options = replace(options, min_slices=int(model.config.training.get("volume_min_slices", 1)))
    if options.modality is not None and options.modality != (volume.modality or "").upper():
        volume = replace(volume, modality=options.modality)
    config = model.config
    channels = volume.array.shape[-1] if volume.array.ndim == volume.ndim_spatial + 1 else 1
    if channels != config.bands_per_slice:
        where = f"series {volume.series_uid}" if volume.series_uid else "volume"
        context = (f" per slice (with its {2 * config.slice_context} neighbouring slices: {config.in_channels})"
                   if config.slice_context else "")
        raise SmallsegError(f"{where}: {channels} channel(s) but the model expects {config.bands_per_slice}"
                            f"{context}; use a model trained on {channels}-channel images")
    norm, stats, window, source = choose_volume_normalization(volume, model, options.preset, options.normalize,
                                                              options.percentiles)
    stats = repeated_stats(stats, config.slices_per_input)
    decode = decode_config_for(model, options.decode_overrides(), modality=volume.modality or None)
    if options.device is not None:
        model = model.to(resolve_device(options.device))
    # Wrapped once for every slice (with_tta(None) is the model itself).
    run_model = with_tta(model, options.tta).eval()
    is_2d = volume.ndim_spatial == 2
    n_slices = 1 if is_2d else volume.spatial_shape[0]
    plane = volume.spatial_shape[-2:]
    # Each slice: the volume's normalisation, stats and decoding settings (a slice is never re-fitted on itself).
    per_slice = PredictOptions(tile_size_px=_slice_tile_size(model, plane, options.tile_size_px),
                               overlap_px=options.overlap_px, batch_size=options.batch_size, amp=options.amp,
                               decode_workers=options.decode_workers, decode=decode, normalize=norm,
                               by_modality=False)  # applied below, per slice, with the volume's modality

    def slice_instances():
        for z in tqdm(range(n_slices), desc="slices", disable=not options.progress, leave=False):
            raw = slice_input(volume, z, config.slice_context)  # (C, Y, X) for predict_array
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", UserWarning)  # reliability is said once, below
                found = predict_array(raw, run_model, per_slice, norm_stats=stats)
            yield found if allowed is None else keep_classes(found, allowed, relabelled)

    # Classes that do not exist in this modality (a "nucleus" in CT): the object is real foreground, its class
    # head is confused by the other domain; with one class for the modality it takes that class.
    allowed = modality_classes(config, volume.modality) if options.by_modality else None
    relabelled = [0]
    labels, objects = link_slices(slice_instances(), volume, class_names=config.class_names,
                                  link_min_overlap=options.link_min_overlap, min_slices=options.min_slices)
    warnings = list(volume.warnings)
    if relabelled[0]:
        names = " or ".join(config.class_names[c - 1] for c in allowed)
        action = f"relabelled {names}" if len(allowed) == 1 else "dropped"
        warnings.append(f"{relabelled[0]} slice object(s) of another class {action} (the model's class for "
                        f"{volume.modality or 'images without a modality'}: {names})")
    if options.min_slices > n_slices:
        warnings.append(f"{n_slices} slice(s), fewer than min_slices={options.min_slices}: no object can be kept")
    if not stats.reliable:
        warnings.append(f"not reliable: {stats.reason}")
    return VolumePrediction(labels=labels, objects=objects, volume=volume, window=window, preset_source=source,
                            warnings=warnings, decode=decode, normalization=norm, norm_stats=stats,
                            options=options)
