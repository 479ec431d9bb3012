"""What the methods share: loading the base with a CTC head for a fold's vocabulary (warm-started where the base knows
a token), the safetensors-only rule, and the base classes: AudioMethod (trains on the base's inputs, saves a plain
*ForCTC folder) and ConvFrozenMethod (trains on the cached output of the frozen feature encoder, asrflow.features).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForCTC, PreTrainedModel, ProcessorMixin

from asrflow.checkpoint import Base
from asrflow.errors import AsrflowError
from asrflow.features import ConvCachedTask
from asrflow.model import AudioTask
from asrflow.vocab import PAD, UNK, WORD_DELIMITER

log = logging.getLogger(__name__)


def require_safetensors(path: Path) -> Path:
    """`path`, which must exist: transformers and peft fall back to pickled `*.bin` weights when it is missing."""
    if not path.is_file():
        raise AsrflowError(f"{path}: not found; asrflow loads weights from safetensors only, never pickle")
    return path


def load_with_new_head(base: Base, vocab: dict[str, int], overrides: dict, language: str) -> PreTrainedModel:
    """The base checkpoint (any family AutoModelForCTC knows; a pre-training checkpoint's quantizer and projection
    weights are left out) with a CTC head for this fold's vocabulary, warm-started where the base knows a token."""
    model = AutoModelForCTC.from_pretrained(
        base.directory,
        vocab_size=len(vocab),
        ignore_mismatched_sizes=True,
        use_safetensors=True,
        trust_remote_code=False,
        **overrides,
    )
    warm_start_head(model, base, vocab, language)
    return model


def base_token_for(base_vocab: dict[str, int], specials: dict[str, str]):
    """Maps one of our tokens to the base's: our blank/delimiter/unknown to the base's own, and letters case-folded
    when the base writes only upper case (wav2vec2-base-960h) and the corpus does not."""
    ours = {PAD: specials["pad"], WORD_DELIMITER: specials["word_delimiter"], UNK: specials["unk"]}
    letters = [t for t in base_vocab if t.isalpha()]
    upper_only = bool(letters) and all(t == t.upper() for t in letters)

    def lookup(token: str) -> str | None:
        token = ours.get(token, token)
        if token in base_vocab:
            return token
        return token.upper() if upper_only and token.upper() in base_vocab else None

    return lookup


def warm_start_head(model: PreTrainedModel, base: Base, vocab: dict[str, int], language: str) -> int:
    """Copy the base's output row of every token it shares with `vocab` (blank, word delimiter, shared symbols).

    A new language's head otherwise starts from noise; symbols the base already emits start where they were. A flat
    vocabulary is the base's head; a nested (MMS) one gives the head of `language` when the base has an adapter file
    for it. Pre-training checkpoints (no vocabulary) keep the fresh head.
    """
    source = base.head_vocabulary(language)
    if source is None:
        log.info(
            "output layer: fresh (the base has no CTC vocabulary%s)",
            f" for {language!r}" if base.info["vocabulary"] == "nested" else "",
        )
        return 0
    base_vocab, head = source
    lookup = base_token_for(base_vocab, base.special_tokens())
    shared = [(i, base_vocab[t]) for token, i in vocab.items() if (t := lookup(token)) is not None]
    lm_head = model.lm_head
    with torch.no_grad():
        for new, old in shared:
            lm_head.weight[new] = head["weight"][old]
            lm_head.bias[new] = head["bias"][old]
    log.info("output layer: %d of %d tokens warm-started from the base vocabulary", len(shared), len(vocab))
    return len(shared)


class AudioMethod:
    """What most methods share: training on the base's inputs, saving and loading a plain *ForCTC folder."""

    def unavailable(self, base: Base, cfg: dict) -> str:
        """Why this method cannot train on `base` with `cfg` ('' if it can)."""
        return ""

    def task(self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base) -> AudioTask:
        return AudioTask(model, processor)

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, model_dir: Path, language: str) -> PreTrainedModel:
        return AutoModelForCTC.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)


class ConvFrozenMethod(AudioMethod):
    """Methods whose feature encoder never trains: they train on its cached output (asrflow.features) where the base
    has one (Wav2Vec2-BERT reads log-mel frames: nothing to cache)."""

    def task(
        self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base
    ) -> AudioTask | ConvCachedTask:
        if base.has_conv_encoder:
            return ConvCachedTask(model, processor, base)
        return AudioTask(model, processor)


def freeze_conv_encoder(model: PreTrainedModel, base: Base) -> None:
    if base.has_conv_encoder:
        model.freeze_feature_encoder()
