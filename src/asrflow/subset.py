"""The `subset` stage: one fold's training side cut to a fraction of its minutes, for the learning curve.

Each training speaker keeps about `fraction` of their own minutes, as whole utterances: a speaker's utterances are put
in an order drawn from `learning_curve.seed`, the fold and the speaker (never the fraction), and the shortest run of
them reaching the target is kept — so every speaker stays in, the smaller fractions are subsets of the larger ones,
and 1.0 keeps everything. Dev and test speakers, the vocabulary and every other file of the fold stay as they are:
the curve's models are tested on exactly the speakers the cross-validation tests, with the same symbols.

Output folder: a folds folder holding this one fold (`fold<k>/train.csv` cut, the rest copied) and its `folds.json`
(the split's entry with the kept training utterances and seconds, the fraction and the full training seconds), so
`asrflow train` and `asrflow evaluate` read it as they read the split's.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
from collections import defaultdict
from pathlib import Path

from asrflow import config
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import ManifestError, Utterance, read_manifest, total_seconds, write_manifest

log = logging.getLogger(__name__)


def speaker_subset(utterances: list[Utterance], fraction: float, rng: random.Random) -> list[Utterance]:
    """The shortest prefix (at least one utterance) of a seeded order of one speaker's utterances whose seconds
    come closest to `fraction` of theirs: rounding to whole utterances misses the target by under one utterance."""
    order = rng.sample(utterances, len(utterances))
    target = fraction * total_seconds(utterances)
    kept, seconds = [], 0.0
    for utt in order:
        # Stop when one more utterance would take us further from the target than we are now.
        if kept and abs(seconds + (utt.duration or 0.0) - target) >= abs(seconds - target):
            break
        kept.append(utt)
        seconds += utt.duration or 0.0
    return kept


def subset(train: list[Utterance], fraction: float, seed: int, fold: int) -> list[Utterance]:
    """`fraction` of each speaker's minutes of `train` (whole utterances, every speaker kept), in manifest order."""
    if not 0 < fraction <= 1:
        raise AsrflowError(f"--fraction {fraction}: must be in (0, 1] (learning_curve.fractions)")
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for utt in train:
        by_speaker[utt.speaker].append(utt)
    kept = {
        utt.utt_id
        for speaker, utterances in sorted(by_speaker.items())
        for utt in speaker_subset(utterances, fraction, random.Random(f"{seed}-{fold}-{speaker}"))
    }
    return [utt for utt in train if utt.utt_id in kept]


def check_durations(train: list[Utterance], path: Path) -> None:
    missing = [u.utt_id for u in train if u.duration is None]
    if missing:
        raise ManifestError(
            f"{path}: no duration for {len(missing)} utterance(s) ({', '.join(missing[:3])}...); the learning "
            f"curve cuts by minutes: re-run `asrflow resample` and the stages after it to fill them in"
        )


def write_subset(folds_dir: Path, fold: int, fraction: float, seed: int, out_dir: Path) -> dict:
    """The fold of `folds_dir` with its train.csv cut (see `subset`), as a folds folder in `out_dir`."""
    name = f"fold{fold}"
    source = folds_dir / name
    train = read_manifest(source / "train.csv")
    check_durations(train, source / "train.csv")
    kept = subset(train, fraction, seed, fold)
    entry = read_json(folds_dir / "folds.json")[name]
    entry["utterances"]["train"] = len(kept)
    entry["seconds"]["train"] = round(total_seconds(kept), 2)
    entry["learning_curve"] = {
        "fraction": fraction,
        "seed": seed,
        "full_train_seconds": round(total_seconds(train), 2),
        "full_train_utterances": len(train),
    }
    with atomic_path(out_dir) as tmp:
        shutil.copytree(source, tmp / name)
        write_manifest(tmp / name / "train.csv", kept)
        write_json(tmp / "folds.json", {name: entry})
    return entry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow subset`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--fold", required=True, type=int)
    parser.add_argument("--fraction", required=True, type=float, help="of each training speaker's minutes, in (0, 1]")
    parser.add_argument("--folds", required=True, type=Path, help="the split's folds folder")
    parser.add_argument("--out", required=True, type=Path, help="output: a folds folder holding this one fold")


def run_cli(args: argparse.Namespace) -> None:
    seed = config.load_stage(args.params, "subset")["learning_curve"]["seed"]
    entry = write_subset(args.folds, args.fold, args.fraction, seed, args.out)
    full = entry["learning_curve"]["full_train_seconds"]
    log.info(
        "fold %d, fraction %g: %d of %d training utterances, %.1f of %.1f min (%.3f of the minutes), %d speakers",
        args.fold,
        args.fraction,
        entry["utterances"]["train"],
        entry["learning_curve"]["full_train_utterances"],
        entry["seconds"]["train"] / 60,
        full / 60,
        entry["seconds"]["train"] / full if full else 0.0,
        len(entry["speakers"]["train"]),
    )
