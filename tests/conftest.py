"""Shared fixtures: a throw-away copy of the project, a seconds-scale params.yaml, and what each engine plans to run.

Tests never write into the checkout itself: every engine call runs in a copy under pytest's tmp_path (`project`).
The copy holds the pipeline definitions (workflow/, dvc.yaml, params.yaml) and src/ (the code deps both engines hash);
the asrflow package itself is installed editable, so the stages import it from the checkout.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tiny
import yaml

from asrflow import config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, dvc, asrflow

# What a copy of the project needs to run both engines: the pipeline definitions, the code they depend on, and the
# scripts a user runs beside them (scripts/pull.sh).
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"]
PROJECT_DIRS = ["workflow", "src", "scripts"]
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".snakemake")


def engine_env() -> dict[str, str]:
    """Environment for engine subprocesses: the venv first on PATH (the rules call `asrflow`), no telemetry."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; on failure, fail the test with its output."""
    proc = subprocess.run(args, cwd=cwd, env=engine_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({proc.returncode}) in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_project(dest: Path) -> Path:
    """A fresh clone-like copy of the project in `dest`: no data, no results, its own git and DVC repositories."""
    assert ROOT not in [dest, *dest.parents], "tests must not write into the checkout"
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=COPY_IGNORE)
    run(["git", "init", "-q"], dest)
    run([str(BIN / "dvc"), "init", "-q"], dest)
    for name in (".dvcignore", ".dvc/config"):  # `dvc init` writes bare ones; ours add the default remote
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    return dest


def read_params(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))


