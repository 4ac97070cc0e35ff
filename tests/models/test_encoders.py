"""Encoders: registry-wide smoke test, packed-LSTM equivalence, padding invariance, input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.errors import DataError
from mmdistill.models.builders import PRESETS
from mmdistill.models.encoders.audio import AudioConv1d, AudioCRNN
from mmdistill.models.encoders.common import (
    full_lengths,
    halve_lengths,
    reverse_padded,
    time_mask,
    valid_frames,
)
from mmdistill.models.encoders.image import ImageCNN
from mmdistill.models.encoders.text import TextCNN, TextLSTM, TextTransformer
from mmdistill.models.registries import ENCODERS

VOCAB, MELS = 50, 16
EXPECTED_MODALITY = {
    "cnn": "image", "mlp": "image", "lstm": "text", "transformer": "text", "textcnn": "text", "crnn": "audio",
    "conv1d": "audio",
}
# Tiny kwargs of encoders the presets do not size (the mlp's input width is fixed: 16x16 test images).
TINY_KWARGS = {"mlp": {"image_size": 16, "hidden": [8, 8]}}


def make_input(modality: str, batch: int = 4, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An input tensor and lengths (one row of length 1, one full) for ``modality``."""
    lengths = torch.tensor([steps, max(steps // 2, 1), 1, steps - 1][:batch])
    if modality == "image":
        return torch.randn(batch, 1, 16, 16), None
    if modality == "text":
        x = torch.randint(1, VOCAB, (batch, steps))
        x[torch.arange(steps)[None] >= lengths[:, None]] = 0
        return x, lengths
    x = torch.randn(batch, MELS, steps)
    x[(torch.arange(steps)[None] >= lengths[:, None]).unsqueeze(1).expand_as(x)] = 0.0
    return x, lengths


def build(name: str) -> nn.Module:
    kwargs = dict(PRESETS["tiny"]["encoder_kwargs"].get(name) or TINY_KWARGS[name])
    modality = ENCODERS.entry(name).meta["modality"]
    injected = {"image": {"in_channels": 1}, "text": {"vocab_size": VOCAB}, "audio": {"n_mels": MELS}}
    kwargs.update(injected[modality])
    return ENCODERS.build(name, **kwargs)


def test_builtin_encoders_registered_with_modality() -> None:
    assert {n: ENCODERS.entry(n).meta["modality"] for n in EXPECTED_MODALITY} == EXPECTED_MODALITY


@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_smoke(name: str) -> None:
    torch.manual_seed(0)
    enc = build(name)
    modality = ENCODERS.entry(name).meta["modality"]
    x, lengths = make_input(modality)
    out = enc(x, lengths)
    assert out.pooled.shape == (4, enc.out_dim)
    assert torch.isfinite(out.pooled).all()
    if out.tokens is not None:
        assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[2] == enc.token_dim
        assert out.mask[:, 0].all()  # length-1 rows keep their first position
        assert (out.tokens[~out.mask] == 0).all()
    out.pooled.square().sum().backward()
    unused = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"
    # lengths=None means full length rows.
    assert enc(x).pooled.shape == (4, enc.out_dim)


def test_reverse_padded_and_halve_lengths() -> None:
    x = torch.arange(10.0).view(2, 5, 1)
    rev = reverse_padded(x, torch.tensor([3, 5]))
    assert rev[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_padded(rev, torch.tensor([3, 5])), x)
    assert halve_lengths(torch.tensor([1, 2, 3, 101])).tolist() == [1, 1, 2, 51]


def test_valid_frames_equals_the_clamped_time_mask() -> None:
    """Without the upper clamp the mask is the same, for lengths 0 (clamped to 1), inside and above
    the padded width, and int32 lengths; None means every step is valid."""
    ref = torch.zeros(5, 3, 6, dtype=torch.float64)
    lengths = torch.tensor([0, 1, 4, 6, 9], dtype=torch.int32)
    expected = time_mask(full_lengths(lengths, 5, 6, ref.device), 6).unsqueeze(1).to(ref.dtype)
    got = valid_frames(lengths, 6, ref)
    assert got.shape == (5, 1, 6) and got.dtype == torch.float64 and torch.equal(got, expected)
    assert got[:, 0].sum(1).tolist() == [1, 1, 4, 6, 6]
    assert torch.equal(valid_frames(None, 6, ref), torch.ones(5, 1, 6, dtype=torch.float64))


def test_lstm_matches_packed_bidirectional_lstm() -> None:
    torch.manual_seed(0)
    enc = TextLSTM(VOCAB, embed_dim=6, hidden=5, bidirectional=True, out_dim=7, dropout=0.0).eval()
    ref = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for suffix, lstm in (("", enc.fwd[0]), ("_reverse", enc.bwd[0])):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{kind}_l0{suffix}").copy_(getattr(lstm, f"{kind}_l0"))
    x, lengths = make_input("text")
    out = enc(x, lengths)
    packed = nn.utils.rnn.pack_padded_sequence(enc.embed(x), lengths, batch_first=True, enforce_sorted=False)
    ref_out, (h_n, _) = ref(packed)
    ref_tokens, _ = nn.utils.rnn.pad_packed_sequence(ref_out, batch_first=True, total_length=x.shape[1])
    torch.testing.assert_close(out.tokens, ref_tokens, atol=1e-6, rtol=1e-5)
    mean = ref_tokens.sum(1) / lengths[:, None]
    expected = enc.proj(torch.cat([mean, h_n[0], h_n[1]], dim=-1))
    torch.testing.assert_close(out.pooled, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "transformer", "textcnn", "crnn", "conv1d"])
def test_sequence_encoders_ignore_padding(name: str) -> None:
    """In eval mode a row's output does not depend on how much its batch was padded."""
    torch.manual_seed(0)
    enc = build(name).eval()
    modality = ENCODERS.entry(name).meta["modality"]
    x, lengths = make_input(modality, steps=13)
    batched = enc(x, lengths).pooled
    for i, n in enumerate(lengths.tolist()):
        alone = enc(x[i : i + 1, ..., :n], torch.tensor([n])).pooled
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-4)


def test_input_shape_errors_name_the_spec_key() -> None:
    with pytest.raises(DataError, match=r"encoders.image.kwargs.in_channels"):
        ImageCNN(in_channels=3)(torch.randn(2, 1, 8, 8))
    with pytest.raises(DataError, match=r"got|built for 40"):
        AudioConv1d(n_mels=40)(torch.randn(2, 32, 20))
    with pytest.raises(DataError, match=r"at most 8.*max_length"):
        TextTransformer(VOCAB, dim=8, heads=2, max_length=8)(torch.ones(2, 9, dtype=torch.long))


def test_bad_constructor_values_raise_value_error() -> None:
    with pytest.raises(ValueError, match="channels"):
        ImageCNN(channels=[])
    with pytest.raises(ValueError, match="kernel_size"):
        AudioCRNN(kernel_size=4)
    with pytest.raises(ValueError, match="multiple of heads"):
        TextTransformer(VOCAB, dim=10, heads=4)
    with pytest.raises(ValueError, match="kernel_size odd"):
        TextCNN(VOCAB, kernel_size=2)
    with pytest.raises(ValueError, match="channels"):
        TextCNN(VOCAB, channels=[8, 0])


def test_image_cnn_handles_tiny_images_and_widths_follow_spec() -> None:
    enc = ImageCNN(in_channels=1, channels=[3, 5, 7, 9], out_dim=4)
    assert enc(torch.randn(2, 1, 8, 8)).pooled.shape == (2, 4)  # 8 -> 4 -> 2 -> 1 -> 1 with ceil pools
    convs = [m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [3, 5, 7, 9]


def test_image_cnn_grid_keeps_spatial_layout_in_the_projection() -> None:

    enc = ImageCNN(channels=[4, 8], out_dim=6, grid=2).eval()
    assert enc.proj.in_features == 8 * 2 * 2
    x = torch.zeros(2, 1, 28, 28)
    x[0, :, :14] = 1.0  # top half lit
    x[1, :, 14:] = 1.0  # bottom half lit: same global mean, different layout
    with torch.no_grad():
        out = enc(x).pooled
    assert out.shape == (2, 6)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="grid must be >= 1"):
        ImageCNN(grid=0)


def test_audio_input_norm_removes_per_band_offset_and_gain() -> None:

    torch.manual_seed(0)
    enc = AudioConv1d(n_mels=8, channels=[8], out_dim=4, input_norm=True).eval()
    x = torch.randn(1, 8, 30)
    shifted = 3.0 * x + torch.linspace(-5, 5, 8).view(1, 8, 1)  # a louder clip with a spectral tilt
    lengths = torch.tensor([30])
    with torch.no_grad():
        a, b = enc(x, lengths).pooled, enc(shifted, lengths).pooled
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    plain = AudioConv1d(n_mels=8, channels=[8], out_dim=4, input_norm=False).eval()
    plain.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x, lengths).pooled, plain(shifted, lengths).pooled, atol=1e-3)


