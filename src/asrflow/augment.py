"""The `augment` stage: speed-perturbed copies (factors `augment.speed`, default 0.9 and 1.1).

Every utterance is a training utterance in k-1 folds, so each is perturbed once here and each fold's training job picks
the copies of its own training utterances only (by the `origin` column, which holds the source utt_id); dev and test
speakers' copies are never used. This costs 1/(k-1) of per-fold copies and lets the frozen-encoder feature cache serve
every fold. Perturbation is Kaldi/sox `speed`: resampling changes tempo and pitch together.
"""

from __future__ import annotations

import argparse
import logging
from multiprocessing import Pool
from pathlib import Path

import soxr
from tqdm import tqdm

from asrflow import config
from asrflow.audio import TARGET_RATE, read_wav, write_wav
from asrflow.io import atomic_path
from asrflow.manifest import Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)


def copy_id(utt_id: str, factor: float) -> str:
    return f"{utt_id}_sp{factor:g}"


def perturb(samples, factor: float):
    # Reading the clip as if recorded at rate*factor and resampling to rate makes it `factor` times faster.
    return soxr.resample(samples, TARGET_RATE * factor, TARGET_RATE, quality="HQ")


def _perturb_one(job: tuple[Utterance, tuple[float, ...], str, str]) -> list[Utterance]:
    utt, factors, tmp_dir, final_dir = job
    samples = read_wav(utt.audio)
    copies = []
    for factor in factors:
        name = f"{copy_id(utt.utt_id, factor)}.wav"
        fast = perturb(samples, factor)
        write_wav(Path(tmp_dir) / name, fast)
        copies.append(
            utt.replace(
                utt_id=copy_id(utt.utt_id, factor),
                audio=str(Path(final_dir) / name),
                duration=len(fast) / TARGET_RATE,
                origin=utt.utt_id,
            )
        )
    return copies


def augment(utterances: list[Utterance], factors: list[float], out_dir: Path, cores: int) -> None:
    with atomic_path(out_dir) as tmp:
        (tmp / "wav").mkdir(parents=True)
        jobs = [(u, tuple(factors), str(tmp / "wav"), str(out_dir / "wav")) for u in utterances]
        copies: list[Utterance] = []
        with Pool(max(1, cores)) as pool:
            for made in tqdm(pool.imap(_perturb_one, jobs, chunksize=8), total=len(jobs), desc="speed", unit="utt"):
                copies.extend(made)
        write_manifest(tmp / "manifest.csv", copies)
    log.info(
        "wrote %d speed-perturbed copies (factors %s, %.1f min)",
        len(copies),
        factors,
        sum(c.duration for c in copies) / 60,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow augment`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, wav/")


def run_cli(args: argparse.Namespace) -> None:
    factors = config.load_stage(args.params, "augment")["augment"]["speed"]
    augment(read_manifest(args.manifest), factors, args.out, args.threads)
