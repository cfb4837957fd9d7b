"""Tiled prediction of one in-memory 2D image: tiles → model → decode → exact stitching.

The pieces compose in one direction (see ``DESIGN.md``)::

    image ─tile_windows─▶ tile batches ─model─▶ head maps ─decode_outputs─▶ Instances per tile
          ─RowStitcher (core ownership)─▶ scene Instances + object table

:func:`predict_tile_row` is the unit the GeoTIFF and volume pipelines share: it takes one tile row of
raw pixels and returns one decoded :class:`~smallseg.instances.Instances` per tile. :func:`predict_array`
runs it over a whole in-memory image, with its settings in a :class:`~smallseg.pipeline.options.PredictOptions`.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from smallseg.decode.centroids import DecodeConfig
from smallseg.decode.components import decode_outputs
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.normalize import Normalization, NormStats, choose_normalization
from smallseg.models.registry import resolve_device
from smallseg.models.tta import with_tta
from smallseg.pipeline.classes import keep_classes, modality_classes
from smallseg.pipeline.options import PredictOptions
from smallseg.tiling.grid import Tile, TileGrid, overlap_for, tile_windows
from smallseg.tiling.stitch import stitch_instances


# Input pixels of one forward pass on a CPU at most (4 tiles of 256²): see predict_tile_row.
CPU_PASS_PX = 4 * 256 * 256


@dataclass(frozen=True)
class TilingPlan:
    """Tile size and overlap used for a prediction, and why (goes into run reports)."""

    tile_size_px: int
    overlap_px: int
    overlap_reason: str


def plan_tiling(
    model: torch.nn.Module,
    tile_size_px: int | None = None,
    overlap_px: int | None = None,
    decode: DecodeConfig | None = None,
) -> TilingPlan:
    """Tile size (default: the model's training tile) and overlap (default: enough for its largest object).

    The default overlap is ``overlap_for(max_distance_px + margin)``: the model's centroid normaliser covers
    the largest object radius, and ownership goes by the *reported* centroid, which for centroid voting is
    the mean of the votes and may sit up to about ``decode.max_vote_error_px`` from the object's centre
    (``margin``; 0 without ``decode`` or for models without a centroid head). Then every object lies wholly
    inside the tile whose core holds its reported centroid.
    """
    config = model.config
    tile = int(tile_size_px or config.tile_size_px)
    if overlap_px is None:
        margin = float(decode.max_vote_error_px) if decode is not None and "centroid" in config.heads else 0.0
        overlap = overlap_for(config.max_distance_px + margin)
        reason = f"2 x model max_distance_px ({config.max_distance_px:g} px)"
        if margin:
            reason += f" + 2 x centroid vote error ({margin:g} px)"
    else:
        overlap, reason = int(overlap_px), "set by the user"
    if tile < 16:
        raise SmallsegError(f"tile size {tile} px: use at least 16 px")
    if not 0 <= overlap < tile:
        raise SmallsegError(
            f"overlap {overlap} px ({reason}) must be smaller than the tile size {tile} px; use a larger tile_size_px"
        )
    return TilingPlan(tile, overlap, reason)


def decode_config_for(model: torch.nn.Module, overrides: DecodeConfig | dict | None = None, *,
                      modality: str | None = None) -> DecodeConfig:
    """Decoding settings: the ones stored with the model at training time, then those it stores for
    ``modality`` (e.g. ``"CT"``: ``training["decode_by_modality"]``, written by ``tune-decode --modality``),
    then ``overrides``.

    One model serving two modalities (nuclei in microscopy and nodules in CT, say) is calibrated differently
    on each: thresholds tuned on one can suppress every object of the other.
    """
    config = model.config
    if isinstance(overrides, DecodeConfig):
        return overrides
    training = config.training or {}
    stored = dict(training.get("decode") or {})
    if modality:
        stored.update(decode_settings_for_modality(training, modality))
    stored["max_distance_px"] = config.max_distance_px
    stored.update(overrides or {})
    known = set(DecodeConfig.__dataclass_fields__)
    return DecodeConfig(**{k: v for k, v in stored.items() if k in known})


def decode_settings_for_modality(training: dict, modality: str) -> dict:
    """The decode settings a checkpoint's ``training`` section stores for ``modality`` (case-insensitive;
    ``{}`` when none)."""
    by_modality = training.get("decode_by_modality") or {}
    return dict(next((v for k, v in by_modality.items() if k.upper() == modality.strip().upper()), {}) or {})


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass(frozen=True)
class TileModel:
    """What turns a tile row's raw pixels into decoded objects, the same for every row of a scene.

    Attributes:
        model: a SmallObjectNet (or its TTA wrapper; ``model.config`` gives the legacy normalisation).
        decode: decoding settings.
        batch_size: tiles per forward pass (on a CPU at most 4 x 256² px per pass: larger passes are slower
            per pixel there; see ``pipeline.array.CPU_PASS_PX``).
        amp: float16 autocast (CUDA only).
        norm, norm_stats: the scene's :class:`~smallseg.normalize.Normalization` and the stats it was fitted
            to on the *whole* scene (every tile row gets the same ones, so tiling stays exact). None: the
            checkpoint's legacy ``config.normalise`` (``input_scale``, ``norm_mean``, ``norm_std``).
    """

    model: torch.nn.Module
    decode: DecodeConfig
    batch_size: int = 4
    amp: bool = False
    norm: Normalization | None = None
    norm_stats: NormStats | None = None


def predict_tile_row(band: np.ndarray, band_valid: np.ndarray | None, tiles: list[Tile], band_row0: int,
                     run: TileModel, decode_executor: Executor | None = None,
                     soft_out: list | None = None) -> list[Instances]:
    """Predict and decode the tiles of one tile row.

    Args:
        band: (C, tile_h, W_band) raw pixel values of the tile row's window (full scene width, padded
            at the bottom/right where the scene is smaller than a tile).
        band_valid: (tile_h, W_band) bool, False on nodata / padding (those pixels never belong to an
            object), or None if every pixel is valid.
        tiles: the tile row's tiles (their windows give the columns to cut).
        band_row0: scene row of ``band[:, 0]``.
        run: the model, decoding, batching and normalisation (:class:`TileModel`).
        decode_executor: decode each batch there (e.g. a one-thread ``ThreadPoolExecutor``) while the next
            batch goes through the model; same results, the model waits less. None: decode in line.
        soft_out: a list that gets each tile's soft map (:func:`soft_map`, (tile_h, tile_w) float32, NaN on
            invalid pixels), in tile order, for sub-pixel outlines; None: not kept.

    Returns:
        One Instances per tile, in tile pixel coordinates; labels uint8 or uint16 when the tile's ids fit
        (a tile row of a wide scene is held while it is stitched), else as decoded.
    """
    model, decode, batch_size, amp, norm, norm_stats = (run.model, run.decode, run.batch_size, run.amp, run.norm,
                                                        run.norm_stats)
    config = model.config
    device = model_device(model)

    def model_input(tile: Tile) -> np.ndarray:
        r0 = int(tile.window.row_off) - band_row0
        c0 = int(tile.window.col_off)
        raw = band[:, r0:r0 + int(tile.window.height), c0:c0 + int(tile.window.width)]
        x = config.normalise(raw) if norm is None else norm.apply(raw, norm_stats)
        if band_valid is not None:
            # Nodata/padding becomes the training mean (0 after normalisation): no made-up edges.
            valid = band_valid[r0:r0 + x.shape[1], c0:c0 + x.shape[2]]
            x[:, ~valid] = 0.0
        return x

    if device.type == "cpu" and tiles:
        # On a CPU a forward pass larger than ~2.6e5 px is slower per pixel (activations leave the caches):
        # +40 % at 768²-1024² px per pass, measured by benchmarks/bench_tile_size.py; the results are the same.
        side = int(tiles[0].window.height) * int(tiles[0].window.width)
        batch_size = max(1, min(batch_size, CPU_PASS_PX // max(side, 1)))
    results: list[Instances] = []
    decoding: list[Future] = []
    with torch.inference_mode():
        for start in range(0, len(tiles), batch_size):
            # Normalised per batch, not per tile row: float copies of a wide scene's whole row add up.
            batch = torch.from_numpy(np.stack([model_input(t) for t in tiles[start:start + batch_size]])).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                outputs = model(batch)
            outputs = {k: v.float() for k, v in outputs.items()}
            if soft_out is not None:
                soft_out.extend(soft_map(outputs))
            if decode_executor is None:
                results.extend(_decode_narrow(outputs, decode))
            else:
                decoding.append(decode_executor.submit(_decode_narrow, outputs, decode))
    for future in decoding:
        results.extend(future.result())
    if band_valid is not None:
        for i, tile in enumerate(tiles):
            r0 = int(tile.window.row_off) - band_row0
            c0 = int(tile.window.col_off)
            valid = band_valid[r0:r0 + int(tile.window.height), c0:c0 + int(tile.window.width)]
            if not valid.all():
                results[i] = drop_invalid(results[i], valid)
                if soft_out is not None:
                    soft_out[len(soft_out) - len(tiles) + i][~valid] = np.nan
    return results


def soft_map(outputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Each tile's soft map for sub-pixel outlines (issue #17), edge at 0.5: the boundary head's signed
    distance + 0.5 (the map the decoder re-places edges with, :mod:`smallseg.decode.refine`). Only that head
    says where an edge is: a model's foreground probability crosses 0.5 where its decoder does not put edges."""
    if "boundary" not in outputs:
        raise SmallsegError("sub-pixel outlines need the model's boundary head (boundary_head 'signed_distance')")
    return list((outputs["boundary"][:, 0] + 0.5).cpu().numpy().astype(np.float32))


