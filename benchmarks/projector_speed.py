"""Speed of the projector method beside the CTC methods, on a project whose data stages, base and decoder exist.

Trains `full`, `frozen` and `projector` on one fold with the project's params (each job's own loop settings), and
prints each one's training speed (seconds of audio trained per second, the loop's median over epochs: the first
epoch also fills the feature cache) and its decoding real-time factor on the fold's test speakers from raw audio
(seconds of compute per second of audio; CTC: greedy, projector: its encoder + beam search, one utterance at a time).

Run from the project folder: `python benchmarks/projector_speed.py [--fold 0] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoProcessor

from asrflow import config, train
from asrflow.audio import TARGET_RATE
from asrflow.batching import load_clips
from asrflow.manifest import read_manifest
from asrflow.methods import get, projector
from asrflow.model import transcribe_clips

CTC = ["full", "frozen"]


def decoding_rtf(method: str, model_dir: Path, test: Path) -> float:
    """Seconds of compute per second of audio, transcribing the fold's test speakers from their audio files."""
    utterances = read_manifest(test)
    audio = sum(u.duration or 0.0 for u in utterances)
    started = time.perf_counter()
    if method == projector.NAME:
        projector.transcribe_utterances(model_dir, utterances)
    else:
        model = get(method).load(model_dir, "").eval()
        processor = AutoProcessor.from_pretrained(model_dir)
        clips = load_clips(utterances, lambda text: [], processor.feature_extractor)
        transcribe_clips(model, clips, processor, 60.0)
    return (time.perf_counter() - started) / audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fold = Path(f"data/processed/folds/fold{args.fold}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in [*CTC, projector.NAME]:
            params = config.load_stage("params.yaml", "train", method)
            out, curve = Path(tmp) / method, Path(tmp) / f"{method}.csv"
            speed = Path("data/processed/speed/manifest.csv")
            if method == projector.NAME:
                info = projector.train_fold(
                    fold,
                    speed,
                    Path("data/models/base"),
                    Path("data/models/decoder"),
                    params,
                    out_dir=out,
                    curve_path=curve,
                )
            else:
                info = train.train_fold(
                    fold, speed, Path("data/models/base"), method, params, out_dir=out, curve_path=curve
                )
            rows.append((method, info["audio_seconds_per_second"], decoding_rtf(method, out, fold / "test.csv")))
    print(f"{'method':<10} {'audio s trained / s':>20} {'decoding RTF':>14}")
    for method, speed, rtf in rows:
        print(f"{method:<10} {speed:>20.1f} {rtf:>14.3f}")
    print(
        f"(test audio per fold: {sum(u.duration or 0 for u in read_manifest(fold / 'test.csv')):.1f} s; "
        f"{TARGET_RATE} Hz)"
    )


if __name__ == "__main__":
    main()
