"""Exact re-runs, on one real tiny run per engine: what a change re-runs (read from each engine's own dry run), the
same seed giving the same results, push → fresh clone → pull with nothing to recompute, and the hyper-parameter search
both ways (Snakemake's random search, DVC's experiment queue).

The corpus is a folder of one's own (audiofolder, `dvc add`ed in the DVC project), as a user's would be: the demo's is
made by a stage, so adding to it is no edit a user makes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, ROOT, copy_project, dvc_stages, engine_env, read_params, run, tiny_params, write_params
from test_engines import TARGET_RULES, Key, key
from tiny import CURVE_FRACTIONS

from asrflow.search import draw_trial

pytestmark = pytest.mark.slow
METHODS = ["full", "adapter"]
K = 2
TRIALS = 3
LONG = 1800  # seconds: a whole tiny run on a busy 2-core machine


# --- what each engine plans -------------------------------------------------------------------------------------


def snakemake_plan(project: Path, *targets: str) -> set[Key]:
    """The jobs `snakemake -n` lists (rule and wildcards), read from its own output."""
    out = run([str(BIN / "snakemake"), "-n", *targets], project).stdout
    jobs, rule, wildcards = set(), None, {}
    for line in [*out.splitlines(), "rule end:"]:
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            if rule and rule not in TARGET_RULES:
                jobs.add(key(rule, wildcards))
            rule, wildcards = match[1], {}
        elif rule and (match := re.match(r"\s+wildcards: (.+)$", line)):
            wildcards = dict(item.split("=", 1) for item in match[1].split(", "))
    assert jobs or "Nothing to be done" in out, out
    return jobs


def dvc_plan(project: Path) -> set[Key]:
    """The stages `dvc repro --dry --force-downstream` would run: those whose deps or params changed, and everything
    downstream of them (as Snakemake's dry run assumes a re-run output changes)."""
    out = run([str(BIN / "dvc"), "repro", "--dry", "--force-downstream"], project).stdout
    names = {s["name"]: key(s["stage"], s["matrix"]) for s in dvc_stages(project)}
    return {names[name] for name in re.findall(r"^Running stage '([^']+)':", out, re.M)}


PLANS = {"snakemake": snakemake_plan, "dvc": dvc_plan}


def grid(stage: str, methods: list[str] = METHODS) -> set[Key]:
    return {key(stage, {"fold": fold, "method": method}) for fold in range(K) for method in methods}


def single(*stages: str) -> set[Key]:
    return {key(stage, {}) for stage in stages}


def curve(*stages: str) -> set[Key]:
    """The learning curve's jobs of `stages` (one per fold × fraction), and the curve's gathering stage."""
    return {key(s, {"fold": f, "fraction": x}) for s in stages for f in range(K) for x in CURVE_FRACTIONS} | single(
        "learning_curve"
    )


CURVE = curve("subset", "curve_lm", "curve_train", "curve_evaluate")  # everything after the folds


# release refits the method that came out best: every train key counts; analyze reads every evaluation and checkpoint;
# curves draws every training curve; listen plays analyze's suspects
AFTER_TRAINING = single("report", "release", "analyze", "curves", "listen")
AFTER_NORMALIZE = (
    single("normalize", "split", "augment", "data_report")
    | {key("lm", {"fold": f}) for f in range(K)}
    | grid("train")
    | grid("evaluate")
    | AFTER_TRAINING
    | CURVE
)
EXPECTED = {
    # ... and the adapter's memory plan, which reads train.adapter (a leaf: nothing else waits for it), and the
    # learning curve's training (learning_curve.method: adapter).
    "train.adapter.lr": (
        grid("train", ["adapter"])
        | grid("evaluate", ["adapter"])
        | AFTER_TRAINING
        | {key("plan", {"method": "adapter"})}
        | curve("curve_train", "curve_evaluate")
    ),
    "text.lowercase": AFTER_NORMALIZE,
    "one more utterance": single("import", "resample") | AFTER_NORMALIZE,
    # An edit of the split stage's module: the split and what reads the folds. Not pretrain, plan or the data
    # stages before it: the vocabulary code it shares with them lives in vocab.py, which no stage owns.
    "split.py edited": (
        single("split", "data_report")
        | {key("lm", {"fold": f}) for f in range(K)}
        | grid("train")
        | grid("evaluate")
        | AFTER_TRAINING
        | CURVE
    ),
}
EDITED_MODULE = {"split.py edited": "src/asrflow/split.py"}


# --- changes a user makes ---------------------------------------------------------------------------------------


def add_utterance(corpus: Path) -> None:
    """One more recording of an existing speaker: an audio file beside its others, a row appended to metadata.csv."""
    with (corpus / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        first = next(csv.DictReader(handle))
    added = str(Path(first["file_name"]).with_name("added.wav"))
    shutil.copy(corpus / first["file_name"], corpus / added)
    with (corpus / "metadata.csv").open("a", encoding="utf-8", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(first)).writerow({**first, "file_name": added})


def apply_change(project: Path, change: str) -> None:
    params = read_params(project)
    if change == "train.adapter.lr":
        params["train"]["adapter"]["lr"] *= 2
    elif change == "text.lowercase":
        params["text"]["lowercase"] = not params["text"]["lowercase"]
    elif change in EDITED_MODULE:
        with (project / EDITED_MODULE[change]).open("a", encoding="utf-8") as module:
            module.write("# an edit\n")
    else:
        add_utterance(project / "data/raw/corpus")
    write_params(project, params)


@contextlib.contextmanager
def changed(project: Path, change: str) -> Iterator[None]:
    """`change` made in `project`, then undone: params.yaml, the corpus and an edited module restored byte for byte,
    with their modification times (Snakemake re-runs a job whose input is newer than its output)."""
    corpus = project / "data/raw/corpus"
    edited = [project / path for path in EDITED_MODULE.values()]
    saved = {
        path: (path.read_bytes(), path.stat()) for path in (project / "params.yaml", corpus / "metadata.csv", *edited)
    }
    before = set(corpus.rglob("*"))
    try:
        apply_change(project, change)
        yield
    finally:
        for path in set(corpus.rglob("*")) - before:
            path.unlink()
        for path, (content, stat) in saved.items():
            path.write_bytes(content)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# --- one real tiny run per engine -------------------------------------------------------------------------------


def git(project: Path, *args: str) -> None:
    run(["git", *args], project)


@pytest.fixture(scope="module", autouse=True)
def git_identity() -> Iterator[None]:
    """Commits (ours and DVC's experiments) need an author; CI machines may have none configured."""
    with pytest.MonkeyPatch.context() as patch:
        for role in ("AUTHOR", "COMMITTER"):
            patch.setenv(f"GIT_{role}_NAME", "asrflow tests")
            patch.setenv(f"GIT_{role}_EMAIL", "tests@asrflow.invalid")
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny audiofolder corpus of one's own (made once by the demo synthesiser, then just a folder)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(root)
    run([str(BIN / "asrflow"), "demo", "--target", "corpus", "--source", "unused", "--threads", "1"], root)
    return root / "corpus"


def make_project(dest: Path, corpus: Path) -> Path:
    """A tiny project over `corpus`: 2 folds × full and adapter, greedy decoding only (the n-gram LM has its own
    tests); the threads per job as params.yaml has them (both engines give every command the same)."""
    project = copy_project(dest)
    params = tiny_params(project, methods=METHODS, k=K)
    params["corpus"].update(format="audiofolder", path="data/raw/corpus")
    params["decode"]["beam"] = False
    params["search"]["trials"] = TRIALS
    write_params(project, params)
    shutil.copytree(corpus, project / "data/raw/corpus")
    return project


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """`dvc repro` of the tiny project, committed to git with its dvc.lock (the corpus `dvc add`ed, as data)."""
    project = make_project(tmp_path_factory.mktemp("dvc") / "project", corpus)
    run([str(BIN / "dvc"), "add", "-q", "data/raw/corpus"], project)
    run([str(BIN / "dvc"), "repro"], project, timeout=LONG)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny run")
    return project


@pytest.fixture(scope="module")
def smk_project(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    project = make_project(tmp_path_factory.mktemp("smk") / "project", corpus)
    run([str(BIN / "snakemake"), "--cores", "2"], project, timeout=LONG)
    return project


# --- the tests ----------------------------------------------------------------------------------------------------


# What a run measures of the machine it runs on, not of the data: left out when two runs are compared.
WALL_CLOCK = {"train_seconds", "train_seconds_mean", "audio_seconds_per_second", "seconds", "probe_seconds"}
WALL_CLOCK_LINE = re.compile(r"training time|audio s/s|seconds per")
# The clips the suspects page embeds: libsndfile gives every Ogg stream it writes a random serial number.
EMBEDDED_AUDIO = re.compile(r"data:audio/[^\"]+")
# Not outputs of a stage: the engines' own files, the feature cache (shared by the jobs of a run), DVC's release.
NOT_COMPARED = ("logs", "data/cache", "results/release")
ENGINE_FILES = {".snakemake_timestamp", ".gitignore"}


def without_wall_clock(path: Path) -> object:
    """What a file says about the data: a JSON or CSV file without its WALL_CLOCK keys and columns, a Markdown file
    without its lines of timings, an HTML page without the audio it embeds (the clips themselves are compared as the
    wav files they are made from), any other file as bytes."""
    if path.suffix == ".json":

        def strip(node: object) -> object:
            if isinstance(node, dict):
                return {k: strip(v) for k, v in node.items() if k not in WALL_CLOCK}
            return [strip(v) for v in node] if isinstance(node, list) else node

        return strip(json.loads(path.read_text(encoding="utf-8")))
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        return table.drop(columns=[c for c in table.columns if c in WALL_CLOCK]).to_dict("list")
    if path.suffix == ".md":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if not WALL_CLOCK_LINE.search(line)]
    if path.suffix == ".html":
        return EMBEDDED_AUDIO.sub("data:audio", path.read_text(encoding="utf-8"))
    return path.read_bytes()


def outputs(project: Path) -> set[str]:
    """The files the stages wrote (relative paths): those below data/ and results/ but NOT_COMPARED or ENGINE_FILES."""
    return {
        p.relative_to(project).as_posix()
        for folder in ("data", "results")
        for p in (project / folder).rglob("*")
        if p.is_file() and p.name not in ENGINE_FILES and not p.relative_to(project).as_posix().startswith(NOT_COMPARED)
    }


def test_the_same_seed_gives_the_same_results_in_two_runs(dvc_project: Path, smk_project: Path) -> None:
    """Two runs from nothing, one per engine, with the same params, seed and threads: every output the same, byte for
    byte, but what measures the machine (wall-clock times, speeds); the weights among them."""
    both = outputs(dvc_project) & outputs(smk_project)
    assert {f"data/checkpoints/{m}/fold{f}/model.safetensors" for m in METHODS for f in range(K)} <= both
    assert "results/folds.csv" in both and "results/summary.json" in both
    assert outputs(smk_project) == both, "DVC made all that Snakemake made (and `dvc add`'s corpus.dvc)"
    differ = [
        path
        for path in sorted(both)
        if without_wall_clock(dvc_project / path) != without_wall_clock(smk_project / path)
    ]
    assert not differ, differ


@pytest.mark.parametrize("engine", list(PLANS))
@pytest.mark.parametrize("change", list(EXPECTED))
def test_a_change_re_runs_exactly_what_depends_on_it(change: str, engine: str, request: pytest.FixtureRequest) -> None:
    project = request.getfixturevalue({"snakemake": "smk_project", "dvc": "dvc_project"}[engine])
    plan = PLANS[engine]
    with changed(project, change):
        assert plan(project) == EXPECTED[change]
    assert plan(project) == set(), "undone, the change leaves nothing to re-run"


def test_push_then_pull_into_a_fresh_clone_leaves_nothing_to_recompute(dvc_project: Path) -> None:
    run([str(BIN / "dvc"), "push", "-q"], dvc_project)
    assert (dvc_project.parent / "asrflow-dvc-storage").is_dir(), "the default remote: a folder beside the clone"
    clone = dvc_project.parent / "clone"
    run(["git", "clone", "-q", str(dvc_project), str(clone)], dvc_project.parent)
    assert not (clone / "data/checkpoints").exists()

    out = run(["bash", "scripts/pull.sh"], clone, timeout=600).stdout
    assert "Both engines are up to date" in out
    assert "Data and pipelines are up to date" in run([str(BIN / "dvc"), "status"], clone).stdout
    assert snakemake_plan(clone) == set()
    for pulled in [
        "data/raw/corpus/metadata.csv",
        "data/models/base/model.safetensors",
        *(f"data/checkpoints/{m}/fold{f}/model.safetensors" for m in METHODS for f in range(K)),
        "results/metrics/adapter/fold1/metrics.json",
        "results/folds.csv",
        "results/summary.json",
    ]:
        assert (clone / pulled).read_bytes() == (dvc_project / pulled).read_bytes(), pulled

    # Snakemake's metadata, recorded by the pull, still sees what a later change needs.
    with changed(clone, "train.adapter.lr"):
        assert snakemake_plan(clone) == dvc_plan(clone) == EXPECTED["train.adapter.lr"]
        # A clone that does not match its dvc.lock is not declared up to date.
        refused = subprocess.run(
            ["bash", "scripts/pull.sh", "checkout"], cwd=clone, env=engine_env(), capture_output=True, text=True
        )
        assert refused.returncode == 1 and "run `dvc repro`" in refused.stderr, refused.stderr


def test_dvc_accepts_what_snakemake_made(smk_project: Path) -> None:
    """`dvc commit` records a Snakemake run in dvc.lock (to push it); DVC then finds every stage up to date."""
    run([str(BIN / "dvc"), "commit", "-f", "-q"], smk_project)
    assert "Data and pipelines are up to date" in run([str(BIN / "dvc"), "status"], smk_project).stdout


@pytest.fixture(scope="module")
def smk_search(smk_project: Path) -> pd.DataFrame:
    """The random search declared in params.yaml (TRIALS trials of the adapter's lr), run by Snakemake."""
    run([str(BIN / "snakemake"), "--cores", "2", "results/search.csv"], smk_project, timeout=LONG)
    return pd.read_csv(smk_project / "results/search.csv")


def test_snakemake_random_search_selects_by_dev_cer(smk_project: Path, smk_search: pd.DataFrame) -> None:
    table = smk_search
    search = read_params(smk_project)["search"]
    drawn = [draw_trial(search["space"], search["seed"], trial) for trial in range(TRIALS)]
    assert table["trial"].tolist() == list(range(TRIALS))
    assert table["train.adapter.lr"].tolist() == [d["train.adapter.lr"] for d in drawn]
    assert len(set(table["train.adapter.lr"])) == TRIALS
    for trial, settings in enumerate(drawn):
        dev_cers = []
        for fold in range(K):
            training = json.loads(
                (smk_project / f"data/search/trial{trial}/checkpoints/adapter/fold{fold}" / "training.json").read_text()
            )
            assert training["settings"]["adapter"]["lr"] == settings["train.adapter.lr"], "the trial's --set"
            dev_cers.append(training["dev_cer"])
        assert table.loc[trial, "dev_cer_mean"] == pytest.approx(sum(dev_cers) / K, abs=1e-4)
    assert table["selected"].sum() == 1
    assert table.loc[table["selected"], "dev_cer_mean"].item() == table["dev_cer_mean"].min()
    assert table["cer_mean"].between(0, 2).all()

    params = read_params(smk_project)
    params["search"]["trials"] = TRIALS + 1
    saved = (smk_project / "params.yaml").read_bytes()
    write_params(smk_project, params)
    try:  # one more trial runs that trial only, then the table again
        new = {
            key(stage, {"fold": f, "method": "adapter", "trial": TRIALS})
            for stage in ("search_train", "search_evaluate")
            for f in range(K)
        }
        assert snakemake_plan(smk_project, "results/search.csv") == new | single("search")
    finally:
        (smk_project / "params.yaml").write_bytes(saved)


def test_dvc_experiment_queue_runs_trials_and_exp_show_lists_their_cer(
    dvc_project: Path, smk_search: pd.DataFrame
) -> None:
    """The Snakemake search's trials again, queued as DVC experiments: `dvc exp show` lists each one's cross-fold CER,
    the same numbers as results/search.csv. (`report` as the target: the release refit adds nothing here.)"""
    dvc = str(BIN / "dvc")
    lrs = smk_search["train.adapter.lr"].tolist()
    for lr in lrs:
        run([dvc, "exp", "run", "--queue", "-S", f"train.adapter.lr={lr}", "report"], dvc_project)
    run([dvc, "queue", "start", "-j", "2"], dvc_project)
    deadline = time.monotonic() + LONG
    while re.search(r"\b(Queued|Running)\b", status := run([dvc, "queue", "status"], dvc_project).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") == len(lrs), status

    shown = json.loads(run([dvc, "exp", "show", "--json"], dvc_project).stdout)
    trials = {}
    for experiment in (e for commit in shown for e in commit.get("experiments") or []):
        data = experiment["revs"][0]["data"]
        lr = data["params"]["params.yaml"]["data"]["train"]["adapter"]["lr"]
        trials[lr] = data["metrics"]["results/summary.json"]["data"]["adapter"]
    assert sorted(trials) == sorted(lrs)
    for _, trial in smk_search.iterrows():
        metrics = trials[trial["train.adapter.lr"]]
        for column in ("cer_mean", "cer_std", "dev_cer_mean"):
            assert metrics[column] == pytest.approx(trial[column], abs=1e-4), (trial["trial"], column)
    assert yaml.safe_load((dvc_project / "params.yaml").read_text())["train"]["adapter"]["lr"] not in lrs, (
        "queued experiments leave the workspace alone"
    )
