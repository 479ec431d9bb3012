"""How long each engine takes to find that a completed run has nothing left to do: `snakemake -n` and `dvc status`.

    python benchmarks/noop_rerun.py                     # makes a completed run first (minutes), then times it
    python benchmarks/noop_rerun.py --project DIR       # times DIR; makes the run there first if DIR does not exist

The run: a seconds-scale configuration (the tests' tiny run: 5 speakers, a one-layer base, one epoch) with 3 folds × 4
methods (full, adapter, lora, frozen), greedy decoding only (the n-gram LM adds minutes to the run and nothing to the
DAG), made by `dvc repro` in a fresh clone of the checkout's committed HEAD; then `scripts/pull.sh checkout` aligns
Snakemake's view, the state a clone reaches after `make pull`. Each command runs --repeats times after one untimed
warm-up; wall-clock seconds including Python start-up. Goal: a median of at most 5 s each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from asrflow import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny  # noqa: E402  (tests/tiny.py: the seconds-scale configuration, shared with the tests)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, dvc, asrflow
METHODS = ["full", "adapter", "lora", "frozen"]
FOLDS = 3
GOAL_SECONDS = 5.0
# Each command and what its output says when there is nothing to do.
COMMANDS = {
    "snakemake -n": ([str(BIN / "snakemake"), "-n"], "Nothing to be done"),
    "dvc status": ([str(BIN / "dvc"), "status"], "Data and pipelines are up to date"),
}


def engine_env() -> dict[str, str]:
    """The venv first on PATH (the stages call `asrflow`), no telemetry, no downloads."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }


def tiny_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` cut to seconds per job (the tests' tiny run), FOLDS folds of METHODS, greedy decoding only."""
    params = tiny.shrink(params, FOLDS, METHODS)
    params["decode"]["beam"] = False
    config.validate(params, source="the benchmark's params")
    return params


def engine(command: list[str], project: Path) -> str:
    proc = subprocess.run(command, cwd=project, env=engine_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {project}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def make_completed_run(project: Path) -> None:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(project)], check=True)
    params_file = project / "params.yaml"
    params = tiny_params(yaml.safe_load(params_file.read_text(encoding="utf-8")))
    params_file.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"making a completed {FOLDS}-fold × {len(METHODS)}-method run in {project} (dvc repro) ...", flush=True)
    engine([str(BIN / "dvc"), "repro"], project)
    engine(["bash", "scripts/pull.sh", "checkout"], project)


def timings(command: list[str], nothing_to_do: str, project: Path, repeats: int) -> list[float]:
    """Seconds per run of `command`; each run must report that there is nothing to do."""
    seconds = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        out = engine(command, project)
        seconds.append(time.perf_counter() - started)
        if nothing_to_do not in out:
            sys.exit(f"{' '.join(command)} plans work in {project}, so this is no no-op re-run:\n{out}")
    return seconds[1:]  # the first run warms the file system cache and DVC's hash cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=None, help="a completed run (default: make one in /tmp)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    project = args.project or Path(tempfile.mkdtemp(prefix="asrflow-noop-")) / "project"
    if not project.exists():
        make_completed_run(project)
    print(
        f"{'command':<14} {'median s':>9} {'min s':>7} {'max s':>7}  goal ≤ {GOAL_SECONDS:.0f} s  "
        f"({args.repeats} runs, {project})"
    )
    for name, (command, nothing_to_do) in COMMANDS.items():
        seconds = timings(command, nothing_to_do, project, args.repeats)
        median = statistics.median(seconds)
        print(
            f"{name:<14} {median:9.2f} {min(seconds):7.2f} {max(seconds):7.2f}  "
            f"{'met' if median <= GOAL_SECONDS else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
