"""Frozen encoder: the pre-trained encoder stays fixed; only the CTC head trains (optionally with the top
`train_top_layers` transformer layers and the final layer norm).

What lies below the trainable part never changes, so its output is computed once per utterance and kept in a
content-addressed cache (`data/cache/features/`, or $ASRFLOW_CACHE): keyed by the base weights, the cut point and the
audio bytes, it is shared by every fold and every re-run, and is never a pipeline output (a stale entry cannot be
hit: any change of its inputs changes its key). An epoch then costs only the head. SpecAugment-style time masking is
applied to the cached features while training. The artefact is still a standard Wav2Vec2ForCTC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from asrflow.batching import Clip, sequential_batches
from asrflow.io import atomic_path
from asrflow.methods.full import AudioMethod, load_with_new_head
from asrflow.model import greedy_decode

CACHE_ENV = "ASRFLOW_CACHE"
DEFAULT_CACHE = Path("data/cache/features")


@dataclasses.dataclass
class FeatureClip:
    utt_id: str
    speaker: str
    text: str
    features: torch.Tensor  # (frames, hidden): the frozen part's output for this utterance
    labels: list[int]
    n_samples: int


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the cut point is reached."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_fingerprint(base: Path, n_top: int) -> str:
    """Key of the frozen part: its weights and config, and where the trainable part starts."""
    digest = hashlib.sha256(f"cut={n_top}".encode())
    for path in sorted([base / "config.json", *base.glob("*.safetensors")]):
        digest.update(f"{path.name}:{file_digest(path)}".encode())
    return digest.hexdigest()[:20]


def top_layers(model: Wav2Vec2ForCTC, n_top: int) -> list[torch.nn.Module]:
    return list(model.wav2vec2.encoder.layers)[len(model.wav2vec2.encoder.layers) - n_top:] if n_top else []


class FrozenEncoder(AudioMethod):
    name = "frozen"

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        model = load_with_new_head(base, vocab, overrides)
        model.freeze_base_model()
        n_top = cfg.get("train_top_layers", 0)
        trainable = top_layers(model, n_top) + ([model.wav2vec2.encoder.layer_norm] if n_top else [])
        for module in trainable:
            module.requires_grad_(True)
        return model

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> "CachedFeatureTask":
        return CachedFeatureTask(model, processor, cfg.get("train_top_layers", 0))


class CachedFeatureTask:
    """Trains the top of a Wav2Vec2ForCTC on cached features of its frozen part."""

    def __init__(self, model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, n_top: int) -> None:
        self.model, self.processor, self.n_top = model, processor, n_top
        cache_root = Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE))
        self.cache_dir = cache_root / base_fingerprint(Path(model.config._name_or_path), n_top)

    def _compute(self, clip: Clip) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        cut = top_layers(self.model, self.n_top)[0] if self.n_top else None

        def capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured["features"] = args[0] if args else kwargs["hidden_states"]
            raise _Captured

        hook = cut.register_forward_pre_hook(capture, with_kwargs=True) if cut is not None else None
        self.model.eval()
        try:
            with torch.inference_mode():
                captured["features"] = self.model.wav2vec2(torch.from_numpy(clip.samples)[None]).last_hidden_state
        except _Captured:
            pass
        finally:
            if hook is not None:
                hook.remove()
        return captured["features"][0].clone()

    def _features(self, clip: Clip, audio_key: str) -> torch.Tensor:
        path = self.cache_dir / f"{clip.utt_id}-{audio_key}.safetensors"
        if path.is_file():
            return load_file(str(path))["features"]
        features = self._compute(clip)
        with atomic_path(path) as tmp:
            save_file({"features": features.contiguous()}, str(tmp))
        return features

    def prepare(self, clips: list[Clip]) -> list[FeatureClip]:
        prepared = []
        for clip in clips:
            audio_key = hashlib.sha256(clip.samples.tobytes()).hexdigest()[:16]
            prepared.append(FeatureClip(clip.utt_id, clip.speaker, clip.text, self._features(clip, audio_key),
                                        clip.labels, clip.n_samples))
        return prepared

    def _pad(self, clips: list[FeatureClip]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(c.features.shape[0] for c in clips)
        features = torch.zeros(len(clips), longest, clips[0].features.shape[1])
        mask = torch.zeros(len(clips), longest, dtype=torch.long)
        for row, clip in enumerate(clips):
            features[row, : clip.features.shape[0]] = clip.features
            mask[row, : clip.features.shape[0]] = 1
        return features, mask

    def _mask_time(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        if not config.mask_time_prob:
            return features
        masked = _compute_mask_indices(tuple(features.shape[:2]), mask_prob=config.mask_time_prob,
                                       mask_length=config.mask_time_length, attention_mask=mask,
                                       min_masks=config.mask_time_min_masks)
        return features.masked_fill(torch.from_numpy(masked)[..., None], 0.0)

    def _logits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = features
        if self.n_top:
            attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
            for layer in top_layers(self.model, self.n_top):
                hidden = layer(hidden, attention_mask=attention)
            if self.model.config.do_stable_layer_norm:
                hidden = self.model.wav2vec2.encoder.layer_norm(hidden)
        return self.model.lm_head(self.model.dropout(hidden))

    def loss(self, clips: list[FeatureClip]) -> torch.Tensor:
        features, mask = self._pad(clips)
        logits = self._logits(self._mask_time(features, mask), mask)
        labels = torch.full((len(clips), max(len(c.labels) for c in clips)), -100, dtype=torch.long)
        for row, clip in enumerate(clips):
            labels[row, : len(clip.labels)] = torch.tensor(clip.labels, dtype=torch.long)
        config = self.model.config
        return self.model.loss_function(logits=logits, labels=labels, logit_lengths=mask.sum(-1),
                                        blank_token_id=config.pad_token_id, reduction=config.ctc_loss_reduction,
                                        zero_infinity=config.ctc_zero_infinity)

    def transcribe(self, clips: list[FeatureClip], batch_seconds: float) -> list[str]:
        self.model.eval()
        hypotheses = [""] * len(clips)
        with torch.inference_mode():
            for batch_ids in sequential_batches([c.n_samples for c in clips], batch_seconds):
                features, mask = self._pad([clips[i] for i in batch_ids])
                texts = greedy_decode(self._logits(features, mask), mask.sum(-1), self.processor)
                for index, text in zip(batch_ids, texts):
                    hypotheses[index] = text
        return hypotheses

    def train(self) -> None:
        self.model.train()
