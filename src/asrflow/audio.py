"""Audio I/O: decode any libsndfile format, downmix to mono and resample to 16 kHz with soxr (`load_mono`), and the
pipeline's own 16 kHz mono 16-bit wav files (`write_wav`, `read_wav`).

Audio that cannot be decoded, is truncated or holds NaN/inf samples raises AudioError with the reason, so that a stage
can stop at it or list it (asrflow.resample: `audio.on_bad_audio`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from asrflow.manifest import ManifestError

TARGET_RATE = 16000
# Lengths a container states can be estimates (VBR mp3): only a shortfall beyond this fraction is truncation.
TRUNCATION_TOLERANCE = 0.01
# libsndfile's header log of a wav whose data chunk is shorter than declared: `data : 64000 (should be 31978)`.
DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
STREAMED_SIZES = {0xFFFFFFFF, 0x7FFFFFFF}  # written before the length was known: not a truncation


class AudioError(ManifestError):
    """An audio file that cannot be used; the message names the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def truncation(header_log: str, decoded: int, expected: int) -> str:
    """Why the file looks cut short ('' if it does not)."""
    if decoded < expected * (1 - TRUNCATION_TOLERANCE):
        return f"truncated: decoded {decoded} of the {expected} frames its header declares"
    match = DATA_CHUNK.search(header_log)
    if match:
        declared, present = map(int, match.groups())
        if declared not in STREAMED_SIZES and declared > present * (1 + TRUNCATION_TOLERANCE):
            return f"truncated: its header declares {declared} bytes of audio, the file holds {present}"
    return ""


def load_mono(
    path: str | Path, rate: int = TARGET_RATE, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """Decode `path` (optionally the [start, end) seconds of it), downmix to mono float32 and resample to `rate`."""
    try:
        info = sf.info(str(path))
        first = int(round((start or 0.0) * info.samplerate))
        last = int(round(end * info.samplerate)) if end is not None else info.frames
        if first >= info.frames or last > info.frames:
            raise AudioError(path, f"segment {start}–{end} s lies beyond the recording's end ({info.duration:.2f} s)")
        data, native_rate = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(path, f"cannot decode audio ({error})") from None
    reason = truncation(info.extra_info, len(data), last - first)
    if reason:
        raise AudioError(path, reason)
    if not np.isfinite(data).all():
        raise AudioError(path, "holds NaN or infinite samples")
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
        raise AudioError(path, f"expected 16 kHz mono, got {rate} Hz with shape {samples.shape}; run resample")
    return samples
