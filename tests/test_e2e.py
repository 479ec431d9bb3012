"""End to end: the tiny configuration through Snakemake and through DVC, each in a fresh copy of the project, from
nothing to results/summary.csv; right after, each engine says there is nothing left to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BIN, check_summary, copy_project, run, tiny_params

pytestmark = pytest.mark.slow
METHODS = ["full", "frozen"]


def test_snakemake_from_scratch_then_nothing_to_do(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "smk")
    tiny_params(project, methods=METHODS)
    run([str(BIN / "snakemake"), "--cores", "2", "results/summary.csv"], project, timeout=1200)
    check_summary(project, METHODS, k=2)
    dry = run([str(BIN / "snakemake"), "-n", "results/summary.csv"], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout


def test_dvc_repro_from_scratch_then_up_to_date(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "dvc")
    tiny_params(project, methods=METHODS)
    run([str(BIN / "dvc"), "repro"], project, timeout=1200)
    check_summary(project, METHODS, k=2)
    assert (project / "results/release/README.md").is_file(), "dvc repro runs every stage, the release too"
    status = run([str(BIN / "dvc"), "status"], project)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
