"""A control: the base's architecture with random weights, trained like `full`. What pre-training buys is the gap
between this and the pre-trained methods."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCTC, ProcessorMixin

from asrflow.checkpoint import Base
from asrflow.methods.base import AudioMethod, freeze_conv_encoder
from asrflow.model import AudioTask


class Scratch(AudioMethod):
    name = "scratch"

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
        config = AutoConfig.from_pretrained(base.directory, vocab_size=len(vocab), trust_remote_code=False, **overrides)
        # random init, seeded by the training stage
        model = AutoModelForCTC.from_config(config, trust_remote_code=False)
        if cfg["freeze_feature_encoder"]:
            freeze_conv_encoder(model, base)
        return model

    def task(self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base) -> AudioTask:
        # Never the conv-feature cache: it is keyed on the base's weights, and these are random.
        return AudioTask(model, processor)
