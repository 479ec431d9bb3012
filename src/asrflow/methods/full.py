"""Full fine-tuning: every transformer weight trains; the convolutional feature encoder is frozen by default
(as in the MMS/XLS-R recipes: it is generic, and freezing it roughly triples CPU throughput)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from asrflow.model import AudioTask


def load_with_new_head(base: str, vocab_size: int, overrides: dict) -> Wav2Vec2ForCTC:
    """The base checkpoint with a CTC head sized for this fold's vocabulary (the old head is dropped)."""
    return Wav2Vec2ForCTC.from_pretrained(base, vocab_size=vocab_size, ignore_mismatched_sizes=True,
                                          use_safetensors=True, **overrides)


class AudioMethod:
    """What most methods share: training on audio, saving and loading a plain Wav2Vec2ForCTC folder."""

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> AudioTask:
        return AudioTask(model, processor)

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, model_dir: Path, language: str) -> Wav2Vec2ForCTC:
        return Wav2Vec2ForCTC.from_pretrained(model_dir, use_safetensors=True)


class FullFineTune(AudioMethod):
    name = "full"

    def prepare(self, base: str, vocab_size: int, overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        model = load_with_new_head(base, vocab_size, overrides)
        if cfg.get("freeze_feature_encoder", True):
            model.freeze_feature_encoder()
        return model