def write_params(project: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Validate `params` with asrflow's own validator, then write it as the project's params.yaml. Returns the
    validated params, defaults filled in."""
    validated = config.validate(copy.deepcopy(params), source="test params")
    text = yaml.safe_dump(params, sort_keys=False, allow_unicode=True)
    (project / "params.yaml").write_text(text, encoding="utf-8")
    return validated


def set_folds(params: dict[str, Any], k: int) -> dict[str, Any]:
    params["folds"]["k"] = k
    params["folds"]["ids"] = list(range(k))
    return params


def tiny_params(path: Path, methods: list[str] | None = None, k: int = 2) -> dict[str, Any]:
    """Rewrite params.yaml under `path` (a project folder or the file itself) for a run of seconds, not minutes.

    5 target speakers × 4 utterances, 2 source languages × 2 speakers × 4 utterances, k folds, a one-layer 32-wide
    base model trained one epoch, fine-tuning one epoch. `methods` defaults to the file's own list.
    """
    project = path.parent if path.name == "params.yaml" else path
    return write_params(project, tiny.shrink(read_params(project), k, methods))


def check_summary(project: Path, methods: list[str], k: int) -> None:
    """The results of a finished run of the tiny configuration (tiny_params: 5 target speakers) over `methods` × k
    folds: what every engine and executor must produce."""
    summary = pd.read_csv(project / "results/summary.csv")
    assert summary["method"].tolist() == methods
    assert (summary["n_folds"] == k).all()
    # cer_lm_*: params.yaml decodes with each fold's n-gram LM too (decode.beam), reported next to greedy.
    for column in (
        "cer_mean",
        "cer_std",
        "wer_mean",
        "wer_std",
        "cer_lm_mean",
        "cer_lm_std",
        *(f"cer_fold{f}" for f in range(k)),
    ):
        assert summary[column].notna().all() and (summary[column] >= 0).all(), column
    folds = pd.read_csv(project / "results/folds.csv")
    assert len(folds) == k * len(methods)
    tested = [s for speakers in folds[folds.method == methods[0]]["test_speakers"] for s in speakers.split()]
    assert len(tested) == len(set(tested)) == 5, "every speaker tested exactly once"
    for name in ("summary.md", "summary.png"):
        assert (project / "results" / name).stat().st_size > 0
    for method in methods:
        for fold in range(k):
            assert (project / f"results/models/{method}/fold{fold}/README.md").is_file()
            assert (project / f"results/curves/{method}-fold{fold}.csv").is_file()
    assert (project / f"logs/train/{methods[0]}-fold0.log").read_text().count("epoch 1/1") == 1


# --- what each engine plans to run ------------------------------------------------------------------------------

# Snakemake has no public listing of a job's params, so this asks its Python API (in a subprocess: the API changes
# the working directory and sets up global logging) to build the DAG as a dry run with --forceall would.
_SNAKEMAKE_JOBS = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

project = Path(sys.argv[1]).resolve()
with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, enable_file_logging=False)) as api:
    workflow_api = api.workflow(resource_settings=ResourceSettings(cores=int(sys.argv[2])),
                                config_settings=ConfigSettings(), snakefile=project / "workflow" / "Snakefile",
                                workdir=project)
    workflow_api.dag(DAGSettings(forceall=True, targets=set(sys.argv[4:])))  # no targets: the default target
    workflow = workflow_api._workflow
    workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    workflow._build_dag()
    for job in workflow.dag.jobs:
        job.attempt = int(sys.argv[3])  # resources may grow with the attempt (retries)
    jobs = [{"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "input": [str(f) for f in job.input],
             "output": [str(f) for f in job.output], "log": [str(f) for f in job.log], "params": list(job.params),
             "threads": job.threads, "shellcmd": job.shellcmd,
             "resources": {k: v for k, v in job.resources.items() if not k.startswith("_")}}
            for job in workflow.dag.jobs]
print("JOBS-JSON " + json.dumps(jobs, default=str))
"""


def snakemake_jobs(
    project: Path, cores: int = 64, attempt: int = 1, targets: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Every job of `snakemake --forceall [targets]` in `project` (rule, wildcards, input, output, log, params,
    shellcmd...), with resources as they are on try number `attempt` (1: the first submission, 2: the first retry)."""
    proc = run(
        [sys.executable, "-c", _SNAKEMAKE_JOBS, str(project), str(cores), str(attempt), *targets], project, timeout=300
    )
    line = next(line for line in proc.stdout.splitlines() if line.startswith("JOBS-JSON "))
    return json.loads(line.removeprefix("JOBS-JSON "))


def dvc_stages(project: Path) -> list[dict[str, Any]]:
    """Every stage of dvc.yaml in `project`, matrix stages expanded (`train@0-full`), parsed by DVC itself."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    raw = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    stages = []
    with Repo(str(project)) as repo:
        # Pipeline stages only: a `dvc add`ed corpus (data/raw/<corpus>.dvc) is data, not a stage of dvc.yaml.
        for stage in (s for s in repo.index.stages if isinstance(s, PipelineStage)):
            base, _, key = stage.name.partition("@")
            axes = list(raw[base].get("matrix", {}))
            stages.append(
                {
                    "name": stage.name,
                    "stage": base,
                    "matrix": dict(zip(axes, key.split("-", len(axes) - 1))) if key else {},
                    "cmd": stage.cmd,
                    "deps": [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                    "params": [k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params],
                    "params_files": [d.def_path for d in stage.deps if isinstance(d, ParamsDependency)],
                    "outs": [o.def_path for o in stage.outs],
                    "uncached": [o.def_path for o in stage.outs if not o.use_cache],
                    "plots": [o.def_path for o in stage.outs if o.plot],
                }
            )
    return stages


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project (as on a new clone: no data), with git and DVC initialised."""
    return copy_project(tmp_path / "project")


@pytest.fixture
def tiny_project(project: Path) -> Path:
    """The project copy with a seconds-scale params.yaml (see tiny_params)."""
    tiny_params(project)
    return project


# --- a tiny project made by the real stages, shared by the tests of trained models -------------------------------

ALL_METHODS = ["full", "adapter", "lora", "frozen", "scratch"]


def prepare_data(params: Path, data: Path) -> None:
    """The data stages on params.yaml's corpus into `data`: import, resample, normalise, folds, speed copies
    (corpus.csv, resampled/, utterances.csv, folds/, speed/ and the rejects files)."""

    def data_stage(*args: str) -> None:
        from asrflow import cli

        assert cli.main([*args, "--params", str(params), "--threads", "1"]) == 0

    data_stage("import", "--out", f"{data}/corpus.csv", "--rejects", f"{data}/import_rejects.csv")
    data_stage("resample", "--in", f"{data}/corpus.csv", "--out", f"{data}/resampled")
    data_stage(
        "normalize",
        "--in",
        f"{data}/resampled/manifest.csv",
        "--out",
        f"{data}/utterances.csv",
        "--rejects",
        f"{data}/normalize_rejects.csv",
    )
    data_stage("split", "--in", f"{data}/utterances.csv", "--out", f"{data}/folds")
    data_stage("augment", "--in", f"{data}/utterances.csv", "--out", f"{data}/speed")


def stage(project: Path, *args: str) -> None:
    """One `asrflow` sub-command, in this process, with the project's params.yaml, on one thread."""
    from asrflow import cli  # imports torch: only for the tests that run stages

    assert cli.main([*args, "--params", str(project / "params.yaml"), "--threads", "1"]) == 0


# Where the tiny project made by the real stages keeps its folds, speed copies, base model and n-gram LMs.
FOLDS_DIR = "data/processed/folds"
SPEED_DIR = "data/processed/speed"
BASE_DIR = "data/models/base"


def train_argv(method: str, out: str, curve: str, *extra: str, fold: int = 0) -> list[str]:
    """`asrflow train` of `method` on `fold` of the tiny project's layout (FOLDS_DIR, SPEED_DIR, BASE_DIR), writing
    the model to `out` and its curve to `curve`; `extra` follows as given (--decoder, --params, --threads, --log...)."""
    layout = ["--folds", FOLDS_DIR, "--speed", SPEED_DIR, "--base", BASE_DIR]
    return ["train", "--fold", str(fold), "--method", method, *layout, "--out", out, "--curve", curve, *extra]


def evaluate_argv(method: str, model: str, out: str, publish: str, fold: int = 0) -> list[str]:
    """`asrflow evaluate` of the model `method` trained on `fold` (FOLDS_DIR), with that fold's n-gram LM of the tiny
    project's layout, writing metrics to `out` and the published model to `publish`."""
    where = ["--model", model, "--out", out, "--publish", publish, "--lm", f"data/processed/lm/fold{fold}"]
    return ["evaluate", "--fold", str(fold), "--method", method, "--folds", FOLDS_DIR, *where]


def stage_tiny_data(project: Path) -> None:
    """The demo corpus, the data stages and the base model of the tiny project, made by the real stages in
    `project`'s layout (data/raw, data/interim, data/processed, BASE_DIR); the working directory must be `project`."""
    stage(project, "demo", "--target", "data/raw/demo", "--source", "data/raw/demo-source")
    stage(project, "import", "--out", "data/interim/corpus.csv", "--rejects", "data/interim/import_rejects.csv")
    stage(project, "resample", "--in", "data/interim/corpus.csv", "--out", "data/interim/resampled")
    stage(
        project,
        "normalize",
        "--in",
        "data/interim/resampled/manifest.csv",
        "--out",
        "data/processed/utts.csv",
        "--rejects",
        "data/processed/normalize_rejects.csv",
    )
    stage(project, "split", "--in", "data/processed/utts.csv", "--out", FOLDS_DIR)
    stage(project, "augment", "--in", "data/processed/utts.csv", "--out", SPEED_DIR)
    stage(project, "pretrain", "--source", "data/raw/demo-source", "--out", BASE_DIR)


# What the data stages and the base's pre-training read (dvc.yaml's params of demo … pretrain): projects that agree on
# these make the same data/, so they may share one made once.
DATA_PARAMS = ("corpus", "audio", "text", "folds", "augment")
BASE_PARAMS = ("base", "demo")  # of `model`


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project's corpus, data stages and base model (stage_tiny_data), made once per worker by the real stages:
    tiny_run and the projector's tests each copy its data/ (copy_tiny_data) rather than make the same again."""
    from asrflow.features import CACHE_ENV

    project = tmp_path_factory.mktemp("tiny-data")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(project, methods=ALL_METHODS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv(CACHE_ENV, str(project / "cache"))
        stage_tiny_data(project)
    return project


def copy_tiny_data(tiny_data: Path, project: Path) -> None:
    """tiny_data's data/ into `project`, whose params.yaml must make the same data: checked, section by section."""
    ours, made = read_params(project), read_params(tiny_data)
    for section in DATA_PARAMS:
        assert ours[section] == made[section], f"{section}: not the params tiny_data was made with"
    for section in BASE_PARAMS:
        assert ours["model"][section] == made["model"][section], f"model.{section}: not tiny_data's"
    shutil.copytree(tiny_data / "data", project / "data", symlinks=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, monkeypatch_session, tiny_data: Path) -> Path:
    """A tiny corpus, base and split, made by the real stages (tiny_data's), and one epoch of every method on fold 0."""
    from asrflow.features import CACHE_ENV

    project = tmp_path_factory.mktemp("methods")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(project, methods=ALL_METHODS)
    copy_tiny_data(tiny_data, project)
    monkeypatch_session.chdir(project)
    monkeypatch_session.setenv(CACHE_ENV, str(project / "cache"))
    for fold in read_params(project)["folds"]["ids"]:
        stage(
            project,
            "lm",
            "--train",
            f"data/processed/folds/fold{fold}/train.csv",
            "--out",
            f"data/processed/lm/fold{fold}",
        )
    for method in ALL_METHODS:
        stage(project, *train_argv(method, f"models/{method}", f"curves/{method}.csv"))
        stage(project, *evaluate_argv(method, f"models/{method}", f"metrics/{method}", f"published/{method}"))
    return project


@pytest.fixture(scope="session")
def monkeypatch_session():
    """Environment and working-directory changes that last the whole session (tiny_run works in its project)."""
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


# --- order: the longest files first (make test runs them on two workers, one file per worker at a time) -------------

# The files that run whole pipelines, longest first (measured on a 2-core machine: each takes several minutes). With
# `-n 2 --dist loadfile --no-loadscope-reorder` xdist hands out files in this order, so no long file starts last and
# leaves one worker idle; every other file keeps its place after them.
LONGEST_FILES = (
    "test_reruns.py",
    "test_e2e.py",
    "test_learning_curve.py",
    "test_engines.py",
    "test_projector.py",
    "test_html_report.py",
    "test_rounds.py",
    "test_slurm.py",
    "test_wheel.py",
    "test_analysis.py",
    "test_checkpoints.py",
    "test_stage_table.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: tests keep their order within a file
