"""Audio in memory, length-bucketed batches capped by total seconds, and the CTC collate.

Tiny corpora fit in memory (an hour of 16 kHz float32 is 230 MB), so clips are read once and turned into model inputs
once, by the base's own feature extractor (normalised samples for wav2vec2/HuBERT/WavLM/data2vec-audio, log-mel
frames for Wav2Vec2-BERT), instead of every epoch through a DataLoader.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np
import torch
from transformers import FeatureExtractionMixin

from asrflow.audio import TARGET_RATE, read_wav
from asrflow.manifest import Utterance


@dataclasses.dataclass
class Clip:
    utt_id: str
    speaker: str
    text: str
    inputs: np.ndarray  # what the feature extractor made of the audio: (samples,) or (frames, features), float32
    labels: list[int]
    n_samples: int  # the audio length in samples: what batch budgets count, whatever form the inputs take


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How a base takes its input: the model argument's name, its padding value, and whether the model is given the
    attention mask (wav2vec2-base and other group-norm checkpoints are not: transformers' documented convention)."""

    name: str
    padding_value: float
    use_mask: bool

    @classmethod
    def of(cls, feature_extractor: FeatureExtractionMixin) -> InputSpec:
        return cls(
            feature_extractor.model_input_names[0],
            float(feature_extractor.padding_value),
            bool(feature_extractor.return_attention_mask),
        )


def model_inputs(feature_extractor: FeatureExtractionMixin, samples: np.ndarray) -> np.ndarray:
    """One clip's model input, as the base's own feature extractor makes it from 16 kHz samples."""
    name = feature_extractor.model_input_names[0]
    return np.asarray(feature_extractor(samples, sampling_rate=TARGET_RATE)[name][0], dtype=np.float32)


def load_clips(
    utterances: list[Utterance],
    encode: Callable[[str], list[int]],
    feature_extractor: FeatureExtractionMixin,
    reader: Callable[[str], np.ndarray] = read_wav,
) -> list[Clip]:
    """Read every clip and make its model input; `encode` maps a transcript to label ids."""
    clips = []
    for utt in utterances:
        samples = reader(utt.audio)
        clips.append(
            Clip(
                utt.utt_id,
                utt.speaker,
                utt.text,
                model_inputs(feature_extractor, samples),
                encode(utt.text),
                len(samples),
            )
        )
    return clips


def bucket_batches(lengths: list[int], max_seconds: float, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length so padding is small; each batch's padded size stays within max_seconds.

    Lengths get ±10 % seeded jitter before sorting so batches differ between epochs; batch order is shuffled.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] * rng.uniform(0.9, 1.1))
    batches = pack(order, lengths, max_seconds)
    rng.shuffle(batches)
    return batches


def pack(order: list[int], lengths: list[int], max_seconds: float) -> list[list[int]]:
    """The indices of `order`, in that order, cut into consecutive groups whose padded size (longest × count) stays
    within `max_seconds` of audio; a longer clip is a group of its own."""
    budget = max_seconds * TARGET_RATE
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max([lengths[i] for i in current] + [lengths[index]])
        if current and longest * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def sequential_batches(lengths: list[int], max_seconds: float) -> list[list[int]]:
    """Deterministic length-sorted batches for evaluation."""
    batches = bucket_batches(lengths, max_seconds, random.Random(0))
    return sorted(batches, key=lambda b: b[0])


def pad_labels(labels: list[list[int]]) -> torch.Tensor:
    """(batch, longest) label ids, padded with -100 (ignored by the CTC loss)."""
    padded = torch.full((len(labels), max(1, max(len(row) for row in labels))), -100, dtype=torch.long)
    for index, row in enumerate(labels):
        padded[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return padded


def collate(clips: list[Clip], spec: InputSpec) -> dict[str, torch.Tensor]:
    """The batch's padded inputs under `spec.name`, their `attention_mask` (input units; always here, for lengths)
    and `labels`."""
    longest = max(len(c.inputs) for c in clips)
    values = torch.full((len(clips), longest, *clips[0].inputs.shape[1:]), spec.padding_value)
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    for row, clip in enumerate(clips):
        values[row, : len(clip.inputs)] = torch.from_numpy(clip.inputs)
        mask[row, : len(clip.inputs)] = 1
    return {spec.name: values, "attention_mask": mask, "labels": pad_labels([c.labels for c in clips])}


def for_model(batch: dict[str, torch.Tensor], spec: InputSpec, labels: bool = True) -> dict[str, torch.Tensor]:
    """The keyword arguments the model takes: the attention mask only where the base uses one, labels if asked."""
    drop = {*(() if spec.use_mask else ("attention_mask",)), *(() if labels else ("labels",))}
    return {name: tensor for name, tensor in batch.items() if name not in drop}
