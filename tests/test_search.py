"""The random search without training: trial draws, `--set` overrides, the search table's choice by dev CER, and the
Snakemake jobs a search plans. tests/test_reruns.py runs real trials (with Snakemake and with DVC's queue)."""

from __future__ import annotations

import copy
import json
import math
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, read_params, snakemake_jobs, write_params

from asrflow import config, stages
from asrflow.cli import main
from asrflow.search import draw_trial, search_table, set_arguments

SPACE = {
    "train.adapter.lr": {"log_uniform": [1.0e-5, 1.0e-1]},
    "augment.mask_time_prob": {"uniform": [0.0, 0.2]},
    "train.adapter.patience": {"choice": [1, 2, 3]},
}


def test_a_trial_depends_on_seed_and_number_only() -> None:
    trials = [draw_trial(SPACE, seed=0, trial=n) for n in range(20)]
    assert trials == [draw_trial(SPACE, seed=0, trial=n) for n in range(20)]
    assert trials[:5] == [draw_trial(SPACE, seed=0, trial=n) for n in range(5)], "more trials keep the first ones"
    assert trials != [draw_trial(SPACE, seed=1, trial=n) for n in range(20)]
    assert len({t["train.adapter.lr"] for t in trials}) == 20


def test_draws_stay_in_their_ranges_and_log_uniform_covers_every_decade() -> None:
    trials = [draw_trial(SPACE, seed=3, trial=n) for n in range(400)]
    lrs = [t["train.adapter.lr"] for t in trials]
    assert all(1e-5 <= lr <= 1e-1 for lr in lrs)
    per_decade = pd.Series([min(-2, math.floor(math.log10(lr))) for lr in lrs]).value_counts()  # 0.1: the top one
    assert set(per_decade.index) == {-5, -4, -3, -2} and per_decade.min() > 60  # ~100 each; uniform would give ~0.4
    assert all(0.0 <= t["augment.mask_time_prob"] <= 0.2 for t in trials)
    assert {t["train.adapter.patience"] for t in trials} == {1, 2, 3}
    assert all(float(f"{lr:.3g}") == lr for lr in lrs), "3 significant digits"


def test_set_arguments_round_trip_through_the_train_stage(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_bytes((ROOT / "params.yaml").read_bytes())
    settings = {"train.adapter.lr": 1e-05, "augment.mask_time_prob": 0.125, "train.adapter.patience": 2}
    arguments = [a for a in shlex.split(set_arguments(settings)) if a != "--set"]
    loaded = config.load_stage(params_path, "train", "adapter", overrides=arguments)
    assert loaded["train"]["adapter"]["lr"] == 1e-05  # JSON "1e-05" is a number (to YAML it would be a string)
    assert loaded["augment"]["mask_time_prob"] == 0.125
    assert loaded["train"]["adapter"]["patience"] == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("decode.alpha=[1.0]", "the train stage does not read it"),  # another stage's key: not this job's to change
        ("train.full.lr=0.1", "the train stage does not read it"),  # another method's settings
        ("train.adapter.lr=-1", "train.adapter.lr"),  # validated like params.yaml
        ("train.adapter.lr", "expected KEY=VALUE"),
    ],
)
def test_a_bad_override_is_refused_naming_the_key(tmp_path: Path, override: str, message: str) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_bytes((ROOT / "params.yaml").read_bytes())
    with pytest.raises(config.ParamsError, match=message):
        config.load_stage(params_path, "train", "adapter", overrides=[override])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"space": {"decode.alpha": {"choice": [[0.5]]}}}, "search.space.decode.alpha: the adapter training does not"),
        ({"space": {"train.adapter.lr": {"log_uniform": [0.01, 0.001]}}}, "needs low < high"),
        ({"space": {"train.adapter.lr": {"log_uniform": [0, 0.01]}}}, "search.space.train.adapter.lr"),
        ({"method": "scratch"}, "train.scratch is missing"),
    ],
)
def test_an_impossible_search_is_refused_on_load(change: dict, message: str) -> None:
    params = copy.deepcopy(read_params(ROOT))
    params["train"].pop("scratch", None)
    params["search"].update(change)
    with pytest.raises(config.ParamsError, match=message):
        config.validate(params)


