"""Cached outputs of frozen model parts, so an epoch never recomputes what cannot change.

Two cut points:
- `conv`: the convolutional feature encoder, frozen by default in full fine-tuning and always in adapter and LoRA
  training. Its output is cached per utterance; during training the model's own forward runs unchanged, with the
  feature encoder swapped for a lookup of the batch's cached features for the duration of that call only
  (SpecAugment, adapters, LoRA and the CTC loss all stay transformers'/peft's own code).
- `top<N>` (the `frozen` method): everything below the top N transformer layers (N=0: the whole encoder).

The cache is content-addressed (`data/cache/features/`, or $ASRFLOW_CACHE): keyed by the digests of exactly the base
tensors the cached part uses (asrflow.checkpoint: computed once per base by the pretrain stage), its config and
feature extractor, the transformers version, the cut point and each utterance's input bytes; shared by every fold and
re-run, never a pipeline output. A stale entry cannot be hit, because any change of what produced it changes its key.
Features are computed and stored in float32 whatever `train.precision` says: the cache serves every precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asrflow.batching import Clip, InputSpec, pad_labels
from asrflow.checkpoint import Base
from asrflow.io import atomic_path
from asrflow.model import clip_logits, greedy_texts, model_device, on_model_device, output_lengths

CACHE_ENV = "ASRFLOW_CACHE"
DEFAULT_CACHE = Path("data/cache/features")


@dataclasses.dataclass
class FeatureClip:
    utt_id: str
    speaker: str
    text: str
    features: torch.Tensor  # (frames, channels): the frozen part's output for this utterance
    labels: list[int]
    n_samples: int  # the audio length, which batch budgets count


def cache_dir(base: Base, cut: str, uses: Callable[[str], bool]) -> Path:
    """Where features of `base` cut at `cut` live; `uses(name)` says which of its tensors the cached part reads."""
    return Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)) / base.part_key(cut, uses)


def conv_encoder_tensor(name: str) -> bool:
    """The convolutional feature encoder's tensors (names inside the encoder model)."""
    return name.startswith("feature_extractor.")


def cached_features(clips: list[Clip], directory: Path, compute: Callable[[Clip], torch.Tensor]) -> list[FeatureClip]:
    """Each clip's features from the cache, computing (and storing) the missing ones."""
    result = []
    for clip in clips:
        path = directory / f"{clip.utt_id}-{hashlib.sha256(clip.inputs.tobytes()).hexdigest()[:16]}.safetensors"
        if path.is_file():
            features = load_file(str(path))["features"]
        else:
            features = compute(clip).contiguous()
            with atomic_path(path) as tmp:
                save_file({"features": features}, str(tmp))
        result.append(FeatureClip(clip.utt_id, clip.speaker, clip.text, features, clip.labels, clip.n_samples))
    return result


def pad_features(clips: list[FeatureClip]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, frames, channels) zero-padded features and their (batch, frames) mask."""
    longest = max(c.features.shape[0] for c in clips)
    features = torch.zeros(len(clips), longest, clips[0].features.shape[1])
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    for row, clip in enumerate(clips):
        features[row, : clip.features.shape[0]] = clip.features
        mask[row, : clip.features.shape[0]] = 1
    return features, mask


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder inside a *ForCTC model (`wav2vec2`, `hubert`, `wavlm`, ...), also when peft wraps it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix)


class _Lookup(torch.nn.Module):
    """Stands in for the feature encoder: returns the batch's cached output, (batch, channels, frames)."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.features


@contextlib.contextmanager
def conv_output(model: torch.nn.Module, features: torch.Tensor) -> Iterator[None]:
    """Within this block the model's feature encoder yields `features`; outside it, the model is untouched."""
    encoder = encoder_of(model)
    conv = encoder.feature_extractor
    encoder.feature_extractor = _Lookup(features.transpose(1, 2))
    try:
        yield
    finally:
        encoder.feature_extractor = conv


def sample_mask(clips: list[FeatureClip]) -> torch.Tensor:
    """The batch's sample-level attention mask: the model derives frame lengths from it as usual."""
    mask = torch.zeros(len(clips), max(c.n_samples for c in clips), dtype=torch.long)
    for row, clip in enumerate(clips):
        mask[row, : clip.n_samples] = 1
    return mask


class ConvCachedTask:
    """Trains on cached feature-encoder outputs through the model's own forward (see conv_output)."""

    def __init__(self, model: torch.nn.Module, processor, base: Base) -> None:
        self.model, self.processor = model, processor
        self.spec = InputSpec.of(processor.feature_extractor)
        self.encoder = encoder_of(model)
        self.directory = cache_dir(base, "conv", conv_encoder_tensor)

    def _compute(self, clip: Clip) -> torch.Tensor:
        with torch.inference_mode():
            audio = torch.from_numpy(clip.inputs)[None].to(model_device(self.model))
            return self.encoder.feature_extractor(audio)[0].transpose(0, 1).float().cpu().clone()

    def prepare(self, clips: list[Clip]) -> list[FeatureClip]:
        return cached_features(clips, self.directory, self._compute)

    def _forward(self, clips: list[FeatureClip], **extra: torch.Tensor):
        """The model's forward on placeholder samples (their mask gives the lengths, where the base takes a mask)
        with the feature encoder's output looked up."""
        features, _ = pad_features(clips)
        mask = sample_mask(clips)
        inputs = {"features": features, "input_values": torch.zeros(mask.shape), **extra}
        if self.spec.use_mask:
            inputs["attention_mask"] = mask
        inputs = on_model_device(inputs, self.model)
        with conv_output(self.model, inputs.pop("features")):
            return self.model(**inputs)

    def loss(self, clips: list[FeatureClip]) -> torch.Tensor:
        return self._forward(clips, labels=pad_labels([c.labels for c in clips])).loss

    def _batch_logits(self, clips: list[FeatureClip]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(clips).logits, output_lengths(self.model, sample_mask(clips))

    def transcribe(self, clips: list[FeatureClip], batch_seconds: float) -> list[str]:
        return greedy_texts(clip_logits(self.model, clips, batch_seconds, self._batch_logits), self.processor)

    def train(self) -> None:
        self.model.train()
