"""Text encoders over padded token ids (``PAD_ID`` = 0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmdistill.data.batch import PAD_ID
from mmdistill.errors import DataError
from mmdistill.models.encoders.common import (
    check_widths,
    conv1d_stages,
    full_lengths,
    gather_time,
    masked_mean,
    reverse_padded,
    time_mask,
    valid_frames,
)
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import ENCODERS


@ENCODERS.register("lstm", modality="text")
class TextLSTM(nn.Module):
    """Embedding + (bi)LSTM; pooled = projection of [masked mean, last valid state].

    The backward direction runs a forward LSTM over each row reversed within its length, which
    equals a packed bidirectional LSTM exactly but needs no ``pack_padded_sequence`` (ONNX export
    friendly). Each layer and direction is its own ``nn.LSTM``, so quantizers still see LSTMs.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        embed_dim: embedding width.
        hidden: LSTM hidden size per direction.
        num_layers: stacked LSTM layers.
        bidirectional: add a backward direction.
        out_dim: width of the pooled output.
        dropout: dropout between layers and before the projection.

    Shapes:
        x: ``[B, T]`` int64; lengths: ``[B]`` (0 for absent rows, clamped to 1) or None.
        Returns pooled ``[B, out_dim]``, tokens ``[B, T, token_dim]`` (token_dim = hidden x
        directions, zero at padding) and mask ``[B, T]``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        hidden: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        out_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden", hidden),
                            ("num_layers", num_layers), ("out_dim", out_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.vocab_size = int(vocab_size)
        self.out_dim = int(out_dim)
        self.bidirectional = bool(bidirectional)
        self.token_dim = int(hidden) * (2 if self.bidirectional else 1)
        self.embed = nn.Embedding(self.vocab_size, embed_dim, padding_idx=PAD_ID)
        self.fwd = nn.ModuleList()
        self.bwd = nn.ModuleList()
        prev = int(embed_dim)
        for _ in range(int(num_layers)):
            self.fwd.append(nn.LSTM(prev, hidden, batch_first=True))
            if self.bidirectional:
                self.bwd.append(nn.LSTM(prev, hidden, batch_first=True))
            prev = self.token_dim
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * self.token_dim, self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode padded token ids."""
        batch, steps = x.shape
        lengths = full_lengths(lengths, batch, steps, x.device)
        mask = time_mask(lengths, steps)
        h = self.embed(x)
        last_fwd = last_bwd = h  # reassigned in the loop; num_layers >= 1
        for i, lstm in enumerate(self.fwd):
            if i > 0:
                h = self.dropout(h)
            out_f, _ = lstm(h)
            last_fwd = gather_time(out_f, lengths - 1)
            if self.bidirectional:
                out_b, _ = self.bwd[i](reverse_padded(h, lengths))
                # The backward pass ends at the row's first token, i.e. at step length-1 of the reversed row.
                last_bwd = gather_time(out_b, lengths - 1)
                h = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=-1)
            else:
                h = out_f
        last = torch.cat([last_fwd, last_bwd], dim=-1) if self.bidirectional else last_fwd
        tokens = h * mask.unsqueeze(-1).to(h.dtype)
        pooled = self.proj(self.dropout(torch.cat([masked_mean(tokens, mask), last], dim=-1)))
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)


class _Block(nn.Module):
    """Pre-norm Transformer block (attention + GELU MLP), written out with plain ``nn.Linear``s.

    Used instead of ``nn.TransformerEncoderLayer`` because the latter's attention bakes the
    example's batch and length into reshapes when traced for ONNX export, and because plain
    linears are what structural pruners understand.

    Shapes:
        x: ``[B, T, dim]``; mask: ``[B, T]`` bool (True = valid). Returns ``[B, T, dim]``.
    """

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = float(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One block."""
        batch, steps, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, steps, 3, self.heads, dim // self.heads).unbind(2)
        # Key padding mask broadcast over heads and queries; every row keeps >= 1 valid key.
        attn = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None, None, :],
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.dropout(self.attn_out(attn.transpose(1, 2).reshape(batch, steps, dim)))
        return x + self.dropout(self.mlp(self.norm2(x)))


