"""Image encoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmdistill.errors import DataError
from mmdistill.models.encoders.common import check_feature_axis, check_widths, is_exporting
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
        grid = self.pool.output_size
        side = int(grid if isinstance(grid, int) else grid[0])
        pooled_map = _grid_pool(h, side) if is_exporting() else self.pool(h)
        pooled = self.proj(self.dropout(pooled_map.flatten(1)))
        return EncoderOutput(pooled=pooled)


def _grid_pool(h: torch.Tensor, grid: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(h, grid)`` from slices, for exporters.

    ONNX has no adaptive pool whose input size is not a multiple of the output (a 28x28 digit
    reaches the pool as 7x7, pooled to 2x2 with overlapping bins [0, 4) and [3, 7)). The bins are
    PyTorch's: ``start = floor(i*H/g)``, ``end = ceil((i+1)*H/g)``; the spatial size is fixed by
    the preprocessing, so the bounds are constants of the exported graph. Where the bins are equal
    and evenly strided (that 7x7 case, or any size divisible by ``grid``) it is one strided
    average pool (one graph node instead of a slice and a mean per bin).

    Shapes:
        h: ``[B, C, H, W]``. Returns ``[B, C, grid, grid]``.
    """
    height, width = int(h.shape[2]), int(h.shape[3])
    uniform = _uniform_bins(height, grid), _uniform_bins(width, grid)
    if uniform[0] is not None and uniform[1] is not None:
        # Equal bins at a constant stride (7 -> 2: [0, 4) and [3, 7)) are one AveragePool node.
        (kh, sh), (kw, sw) = uniform[0], uniform[1]
        return nn.functional.avg_pool2d(h, (kh, kw), (sh, sw))
    rows = []
    for i in range(grid):
        r0, r1 = (i * height) // grid, -((-(i + 1) * height) // grid)
        cols = []
        for j in range(grid):
            c0, c1 = (j * width) // grid, -((-(j + 1) * width) // grid)
            cols.append(h[:, :, r0:r1, c0:c1].mean(dim=(2, 3)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def _uniform_bins(size: int, grid: int) -> tuple[int, int] | None:
    """``(kernel, stride)`` when PyTorch's adaptive bins over ``size`` are one strided window, else None."""
    bins = [((i * size) // grid, -((-(i + 1) * size) // grid)) for i in range(grid)]
    kernel = bins[0][1] - bins[0][0]
    stride = bins[1][0] - bins[0][0] if grid > 1 else 1
    equal = all(end - start == kernel and start == i * stride for i, (start, end) in enumerate(bins))
    if stride >= 1 and equal:
        return kernel, stride
    return None


def _image_shape(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair; raises ValueError naming the parameter."""
    size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(s) for s in image_size]
    if len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"image_size must be a positive int or a pair (H, W) of them, got {image_size!r}")
    return size[0], size[1]


@ENCODERS.register("mlp", modality="image")
class MLPImageEncoder(nn.Module):
    """Flatten the image, then Linear-ReLU(-dropout) per hidden width; pooled = the last hidden layer.

    The classic MNIST networks (784-1200-1200-10 in Hinton et al. 2015) as an encoder. An empty
    ``hidden`` passes the flattened pixels through (``out_dim = C*H*W``), so an image-only
    :class:`~mmdistill.models.multimodal.MultimodalModel` with ``concat`` fusion (Linear + ReLU of
    width ``dim``) and a ``linear`` head is exactly a ``C*H*W - ...hidden... - dim - K`` MLP.

    Args:
        in_channels: image channels (1 grey, 3 RGB).
        image_size: ``H`` (square) or ``(H, W)``; fixes the input width ``C*H*W`` of the first layer.
        hidden: width of each hidden layer, in order; may be empty.
        dropout: dropout after each hidden layer's ReLU.
        input_dropout: dropout on the flattened pixels (Hinton et al. 2012 used 0.2 with 0.5 hidden).

    Shapes:
        x: ``[B, in_channels, H, W]`` float. Returns pooled ``[B, out_dim]``
        (``out_dim = hidden[-1]``, or ``C*H*W`` without hidden layers); no tokens.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [int(h) for h in hidden]
        if any(h < 1 for h in widths):
            raise ValueError(f"hidden must be a list of positive widths (or empty), got {list(hidden)!r}")
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.image_size = _image_shape(image_size)
        self.in_features = self.in_channels * self.image_size[0] * self.image_size[1]
        self.token_dim: int | None = None
        layers: list[nn.Module] = [nn.Flatten(1), nn.Dropout(input_dropout)]
        prev = self.in_features
        for width in widths:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch of images; ``lengths`` is accepted for interface symmetry and ignored."""
        if x.ndim != 4:
            raise DataError(f"image batch must be [B, C, H, W], got shape {tuple(x.shape)}; stack images "
                            "with mmdistill.data.collate.collate")
        check_feature_axis(x, 1, self.in_channels, "image batch", "encoders.image.kwargs.in_channels")
        for axis, expected in ((2, self.image_size[0]), (3, self.image_size[1])):
            check_feature_axis(x, axis, expected, "image batch", "encoders.image.kwargs.image_size")
        return EncoderOutput(pooled=self.net(x))
