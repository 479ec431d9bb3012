"""The `resample` stage: decode any libsndfile format, downmix to mono, resample to 16 kHz with soxr, write 16-bit wav
(asrflow.audio).

Every input utterance is kept or listed in rejects.csv with the reason, never silently dropped: kept + rejected =
input, always (a split clip counts as its pieces). Audio that cannot be decoded, is truncated or holds NaN/inf samples
follows `audio.on_bad_audio` (stop at the first, or list it). Clips outside [audio.min_seconds, audio.max_seconds]
are always listed. A clip over max_seconds is rejected, or with `audio.too_long: split` cut at its longest pauses into
one piece per transcript line: one transcript cannot be divided honestly without an alignment, so only a transcript
written as one line per phrase is split, and only when the recording has at least that many pauses.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asrflow import config
from asrflow.audio import TARGET_RATE, AudioError, load_mono, write_wav
from asrflow.io import atomic_path
from asrflow.manifest import Rejects, Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)
# A pause: 20 ms frames at least 35 dB below the clip's loudest frame, for at least 0.3 s.
FRAME_SECONDS, PAUSE_DB, MIN_PAUSE_SECONDS = 0.02, -35.0, 0.3
# A piece's id is its clip's and `~<n>`: `~` is no character of a readable id (asrflow.corpus.entries.safe_id), so a
# piece never takes the id (and the wav file) of another recording, `story~2` beside a file named `story_2`.
PIECE_MARK = "~"


def rejection(seconds: float, min_seconds: float, max_seconds: float) -> str:
    if seconds < min_seconds:
        return f"shorter than audio.min_seconds ({seconds:.2f} s < {min_seconds} s)"
    if seconds > max_seconds:
        return f"longer than audio.max_seconds ({seconds:.2f} s > {max_seconds} s)"
    return ""


def find_pauses(samples: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) sample of every pause inside the clip (leading and trailing silence are not pauses)."""
    frame = int(FRAME_SECONDS * TARGET_RATE)
    n_frames = len(samples) // frame
    rms = np.sqrt(np.mean(samples[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    silent = rms < rms.max() * 10 ** (PAUSE_DB / 20)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(int), [0]])))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a > 0 and b < n_frames]
    return [(a * frame, b * frame) for a, b in runs if (b - a) * FRAME_SECONDS >= MIN_PAUSE_SECONDS]


def pause_cuts(samples: np.ndarray, n_cuts: int) -> tuple[list[int], str]:
    """Cut points in the middle of the `n_cuts` longest pauses, in time order; or why there are none."""
    if n_cuts < 1:
        return [], (
            "its transcript is one line, and one transcript cannot be divided without an alignment "
            "(write one line per spoken phrase to split it)"
        )
    pauses = find_pauses(samples)
    if len(pauses) < n_cuts:
        return [], f"{len(pauses)} pause(s) found for its {n_cuts + 1} transcript lines"
    longest = sorted(sorted(pauses, key=lambda p: p[1] - p[0], reverse=True)[:n_cuts])
    return [(a + b) // 2 for a, b in longest], ""


def pieces(utt: Utterance, samples: np.ndarray, audio_cfg: dict) -> list[tuple[Utterance, np.ndarray, str]]:
    """(utterance, samples, why rejected) for the clip itself, or for each piece of a too-long clip split at pauses."""
    too_long = rejection(len(samples) / TARGET_RATE, 0.0, audio_cfg["max_seconds"])
    if not too_long or audio_cfg["too_long"] != "split":
        return [(utt, samples, "")]
    lines = [line.strip() for line in utt.text.splitlines() if line.strip()]
    cuts, why_not = pause_cuts(samples, len(lines) - 1)
    if why_not:
        return [(utt, samples, f"{too_long}; not split: {why_not}")]
    bounds = [0, *cuts, len(samples)]
    return [
        (
            utt.replace(utt_id=f"{utt.utt_id}{PIECE_MARK}{i}", text=line, origin=f"{utt.origin} line {i}"),
            samples[a:b],
            "",
        )
        for i, (line, a, b) in enumerate(zip(lines, bounds, bounds[1:]), start=1)
    ]


@dataclasses.dataclass
class Outcome:
    """What became of one input utterance: kept pieces, dropped pieces with reasons, or why it is broken."""

    source: Utterance
    kept: list[Utterance]
    dropped: list[tuple[Utterance, str]]
    broken: str = ""


def _resample_one(job: tuple[Utterance, Path, Path, dict]) -> Outcome:
    utt, tmp_wav, final_wav, audio_cfg = job
    try:
        samples = load_mono(utt.audio, TARGET_RATE, utt.start, utt.end)
    except AudioError as error:
        return Outcome(utt, [], [], error.reason)
    outcome = Outcome(utt, [], [])
    for piece, piece_samples, reason in pieces(utt, samples, audio_cfg):
        seconds = len(piece_samples) / TARGET_RATE
        reason = reason or rejection(seconds, audio_cfg["min_seconds"], audio_cfg["max_seconds"])
        if reason:
            outcome.dropped.append((piece, reason))
            continue
        write_wav(tmp_wav / f"{piece.utt_id}.wav", piece_samples)
        outcome.kept.append(
            piece.replace(audio=str(final_wav / f"{piece.utt_id}.wav"), duration=seconds, start=None, end=None)
        )
    return outcome


def resample(utterances: list[Utterance], out_dir: Path, audio_cfg: dict, cores: int) -> None:
    rejects = Rejects("resample", audio_cfg["on_bad_audio"])
    with atomic_path(out_dir) as tmp:
        (tmp / "wav").mkdir(parents=True)
        jobs = [(u, tmp / "wav", out_dir / "wav", audio_cfg) for u in utterances]
        kept: list[Utterance] = []
        with Pool(max(1, cores)) as pool:
            for outcome in tqdm(
                pool.imap(_resample_one, jobs, chunksize=8), total=len(jobs), desc="resample", unit="utt"
            ):
                if outcome.broken:
                    rejects.bad(outcome.source, outcome.broken)
                kept += outcome.kept
                for piece, reason in outcome.dropped:
                    rejects.drop(piece, reason)
        write_manifest(tmp / "manifest.csv", kept)
        rejects.write(tmp / "rejects.csv")
    log.info(
        "resampled %d utterances to %d Hz mono (%.1f min); rejected %d (see %s)",
        len(kept),
        TARGET_RATE,
        sum(u.duration for u in kept) / 60,
        len(rejects.items),
        out_dir / "rejects.csv",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow resample`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, rejects.csv, wav/")


def run_cli(args: argparse.Namespace) -> None:
    audio_cfg = config.load_stage(args.params, "resample")["audio"]
    resample(read_manifest(args.manifest), args.out, audio_cfg, args.threads)
