"""Decoders: multi-scale fusion (FPN) and the refinement back to full resolution.

``StrideAwareFPNDecoder`` is smp's ``FPNDecoder`` (same modules, same state-dict names) whose upsampling
follows the encoder's real feature strides, so it also works on a dilated encoder (output stride 16 or 8,
where two deepest levels share one resolution and smp's fixed x2 steps would not line up).

With ``norm="batch"`` (or ``"none"``) and ``align_corners=False`` the FPN is tile-independent: smp's GroupNorm
takes its statistics over the whole tile and its ``align_corners=True`` upsampling places samples by the map's
size, so with smp's settings every output pixel depends on the tile's extent (issue #14).

``FullResolutionRefiner`` brings the stride-4 fused features to full resolution in two light steps, each
concatenating an early skip (the encoder's stride-2 features, then the input bands themselves): a 2-3 px
object is a single pixel at stride 4 and would not survive plain bilinear upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.fpn.decoder import Conv3x3GNReLU, FPNBlock, FPNDecoder, SegmentationBlock
from torch import nn


def feature_strides(encoder_depth: int, output_stride: int) -> list[int]:
    """Stride of each smp encoder feature map: ``[1, 2, 4, ..]`` capped at ``output_stride`` (dilation)."""
    return [min(2**i, output_stride) for i in range(encoder_depth + 1)]


class _SizedFPNBlock(FPNBlock):
    """smp's top-down FPN step, upsampling to the skip's size instead of a fixed x2."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode=self.interpolation_mode)
        return x + self.skip_conv(skip)


