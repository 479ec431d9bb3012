"""Does the checkout train and evaluate the demo as fast, and to the same numbers, as an earlier revision?

    python benchmarks/demo_regression.py --project DIR --baseline REV [--method full] [--rounds 3]

DIR is a finished demo run (`make demo`: its folds, speed copies, base and the fold's n-gram LM are reused). REV is
a git revision of this repository (e.g. the last one whose demo time the README quotes). The benchmark checks REV
out into a temporary worktree and then, round by round and alternating the order, runs the same two demo jobs with
each side's own code and own params.yaml (cut to one epoch): `asrflow train` of fold 0 and `asrflow evaluate` of
that model (greedy and LM decoding, the alpha/beta grid on the dev speakers), one torch thread each as the demo's
jobs run. It prints each job's median wall-clock seconds per side and their ratio, and whether the two sides'
training curves (but for their speed column) and metrics are identical: measured side by side in one run, so a busy
machine slows both sides.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FOLD = 0


def worktree(revision: str, dest: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), revision], check=True)
    return dest


def one_epoch_params(source: Path, dest: Path) -> Path:
    params = yaml.safe_load(source.read_text(encoding="utf-8"))
    params["train"]["max_epochs"] = 1
    dest.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return dest


def run_job(code: Path, params: Path, args: list[str], project: Path) -> float:
    """Wall-clock seconds of one `asrflow` job with `code`'s package first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "python"), "-m", "asrflow.cli", *args, "--params", str(params), "--threads", "1"],
        cwd=project,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def jobs(project: Path, out: Path, method: str) -> dict[str, list[str]]:
    folds, model = project / "data/processed/folds", out / "model"
    return {
        "train": [
            "train", "--fold", str(FOLD), "--method", method, "--folds", str(folds),
            "--speed", str(project / "data/processed/speed"), "--base", str(project / "data/models/base"),
            "--out", str(model), "--curve", str(out / "curve.csv"),
        ],
        "evaluate": [
            "evaluate", "--fold", str(FOLD), "--method", method, "--folds", str(folds), "--model", str(model),
            "--out", str(out / "metrics"), "--publish", str(out / "published"),
            "--lm", str(project / f"data/processed/lm/fold{FOLD}"),
        ],
    }  # fmt: skip


TIMING_COLUMNS = {"audio_seconds_per_second"}  # the training curve's speed column differs from run to run


def results(out: Path) -> tuple[list[dict], dict]:
    """The training curve without its timing columns, and the test metrics: what the two sides must agree on."""
    with (out / "curve.csv").open(encoding="utf-8", newline="") as f:
        curve = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
    metrics = json.loads((out / "metrics" / "metrics.json").read_text(encoding="utf-8"))
    return curve, {k: metrics.get(k) for k in ("cer", "wer", "cer_lm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a finished demo run")
    parser.add_argument("--baseline", required=True, help="git revision to compare the checkout with")
    parser.add_argument("--method", default="full")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    project = args.project.resolve()
    with tempfile.TemporaryDirectory(prefix="asrflow-regression-") as tmp:
        tmp = Path(tmp)
        sides = {"baseline": worktree(args.baseline, tmp / "baseline"), "checkout": ROOT}
        try:
            seconds: dict[tuple[str, str], list[float]] = {}
            outcome: dict[str, tuple[list[dict], dict]] = {}
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for side in order:
                    out = tmp / f"{side}-{round_}"
                    params = one_epoch_params(sides[side] / "params.yaml", tmp / f"{side}-params.yaml")
                    for job, argv in jobs(project, out, args.method).items():
                        seconds.setdefault((side, job), []).append(run_job(sides[side], params, argv, project))
                    outcome[side] = results(out)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides["baseline"])])
    print(f"{args.method} fold {FOLD}, one epoch, {args.rounds} rounds alternating; baseline {args.baseline}")
    print(f"{'job':<10} {'baseline s':>11} {'checkout s':>11} {'ratio':>7}")
    for job in ("train", "evaluate"):
        base, new = (statistics.median(seconds[(side, job)]) for side in sides)
        print(f"{job:<10} {base:>11.1f} {new:>11.1f} {new / base:>7.3f}")
    same = outcome["baseline"] == outcome["checkout"]
    print(f"curves and metrics identical: {same}; checkout {outcome['checkout'][1]}")
    if not same:
        print(f"baseline {outcome['baseline'][1]}")


if __name__ == "__main__":
    main()
