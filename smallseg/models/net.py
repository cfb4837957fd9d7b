"""SmallObjectNet: encoder -> multi-scale fusion -> LFE -> full-resolution refinement -> heads.

Build one from names (:func:`build_model`), from a stored config (:func:`build_from_config`, used by
checkpoint loading), or around a user's existing smp model (:func:`wrap`). All three give the same module
type, carrying its :class:`~smallseg.models.config.ModelConfig` as ``model.config``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import initialization as smp_init
from timm.layers import BlurPool2d
from torch import nn

from smallseg.errors import SmallsegError, one_line
from smallseg.models.config import DEFAULT_LFE_DILATIONS, ModelConfig
from smallseg.models.decoder import FullResolutionRefiner, StrideAwareFPNDecoder, feature_strides
from smallseg.models.heads import build_heads
from smallseg.models.lfe import LocalFeatureExtraction
from smallseg.models.state import load_encoder_weights
from smallseg.models.validate import check_smp_kwargs, smp_architecture

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

# ModelConfig.encoder_antialias name -> timm aa_layer. Zero padding like the convs around it, so an output
# pixel away from the tile border does not see the border (reflect padding would be just as local).
ENCODER_ANTIALIAS_LAYERS = {"blurpc": functools.partial(BlurPool2d, pad_mode="constant")}


class SmallObjectNet(nn.Module):
    """The smallseg model. ``forward(x)`` returns ``{head name: tensor}`` for the enabled heads.

    Args (normally filled by :func:`build_model` / :func:`wrap`):
        config: the model's :class:`ModelConfig` (kept as ``self.config``).
        encoder: smp encoder (returns a list of features, input first).
        decoder: module mapping the feature list to one map at ``decoder_stride``.
        decoder_channels, decoder_stride: that map's channels and stride.
        stride2_channels: channels of the encoder's stride-2 features (0 if none).

    Input: (B, in_channels, H, W) float32, normalised as ``config.normalise`` does. Any H, W: the input is
    zero-padded at the bottom/right to a multiple of ``input_multiple`` and outputs are cropped back.

    Output (each (B, k, H, W) float32, full input resolution):
        ``semantic`` k = 1 + classes logits; ``centroid`` k = 2 (dy, dx) / max_distance_px;
        ``distance`` k = 1 logits of the normalised distance-to-border map.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoder: nn.Module,
        decoder: nn.Module,
        decoder_channels: int,
        decoder_stride: int,
        stride2_channels: int,
    ):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.lfe = (
            LocalFeatureExtraction(decoder_channels, config.lfe_dilations) if config.lfe is not None else None
        )
        self.refiner = FullResolutionRefiner(
            decoder_channels, decoder_stride, stride2_channels, config.in_channels, config.refine_channels
        )
        self.heads = build_heads(self.refiner.out_channels, config.heads, config.classes,
                                 boundary_head=config.boundary_head)
        self.input_multiple = int(getattr(encoder, "output_stride", 2**config.encoder_depth))
        for part in (self.lfe, self.refiner):
            if part is not None:
                smp_init.initialize_decoder(part)
        for head in self.heads.values():
            smp_init.initialize_head(head)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise SmallsegError(
                f"model input: shape {tuple(x.shape)}, expected (B, {self.config.in_channels}, H, W); "
                "select the bands the model was trained on"
            )
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.input_multiple, (-w) % self.input_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.encoder(x)
        y = self.decoder(features)
        if self.lfe is not None:
            y = self.lfe(y)
        y = self.refiner(y, features)
        return {name: head(y)[..., :h, :w] for name, head in self.heads.items()}


