"""Full fine-tuning: every transformer weight trains; the convolutional feature encoder is frozen by default
(as in the MMS/XLS-R recipes: it is generic, and freezing it roughly triples CPU throughput)."""

from __future__ import annotations

from pathlib import Path

import logging

import torch
from safetensors.torch import load_file
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from asrflow.errors import AsrflowError
from asrflow.features import ConvCachedTask
from asrflow.io import read_json
from asrflow.model import AudioTask

log = logging.getLogger(__name__)


def require_safetensors(path: Path) -> Path:
    """`path`, which must exist: transformers and peft fall back to pickled `*.bin` weights when it is missing."""
    if not path.is_file():
        raise AsrflowError(f"{path}: not found; asrflow loads weights from safetensors only, never pickle")
    return path


def load_with_new_head(base: str, vocab: dict[str, int], overrides: dict) -> Wav2Vec2ForCTC:
    """The base checkpoint with a CTC head for this fold's vocabulary, warm-started where the base knows a token."""
    model = Wav2Vec2ForCTC.from_pretrained(base, vocab_size=len(vocab), ignore_mismatched_sizes=True,
                                           use_safetensors=True, **overrides)
    warm_start_head(model, Path(base), vocab)
    return model


def warm_start_head(model: Wav2Vec2ForCTC, base: Path, vocab: dict[str, int]) -> int:
    """Copy the base's output row of every token it shares with `vocab` (blank, word delimiter, shared symbols).

    A new language's head otherwise starts from noise; IPA symbols the base already emits start where they were.
    Bases without a flat vocab.json (e.g. MMS, whose vocabularies are per language) keep the fresh head.
    """
    base_vocab = read_json(base / "vocab.json") if (base / "vocab.json").is_file() else {}
    if not base_vocab or not all(isinstance(i, int) for i in base_vocab.values()):
        return 0
    base_head = load_file(str(base / "model.safetensors"), device="cpu")
    shared = [(i, base_vocab[t]) for t, i in vocab.items() if t in base_vocab]
    with torch.no_grad():
        for new, old in shared:
            model.lm_head.weight[new] = base_head["lm_head.weight"][old]
            model.lm_head.bias[new] = base_head["lm_head.bias"][old]
    log.info("output layer: %d of %d tokens warm-started from the base vocabulary", len(shared), len(vocab))
    return len(shared)


class AudioMethod:
    """What most methods share: training on audio, saving and loading a plain Wav2Vec2ForCTC folder."""

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> AudioTask:
        return AudioTask(model, processor)

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, model_dir: Path, language: str) -> Wav2Vec2ForCTC:
        return Wav2Vec2ForCTC.from_pretrained(model_dir, use_safetensors=True)


class ConvFrozenMethod(AudioMethod):
    """Methods whose feature encoder never trains: they train on its cached output (asrflow.features)."""

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> ConvCachedTask:
        return ConvCachedTask(model, processor)


class FullFineTune(ConvFrozenMethod):
    name = "full"

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> AudioTask | ConvCachedTask:
        if cfg.get("freeze_feature_encoder", True):
            return ConvCachedTask(model, processor)
        return AudioTask(model, processor)

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        model = load_with_new_head(base, vocab, overrides)
        if cfg.get("freeze_feature_encoder", True):
            model.freeze_feature_encoder()
        return model
