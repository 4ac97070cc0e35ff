"""Audio encoders over padded log-mel spectrograms ``[B, n_mels, frames]``.

Both encoders zero the padded frames after every ReLU and pool with ``ceil_mode``: since the
activations are >= 0 a zeroed frame never wins a max-pool, and zero padding is what the convs
see at a sequence's end anyway. So, in eval mode, a row's output does not depend on how much
padding its batch added (exported batch-1 and batch-64 results agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmdistill.models.encoders.common import (
    check_feature_axis,
    check_widths,
    conv1d_stages,
    full_lengths,
    gather_time,
    halve_lengths,
    masked_mean,
    time_mask,
    valid_frames,
)
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import ENCODERS


def _mask_frames(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero frames at or beyond ``lengths`` on the last axis of ``h`` (``[B, ..., F]``)."""
    mask = time_mask(lengths, h.shape[-1]).to(h.dtype)
    shape = [h.shape[0]] + [1] * (h.dim() - 2) + [h.shape[-1]]
    return h * mask.view(shape)


@ENCODERS.register("crnn", modality="audio")
class AudioCRNN(nn.Module):
    """2-D conv stages over (mel, time), then a GRU over time; pooled = projected [mean, last].

    Args:
        n_mels: mel bands of the input.
        channels: width of each conv stage; mel and time axes halve after each stage.
        hidden: GRU hidden size.
        out_dim: width of the pooled output.
        dropout: dropout before the projection.
        kernel_size: odd conv kernel size.

    Shapes:
        x: ``[B, n_mels, F]``; lengths: ``[B]`` frames (0 for absent rows) or None. Returns
        pooled ``[B, out_dim]``, tokens ``[B, F', hidden]`` and mask ``[B, F']`` with
        ``F' = ceil(F / 2**len(channels))``.
    """

    def __init__(
        self,
        n_mels: int = 40,
        channels: Sequence[int] = (32, 64),
        hidden: int = 64,
        out_dim: int = 128,
        dropout: float = 0.1,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        widths = check_widths("channels", list(channels))
        if n_mels < 1 or hidden < 1 or out_dim < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"n_mels, hidden, out_dim must be >= 1 and kernel_size odd, got {n_mels}, {hidden}, "
                f"{out_dim}, {kernel_size}"
            )
        self.n_mels = int(n_mels)
        self.out_dim = int(out_dim)
        self.token_dim = int(hidden)
        self.convs = nn.ModuleList()
        prev, mels = 1, self.n_mels
        for width in widths:
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            prev, mels = width, (mels + 1) // 2
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.rnn = nn.GRU(prev * mels, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * hidden, self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a padded log-mel batch."""
        check_feature_axis(x, 1, self.n_mels, "audio batch", "encoders.audio.kwargs.n_mels")
        lengths = full_lengths(lengths, x.shape[0], x.shape[-1], x.device)
        h = _mask_frames(x, lengths).unsqueeze(1)
        for conv in self.convs:
            h = self.pool(_mask_frames(conv(h), lengths))
            lengths = halve_lengths(lengths)
        batch, chans, mels, frames = h.shape
        seq = h.permute(0, 3, 1, 2).reshape(batch, frames, chans * mels)
        out, _ = self.rnn(seq)
        mask = time_mask(lengths, frames)
        tokens = out * mask.unsqueeze(-1).to(out.dtype)
        summary = torch.cat([masked_mean(tokens, mask), gather_time(out, lengths - 1)], dim=-1)
        return EncoderOutput(pooled=self.proj(self.dropout(summary)), tokens=tokens, mask=mask)


def _normalize_bands(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per clip and mel band, zero mean and unit variance over the valid frames.

    Shapes:
        x: ``[B, n_mels, F]``; valid: ``[B, 1, F]`` float, 1 at valid frames. Returns
        ``[B, n_mels, F]`` (padding left unmasked; the caller masks it).
    """
    count = valid.sum(dim=-1, keepdim=True).clamp(min=1.0)
    mean = (x * valid).sum(dim=-1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim=-1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps)


@ENCODERS.register("conv1d", modality="audio")
class AudioConv1d(nn.Module):
    """Conv1d-BN-ReLU-maxpool stages over frames (mels as channels), masked mean pool, projection.

    Args:
        n_mels: mel bands of the input (the first conv's input channels).
        channels: width of each stage; the time axis halves after each stage.
        out_dim: width of the pooled output.
        kernel_size: odd conv kernel size over frames.
        dropout: dropout before the projection.
        input_norm: normalize each mel band of each clip to zero mean and unit variance over its
            valid frames (cepstral mean/variance normalization): removes the speaker's and the
            channel's spectral tilt, which is what differs between training and unseen voices.

    Shapes:
        x: ``[B, n_mels, F]``; lengths: ``[B]`` frames or None. Returns pooled ``[B, out_dim]``,
        tokens ``[B, F', channels[-1]]`` and mask ``[B, F']`` with ``F' = ceil(F / 2**len(channels))``.
    """

    def __init__(
        self,
        n_mels: int = 40,
        channels: Sequence[int] = (64, 128, 128),
        out_dim: int = 128,
        kernel_size: int = 5,
        dropout: float = 0.1,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        widths = check_widths("channels", list(channels))
        if n_mels < 1 or out_dim < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"n_mels and out_dim must be >= 1 and kernel_size odd, got {n_mels}, {out_dim}, {kernel_size}"
            )
        self.n_mels = int(n_mels)
        self.out_dim = int(out_dim)
        self.token_dim = widths[-1]
        self.input_norm = bool(input_norm)
        self.convs = conv1d_stages(self.n_mels, widths, kernel_size)
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(widths[-1], self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a padded log-mel batch."""
        check_feature_axis(x, 1, self.n_mels, "audio batch", "encoders.audio.kwargs.n_mels")
        # One float mask [B, 1, F], max-pooled with the activations: a ceil-mode pool of a prefix
        # mask is the prefix mask of halve_lengths(lengths), so no stage rebuilds it from lengths
        # (which costs an exported graph about ten shape/range/compare nodes per stage).
        valid = valid_frames(lengths, x.shape[-1], x)
        if self.input_norm:
            x = _normalize_bands(x, valid)
        h = x * valid
        for conv in self.convs:
            h = self.pool(conv(h) * valid)
            valid = self.pool(valid)
        # h is already zero at padding: the masked mean is a plain sum over frames / valid count.
        mean = h.sum(dim=-1) / valid.sum(dim=-1).clamp_min(1.0)
        pooled = self.proj(self.dropout(mean))
        return EncoderOutput(pooled=pooled, tokens=h.transpose(1, 2), mask=valid.squeeze(1) > 0)
