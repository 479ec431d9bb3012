"""A control: the base's architecture with random weights, trained like `full`. What pre-training buys is the gap
between this and the pre-trained methods."""

from __future__ import annotations

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow.methods.full import FullFineTune


class Scratch(FullFineTune):
    name = "scratch"

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        config = Wav2Vec2Config.from_pretrained(base, vocab_size=len(vocab), **overrides)
        model = Wav2Vec2ForCTC(config)  # random init, seeded by the training stage
        if cfg.get("freeze_feature_encoder", False):
            model.freeze_feature_encoder()
        return model
