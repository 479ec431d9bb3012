"""The `resample` stage: decode any libsndfile format, downmix to mono, resample to 16 kHz with soxr, write 16-bit wav.

Clips outside [audio.min_seconds, audio.max_seconds] are listed in rejects.csv with the reason, never silently dropped:
kept + rejected = input, always.
"""

from __future__ import annotations

import argparse
import csv
import logging
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from asrflow import config
from asrflow.io import atomic_path
from asrflow.manifest import ManifestError, Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)
TARGET_RATE = 16000


class AudioError(ManifestError):
    """An audio file that cannot be decoded; the message names the file and the manifest row."""


def load_mono(path: str | Path, rate: int = TARGET_RATE, start: float | None = None,
              end: float | None = None) -> np.ndarray:
    """Decode `path` (optionally the [start, end) seconds of it), downmix to mono float32 and resample to `rate`."""
    try:
        info = sf.info(str(path))
        first = int(round((start or 0.0) * info.samplerate))
        last = int(round(end * info.samplerate)) if end is not None else -1
        data, native_rate = sf.read(str(path), start=first, stop=None if last < 0 else last,
                                    dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{path}: cannot decode audio ({error})") from None
    mono = data.mean(axis=1)
    if native_rate != rate:
        mono = soxr.resample(mono, native_rate, rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = TARGET_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")


def read_wav(path: str | Path) -> np.ndarray:
    """Read a 16 kHz mono wav written by this pipeline."""
    samples, rate = sf.read(str(path), dtype="float32")
    if rate != TARGET_RATE or samples.ndim != 1:
        raise AudioError(f"{path}: expected 16 kHz mono, got {rate} Hz with shape {samples.shape}; run resample")
    return samples


def _resample_one(job: tuple[Utterance, str]) -> tuple[Utterance, float]:
    utt, out_path = job
    try:
        samples = load_mono(utt.audio, TARGET_RATE, utt.start, utt.end)
    except AudioError as error:
        raise AudioError(f"{error} [manifest row {utt.origin or utt.utt_id}]") from None
    write_wav(Path(out_path), samples)
    return utt, len(samples) / TARGET_RATE


def rejection(seconds: float, min_seconds: float, max_seconds: float) -> str:
    if seconds < min_seconds:
        return f"shorter than audio.min_seconds ({seconds:.2f} s < {min_seconds} s)"
    if seconds > max_seconds:
        return f"longer than audio.max_seconds ({seconds:.2f} s > {max_seconds} s)"
    return ""


def write_rejects(path: Path, rejects: list[tuple[Utterance, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "audio", "origin", "reason"])
        for utt, reason in rejects:
            writer.writerow([utt.utt_id, utt.audio, utt.origin, reason])


def resample(utterances: list[Utterance], out_dir: Path, audio_cfg: dict, cores: int) -> None:
    with atomic_path(out_dir) as tmp:
        jobs = [(u, str(tmp / "wav" / f"{u.utt_id}.wav")) for u in utterances]
        kept, rejects = [], []
        with Pool(max(1, cores)) as pool:
            results = pool.imap(_resample_one, jobs, chunksize=8)
            for utt, seconds in tqdm(results, total=len(jobs), desc="resample", unit="utt"):
                reason = rejection(seconds, audio_cfg["min_seconds"], audio_cfg["max_seconds"])
                if reason:
                    rejects.append((utt, reason))
                    (tmp / "wav" / f"{utt.utt_id}.wav").unlink()
                    continue
                final = out_dir / "wav" / f"{utt.utt_id}.wav"
                kept.append(utt.replace(audio=str(final), duration=seconds, start=None, end=None))
        write_manifest(tmp / "manifest.csv", kept)
        write_rejects(tmp / "rejects.csv", rejects)
    log.info("resampled %d utterances to %d Hz mono (%.1f min); rejected %d (see %s)", len(kept), TARGET_RATE,
             sum(u.duration for u in kept) / 60, len(rejects), out_dir / "rejects.csv")


def run_cli(args: argparse.Namespace) -> None:
    audio_cfg = config.load_stage(args.params, "resample")["audio"]
    resample(read_manifest(args.manifest), args.out, audio_cfg, args.threads)
