"""Fine-tuning methods. A method only decides which parameters train and how the result is saved and loaded;
the training loop (asrflow.train) is the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import Wav2Vec2ForCTC

from asrflow.methods.adapter import LanguageAdapter
from asrflow.methods.frozen import FrozenEncoder
from asrflow.methods.full import FullFineTune
from asrflow.methods.lora import LoRA
from asrflow.methods.scratch import Scratch


class Method(Protocol):
    name: str

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        """Load `base` with a CTC head for `vocab` (token → id) and mark which parameters train."""

    def task(self, model: torch.nn.Module, processor, cfg: dict):
        """What the training loop trains on: raw audio (asrflow.model.AudioTask) or cached features."""

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        """Write the model so that plain transformers (or peft) can load it."""

    def load(self, model_dir: Path, language: str) -> Wav2Vec2ForCTC:
        """Load what `save` wrote, ready for inference."""


METHODS: dict[str, Method] = {m.name: m for m in (FullFineTune(), LanguageAdapter(), LoRA(), FrozenEncoder(),
                                                   Scratch())}


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
