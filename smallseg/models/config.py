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

HEAD_NAMES = ("semantic", "centroid", "distance")
LFE_MODES = ("falling", "constant")
DEFAULT_LFE_DILATIONS = {"falling": (4, 2, 1), "constant": (1, 1, 1)}

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
    "smp_arch",
    "smp_kwargs",
    "refine_channels",
    "lfe",
    "lfe_dilations",
    "heads",
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
        smp_arch, smp_kwargs: for ``decoder="smp"``: smp class name (e.g. ``"Unet"``) and its ``__init__``
            arguments (``model.config`` of the smp model).
        refine_channels: (stride-2 channels, full-resolution channels) of the refinement that brings the
            decoder features to full resolution using early encoder features and the input itself.
        lfe: ``"falling"``, ``"constant"`` (parameter-matched control) or ``None``.
        lfe_dilations: dilation of each 3x3 conv of the LFE stack, e.g. (4, 2, 1).
        heads: subset of ``("semantic", "centroid", "distance")``.
        classes: number of object classes (background excluded); semantic logits have ``1 + classes``
            channels.
        max_distance_px: centroid vectors are divided by this; it should cover the largest object radius.

    Input (what the pipeline does before calling the model):
        band_indices: 1-based band numbers to read from a raster (None = all, in order).
        input_scale: raw values are multiplied by this first (e.g. 1/255 for 8-bit, 1/10000 for Sentinel-2).
        norm_mean, norm_std: per-band mean/std applied after scaling (None = no normalisation).
        tile_size_px: tile edge the model was trained on.

    Bookkeeping:
        class_names: one name per class (index 0 = class 1).
        training: free-form JSON-able summary of the training data / run.
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
    smp_arch: str | None = None
    smp_kwargs: dict[str, Any] | None = None
    refine_channels: tuple[int, int] = (32, 16)
    lfe: str | None = "falling"
    lfe_dilations: tuple[int, ...] = (4, 2, 1)
    heads: tuple[str, ...] = HEAD_NAMES
    max_distance_px: float = 48.0
    class_names: list[str] | None = None
    band_indices: list[int] | None = None
    input_scale: float = 1.0
    norm_mean: list[float] | None = None
    norm_std: list[float] | None = None
    tile_size_px: int = 512
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refine_channels = tuple(int(c) for c in self.refine_channels)
        self.lfe_dilations = tuple(int(d) for d in self.lfe_dilations)
        self.heads = tuple(self.heads)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SmallsegError` naming the first invalid option."""

        def bad(option: str, what: str) -> SmallsegError:
            return SmallsegError(f"model config {option}: {what}")

        if not self.heads or any(h not in HEAD_NAMES for h in self.heads) or len(set(self.heads)) != len(self.heads):
            raise bad("heads", f"{list(self.heads)} is not a non-empty subset of {list(HEAD_NAMES)}")
        if self.classes < 1:
            raise bad("classes", f"{self.classes}; need at least 1 object class")
        if self.in_channels < 1:
            raise bad("in_channels", f"{self.in_channels}; need at least 1 band")
        if self.encoder_output_stride not in (8, 16, 32):
            raise bad("encoder_output_stride", f"{self.encoder_output_stride}; use 32, 16 or 8")
        if not 3 <= self.encoder_depth <= 5:
            raise bad("encoder_depth", f"{self.encoder_depth}; use 3, 4 or 5")
        if self.decoder not in ("fpn", "smp"):
            raise bad("decoder", f"{self.decoder!r}; use 'fpn' or 'smp' (wrap an smp model)")
        if self.decoder == "smp" and not self.smp_arch:
            raise bad("smp_arch", "decoder='smp' needs the smp class name (e.g. 'Unet')")
        seg_channels = self.decoder_segmentation_channels
        if self.decoder == "fpn" and (seg_channels % 32 or seg_channels < 32):
            raise bad(
                "decoder_segmentation_channels",
                f"{self.decoder_segmentation_channels}; must be a multiple of 32 (smp's GroupNorm)",
            )
        if self.decoder_merge_policy not in ("add", "cat"):
            raise bad("decoder_merge_policy", f"{self.decoder_merge_policy!r}; use 'add' or 'cat'")
        if len(self.refine_channels) != 2 or min(self.refine_channels) < 1:
            raise bad("refine_channels", f"{self.refine_channels}; need two positive channel counts")
        if self.lfe is not None:
            if self.lfe not in LFE_MODES:
                raise bad("lfe", f"{self.lfe!r}; use 'falling', 'constant' or None")
            d = self.lfe_dilations
            if not d or min(d) < 1:
                raise bad("lfe_dilations", f"{d}; need positive dilations")
            if self.lfe == "falling" and (any(a < b for a, b in zip(d, d[1:])) or d[0] == d[-1]):
                raise bad("lfe_dilations", f"{d} do not fall (e.g. 4,2,1) as lfe='falling' requires")
            if self.lfe == "constant" and len(set(d)) != 1:
                raise bad("lfe_dilations", f"{d} are not constant as lfe='constant' requires")
        if not self.max_distance_px > 0:
            raise bad("max_distance_px", f"{self.max_distance_px}; must be > 0")
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise bad("class_names", f"{len(self.class_names)} names for {self.classes} classes")
        n_bands = self.in_channels
        for name in ("norm_mean", "norm_std", "band_indices"):
            value = getattr(self, name)
            if value is not None and len(value) != n_bands:
                raise bad(name, f"{len(value)} values for {n_bands} input bands")
        if self.norm_std is not None and min(self.norm_std) <= 0:
            raise bad("norm_std", "values must be > 0")

    # ---- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

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
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SmallsegError(f"model config: not valid JSON ({exc})") from None
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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