def write_trial(metrics_dir: Path, trial: int, dev_cer: list[float], cer: list[float]) -> None:
    for fold, (dev, test) in enumerate(zip(dev_cer, cer)):
        path = metrics_dir / f"trial{trial}" / "metrics" / "adapter" / f"fold{fold}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(
                {
                    "method": "adapter",
                    "fold": fold,
                    "cer": test,
                    "wer": 2 * test,
                    "n_utts": 4,
                    "test_speakers": ["s"],
                    "trainable_params": 10,
                    "total_params": 100,
                    "train_seconds": 1.0,
                    "best_epoch": 1,
                    "dev_cer": dev,
                }
            )
        )


def test_the_search_selects_by_dev_cer_never_by_test_cer(tmp_path: Path) -> None:
    search = {"method": "adapter", "trials": 3, "seed": 0, "space": {"train.adapter.lr": {"log_uniform": [1e-4, 1e-2]}}}
    write_trial(tmp_path, 0, dev_cer=[0.5, 0.5], cer=[0.10, 0.20])  # the best test CER...
    write_trial(tmp_path, 1, dev_cer=[0.3, 0.4], cer=[0.40, 0.50])  # ...but this one is best on dev
    write_trial(tmp_path, 2, dev_cer=[0.6, 0.3], cer=[0.30, 0.30])
    table = search_table(tmp_path, search, k=2)
    assert table["trial"].tolist() == [0, 1, 2]
    assert table["selected"].tolist() == [False, True, False]
    assert table["dev_cer_mean"].tolist() == [0.5, 0.35, 0.45]
    assert table["cer_mean"].tolist() == [0.15, 0.45, 0.3]
    assert table["train.adapter.lr"].tolist() == [
        draw_trial(search["space"], 0, n)["train.adapter.lr"] for n in range(3)
    ]
    assert list(table.columns) == [
        "trial",
        "train.adapter.lr",
        "n_folds",
        "dev_cer_mean",
        "dev_cer_std",
        "cer_mean",
        "cer_std",
        "wer_mean",
        "wer_std",
        "selected",
    ]


def test_search_cli_writes_the_table_and_needs_every_trial(tmp_path: Path) -> None:
    params = read_params(ROOT)
    params["folds"].update(k=2, ids=[0, 1])
    params["search"].update(trials=2)
    write_params(tmp_path, params)
    write_trial(tmp_path / "search", 0, dev_cer=[0.5, 0.5], cer=[0.1, 0.2])
    args = [
        "search",
        "--metrics",
        str(tmp_path / "search"),
        "--out",
        str(tmp_path / "search.csv"),
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    assert main(args) == 2  # trial 1 has no metrics: refused, naming the file and the command that writes it
    assert not (tmp_path / "search.csv").exists()
    write_trial(tmp_path / "search", 1, dev_cer=[0.2, 0.2], cer=[0.9, 0.9])
    assert main(args) == 0
    assert pd.read_csv(tmp_path / "search.csv")["selected"].tolist() == [False, True]
    del params["search"]
    write_params(tmp_path, params)
    assert main(args) == 2


@pytest.mark.slow
def test_snakemake_plans_each_trial_like_the_grid_with_its_settings(project: Path) -> None:
    """results/search.csv: trials × folds train + evaluate jobs (commands as the grid's, plus the trial's --set),
    whose code deps are what asrflow.search imports; the default target plans none of them."""
    params = read_params(project)
    params["search"].update(trials=3, space=SPACE)
    write_params(project, params)
    jobs = snakemake_jobs(project, targets=("results/search.csv",))
    by_rule = {rule: [j for j in jobs if j["rule"] == rule] for rule in ("search_train", "search_evaluate", "search")}
    folds = params["folds"]["ids"]
    assert len(by_rule["search_train"]) == len(by_rule["search_evaluate"]) == 3 * len(folds)
    for job in by_rule["search_train"]:
        trial = int(job["wildcards"]["trial"])
        assert job["wildcards"]["method"] == "adapter"
        assert set_arguments(draw_trial(SPACE, params["search"]["seed"], trial)) in job["shellcmd"]
        assert f"--out data/search/trial{trial}/checkpoints/adapter/fold{job['wildcards']['fold']}" in job["shellcmd"]
    for job in by_rule["search_evaluate"]:
        assert job["shellcmd"].lstrip().startswith("asrflow evaluate ")
    search = by_rule["search"][0]
    assert {p for p in search["input"] if p.startswith("src/")} == set(stages.code_files("search"))
    assert search["params"][0] == config.select(params, config.stage_keys("search"))
    assert not [j for j in snakemake_jobs(project) if j["rule"].startswith("search")]


def test_params_yaml_declares_a_search_of_a_configured_method() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert params["search"]["method"] in params["train"]
    config.validate(params)
