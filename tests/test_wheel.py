"""A built wheel, installed the plain way (not editable), runs every pipeline stage in a project folder that holds only
a params.yaml: no src/, no workflow/. Nothing in the package may reach for the checkout; what it needs besides its
modules (the params schema) is package data.

The wheel is built from a copy of the project's packaging files (pyproject.toml, README.md, src/), so the build's own
build/ and egg-info never land in the checkout, and installed with `pip install --target`: with that folder first on
PYTHONPATH it shadows the editable install, which the run checks (asrflow.__file__).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COPY_IGNORE, ROOT, engine_env, tiny_params, write_params

pytestmark = pytest.mark.slow  # builds a wheel and runs every stage: `make test`, not `make test-fast`
METHODS = ["frozen"]  # one method × the two folds of the smallest split: every stage, seconds each

# In the project folder, on the installed wheel (checked: asrflow.__file__): the jobs of the stage table for its
# params.yaml, every stage's in dependency order, as JSON argv lists (`asrflow <stage> …`).
LIST_JOBS = r"""
import json, sys
from pathlib import Path

import asrflow
from asrflow import config, stages

assert Path(asrflow.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), asrflow.__file__
print(json.dumps([job.argv for job in stages.jobs(config.load_all("params.yaml"))]))
"""

# Runs the given jobs in one interpreter (one import of torch, not one per job), each as `asrflow` would.
RUN_JOBS = r"""
import json, sys

from asrflow import cli

for argv in json.loads(sys.argv[1]):
    print("JOB", argv[1], flush=True)
    if cli.main([*argv[1:], "--threads", "1"]) != 0:
        sys.exit(f"failed: {' '.join(argv)}")
"""


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=COPY_IGNORE)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        tmp_path,
        engine_env(),
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("asrflow-*.whl")
    return wheel


def test_a_plain_install_of_the_wheel_runs_every_stage_outside_the_checkout(tmp_path: Path) -> None:
    target = tmp_path / "installed"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--quiet",
            "--target",
            str(target),
            str(build_wheel(tmp_path)),
        ],
        tmp_path,
        engine_env(),
        timeout=300,
    )
    assert (target / "asrflow/params.schema.yaml").is_file(), "the schema is package data"

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "params.yaml", project / "params.yaml")
    params = tiny_params(project, methods=METHODS)
    params["decode"].update(alpha=[0.5], beta=[1.0], beam_width=4)  # the LM's beam search once, narrow: seconds
    write_params(project, params)
    env = {**engine_env(), "PYTHONPATH": str(target), "ASRFLOW_CACHE": str(project / "cache")}

    jobs = json.loads(run([sys.executable, "-c", LIST_JOBS, str(target)], project, env, timeout=120).stdout)
    assert all(argv[0] == "asrflow" for argv in jobs)
    # The first job through the console script pip installed, the rest in one interpreter.
    run([str(target / "bin/asrflow"), *jobs[0][1:], "--threads", "1"], project, env, timeout=300)
    proc = run([sys.executable, "-c", RUN_JOBS, json.dumps(jobs[1:])], project, env, timeout=600)

    ran = [jobs[0][1]] + [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("JOB ")]
    assert {
        "demo",
        "import",
        "resample",
        "normalize",
        "split",
        "augment",
        "pretrain",
        "plan",
        "train",
        "lm",
        "evaluate",
        "report",
        "data_report",
        "release",
    } <= set(ran)
    assert (project / "results/summary.csv").is_file() and (project / "results/release").is_dir()
    assert not (project / "src").exists() and not (project / "workflow").exists()
