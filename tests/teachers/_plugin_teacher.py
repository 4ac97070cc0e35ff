"""A plugin module of "the user's code" for the pipeline tests: listed in a config as
``plugins: [_plugin_teacher]`` (``tests/`` and this folder are on ``sys.path``), it registers

* ``plugin_image_audio``: a whole teacher (``teacher.external: {kind: torch, ...}``) that reads the
  collated image and audio of :mod:`mmdistill.data.batch` and returns logits and ``"fused"``;
* ``plugin_image_encoder``: a one-modality encoder (``teacher.pretrained.image: {name: torch, ...}``)
  made of two blocks, so ``finetune_layers: 1`` has a last layer to train.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmdistill.models.outputs import EncoderOutput
from mmdistill.teachers import TORCH_MODULES


class PluginImageAudioTeacher(nn.Module):
    """Mean image row profile + mean log-mel band energy → linear; absent modalities count as zeros.

    Shapes:
        batch ``image [B, 1, S, S]``, ``audio [B, n_mels, T]``. Returns logits ``[B, num_classes]``
        and ``fused [B, hidden]``.
    """

    modalities = ["image", "audio"]

    def __init__(self, size: int = 20, n_mels: int = 40, hidden: int = 6, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.size, self.n_mels, self.hidden = size, n_mels, hidden
        self.proj = nn.Linear(size + n_mels, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def feature_dims(self) -> dict[str, int]:
        return {"fused": self.hidden}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        b = len(batch["id"])
        image = batch.get("image")
        rows = image.mean(dim=(1, 3)) if image is not None else torch.zeros(b, self.size)
        audio = batch.get("audio")
        bands = audio.mean(dim=2) if audio is not None else torch.zeros(b, self.n_mels)
        fused = torch.tanh(self.proj(torch.cat([rows, bands], dim=1)))
        return {"logits": self.out(fused), "fused": fused}


class PluginImageEncoder(nn.Module):
    """Two blocks over the image's row profile (``forward(x, lengths) -> EncoderOutput``)."""

    def __init__(self, size: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.out_dim = dim
        self.blocks = nn.ModuleList([nn.Linear(size, dim), nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        h = x.mean(dim=(1, 3))
        for block in self.blocks:
            h = torch.relu(block(h))
        return EncoderOutput(pooled=h)


for _name, _cls in (("plugin_image_audio", PluginImageAudioTeacher),
                    ("plugin_image_encoder", PluginImageEncoder)):
    if _name not in TORCH_MODULES:
        TORCH_MODULES.register(_name)(_cls)
