"""End to end: the tiny configuration through Snakemake and through DVC, each in a fresh copy of the project, from
nothing to results/summary.csv; right after, each engine says there is nothing left to do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, copy_project, run, tiny_params

pytestmark = pytest.mark.slow
METHODS = ["full", "frozen"]


def check_summary(project: Path, k: int) -> None:
    summary = pd.read_csv(project / "results/summary.csv")
    assert summary["method"].tolist() == METHODS
    assert (summary["n_folds"] == k).all()
    for column in ("cer_mean", "cer_std", "wer_mean", "wer_std", *(f"cer_fold{f}" for f in range(k))):
        assert summary[column].notna().all() and (summary[column] >= 0).all(), column
    folds = pd.read_csv(project / "results/folds.csv")
    assert len(folds) == k * len(METHODS)
    tested = [s for speakers in folds[folds.method == "full"]["test_speakers"] for s in speakers.split()]
    assert len(tested) == len(set(tested)) == 5, "every speaker tested exactly once"
    for name in ("summary.md", "summary.png"):
        assert (project / "results" / name).stat().st_size > 0
    for method in METHODS:
        for fold in range(k):
            assert (project / f"results/models/{method}/fold{fold}/README.md").is_file()
            assert (project / f"results/curves/{method}-fold{fold}.csv").is_file()
    assert (project / "logs/train/full-fold0.log").read_text().count("epoch 1/1") == 1


def test_snakemake_from_scratch_then_nothing_to_do(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "smk")
    tiny_params(project, methods=METHODS)
    run([str(BIN / "snakemake"), "--cores", "2", "results/summary.csv"], project, timeout=1200)
    check_summary(project, k=2)
    dry = run([str(BIN / "snakemake"), "-n", "results/summary.csv"], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout


def test_dvc_repro_from_scratch_then_up_to_date(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "dvc")
    tiny_params(project, methods=METHODS)
    run([str(BIN / "dvc"), "repro"], project, timeout=1200)
    check_summary(project, k=2)
    status = run([str(BIN / "dvc"), "status"], project)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