class _Conv3x3NormReLU(Conv3x3GNReLU):
    """smp's ``Conv3x3GNReLU`` (same state-dict names: ``block.0`` conv, ``block.1`` norm) with a chosen
    norm and upsampling alignment.

    ``norm``: ``"group"`` GroupNorm(32) as smp, ``"batch"`` BatchNorm2d, ``"none"`` Identity.
    ``align_corners``: True as smp; False = half-pixel aligned x2 upsampling, the same for any map size.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: bool, norm: str, align_corners: bool):
        super().__init__(in_channels, out_channels, upsample=upsample)
        if norm == "batch":
            self.block[1] = nn.BatchNorm2d(out_channels)
        elif norm == "none":
            self.block[1] = nn.Identity()
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=self.align_corners)
        return x


def _segmentation_block(in_channels: int, out_channels: int, n_upsamples: int, norm: str,
                        align_corners: bool) -> nn.Module:
    """smp's ``SegmentationBlock`` (conv-norm-ReLU, x2 upsampling, ``n_upsamples`` times; at least one conv)
    with the given norm / alignment; with smp's own settings it is smp's class itself."""
    if norm == "group" and align_corners:
        return SegmentationBlock(in_channels, out_channels, n_upsamples=n_upsamples)
    block = SegmentationBlock(in_channels, out_channels, n_upsamples=0)  # a plain module to fill
    steps = [_Conv3x3NormReLU(in_channels, out_channels, bool(n_upsamples), norm, align_corners)]
    steps += [_Conv3x3NormReLU(out_channels, out_channels, True, norm, align_corners)
              for _ in range(1, n_upsamples)]
    block.block = nn.Sequential(*steps)
    return block


class StrideAwareFPNDecoder(FPNDecoder):
    """FPN fusion of the last four encoder features into one map at the finest of their strides.

    Args:
        encoder_channels: ``encoder.out_channels`` (input first).
        strides: stride of each encoder feature (see :func:`feature_strides`).
        encoder_depth, pyramid_channels, segmentation_channels, dropout, merge_policy: as smp's FPN.
        norm: ``"group"`` (smp), ``"batch"`` or ``"none"`` in the segmentation blocks.
        align_corners: the segmentation blocks' x2 upsampling: True (smp) or False (half-pixel aligned).

    Shapes: features list -> (B, out_channels, H / strides[-4], W / strides[-4]).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        strides: Sequence[int],
        encoder_depth: int = 5,
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
        dropout: float = 0.0,
        merge_policy: str = "add",
        interpolation_mode: str = "nearest",
        norm: str = "group",
        align_corners: bool = True,
    ):
        super().__init__(
            encoder_channels=list(encoder_channels),
            encoder_depth=encoder_depth,
            pyramid_channels=pyramid_channels,
            segmentation_channels=segmentation_channels,
            dropout=dropout,
            merge_policy=merge_policy,
            interpolation_mode=interpolation_mode,
        )
        skip_channels = list(encoder_channels)[: encoder_depth + 1][::-1]
        self.p4 = _SizedFPNBlock(pyramid_channels, skip_channels[1], interpolation_mode)
        self.p3 = _SizedFPNBlock(pyramid_channels, skip_channels[2], interpolation_mode)
        self.p2 = _SizedFPNBlock(pyramid_channels, skip_channels[3], interpolation_mode)
        level_strides = list(strides)[: encoder_depth + 1][-4:]  # c2, c3, c4, c5
        self.output_stride = level_strides[0]
        n_upsamples = [max(0, (s // level_strides[0]).bit_length() - 1) for s in level_strides[::-1]]
        self.seg_blocks = nn.ModuleList(
            [_segmentation_block(pyramid_channels, segmentation_channels, n, norm, align_corners)
             for n in n_upsamples]
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = features[-4:]
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        size = p2.shape[-2:]
        pyramid = []
        for block, p in zip(self.seg_blocks, (p5, p4, p3, p2)):
            s = block(p)
            if s.shape[-2:] != size:  # odd-sized inputs: x2 steps can overshoot by a pixel
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            pyramid.append(s)
        return self.dropout(self.merge(pyramid))


class _RefineStep(nn.Module):
    """Narrow (1x1), upsample to the skip's size, concatenate the (projected) skip, fuse (conv3x3+BN+ReLU)."""

    def __init__(self, in_channels: int, skip_channels: int, skip_proj_channels: int | None, out_channels: int):
        super().__init__()
        # Narrow before upsampling: every op at the finer resolution costs 4x, so it runs on out_channels.
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        in_channels = out_channels
        if skip_proj_channels is None or skip_channels == 0:
            self.skip_proj: nn.Module = nn.Identity()
            fused = in_channels + skip_channels
        else:
            self.skip_proj = nn.Sequential(
                nn.Conv2d(skip_channels, skip_proj_channels, 1, bias=False),
                nn.BatchNorm2d(skip_proj_channels),
                nn.ReLU(inplace=True),
            )
            fused = in_channels + skip_proj_channels
        self.use_skip = skip_channels > 0
        self.fuse = nn.Sequential(
            nn.Conv2d(fused, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.use_skip:
            x = torch.cat([x, self.skip_proj(skip)], dim=1)
        return self.fuse(x)


class FullResolutionRefiner(nn.Module):
    """Decoder features at ``decoder_stride`` -> full-resolution features, via early encoder skips.

    Steps present depend on the decoder's stride: > 2 gets a stride-2 step (skip = encoder features[1]),
    > 1 gets a full-resolution step (skip = the input bands, encoder features[0]); a full-resolution decoder
    (e.g. smp Unet) passes through unchanged.

    Args:
        in_channels: decoder output channels.
        decoder_stride: decoder output stride (1, 2, 4, 8...).
        stride2_channels: channels of encoder features[1] (0 if the encoder has none, e.g. mit_b*).
        image_channels: input bands.
        refine_channels: (stride-2 step channels, full-resolution step channels).
    """

    def __init__(
        self,
        in_channels: int,
        decoder_stride: int,
        stride2_channels: int,
        image_channels: int,
        refine_channels: Sequence[int] = (32, 16),
    ):
        super().__init__()
        c2, c1 = (int(c) for c in refine_channels)
        channels = in_channels
        self.to_stride2 = None
        self.to_full = None
        if decoder_stride > 2:
            self.to_stride2 = _RefineStep(channels, stride2_channels, max(c2 // 2, 1), c2)
            channels = c2
        if decoder_stride > 1:
            # The input bands go in raw: a 1x1 projection of a few bands would add nothing.
            self.to_full = _RefineStep(channels, image_channels, None, c1)
            channels = c1
        self.out_channels = channels

    def forward(self, x: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        if self.to_stride2 is not None:
            x = self.to_stride2(x, features[1])
        if self.to_full is not None:
            x = self.to_full(x, features[0])
        elif x.shape[-2:] != features[0].shape[-2:]:
            x = F.interpolate(x, size=features[0].shape[-2:], mode="bilinear", align_corners=False)
        return x
