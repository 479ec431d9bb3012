"""Audio in memory, length-bucketed batches capped by total seconds, and the CTC collate.

Tiny corpora fit in memory (an hour of 16 kHz float32 is 230 MB), so clips are read once and normalised once instead
of every epoch through a DataLoader.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np
import torch

from asrflow.audio import TARGET_RATE, read_wav
from asrflow.manifest import Utterance


@dataclasses.dataclass
class Clip:
    utt_id: str
    speaker: str
    text: str
    samples: np.ndarray  # zero-mean, unit-variance float32 (what Wav2Vec2FeatureExtractor's do_normalize gives)
    labels: list[int]

    @property
    def n_samples(self) -> int:
        """Audio length in samples: what batch budgets count, whatever form the clip's inputs take."""
        return len(self.samples)


def normalise_samples(samples: np.ndarray) -> np.ndarray:
    return ((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)).astype(np.float32)


def load_clips(utterances: list[Utterance], encode: Callable[[str], list[int]],
               reader: Callable[[str], np.ndarray] = read_wav) -> list[Clip]:
    """Read and normalise every clip; `encode` maps a transcript to label ids."""
    return [Clip(u.utt_id, u.speaker, u.text, normalise_samples(reader(u.audio)), encode(u.text))
            for u in utterances]


def bucket_batches(lengths: list[int], max_seconds: float, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length so padding is small; each batch's padded size stays within max_seconds.

    Lengths get ±10 % seeded jitter before sorting so batches differ between epochs; batch order is shuffled.
    """
    budget = max_seconds * TARGET_RATE
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] * rng.uniform(0.9, 1.1))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max([lengths[i] for i in current] + [lengths[index]])
        if current and longest * (len(current) + 1) > budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def sequential_batches(lengths: list[int], max_seconds: float) -> list[list[int]]:
    """Deterministic length-sorted batches for evaluation."""
    batches = bucket_batches(lengths, max_seconds, random.Random(0))
    return sorted(batches, key=lambda b: b[0])


def collate(clips: list[Clip]) -> dict[str, torch.Tensor]:
    longest = max(len(c.samples) for c in clips)
    values = torch.zeros(len(clips), longest)
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    max_labels = max(1, max(len(c.labels) for c in clips))
    labels = torch.full((len(clips), max_labels), -100, dtype=torch.long)
    for row, clip in enumerate(clips):
        values[row, : len(clip.samples)] = torch.from_numpy(clip.samples)
        mask[row, : len(clip.samples)] = 1
        labels[row, : len(clip.labels)] = torch.tensor(clip.labels, dtype=torch.long)
    return {"input_values": values, "attention_mask": mask, "labels": labels}