def _decode_narrow(outputs: dict[str, torch.Tensor], decode: DecodeConfig) -> list[Instances]:
    """:func:`decode_outputs`, each tile's labels in the narrowest unsigned type that holds its ids.

    A tile row of a wide scene is decoded before it is stitched (and the next one while the previous is
    stitched): at int32 its labels were the largest part of the pipeline's per-column memory.
    """
    found = decode_outputs(outputs, decode)
    for inst in found:
        top = int(inst.labels.max()) if inst.labels.size else 0
        if inst.labels.min(initial=0) >= 0 and top < 2**16:
            inst.labels = inst.labels.astype(np.uint8 if top < 2**8 else np.uint16)
    return found


def drop_invalid(instances: Instances, valid: np.ndarray) -> Instances:
    """Remove objects centred on invalid pixels and clear invalid pixels from the rest.

    Args:
        instances: one tile's objects (dense ids 1..N).
        valid: (H, W) bool, False on nodata / padding.

    Returns:
        Instances with dense ids 1..M (M <= N), same column order.
    """
    if len(instances) == 0:
        return instances
    h, w = valid.shape
    cy = np.clip(np.floor(instances.centroids_yx[:, 0] + 0.5).astype(int), 0, h - 1)
    cx = np.clip(np.floor(instances.centroids_yx[:, 1] + 0.5).astype(int), 0, w - 1)
    labels = np.where(valid, instances.labels, 0)
    present = np.zeros(int(instances.labels.max()) + 1, bool)
    present[np.unique(labels)] = True
    keep = valid[cy, cx] & present[instances.ids]
    remap = np.zeros(len(present), np.int32)
    remap[instances.ids[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return Instances(
        labels=remap[labels],
        ids=np.arange(1, int(keep.sum()) + 1, dtype=np.int64),
        class_ids=instances.class_ids[keep],
        scores=instances.scores[keep],
        centroids_yx=instances.centroids_yx[keep],
    )


def cut_band(image: np.ndarray, grid: TileGrid, tile_row: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw pixels of a tile row's window from an in-memory (C, H, W) image, padded where the scene is
    smaller than a tile; returns (band, valid mask or None if nothing was padded)."""
    c, h, w = image.shape
    r0 = grid.row_starts[tile_row]
    band = image[:, r0:r0 + grid.tile_h]
    pad_h, pad_w = grid.tile_h - band.shape[1], max(grid.tile_w - w, 0)
    if pad_h == 0 and pad_w == 0:
        return band, None
    valid = np.ones(band.shape[1:], bool)
    band = np.pad(band, ((0, 0), (0, pad_h), (0, pad_w)))
    valid = np.pad(valid, ((0, pad_h), (0, pad_w)))
    return band, valid


def fit_normalization(
    image: np.ndarray,
    model: torch.nn.Module,
    normalize: str | Normalization | None = "model",
    *,
    percentiles: tuple[float, float] | None = None,
    valid: np.ndarray | None = None,
    modality: str | None = None,
    stats: NormStats | None = None,
    legacy_preset=None,
) -> tuple[Normalization, NormStats]:
    """The normalisation ``predict_array`` applies to ``image`` and its stats, fitted on the whole image.

    Args:
        image: (C, H, W) raw values (C = the model's input bands, or 1 band for several CT windows).
        model: a SmallObjectNet (``model.config`` declares the normalisation).
        normalize, percentiles, modality, legacy_preset: see :func:`~smallseg.normalize.choose_normalization`.
        valid: (H, W) bool or None: only True pixels count for the stats.
        stats: already fitted stats (used as they are; checked against the band count).

    Returns:
        (Normalization, NormStats); ``stats.reliable`` is False for a constant or empty band.
    """
    config = model.config
    norm = choose_normalization(config, normalize, percentiles=percentiles, modality=modality,
                                legacy_preset=legacy_preset)
    c = image.shape[0]
    if norm.out_channels(c) != config.in_channels:
        after = "" if norm.out_channels(c) == c else f" ({norm.describe()} gives {norm.out_channels(c)} channels)"
        raise SmallsegError(f"image has {c} bands, the model expects {config.in_channels}{after}; select bands first")
    if stats is None:
        stats = norm.fit(image, valid)
    elif stats.lo is not None and len(stats.lo) != c:
        raise SmallsegError(f"norm_stats are for {len(stats.lo)} bands, the image has {c}")
    return norm, stats


def predict_array(
    image: np.ndarray,
    model: torch.nn.Module,
    options: PredictOptions | None = None,
    *,
    valid_mask: np.ndarray | None = None,
    norm_stats: NormStats | None = None,
    **overrides,
) -> Instances:
    """Find the objects in one in-memory 2D image, tile by tile, stitched exactly.

    Settings come as a :class:`~smallseg.pipeline.options.PredictOptions` or as its fields by keyword (on top
    of ``options`` when both are given; checked when the call starts, an unknown name refused in one line)::

        predict_array(image, model, tile_size_px=256, tta="flips")
        predict_array(image, model, PredictOptions(tile_size_px=256, tta="flips"))

    The model runs in the calling thread; decoding runs on ``decode_workers`` worker threads, one batch behind,
    so on a machine with a free core (or a GPU) it costs little wall time. The result does not depend on timing.

    Args:
        image: (C, H, W) or (H, W) raw pixel values, any real dtype (uint8, uint16 incl. 11/12-bit data,
            int16, float32); ``normalize`` says how they become model input.
        model: a SmallObjectNet, e.g. from :func:`smallseg.load_model`.
        options: tiling, batch, device, decoding, normalisation, test-time augmentation (see
            :class:`~smallseg.pipeline.options.PredictOptions`; default: all defaults).
        valid_mask: (H, W) bool, False on nodata pixels (they never belong to an object).
        norm_stats: normalisation stats already fitted on a larger whole (a volume's slices share the
            volume's); None: fitted on ``image``.
        **overrides: fields of :class:`~smallseg.pipeline.options.PredictOptions`.

    Returns:
        Scene :class:`Instances`: (H, W) uint32 labels with unique global ids, per-object ``class_ids``,
        ``scores``, ``centroids_yx`` in scene px, and ``objects``: the
        :class:`~smallseg.io.tables.ObjectTable` (areas, boxes, owning tiles; ``objects[0]`` is one row).
    """
    options = PredictOptions.build(options, "predict_array", **overrides)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise SmallsegError(f"image: expected (C, H, W) or (H, W), got shape {image.shape}")
    _, h, w = image.shape
    if valid_mask is not None and valid_mask.shape != (h, w):
        raise SmallsegError(f"valid_mask: shape {valid_mask.shape} differs from the image's {(h, w)}")
    norm, stats = fit_normalization(image, model, options.normalize, percentiles=options.percentiles,
                                    valid=valid_mask, modality=options.modality, stats=norm_stats)
    if not stats.reliable:
        warnings.warn(f"predict_array: the result is not reliable: {stats.reason}", UserWarning, stacklevel=2)
    if options.device is not None:
        model = model.to(resolve_device(options.device))
    # Classes of the image's modality (the medical model on microscopy: nucleus, never nodule); None: all.
    allowed = modality_classes(model.config, options.modality or "") if options.by_modality else None
    model = with_tta(model, options.tta).eval()
    decode_config = decode_config_for(model, options.decode_overrides(), modality=options.modality)
    plan = plan_tiling(model, options.tile_size_px, options.overlap_px, decode_config)
    grid = tile_windows(h, w, plan.tile_size_px, plan.overlap_px)
    run = TileModel(model, decode_config, options.batch_size, options.amp, norm, stats)

    def tile_rows(worker):
        # A generator: each tile row's decoded tiles are stitched and dropped before the next is predicted.
        for r in tqdm(range(grid.n_rows), desc="tile rows", disable=not options.progress, leave=False):
            band, band_valid = cut_band(image, grid, r)
            if valid_mask is not None:
                mask_band = cut_band(valid_mask[None], grid, r)[0][0].astype(bool)
                band_valid = mask_band if band_valid is None else (band_valid & mask_band)
            found = predict_tile_row(band, band_valid, grid.tile_row(r), grid.row_starts[r], run, worker)
            yield found if allowed is None else [keep_classes(inst, allowed, [0]) for inst in found]

    # Worker threads decode batch b while the model runs batch b + 1 (results collected in submission
    # order: the same objects as decoding in line).
    with ThreadPoolExecutor(max_workers=options.decode_workers, thread_name_prefix="smallseg-decode") as worker:
        scene, _ = stitch_instances(grid, tile_rows(worker))
    return scene