def build_model(
    encoder_name: str = "resnet18",
    *,
    classes: int = 1,
    in_channels: int = 3,
    encoder_weights: str | os.PathLike | None = None,
    encoder_depth: int = 5,
    encoder_output_stride: int = 16,
    decoder: str = "fpn",
    decoder_pyramid_channels: int = 128,
    decoder_segmentation_channels: int = 64,
    decoder_merge_policy: str = "add",
    decoder_dropout: float = 0.0,
    refine_channels: Sequence[int] = (32, 16),
    lfe: str | None = "falling",
    lfe_dilations: Sequence[int] | None = None,
    heads: Sequence[str] = ("semantic", "centroid", "distance"),
    max_distance_px: float = 48.0,
    **config_fields: Any,
) -> SmallObjectNet:
    """Build a :class:`SmallObjectNet` from an smp encoder name.

    Args:
        encoder_name: any smp encoder (``"resnet18"``, ``"efficientnet-b0"``) or timm one (``"tu-..."``).
        classes: object classes (background excluded).
        in_channels: input bands.
        encoder_weights: None (random init), a local ``.safetensors`` / ``.pt`` file with the encoder's
            state dict (keys may carry an ``encoder.`` prefix, e.g. a whole smp model's weights), or an smp
            weights name such as ``"imagenet"`` (downloads; for ``tu-`` encoders any name means timm's).
        encoder_depth: encoder stages (3..5).
        encoder_output_stride: 32, or 16 / 8 to dilate the deep stages with rising rates (LFE front-end).
        decoder: only ``"fpn"`` here; use :func:`wrap` for another smp decoder.
        decoder_*: FPN settings (smp names). ``decoder_segmentation_channels`` must be a multiple of 32
            (smp's GroupNorm).
        refine_channels: (stride-2, full-resolution) channels of the refinement to full resolution.
        lfe: ``"falling"``, ``"constant"`` (parameter-matched control) or None.
        lfe_dilations: default (4, 2, 1) for falling, (1, 1, 1) for constant.
        heads: enabled heads, subset of ``("semantic", "centroid", "distance")``.
        max_distance_px: normaliser of the centroid vectors (cover the largest object radius).
        **config_fields: other :class:`ModelConfig` fields (class_names, band_indices, norm_mean, ...).

    Returns:
        SmallObjectNet with ``model.config`` set.
    """
    if decoder != "fpn":
        raise SmallsegError(f"decoder={decoder!r}: build_model builds 'fpn'; use smallseg.models.wrap(smp_model)")
    if lfe_dilations is None:
        lfe_dilations = DEFAULT_LFE_DILATIONS.get(lfe, (4, 2, 1)) if lfe is not None else (4, 2, 1)
    config = ModelConfig(
        encoder_name=encoder_name,
        encoder_depth=encoder_depth,
        encoder_output_stride=encoder_output_stride,
        in_channels=in_channels,
        classes=classes,
        decoder="fpn",
        decoder_pyramid_channels=decoder_pyramid_channels,
        decoder_segmentation_channels=decoder_segmentation_channels,
        decoder_merge_policy=decoder_merge_policy,
        decoder_dropout=decoder_dropout,
        refine_channels=tuple(refine_channels),
        lfe=lfe,
        lfe_dilations=tuple(lfe_dilations),
        heads=tuple(heads),
        max_distance_px=max_distance_px,
        **config_fields,
    )
    return build_from_config(config, encoder_weights=encoder_weights)


def build_from_config(config: ModelConfig, *, encoder_weights: str | os.PathLike | None = None) -> SmallObjectNet:
    """Rebuild the (randomly initialised) model a :class:`ModelConfig` describes.

    ``config`` is validated first (:meth:`ModelConfig.validate`: known architectures, encoder names from
    smp's / timm's registries, every smp keyword allow-listed), so a config from a file can only build a
    model, never name a file, URL or callable. Never downloads unless ``encoder_weights`` (an argument of
    this call, never part of a config) names remote weights; checkpoint loading passes None.
    """
    config.validate()
    if config.decoder == "smp":
        smp_model = _build_smp_model(config)
        return _net_from_smp_model(config, smp_model)

    local_weights = _local_weights_path(encoder_weights)
    remote = None if local_weights is not None else encoder_weights
    if remote is not None and config.encoder_name.startswith("tu-"):
        remote = True  # smp's convention for timm encoders
    # Only names from a config reach here; the layer each one means is chosen in code (never from the file).
    encoder_kwargs = {} if config.encoder_antialias is None else {
        "aa_layer": ENCODER_ANTIALIAS_LAYERS[config.encoder_antialias]}
    try:
        encoder = smp.encoders.get_encoder(
            config.encoder_name,
            in_channels=config.in_channels,
            depth=config.encoder_depth,
            weights=remote,
            output_stride=config.encoder_output_stride,
            **encoder_kwargs,
        )
    except TypeError as exc:  # the timm model has no aa_layer argument
        raise SmallsegError(
            f"encoder_antialias {config.encoder_antialias!r}: timm {config.encoder_name[3:]!r} does not take "
            f"aa_layer ({one_line(exc)}); use e.g. tu-mobilenetv4_conv_small, or encoder_antialias=None"
        ) from None
    except (KeyError, RuntimeError, ValueError, AttributeError) as exc:
        raise SmallsegError(
            f"encoder_name {config.encoder_name!r}: cannot build it ({one_line(exc)}); use an smp encoder name "
            "or 'tu-<timm model>'"
        ) from None
    if local_weights is not None:
        load_encoder_weights(encoder, local_weights)
    strides = feature_strides(config.encoder_depth, encoder.output_stride)
    decoder = StrideAwareFPNDecoder(
        encoder_channels=encoder.out_channels,
        strides=strides,
        encoder_depth=config.encoder_depth,
        pyramid_channels=config.decoder_pyramid_channels,
        segmentation_channels=config.decoder_segmentation_channels,
        dropout=config.decoder_dropout,
        merge_policy=config.decoder_merge_policy,
        norm=config.decoder_norm,
        align_corners=config.decoder_align_corners,
    )
    smp_init.initialize_decoder(decoder)
    return SmallObjectNet(
        config,
        encoder,
        decoder,
        decoder_channels=decoder.out_channels,
        decoder_stride=decoder.output_stride,
        stride2_channels=encoder.out_channels[1],
    )