@ENCODERS.register("transformer", modality="text")
class TextTransformer(nn.Module):
    """Pre-norm Transformer encoder with learned positions; pooled = projected masked mean.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        dim: model width.
        depth: number of layers.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        max_length: longest sequence accepted (size of the position table).
        out_dim: width of the pooled output.
        dropout: dropout inside the layers and before the projection.

    Shapes:
        x: ``[B, T]`` int64 with ``T <= max_length``; lengths: ``[B]`` or None. Returns pooled
        ``[B, out_dim]``, tokens ``[B, T, dim]`` (zero at padding) and mask ``[B, T]``.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2,
        max_length: int = 64,
        out_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads != 0:
            raise ValueError(f"dim must be a positive multiple of heads, got dim={dim}, heads={heads}")
        if depth < 1 or max_length < 1 or out_dim < 1:
            raise ValueError(f"depth, max_length, out_dim must be >= 1, got {depth}, {max_length}, {out_dim}")
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.out_dim = int(out_dim)
        self.token_dim = int(dim)
        self.embed = nn.Embedding(self.vocab_size, dim, padding_idx=PAD_ID)
        self.pos = nn.Parameter(torch.randn(self.max_length, dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(dim, heads, int(dim * mlp_ratio), dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode padded token ids."""
        batch, steps = x.shape
        if steps > self.max_length:
            raise DataError(
                f"text batch has {steps} tokens per row but the transformer encoder accepts at most "
                f"{self.max_length}; truncate text in preprocessing or raise encoders.text.kwargs.max_length"
            )
        lengths = full_lengths(lengths, batch, steps, x.device)
        mask = time_mask(lengths, steps)
        h = self.embed(x) + self.pos[:steps]
        for block in self.blocks:
            h = block(h, mask)
        h = self.norm(h)
        tokens = h * mask.unsqueeze(-1).to(h.dtype)
        pooled = self.proj(self.dropout(masked_mean(tokens, mask)))
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)


@ENCODERS.register("textcnn", modality="text")
class TextCNN(nn.Module):
    """Embedding + Conv1d-BN-ReLU stages over tokens; pooled = projection of [masked mean, max].

    The convolutional sentence encoder of Kim (2014), "Convolutional Neural Networks for Sentence
    Classification" (EMNLP), with stacked same-length stages instead of parallel widths. It is
    the text encoder to pick for a student that will be compressed: every layer after the
    embedding is a conv or a linear, so structured pruning narrows each stage (an LSTM's width
    is fixed) and ONNX Runtime static int8 quantizes each of them (an LSTM stays float32 there),
    and its exported graph has a few dozen nodes instead of the bidirectional LSTM's masking,
    reversing and gathering.

    Padding never changes a row's output in eval mode: the embeddings and every stage's output are
    zeroed at padded steps (so a conv sees the same zeros at a row's end as an unpadded row does),
    and after a ReLU a zero never beats a valid step in the max.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        embed_dim: embedding width.
        channels: output width of each conv stage (the time axis keeps its length).
        kernel_size: odd conv kernel size over tokens.
        out_dim: width of the pooled output.
        dropout: dropout before the projection.

    Shapes:
        x: ``[B, T]`` int64; lengths: ``[B]`` (0 for absent rows, clamped to 1) or None.
        Returns pooled ``[B, out_dim]``, tokens ``[B, T, channels[-1]]`` (zero at padding) and
        mask ``[B, T]``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        channels: Sequence[int] = (128, 128),
        kernel_size: int = 3,
        out_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        widths = check_widths("channels", list(channels))
        if vocab_size < 1 or embed_dim < 1 or out_dim < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"vocab_size, embed_dim, out_dim must be >= 1 and kernel_size odd, got {vocab_size}, "
                f"{embed_dim}, {out_dim}, {kernel_size}"
            )
        self.vocab_size = int(vocab_size)
        self.out_dim = int(out_dim)
        self.token_dim = widths[-1]
        self.embed = nn.Embedding(self.vocab_size, embed_dim, padding_idx=PAD_ID)
        self.convs = conv1d_stages(embed_dim, widths, kernel_size)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * widths[-1], self.out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode padded token ids."""
        h = self.embed(x).transpose(1, 2)  # [B, E, T]
        valid = valid_frames(lengths, x.shape[1], h)  # [B, 1, T]
        h = h * valid
        for conv in self.convs:
            h = conv(h) * valid
        mean = h.sum(dim=-1) / valid.sum(dim=-1).clamp_min(1.0)
        pooled = self.proj(self.dropout(torch.cat([mean, h.amax(dim=-1)], dim=-1)))
        return EncoderOutput(pooled=pooled, tokens=h.transpose(1, 2), mask=valid.squeeze(1) > 0)
