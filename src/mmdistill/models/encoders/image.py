"""Image encoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmdistill.models.encoders.common import check_feature_axis, check_widths
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import ENCODERS


@ENCODERS.register("cnn", modality="image")
class ImageCNN(nn.Module):
    """Conv-BN-ReLU-maxpool stages, average pool to a ``grid x grid`` map, linear projection.

    Every conv's width is in ``channels`` (one conv per stage), so a pruned model is rebuilt from
    its spec alone. Pools use ``ceil_mode`` so that small images (8x8 digits) survive any depth.

    Args:
        in_channels: image channels (1 grey, 3 RGB).
        channels: output width of each stage; the spatial size halves after each stage.
        out_dim: width of the pooled output.
        dropout: dropout before the projection.
        kernel_size: odd conv kernel size.
        grid: side of the final adaptive average pool; 1 = global average pool. A 2x2 grid keeps
            where strokes are (top/bottom, left/right), which a digit's identity depends on.

    Shapes:
        x: ``[B, in_channels, H, W]`` float. Returns pooled ``[B, out_dim]``; no tokens.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        out_dim: int = 128,
        dropout: float = 0.1,
        kernel_size: int = 3,
        grid: int = 1,
    ) -> None:
        super().__init__()
        widths = check_widths("channels", list(channels))
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.in_channels = int(in_channels)
        self.out_dim = int(out_dim)
        self.token_dim: int | None = None
        stages: list[nn.Module] = []
        prev = self.in_channels
        for width in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            prev = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(prev * grid * grid, self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch of images; ``lengths`` is accepted for interface symmetry and ignored."""
        check_feature_axis(x, 1, self.in_channels, "image batch", "encoders.image.kwargs.in_channels")
        h = self.stages(x)
        pooled = self.proj(self.dropout(self.pool(h).flatten(1)))
        return EncoderOutput(pooled=pooled)
