"""The `split` stage: speaker-independent k-fold cross-validation.

Every speaker is tested in exactly one fold; folds are balanced by audio duration; each fold's dev speakers (for early
stopping) come from its training side, never from its test speakers. The CTC vocabulary of each fold (asrflow.vocab) is
built from that fold's training text only, so no symbol is learnt from test (or dev) speakers; each declared grapheme
(`text.graphemes`) is one token of it.

Output folder: `fold<k>/{train,dev,test}.csv` (manifests), `fold<k>/vocab.json` (token → id), `folds.json` (summary).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from asrflow import config
from asrflow.io import atomic_path, write_json
from asrflow.manifest import ManifestError, Utterance, read_manifest, write_manifest
from asrflow.transcripts import grapheme_inventory
from asrflow.vocab import build_vocab

log = logging.getLogger(__name__)


class FoldError(ManifestError):
    """The corpus cannot be split as configured (e.g. too few speakers)."""


def speaker_seconds(utterances: list[Utterance]) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for utt in utterances:
        seconds[utt.speaker] += utt.duration or 0.0
    return dict(seconds)


def assign_test_folds(seconds: dict[str, float], k: int, seed: int) -> list[list[str]]:
    """Greedy balancing: longest speaker first into the fold with the least audio so far (seeded tie-break)."""
    rng = random.Random(seed)
    order = sorted(seconds, key=lambda s: (-round(seconds[s], 3), rng.random()))
    folds: list[list[str]] = [[] for _ in range(k)]
    totals = [0.0] * k
    for speaker in order:
        target = min(range(k), key=lambda f: (len(folds[f]) > 0, totals[f], f))
        folds[target].append(speaker)
        totals[target] += seconds[speaker]
    return [sorted(f) for f in folds]


def choose_dev(training: list[str], n_dev: int, seed: int, fold: int) -> list[str]:
    return sorted(random.Random(f"{seed}-{fold}").sample(sorted(training), n_dev))


def check_speaker_count(n_speakers: int, k: int, n_dev: int) -> None:
    needed = k + n_dev
    if n_speakers < needed:
        raise FoldError(
            f"the corpus has {n_speakers} speakers; folds.k={k} with folds.dev_speakers={n_dev} needs at "
            f"least {needed} (one test speaker per fold, {n_dev} dev + 1 training speaker on each "
            f"training side); lower folds.k or folds.dev_speakers, or add speakers"
        )


def split(utterances: list[Utterance], folds_cfg: dict, graphemes: Sequence[str] = ()) -> list[dict]:
    """One dict per fold: test/dev/train speakers and utterances, and the fold's vocabulary (`graphemes`: the
    multi-character units it keeps as one token each)."""
    k, n_dev, seed = folds_cfg["k"], folds_cfg["dev_speakers"], folds_cfg["seed"]
    seconds = speaker_seconds(utterances)
    check_speaker_count(len(seconds), k, n_dev)
    result = []
    for fold, test in enumerate(assign_test_folds(seconds, k, seed)):
        training_side = sorted(set(seconds) - set(test))
        dev = choose_dev(training_side, n_dev, seed, fold)
        train = sorted(set(training_side) - set(dev))
        parts = {
            name: [u for u in utterances if u.speaker in speakers]
            for name, speakers in (("train", train), ("dev", dev), ("test", test))
        }
        result.append(
            {
                "fold": fold,
                "speakers": {"train": train, "dev": dev, "test": test},
                **parts,
                "vocab": build_vocab([u.text for u in parts["train"]], graphemes),
            }
        )
    return result


def _summary(fold: dict) -> dict:
    return {
        "speakers": fold["speakers"],
        "utterances": {p: len(fold[p]) for p in ("train", "dev", "test")},
        "seconds": {p: round(sum(u.duration or 0 for u in fold[p]), 2) for p in ("train", "dev", "test")},
        "vocab_size": len(fold["vocab"]),
    }


def write_folds(folds: list[dict], out_dir: Path) -> None:
    with atomic_path(out_dir) as tmp:
        for fold in folds:
            fold_dir = tmp / f"fold{fold['fold']}"
            for part in ("train", "dev", "test"):
                write_manifest(fold_dir / f"{part}.csv", fold[part])
            write_json(fold_dir / "vocab.json", fold["vocab"])
        write_json(tmp / "folds.json", {f"fold{f['fold']}": _summary(f) for f in folds})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow split`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path)
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder: fold<k>/{train,dev,test}.csv, vocab.json"
    )


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "split")
    folds = split(read_manifest(args.manifest), params["folds"], grapheme_inventory(params["text"]))
    write_folds(folds, args.out)
    for fold in folds:
        log.info(
            "fold %d: test %s, dev %s, %d training speakers, vocab %d",
            fold["fold"],
            fold["speakers"]["test"],
            fold["speakers"]["dev"],
            len(fold["speakers"]["train"]),
            len(fold["vocab"]),
        )