def wrap(
    smp_model: nn.Module,
    *,
    classes: int,
    heads: Sequence[str] = ("semantic", "centroid", "distance"),
    lfe: str | None = "falling",
    lfe_dilations: Sequence[int] | None = None,
    max_distance_px: float = 48.0,
    refine_channels: Sequence[int] = (32, 16),
    **config_fields: Any,
) -> SmallObjectNet:
    """Attach smallseg's LFE, refinement and heads to an existing smp model.

    The model's encoder and decoder are reused as they are (same modules, their weights kept); its
    segmentation / classification heads are dropped. Works for smp models whose ``segmentation_head`` is
    smp's ``SegmentationHead`` (Unet, Unet++, MAnet, Linknet, FPN, PSPNet, DeepLabV3(+), PAN, UPerNet,
    Segformer).

    Args:
        smp_model: an ``smp.base.SegmentationModel`` instance.
        classes, heads, lfe, lfe_dilations, max_distance_px, refine_channels, **config_fields: as
            :func:`build_model`.

    Returns:
        SmallObjectNet whose ``config.decoder == "smp"`` (rebuilt from ``smp_arch`` + ``smp_kwargs``).
    """
    if not isinstance(smp_model, smp.base.SegmentationModel):
        raise SmallsegError(f"wrap: expected an smp SegmentationModel, got {type(smp_model).__name__}")
    arch = type(smp_model).__name__
    smp_kwargs = dict(getattr(smp_model, "config", None) or {})
    if not smp_kwargs:
        raise SmallsegError(f"wrap: {arch} does not record its init arguments (model.config); upgrade smp")
    smp_kwargs["encoder_weights"] = None  # weights travel in the checkpoint, never re-downloaded
    if lfe_dilations is None:
        lfe_dilations = DEFAULT_LFE_DILATIONS.get(lfe, (4, 2, 1)) if lfe is not None else (4, 2, 1)
    encoder = smp_model.encoder
    config = ModelConfig(
        encoder_name=str(smp_kwargs.get("encoder_name")),
        encoder_depth=int(smp_kwargs.get("encoder_depth", 5)),
        encoder_output_stride=int(encoder.output_stride) if int(encoder.output_stride) in (8, 16, 32) else 32,
        in_channels=int(smp_kwargs.get("in_channels", 3)),
        classes=classes,
        decoder="smp",
        smp_arch=arch,
        smp_kwargs=smp_kwargs,
        refine_channels=tuple(refine_channels),
        lfe=lfe,
        lfe_dilations=tuple(lfe_dilations),
        heads=tuple(heads),
        max_distance_px=max_distance_px,
        **config_fields,
    )
    # Round-trip the kwargs through JSON now so a checkpoint of this model can always be rebuilt.
    try:
        config = ModelConfig.from_dict(config.to_dict())
    except TypeError as exc:
        raise SmallsegError(
            f"wrap: {arch}'s init arguments are not JSON-serialisable ({one_line(exc)}); build it with plain "
            "values (e.g. activation=None)"
        ) from None
    return _net_from_smp_model(config, smp_model)


def _build_smp_model(config: ModelConfig) -> nn.Module:
    """The smp model ``config.smp_arch(**config.smp_kwargs)``, randomly initialised.

    The kwargs are checked against the allow-list here again, right before the call, so this call can never
    receive a key that was not checked (a file, URL or callable argument for timm), whoever made the config.
    """
    cls = smp_architecture("smp_arch", config.smp_arch)
    arch = cls.__name__
    kwargs = check_smp_kwargs(arch, {} if config.smp_kwargs is None else config.smp_kwargs)
    kwargs["encoder_weights"] = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**kwargs)
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:
        raise SmallsegError(f"model config smp_kwargs: smp {arch} rejects them ({one_line(exc)})") from None


def _net_from_smp_model(config: ModelConfig, smp_model: nn.Module) -> SmallObjectNet:
    head = getattr(smp_model, "segmentation_head", None)
    if not isinstance(head, nn.Sequential) or not isinstance(head[0], nn.Conv2d):
        raise SmallsegError(f"wrap: {type(smp_model).__name__} has no smp SegmentationHead to replace")
    upsample = head[1]
    decoder_stride = int(round(float(upsample.scale_factor))) if isinstance(upsample, nn.Upsample) else 1
    encoder = smp_model.encoder
    return SmallObjectNet(
        config,
        encoder,
        smp_model.decoder,
        decoder_channels=head[0].in_channels,
        decoder_stride=decoder_stride,
        stride2_channels=int(encoder.out_channels[1]),
    )


def _local_weights_path(weights: str | os.PathLike | None) -> Path | None:
    """A local weights file if ``weights`` names one; error if it looks like a path but is missing."""
    if weights is None or isinstance(weights, bool):
        return None
    path = Path(weights)
    if path.is_file():
        return path
    text = str(weights)
    if isinstance(weights, os.PathLike) or text.endswith(_WEIGHT_SUFFIXES) or os.sep in text:
        raise SmallsegError(f"{text}: encoder weights file not found; pass an existing file or None")
    return None


def count_parameters(module: nn.Module | None) -> int:
    """Number of scalar parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())
