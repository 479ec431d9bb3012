"""Full fine-tuning: every transformer weight trains; the convolutional feature encoder is frozen by default
(as in the MMS/XLS-R recipes: it is generic, and freezing it roughly triples CPU throughput)."""

from __future__ import annotations

import torch
from transformers import ProcessorMixin

from asrflow.checkpoint import Base
from asrflow.features import ConvCachedTask
from asrflow.methods.base import ConvFrozenMethod, freeze_conv_encoder, load_with_new_head
from asrflow.model import AudioTask


class FullFineTune(ConvFrozenMethod):
    name = "full"

    def task(
        self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base
    ) -> AudioTask | ConvCachedTask:
        if cfg["freeze_feature_encoder"]:
            return super().task(model, processor, cfg, base)
        return AudioTask(model, processor)

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
        model = load_with_new_head(base, vocab, overrides, warm_language or language)
        if cfg["freeze_feature_encoder"]:
            freeze_conv_encoder(model, base)
        return model
