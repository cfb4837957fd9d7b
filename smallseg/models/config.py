"""ModelConfig: everything needed to rebuild a model and feed it the right pixels.

A checkpoint stores this as JSON next to the weights, so a model file alone is enough to predict: the
architecture (encoder, decoder, LFE, heads), what the outputs mean (classes, ``max_distance_px``) and how
the input must look (which bands, scale, per-band mean/std, tile size).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.models.validate import (
    MAX_BAND_INDEX,
    MAX_CHANNELS,
    MAX_CLASS_NAME_CHARS,
    MAX_CLASSES,
    MAX_CONFIG_JSON_CHARS,
    MAX_DISTANCE_PX,
    MAX_IN_CHANNELS,
    MAX_TILE_PX,
    check_encoder_name,
    check_int,
    check_int_choice,
    check_bool,
    check_int_list,
    check_number,
    check_number_list,
    check_smp_kwargs,
    check_str,
    check_training,
    config_error,
)

HEAD_NAMES = ("semantic", "centroid", "distance")
LFE_MODES = ("falling", "constant")
BOUNDARY_HEADS = ("signed_distance",)  # issue #17: the contour-refinement head (smallseg.decode.refine)
DEFAULT_LFE_DILATIONS = {"falling": (4, 2, 1), "constant": (1, 1, 1)}
# Shift stability (issue #14). Names, never layers: net.py maps each to the module it builds.
ENCODER_ANTIALIAS = ("blurpc",)  # timm BlurPool2d (3x3 binomial, zero padding) before each strided step
DECODER_NORMS = ("group", "batch", "none")

# Fields added after models were shipped, with the default that means "as before": omitted from to_dict when
# default, so an old checkpoint's config JSON (and its fingerprint) does not change when smallseg gains a field.
LATER_FIELDS = {
    "encoder_antialias": None,
    "decoder_norm": "group",
    "decoder_align_corners": True,
    "boundary_head": None,
    "slice_context": 0,
}

MAX_SLICE_CONTEXT = 4  # neighbouring slices per side a volume model may take as extra channels


def slice_indices(z: int, slice_context: int, n_slices: int) -> np.ndarray:
    """The slices one input of a 2.5-D model holds for slice ``z``: ``z - k .. z + k`` in that order, clamped to
    ``0 .. n_slices - 1`` (the end slices repeat). One rule for training data and prediction alike."""
    return np.clip(np.arange(z - slice_context, z + slice_context + 1), 0, n_slices - 1)

# Fields that decide the shapes of the weights; a mismatch in any of these means a checkpoint cannot be
# loaded into a model built from another config.
ARCHITECTURE_FIELDS = (
    "encoder_name",
    "encoder_depth",
    "encoder_output_stride",
    "in_channels",
    "classes",
    "decoder",
    "decoder_pyramid_channels",
    "decoder_segmentation_channels",
    "decoder_merge_policy",
    "decoder_norm",
    "smp_arch",
    "smp_kwargs",
    "refine_channels",
    "lfe",
    "lfe_dilations",
    "heads",
    "boundary_head",
)


@dataclass
class ModelConfig:
    """How to rebuild a :class:`~smallseg.models.net.SmallObjectNet` and prepare its input.

    Architecture:
        encoder_name: any smp encoder name, including ``tu-*`` timm encoders.
        encoder_depth: number of encoder stages (3..5).
        encoder_output_stride: 32 (plain), 16 or 8 (deep stages dilated with rising rates, the LFE
            paper's "front-end").
        decoder: ``"fpn"`` (smallseg's stride-aware FPN) or ``"smp"`` (the decoder of a wrapped smp model,
            rebuilt from ``smp_arch`` + ``smp_kwargs``).
        decoder_pyramid_channels, decoder_segmentation_channels, decoder_merge_policy, decoder_dropout:
            FPN settings (smp's names and meaning).
        encoder_antialias: ``None`` (the encoder as timm builds it) or ``"blurpc"``: timm's ``aa_layer``, a
            3x3 binomial blur (zero padding) before every strided downsampling of a ``tu-`` encoder that
            supports it (MobileNetV3/V4, EfficientNet, ResNet families), so sub-stride shifts alias less.
            No weights: a checkpoint trained without it loads, but predicts differently.
        decoder_norm: normalisation in the FPN segmentation blocks: ``"group"`` (smp's GroupNorm(32): its
            statistics are over the whole tile, so every output depends on the tile's extent), ``"batch"``
            (BatchNorm: per-channel affine in eval mode, tile-independent) or ``"none"``.
        decoder_align_corners: the FPN segmentation blocks' x2 bilinear upsampling as smp does it
            (``align_corners=True``: sample positions scale with the map's size, so they depend on the tile's
            extent) or, with False, half-pixel aligned (the same for every tile: shift-equivariant).
            Tile-independent FPN = ``decoder_norm="batch"`` + ``decoder_align_corners=False``.
        smp_arch, smp_kwargs: for ``decoder="smp"``: smp class name (e.g. ``"Unet"``) and its ``__init__``
            arguments (``model.config`` of the smp model), each key allow-listed, typed and bounded
            (:data:`smallseg.models.validate.SMP_KWARG_CHECKS`); ``encoder_weights`` must be None.
        refine_channels: (stride-2 channels, full-resolution channels) of the refinement that brings the
            decoder features to full resolution using early encoder features and the input itself.
        lfe: ``"falling"``, ``"constant"`` (parameter-matched control) or ``None``.
        lfe_dilations: dilation of each 3x3 conv of the LFE stack, e.g. (4, 2, 1).
        heads: subset of ``("semantic", "centroid", "distance")``.
        boundary_head: ``None`` (off) or ``"signed_distance"``: a full-resolution head predicting each
            pixel's signed distance to its object's edge, used by :mod:`smallseg.decode.refine` to re-place
            each decoded object's edge (output ``boundary`` (B, 1, H, W)).
        classes: number of object classes (background excluded); semantic logits have ``1 + classes``
            channels.
        max_distance_px: centroid vectors are divided by this; it should cover the largest object radius.

    Input (what the pipeline does before calling the model):
        slice_context: volume models (2.5-D): the ``k`` slices above and below each axial slice are given to
            the model with it, as channels in slice order ``z - k .. z + k`` (clamped at the volume's ends),
            so ``in_channels = bands x (2 k + 1)``. A vessel crossing a slice moves or continues through its
            neighbours while a nodule ends; one slice cannot tell them apart. 0 (default): one slice.
        band_indices: 1-based band numbers to read from a raster (None = all, in order).
        input_scale: raw values are multiplied by this first (e.g. 1/255 for 8-bit, 1/10000 for Sentinel-2).
        norm_mean, norm_std: per-band mean/std applied after scaling (None = no normalisation).
        tile_size_px: tile edge the model was trained on.

    Bookkeeping:
        class_names: one name per class (index 0 = class 1), 1..64 printable characters each.
        training: JSON summary of the training data / run (bounded size and depth; the keys pipelines read,
            ``decode``, ``decode_by_modality``, ``train_pixel_size_m``, ``intensity_preset(s)``, are typed).

    A config is validated when it is made and again before a model is built or saved (:meth:`validate`):
    one :class:`SmallsegError` line names the first bad field. A checkpoint's config is data from a file,
    so nothing in a valid one can name a file, a URL or a callable.
    """

    encoder_name: str = "resnet18"
    encoder_depth: int = 5
    encoder_output_stride: int = 16
    in_channels: int = 3
    classes: int = 1
    decoder: str = "fpn"
    decoder_pyramid_channels: int = 128
    decoder_segmentation_channels: int = 64
    decoder_merge_policy: str = "add"
    decoder_dropout: float = 0.0
    encoder_antialias: str | None = None
    decoder_norm: str = "group"
    decoder_align_corners: bool = True
    smp_arch: str | None = None
    smp_kwargs: dict[str, Any] | None = None
    refine_channels: tuple[int, int] = (32, 16)
    lfe: str | None = "falling"
    lfe_dilations: tuple[int, ...] = (4, 2, 1)
    heads: tuple[str, ...] = HEAD_NAMES
    boundary_head: str | None = None
    max_distance_px: float = 48.0
    class_names: list[str] | None = None
    band_indices: list[int] | None = None
    input_scale: float = 1.0
    norm_mean: list[float] | None = None
    norm_std: list[float] | None = None
    tile_size_px: int = 512
    slice_context: int = 0
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Types first, before any rule between fields can trip over a string where a number belongs; numpy
        # scalars become Python ones and sequences the tuples the builders expect.
        for name, value in self._checked_types().items():
            setattr(self, name, value)
        self.validate()

    def _checked_types(self) -> dict[str, Any]:
        """Every field type- and range-checked (see :mod:`smallseg.models.validate`), as it is stored."""
        n_bands = check_int("in_channels", self.in_channels, 1, MAX_IN_CHANNELS)
        classes = check_int("classes", self.classes, 1, MAX_CLASSES)
        heads = self.heads
        if not isinstance(heads, (list, tuple)) or not 1 <= len(heads) <= len(HEAD_NAMES):
            raise config_error("heads", f"{heads!r} is not a non-empty subset of {list(HEAD_NAMES)}")
        return {
            "encoder_name": check_str("encoder_name", self.encoder_name),
            "encoder_depth": check_int("encoder_depth", self.encoder_depth, 3, 5),
            "encoder_output_stride": check_int_choice("encoder_output_stride", self.encoder_output_stride,
                                                      (8, 16, 32)),
            "in_channels": n_bands,
            "classes": classes,
            "decoder": check_str("decoder", self.decoder, choices=("fpn", "smp")),
            "decoder_pyramid_channels": check_int("decoder_pyramid_channels", self.decoder_pyramid_channels, 1,
                                                  MAX_CHANNELS),
            "decoder_segmentation_channels": check_int("decoder_segmentation_channels",
                                                       self.decoder_segmentation_channels, 1, MAX_CHANNELS),
            "decoder_merge_policy": check_str("decoder_merge_policy", self.decoder_merge_policy,
                                              choices=("add", "cat")),
            "decoder_dropout": check_number("decoder_dropout", self.decoder_dropout, 0.0, 1.0),
            "encoder_antialias": None if self.encoder_antialias is None else check_str(
                "encoder_antialias", self.encoder_antialias, choices=ENCODER_ANTIALIAS),
            "decoder_norm": check_str("decoder_norm", self.decoder_norm, choices=DECODER_NORMS),
            "decoder_align_corners": check_bool("decoder_align_corners", self.decoder_align_corners),
            "smp_arch": None if self.smp_arch is None else check_str("smp_arch", self.smp_arch),
            "smp_kwargs": self.smp_kwargs,  # checked key by key against smp_arch in validate()
            "refine_channels": tuple(check_int_list("refine_channels", self.refine_channels, 1, MAX_CHANNELS,
                                                    min_len=2, max_len=2)),
            "lfe": None if self.lfe is None else check_str("lfe", self.lfe, choices=LFE_MODES),
            "lfe_dilations": tuple(check_int_list("lfe_dilations", self.lfe_dilations, 1, 64)),
            "heads": tuple(check_str(f"heads[{i}]", h, choices=HEAD_NAMES) for i, h in enumerate(heads)),
            "boundary_head": None if self.boundary_head is None else check_str(
                "boundary_head", self.boundary_head, choices=BOUNDARY_HEADS),
            "max_distance_px": check_number("max_distance_px", self.max_distance_px, hi=MAX_DISTANCE_PX,
                                            positive=True),
            "class_names": None if self.class_names is None else [
                check_str(f"class_names[{i}]", name, max_chars=MAX_CLASS_NAME_CHARS)
                for i, name in enumerate(_sequence("class_names", self.class_names, MAX_CLASSES))
            ],
            "band_indices": None if self.band_indices is None else check_int_list(
                "band_indices", self.band_indices, 1, MAX_BAND_INDEX, min_len=n_bands, max_len=n_bands),
            "input_scale": check_number("input_scale", self.input_scale, positive=True),
            "norm_mean": None if self.norm_mean is None else check_number_list("norm_mean", self.norm_mean, n_bands),
            "norm_std": None if self.norm_std is None else check_number_list("norm_std", self.norm_std, n_bands,
                                                                             positive=True),
            "tile_size_px": check_int("tile_size_px", self.tile_size_px, 16, MAX_TILE_PX),
            "slice_context": check_int("slice_context", self.slice_context, 0, MAX_SLICE_CONTEXT),
            "training": check_training(self.training),
        }

    def validate(self) -> None:
        """Raise :class:`SmallsegError` naming the first invalid field.

        In order: every field's type and range; the rules between fields; the encoder name against smp's and
        timm's registries and, for ``decoder="smp"``, ``smp_arch`` / ``smp_kwargs`` against the allow-list of
        :mod:`smallseg.models.validate`. Nothing in a valid config names a file, a URL or a callable.
        """
        self._checked_types()
        bad = config_error

        if len(set(self.heads)) != len(self.heads):
            raise bad("heads", f"{list(self.heads)} names a head twice")
        if self.decoder == "smp" and not self.smp_arch:
            raise bad("smp_arch", "decoder='smp' needs the smp class name (e.g. 'Unet')")
        seg_channels = self.decoder_segmentation_channels
        if self.decoder == "fpn" and self.decoder_norm == "group" and (seg_channels % 32 or seg_channels < 32):
            raise bad(
                "decoder_segmentation_channels",
                f"{self.decoder_segmentation_channels}; must be a multiple of 32 (smp's GroupNorm)",
            )
        if self.lfe is not None:
            d = self.lfe_dilations
            if self.lfe == "falling" and (any(a < b for a, b in zip(d, d[1:])) or d[0] == d[-1]):
                raise bad("lfe_dilations", f"{d} do not fall (e.g. 4,2,1) as lfe='falling' requires")
            if self.lfe == "constant" and len(set(d)) != 1:
                raise bad("lfe_dilations", f"{d} are not constant as lfe='constant' requires")
        if self.encoder_antialias is not None and not self.encoder_name.startswith("tu-"):
            raise bad("encoder_antialias", f"{self.encoder_antialias!r} needs a timm encoder ('tu-<name>'), "
                      f"not {self.encoder_name!r}")
        if self.decoder != "fpn" and (self.decoder_norm != "group" or not self.decoder_align_corners):
            raise bad("decoder_norm" if self.decoder_norm != "group" else "decoder_align_corners",
                      "set only with decoder='fpn' (an smp decoder keeps its own layers)")
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise bad("class_names", f"{len(self.class_names)} names for {self.classes} classes")
        if self.in_channels % self.slices_per_input:
            raise bad("slice_context", f"{self.slice_context}: in_channels={self.in_channels} is not a multiple of "
                      f"the {self.slices_per_input} slices each input holds")
        check_encoder_name("encoder_name", self.encoder_name)
        if self.decoder == "smp":
            kwargs = check_smp_kwargs(self.smp_arch, {} if self.smp_kwargs is None else self.smp_kwargs)
            for key in ("encoder_name", "encoder_depth", "in_channels"):
                if key in kwargs and kwargs[key] != getattr(self, key):
                    raise bad(f"smp_kwargs.{key}", f"{kwargs[key]!r} differs from {key}={getattr(self, key)!r}")
        elif self.smp_arch is not None or self.smp_kwargs is not None:
            raise bad("smp_arch" if self.smp_arch is not None else "smp_kwargs",
                      "set only with decoder='smp' (wrap an smp model)")

    @property
    def slices_per_input(self) -> int:
        """Axial slices in one model input: ``2 * slice_context + 1`` (1 for a plain 2-D model)."""
        return 2 * self.slice_context + 1

    @property
    def bands_per_slice(self) -> int:
        """Bands of the image itself (``in_channels`` over the slices of one input)."""
        return self.in_channels // self.slices_per_input

    # ---- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists). Fields added after the first checkpoints were shipped
        (:data:`LATER_FIELDS`) are left out while they hold their default: an older checkpoint's config JSON,
        and so its weights fingerprint and every resume marker made with it, stays byte for byte the same."""
        data = json.loads(json.dumps(asdict(self)))
        for name, default in LATER_FIELDS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean a newer or foreign file)."""
        if not isinstance(data, dict):
            raise SmallsegError(f"model config: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SmallsegError(f"model config: unknown keys {unknown}; the file may come from a newer smallseg")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SmallsegError(f"model config: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Parse and validate a config's JSON (e.g. a checkpoint's metadata): strict JSON (no NaN or
        Infinity), at most ``MAX_CONFIG_JSON_CHARS`` characters, every field checked before anything is built."""
        if not isinstance(text, str) or len(text) > MAX_CONFIG_JSON_CHARS:
            size = len(text) if isinstance(text, str) else type(text).__name__
            raise SmallsegError(f"model config: {size} characters of JSON (at most {MAX_CONFIG_JSON_CHARS})")
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, int too long, nesting too deep
            raise SmallsegError(f"model config: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
        return cls.from_dict(data)

    def architecture_mismatches(self, other: "ModelConfig") -> list[str]:
        """Human-readable differences in weight-shaping fields between ``self`` (checkpoint) and ``other``.

        Returns e.g. ``["checkpoint expects 4 input bands, model has 3"]``; empty if compatible.
        """
        out = []
        for name in ARCHITECTURE_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if _jsonable(mine) == _jsonable(theirs):
                continue
            if name == "in_channels":
                out.append(f"checkpoint expects {mine} input bands, model has {theirs}")
            elif name == "classes":
                out.append(f"checkpoint has {mine} classes, model has {theirs}")
            else:
                out.append(f"checkpoint {name}={_jsonable(mine)!r}, model {name}={_jsonable(theirs)!r}")
        return out

    # ---- input preparation ---------------------------------------------------------------------------

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """Scale and standardise raw bands the way the model was trained.

        Args:
            image: (C, H, W) raw values (any numeric dtype), C == ``in_channels``.

        Returns:
            (C, H, W) float32: ``(image * input_scale - norm_mean[c]) / norm_std[c]``.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != self.in_channels:
            raise SmallsegError(
                f"input image: shape {image.shape}, but the model expects ({self.in_channels}, H, W)"
            )
        out = image.astype(np.float32) * np.float32(self.input_scale)
        if self.norm_mean is not None:
            out -= np.asarray(self.norm_mean, np.float32)[:, None, None]
        if self.norm_std is not None:
            out /= np.asarray(self.norm_std, np.float32)[:, None, None]
        return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _sequence(field: str, value: Any, max_len: int) -> list | tuple:
    if not isinstance(value, (list, tuple)) or len(value) > max_len:
        raise config_error(field, f"{value!r:.60} is not a list of at most {max_len} entries")
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
