"""Local Feature Extraction (LFE) module (Hamaguchi et al. 2018).

A dilated front-end (here: the encoder's deep stages with rising dilation) sees wide context but samples it
on a sparse grid, so neighbouring output pixels mix disjoint inputs ("gridding") and small objects smear.
The LFE stack follows with *falling* dilation (e.g. 4 -> 2 -> 1): each layer re-aggregates the sparse
samples of the previous one into dense local features. ``lfe="constant"`` builds the same stack (same
layers, channels, parameters) with one dilation everywhere: the paper's control for the ablation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LocalFeatureExtraction(nn.Module):
    """Residual stack of 3x3 conv + BN + ReLU layers with the given dilations.

    Args:
        channels: input = output channels.
        dilations: one dilation per layer, e.g. (4, 2, 1) for the LFE or (1, 1, 1) for the control.

    Shapes: (B, channels, H, W) -> (B, channels, H, W); ``out = x + stack(x)``.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (4, 2, 1)):
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        layers: list[nn.Module] = []
        for d in self.dilations:
            layers += [
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.stack = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stack(x)