def test_grid_pool_for_export_matches_adaptive_pool_on_uneven_maps() -> None:
    """A 28x28 digit reaches the pool as 7x7; the export path must give PyTorch's adaptive bins."""
    from mmdistill.models.encoders.image import _grid_pool, _uniform_bins

    # 7 -> 2 and 4 -> 2 take the one-AveragePool path; 5 -> 3 (bins of 2 and 3) and 1 -> 2 the slices.
    assert (_uniform_bins(7, 2), _uniform_bins(4, 2), _uniform_bins(9, 1)) == ((4, 3), (2, 2), (9, 1))
    assert _uniform_bins(5, 3) is None and _uniform_bins(1, 2) is None
    cases = (((7, 7), 2), ((7, 5), 3), ((4, 4), 2), ((1, 1), 2), ((6, 9), 3), ((5, 5), 1))
    for (height, width), grid in cases:
        h = torch.randn(2, 3, height, width)
        expected = torch.nn.functional.adaptive_avg_pool2d(h, grid)
        torch.testing.assert_close(_grid_pool(h, grid), expected)


def test_textcnn_pools_mean_and_max_of_valid_steps_only() -> None:
    """The pooled vector is the projection of [mean, max] over valid steps, by hand."""
    torch.manual_seed(0)
    enc = TextCNN(VOCAB, embed_dim=6, channels=[5, 7], kernel_size=3, out_dim=4, dropout=0.0).eval()
    x, lengths = make_input("text", steps=9)
    out = enc(x, lengths)
    with torch.no_grad():
        for i, n in enumerate(lengths.tolist()):
            h = enc.embed(x[i : i + 1, :n]).transpose(1, 2)
            for conv in enc.convs:
                h = conv(h)  # unpadded: the convs' own zero padding is the only padding
            expected = enc.proj(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))
            torch.testing.assert_close(out.pooled[i : i + 1], expected, atol=1e-5, rtol=1e-4)
    assert out.tokens.shape == (4, 9, 7) and enc.token_dim == 7
