"""Fine-tuning methods. A method only decides which parameters train and how the result is saved and loaded;
the training loop (asrflow.loop) is the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from transformers import PreTrainedModel, ProcessorMixin

from asrflow import config
from asrflow.checkpoint import Base
from asrflow.errors import AsrflowError
from asrflow.methods.adapter import LanguageAdapter
from asrflow.methods.frozen import FrozenEncoder
from asrflow.methods.full import FullFineTune
from asrflow.methods.lora import LoRA
from asrflow.methods.projector import ProjectorMethod
from asrflow.methods.scratch import Scratch


class Method(Protocol):
    name: str

    def unavailable(self, base: Base, cfg: dict) -> str:
        """Why this method cannot train on `base` with settings `cfg` ('' if it can)."""

    def prepare(
        self,
        base: Base,
        vocab: dict[str, int],
        overrides: dict,
        cfg: dict,
        language: str,
        *,
        warm_language: str | None = None,
    ) -> torch.nn.Module:
        """Load `base` with a CTC head for `vocab` (token → id) and mark which parameters train; `language` is the
        corpus', `warm_language` the base's vocabulary/adapter entry to warm-start from (default: `language`)."""

    def task(self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base):
        """What the training loop trains on: the base's inputs (asrflow.model.AudioTask) or cached features."""

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        """Write the model so that plain transformers (or peft) can load it."""

    def load(self, model_dir: Path, language: str) -> PreTrainedModel:
        """Load what `save` wrote, ready for inference."""


METHODS: dict[str, Method] = {
    m.name: m for m in (FullFineTune(), LanguageAdapter(), LoRA(), FrozenEncoder(), Scratch(), ProjectorMethod())
}


class MethodUnavailable(AsrflowError):
    """A method cannot train on the configured base; the message names the base, the reason and what can run."""


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def check_available(base: Base, name: str, train_cfg: dict) -> None:
    """Stop before any training when `name` cannot run on `base`, naming the methods that can (with the settings
    in `train_cfg`, the params' train section)."""
    reason = get(name).unavailable(base, train_cfg[name])
    if reason:
        # A method the params leave out: judged with its schema defaults.
        can = [
            m
            for m, method in METHODS.items()
            if not method.unavailable(base, train_cfg[m] if m in train_cfg else config.defaults(f"train.{m}"))
        ]
        raise MethodUnavailable(
            f"method {name!r} cannot train on model.base {base.name} ({base.model_type}): "
            f"{reason}. Methods that can: {', '.join(can)}"
        )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
