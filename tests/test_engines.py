"""Snakemake and DVC declare the same pipeline: same jobs, commands, outputs, inputs, params keys and code deps.

Nothing here runs a stage. Snakemake's plan comes from its API building the DAG as `snakemake -n --forceall` does
(conftest.snakemake_jobs); DVC's from `dvc.repo.Repo(...).index` (conftest.dvc_stages). Every engine call runs in a
fresh copy of the project under tmp_path, with no data, as on a new clone.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    BIN,
    ROOT,
    copy_project,
    dvc_stages,
    engine_env,
    read_params,
    run,
    set_folds,
    snakemake_jobs,
    tiny_params,
    write_params,
)

from asrflow import config, stages

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

GRID = ("fold", "method")  # the wildcards of Snakemake = the matrix axes of dvc.yaml
CURVE = ("fold", "fraction")  # the learning curve's (one method, params.yaml's learning_curve.method)
TARGET_RULES = {"all", "default"}  # Snakemake's aggregate target: no command, no outputs; DVC has no counterpart

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(stage: str, grid: dict[str, Any]) -> Key:
    return stage, tuple(sorted((k, str(v)) for k, v in grid.items()))


def expected_jobs(params: dict[str, Any]) -> set[Key]:
    """One job per stage of the table that both engines run, per value of each of its grid axes in params.yaml (the
    learning curve's fractions: learning_curve.fractions)."""
    values = {"fold": params["folds"]["ids"], "method": params["methods"]}
    values["fraction"] = params.get("learning_curve", {}).get("fractions", [])
    jobs = set()
    for stage in (s for s in stages.STAGES if s.dvc):
        combinations: list[dict[str, Any]] = [{}]
        for axis in stage.wildcards:
            combinations = [{**c, axis: v} for c in combinations for v in values[axis]]
        jobs |= {key(stage.name, c) for c in combinations}
    return jobs


def test_the_grid_is_what_the_issue_asks() -> None:
    """Independently of the table's renderers: training and evaluation per fold × method, LMs per fold, memory
    plans per method, the learning curve's jobs per fold × fraction, everything else once; the search is Snakemake's
    only."""
    axes = {s.name: s.wildcards for s in stages.STAGES}
    assert axes["train"] == axes["evaluate"] == GRID and axes["lm"] == ("fold",) and axes["plan"] == ("method",)
    assert all(axes[s] == CURVE for s in ("subset", "curve_lm", "curve_train", "curve_evaluate"))
    assert {name for name, w in axes.items() if w} == {
        "train",
        "evaluate",
        "lm",
        "plan",
        "subset",
        "curve_lm",
        "curve_train",
        "curve_evaluate",
    }
    assert [s.name for s in stages.STAGES if not s.dvc] == ["search"]


def norm(path: str) -> str:
    return os.path.normpath(path)


def is_code(path: str) -> bool:
    return norm(path).startswith("src" + os.sep)


def expand_code(project: Path, paths: list[str]) -> set[str]:
    """Code deps as files: a folder stands for every .py file in it (as DVC hashes it, minus .dvcignore'd caches)."""
    files = set()
    for path in map(norm, paths):
        full = project / path
        files |= {str(p.relative_to(project)) for p in full.rglob("*.py")} if full.is_dir() else {path}
    return files


def same_command(cmd: str) -> str:
    """Commands up to whitespace: the same arguments, thread counts included."""
    return " ".join(cmd.split())


class Plan:
    """Both engines' plans for one project copy, keyed by (stage, grid values)."""

    def __init__(self, project: Path):
        self.project = project
        self.params = config.validate(read_params(project))  # the schema's defaults in, as Snakemake's config has
        jobs = snakemake_jobs(project)
        self.targets = [j for j in jobs if j["rule"] in TARGET_RULES]
        self.snakemake = {key(j["rule"], j["wildcards"]): j for j in jobs if j["rule"] not in TARGET_RULES}
        assert len(self.snakemake) == len(jobs) - len(self.targets), "two Snakemake jobs share a rule and wildcards"
        stages = dvc_stages(project)
        self.dvc = {key(s["stage"], s["matrix"]): s for s in stages}
        assert len(self.dvc) == len(stages)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    return Plan(copy_project(tmp_path_factory.mktemp("engines") / "project"))


def test_both_engines_plan_the_same_jobs(plan: Plan) -> None:
    expected = expected_jobs(plan.params)
    assert set(plan.snakemake) == expected
    assert set(plan.dvc) == expected
    every_output = {norm(p) for job in plan.snakemake.values() for p in job["output"]}
    assert [{norm(p) for p in t["input"]} for t in plan.targets] == [every_output]
    for stage in plan.dvc.values():
        assert set(stage["matrix"]) in (set(), {"fold"}, {"method"}, set(GRID), set(CURVE))


def test_same_commands(plan: Plan) -> None:
    for job_key, job in plan.snakemake.items():
        assert job["shellcmd"].lstrip().startswith(f"asrflow {job_key[0]} ")
        assert same_command(job["shellcmd"]) == same_command(plan.dvc[job_key]["cmd"]), job_key


def test_same_outputs(plan: Plan) -> None:
    for job_key, job in plan.snakemake.items():
        assert set(map(norm, job["output"])) == set(map(norm, plan.dvc[job_key]["outs"])), job_key


def test_outputs_git_keeps_are_not_cached_and_curves_are_plots(plan: Plan) -> None:
    report = plan.dvc[key("report", {})]
    assert set(report["uncached"]) == {
        "results/folds.csv",
        "results/summary.csv",
        "results/summary.md",
        "results/summary.png",
        "results/summary.json",
        "results/comparisons.csv",
    }
    assert report["plots"] == ["results/summary.png"]
    for job_key, stage in plan.dvc.items():
        if job_key[0] == "train":
            grid = dict(job_key[1])
            curve = f"results/curves/{grid['method']}-fold{grid['fold']}.csv"
            assert stage["plots"] == [curve] and stage["uncached"] == [curve]


def test_same_data_inputs(plan: Plan) -> None:
    """Every Snakemake input lies in a DVC dep and every DVC dep holds one (report reads results/metrics whole)."""
    for job_key, job in plan.snakemake.items():
        ours = {norm(p) for p in job["input"] if not is_code(p)}
        theirs = {norm(p) for p in plan.dvc[job_key]["deps"] if not is_code(p)}
        within = lambda path, folder: path == folder or path.startswith(folder + os.sep)  # noqa: E731
        assert all(any(within(p, d) for d in theirs) for p in ours), (job_key, ours, theirs)
        assert all(any(within(p, d) for p in ours) for d in theirs), (job_key, ours, theirs)


def test_report_waits_for_every_evaluation(plan: Plan) -> None:
    report = plan.snakemake[key("report", {})]
    evaluated = {norm(j["output"][0]) for k, j in plan.snakemake.items() if k[0] == "evaluate"}
    assert evaluated == {norm(p) for p in report["input"] if not is_code(p)}
    assert all(p.startswith("results/metrics/") for p in evaluated)


def test_same_code_deps(plan: Plan) -> None:
    for job_key, job in plan.snakemake.items():
        ours = {norm(p) for p in job["input"] if is_code(p)}
        theirs = expand_code(plan.project, [p for p in plan.dvc[job_key]["deps"] if is_code(p)])
        assert ours == theirs, job_key


def test_params_keys_are_exactly_stage_params(plan: Plan) -> None:
    for (stage, grid), job in plan.snakemake.items():
        keys = config.stage_keys(stage, dict(grid).get("method"), plan.params)
        assert plan.dvc[(stage, grid)]["params_files"] == ["params.yaml"]
        assert sorted(plan.dvc[(stage, grid)]["params"]) == sorted(keys), (stage, grid)
        assert job["params"][0] == config.select(plan.params, keys), (stage, grid)


def test_every_job_declares_resources_and_one_log(plan: Plan) -> None:
    threads = plan.params.get("resources", {}).get("threads", 1)
    for (stage, _), job in plan.snakemake.items():
        assert job["threads"] >= 1 and job["resources"]["mem_mb"] > 0 and job["resources"]["runtime"] > 0
        assert len(job["log"]) == 1 and job["log"][0].startswith("logs/")
        assert f"--log {job['log'][0]}" in job["shellcmd"]
        if stage in ("train", "evaluate"):
            assert job["threads"] == threads


# --- code deps really are the code each stage runs ----------------------------------------------------------------

_LOADED = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] == "asrflow")))
"""


@pytest.mark.parametrize("stage", [s.name for s in stages.STAGES])
def test_code_deps_hold_every_module_the_stage_loads(stage: str) -> None:
    """An independent check of the import walk: every asrflow module Python loads with the stage's module is one of
    its code deps (or plumbing), so an edit to it re-runs the stage. (The walk also finds lazy imports.)"""
    module = stages.stage(stage).module_name
    loaded = set(run([sys.executable, "-c", _LOADED, module], ROOT).stdout.split())
    declared = {str(Path(p).relative_to(stages.SOURCE_DIR)) for p in stages.code_files(stage)}
    files = {str(stages.module_file(m).relative_to(stages.PACKAGE_DIR)) for m in loaded - stages.NOT_CODE}
    # A package's __init__ runs when a submodule is imported; its own code counts only if the stage uses a name of it.
    files -= {f for f in files if f.endswith("__init__.py") and f not in declared}
    assert files <= declared, f"{stage}: loads {sorted(files - declared)} but does not re-run when they change"


def test_committed_dvc_yaml_is_the_tables() -> None:
    """dvc.yaml is written by `asrflow dvc-yaml` from the stage table: an edit to either alone fails here."""
    proc = subprocess.run(
        [str(BIN / "asrflow"), "dvc-yaml", "--check"], cwd=ROOT, env=engine_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# --- the grid is declared once, in params.yaml --------------------------------------------------------------------


def _method_variants() -> list[list[str]]:
    """Method lists params.yaml can hold: declared in the schema and configured under train.<method>."""
    params = read_params(ROOT)
    allowed = [m for m in config._schema()["properties"]["methods"]["items"]["enum"] if m in params["train"]]
    return [allowed[:1], allowed]


@pytest.mark.parametrize("change", ["k=2", "k=5", "methods"])
def test_changing_the_grid_changes_both_engines_alike(project: Path, change: str) -> None:
    params = copy.deepcopy(read_params(project))
    if change.startswith("k="):
        set_folds(params, int(change[2:]))
        variants = [params]
    else:
        variants = [
            {**copy.deepcopy(params), "methods": methods, "model": {**params["model"], "decoder": "demo"}}
            for methods in _method_variants()
        ]
    for variant in variants:
        write_params(project, variant)
        plan = Plan(project)
        assert set(plan.snakemake) == set(plan.dvc) == expected_jobs(variant), change


def test_tiny_params_are_valid_and_plan_two_folds(project: Path) -> None:
    params = tiny_params(project)
    assert config.load_all(project / "params.yaml") == params
    assert params["folds"]["ids"] == [0, 1]
    plan = Plan(project)
    assert set(plan.snakemake) == set(plan.dvc) == expected_jobs(params)


# --- the command lines a user types --------------------------------------------------------------------------------


def test_cli_dry_run_and_dvc_dag_on_a_fresh_clone(project: Path) -> None:
    """A bare `snakemake -n` (the root Snakefile's default target) plans the whole pipeline; `dvc dag` works."""
    proc = run([str(BIN / "snakemake"), "-n"], project)
    out = proc.stdout + proc.stderr
    n_grid = len(read_params(project)["folds"]["ids"]) * len(read_params(project)["methods"])
    assert re.search(rf"^train\s+{n_grid}$", out, re.M) and re.search(r"^report\s+1$", out, re.M), out
    dag = run([str(BIN / "dvc"), "dag", "--md"], project).stdout
    assert "report" in dag and "train@0-" in dag


def test_invalid_params_stop_snakemake_with_the_validator_message(project: Path) -> None:
    params = read_params(project)
    params["folds"]["ids"] = [0, 1]  # k stays 3: the validator names the key
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    proc = subprocess.run([str(BIN / "snakemake"), "-n"], cwd=project, env=engine_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "folds.ids" in proc.stdout + proc.stderr
