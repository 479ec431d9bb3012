"""The learning curve: the subsets (a fraction of each training speaker's minutes), the power-law fit and its doubts,
the jobs both engines plan (one per fold × fraction; a new fraction adds only its own), and one real tiny curve run
by Snakemake and by DVC, then grown by a fraction."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BIN, dvc_stages, read_params, run, snakemake_jobs, write_params
from test_engines import TARGET_RULES, key
from tiny import CURVE_FRACTIONS

from asrflow import config
from asrflow.learning_curve import doubts, fit_power_law, learning_curve, predict
from asrflow.manifest import Utterance, read_manifest, write_manifest
from asrflow.subset import subset, write_subset

CURVE_STAGES = ("subset", "curve_lm", "curve_train", "curve_evaluate")

# --- the subsets ----------------------------------------------------------------------------------------------------


def utterances(speaker: str, n: int, rng: np.random.Generator) -> list[Utterance]:
    return [
        Utterance(f"{speaker}_{i:03d}", f"wav/{speaker}/{i}.wav", speaker, f"text {i}", float(rng.uniform(1.0, 6.0)))
        for i in range(n)
    ]


def seconds(utts: list[Utterance]) -> dict[str, float]:
    return {s: sum(u.duration for u in utts if u.speaker == s) for s in sorted({u.speaker for u in utts})}


@pytest.fixture
def folds_dir(tmp_path: Path) -> Path:
    """A split's folds folder with one fold: 3 training speakers of 12–30 utterances of 1–6 s, dev and test."""
    rng = np.random.default_rng(0)
    fold = tmp_path / "folds" / "fold1"
    train = [u for s, n in (("a", 30), ("b", 12), ("c", 20)) for u in utterances(s, n, rng)]
    write_manifest(fold / "train.csv", train)
    write_manifest(fold / "dev.csv", utterances("d", 5, rng))
    write_manifest(fold / "test.csv", utterances("e", 5, rng))
    (fold / "vocab.json").write_text('{"<pad>": 0, "a": 1}\n', encoding="utf-8")
    summary = {"speakers": {"train": ["a", "b", "c"], "dev": ["d"], "test": ["e"]}}
    summary |= {"utterances": {"train": 62, "dev": 5, "test": 5}, "seconds": {"train": 0.0, "dev": 0.0, "test": 0.0}}
    (tmp_path / "folds" / "folds.json").write_text(json.dumps({"fold0": {}, "fold1": summary}), encoding="utf-8")
    return tmp_path / "folds"


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.8])
def test_a_subset_keeps_every_speaker_about_the_fraction_of_their_minutes_in_whole_utterances(
    folds_dir: Path, fraction: float
) -> None:
    train = read_manifest(folds_dir / "fold1" / "train.csv")
    kept = subset(train, fraction, seed=0, fold=1)
    assert set(kept) <= set(train) and kept == [u for u in train if u in kept], "whole rows, in manifest order"
    full, cut = seconds(train), seconds(kept)
    assert set(cut) == set(full), "every training speaker kept"
    longest = max(u.duration for u in train)
    for speaker, total in full.items():
        assert abs(cut[speaker] - fraction * total) <= longest / 2 + 1e-9, speaker  # the nearest whole utterance
    assert sum(cut.values()) / sum(full.values()) == pytest.approx(fraction, abs=0.06)


def test_subsets_are_seeded_nested_and_whole_at_one(folds_dir: Path) -> None:
    train = read_manifest(folds_dir / "fold1" / "train.csv")
    ids = {f: {u.utt_id for u in subset(train, f, seed=0, fold=1)} for f in (0.25, 0.5, 1.0)}
    assert ids[0.25] == {u.utt_id for u in subset(train, 0.25, seed=0, fold=1)}, "deterministic"
    assert ids[0.25] < ids[0.5] < ids[1.0] == {u.utt_id for u in train}, "nested; 1.0 is the whole training side"
    assert ids[0.25] != {u.utt_id for u in subset(train, 0.25, seed=1, fold=1)}, "the seed draws the utterances"
    assert ids[0.25] != {u.utt_id for u in subset(train, 0.25, seed=0, fold=2)}, "each fold its own draw"


def test_the_subset_folder_leaves_dev_test_and_vocab_untouched(folds_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "subset"
    entry = write_subset(folds_dir, 1, 0.5, 0, out)
    for name in ("dev.csv", "test.csv", "vocab.json"):
        assert (out / "fold1" / name).read_bytes() == (folds_dir / "fold1" / name).read_bytes(), name
    kept = read_manifest(out / "fold1" / "train.csv")
    assert kept == subset(read_manifest(folds_dir / "fold1" / "train.csv"), 0.5, 0, 1)
    written = json.loads((out / "folds.json").read_text(encoding="utf-8"))
    assert list(written) == ["fold1"] and written["fold1"] == entry
    assert entry["speakers"]["test"] == ["e"] and entry["utterances"]["train"] == len(kept)
    assert entry["seconds"]["train"] == pytest.approx(sum(u.duration for u in kept), abs=0.01)
    assert entry["learning_curve"]["fraction"] == 0.5


# --- the fit --------------------------------------------------------------------------------------------------------

A, B, C = 1.2, 0.6, 0.08  # CER = 1.2 · minutes^-0.6 + 0.08: 0.57 at 2 minutes, 0.26 at 20


def points(fractions: list[float], cer=lambda m: A * m**-B + C, folds=(0, 1, 2)) -> pd.DataFrame:
    """One point per fold × fraction; fold f has 18 + 3f minutes in all."""
    rows = [
        {"method": "adapter", "fraction": x, "fold": f, "minutes": x * (18 + 3 * f)} for x in fractions for f in folds
    ]
    table = pd.DataFrame(rows)
    table["cer"] = [cer(m) for m in table["minutes"]]
    return table


def assess(table: pd.DataFrame) -> list[str]:
    fit = fit_power_law(table["minutes"], table["cer"])
    full = float(table.loc[table["fraction"] == table["fraction"].max(), "minutes"].mean())
    predictions = predict(table, fit, full)
    assert all(p.low <= p.cer <= p.high for p in predictions), "the interval holds the fit's own prediction"
    return doubts(table, fit, predictions, full)


def test_the_fit_recovers_a_known_power_law_and_raises_no_doubt() -> None:
    table = points([0.1, 0.25, 0.5, 1.0])
    fit = fit_power_law(table["minutes"], table["cer"])
    assert (fit.a, fit.b, fit.c) == pytest.approx((A, B, C), rel=0.01)
    full = 21.0
    twice, four = predict(table, fit, full)
    assert twice.cer == pytest.approx(A * (2 * full) ** -B + C, rel=0.01)
    assert four.low == pytest.approx(four.cer, abs=1e-3) == pytest.approx(four.high, abs=1e-3), "folds agree"
    assert assess(table) == []


def test_the_fit_keeps_c_non_negative_and_b_positive() -> None:
    table = points([0.1, 0.25, 0.5, 1.0], cer=lambda m: 0.9 * m**-0.3 - 0.1)  # a floor below zero would fit
    fit = fit_power_law(table["minutes"], table["cer"])
    assert fit.c >= 0 and fit.b > 0


@pytest.mark.parametrize(
    "case, table, doubt",
    [
        ("two fractions", points([0.5, 1.0]), "only 2 fraction"),
        ("rising", points([0.25, 0.5, 1.0], cer=lambda m: 0.2 + 0.01 * m), "does not fall"),
        ("flat", points([0.25, 0.5, 1.0], cer=lambda m: 0.30 + 0.002 * (m % 5)), "floor"),
        (
            "folds disagree",
            # fold 0 keeps improving, fold 2 has stopped: the leave-one-fold-out fits disagree at 4×
            pd.concat(
                [
                    points([0.1, 0.25, 0.5, 1.0], folds=(0,), cer=lambda m: 2.0 * m**-1.0 + 0.02),
                    points([0.1, 0.25, 0.5, 1.0], folds=(1,), cer=lambda m: 1.2 * m**-0.6 + 0.08),
                    points([0.1, 0.25, 0.5, 1.0], folds=(2,), cer=lambda m: 0.5 * m**-2.0 + 0.35),
                ]
            ),
            "wider than the gain",
        ),
    ],
)
def test_untrustworthy_fits_say_why(case: str, table: pd.DataFrame, doubt: str) -> None:
    found = assess(table)
    assert any(doubt in reason for reason in found), (case, found)


def test_the_stage_writes_table_markdown_and_plot(tmp_path: Path) -> None:
    table = points([0.25, 0.5, 1.0])
    for row in table.itertuples():
        where = f"{row.fraction}/fold{row.fold}"
        metrics = {"method": "adapter", "fold": row.fold, "cer": row.cer, "wer": 2 * row.cer, "n_utts": 7}
        metrics["test_speakers"] = [f"spk{row.fold}"]
        (tmp_path / "metrics" / where).mkdir(parents=True)
        (tmp_path / "metrics" / where / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        (tmp_path / "subsets" / where).mkdir(parents=True)
        folds_json = {f"fold{row.fold}": {"seconds": {"train": 60 * row.minutes}}}
        (tmp_path / "subsets" / where / "folds.json").write_text(json.dumps(folds_json), encoding="utf-8")
    out = [tmp_path / "out" / name for name in ("curve.csv", "curve.md", "curve.png")]
    outputs = dict(zip(("table", "md", "plot"), out, strict=True))
    curve_cfg = {"method": "adapter", "fractions": [1.0, 0.25, 0.5], "seed": 0}
    assert learning_curve(tmp_path / "metrics", tmp_path / "subsets", curve_cfg, [0, 1, 2], **outputs) == []
    written = pd.read_csv(out[0])
    assert len(written) == 9 and set(written["fraction"]) == {0.25, 0.5, 1.0}
    assert written["minutes"].tolist() == pytest.approx(table.sort_values(["fraction", "fold"])["minutes"].tolist())
    md = out[1].read_text(encoding="utf-8")
    assert "# Learning curve: adapter" in md and "(2×)" in md and "(4×)" in md and "not trustworthy" not in md
    assert out[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shutil.rmtree(tmp_path / "metrics" / "0.5" / "fold2")
    with pytest.raises(ValueError, match=r"0\.5/fold2/metrics.json: not found"):
        learning_curve(tmp_path / "metrics", tmp_path / "subsets", curve_cfg, [0, 1, 2], **outputs)


def test_params_declare_a_curve_of_a_configured_method() -> None:
    params = config.load_all(Path(__file__).resolve().parents[1] / "params.yaml")
    assert params["learning_curve"]["method"] in params["train"] and len(params["learning_curve"]["fractions"]) >= 3
    broken = copy.deepcopy(params)
    del broken["train"]["scratch"], broken["learning_curve"]
    broken["learning_curve"] = {"method": "scratch", "fractions": [0.5, 1.0], "seed": 0}
    with pytest.raises(config.ParamsError, match=r"learning_curve\.method: train\.scratch is missing"):
        config.validate(broken)


# --- both engines plan one job per fold × fraction ----------------------------------------------------------------


def curve_jobs(folds: list[int], fractions: list[float]) -> set:
    return {key(s, {"fold": f, "fraction": x}) for s in CURVE_STAGES for f in folds for x in fractions} | {
        key("learning_curve", {})
    }


def planned(project: Path) -> tuple[set, set]:
    """(Snakemake's jobs, DVC's stages) of the project, as keys; the curve's and every other."""
    smk = {key(j["rule"], j["wildcards"]) for j in snakemake_jobs(project) if j["rule"] not in TARGET_RULES}
    return smk, {key(s["stage"], s["matrix"]) for s in dvc_stages(project)}


@pytest.mark.slow
def test_both_engines_plan_one_job_per_fold_and_fraction_and_a_new_fraction_adds_only_its_own(project: Path) -> None:
    params = read_params(project)
    folds, fractions = params["folds"]["ids"], params["learning_curve"]["fractions"]
    smk, dvc = planned(project)
    assert smk == dvc
    assert {k for k in smk if k[0] in (*CURVE_STAGES, "learning_curve")} == curve_jobs(folds, fractions)

    params["learning_curve"]["fractions"] = [*fractions, 0.75]
    write_params(project, params)
    grown_smk, grown_dvc = planned(project)
    assert grown_smk == grown_dvc
    assert grown_smk - smk == curve_jobs(folds, [0.75]) - {key("learning_curve", {})}

    del params["learning_curve"]  # Snakemake without the section: the grid as before, no curve
    write_params(project, params)
    bare = {key(j["rule"], j["wildcards"]) for j in snakemake_jobs(project) if j["rule"] not in TARGET_RULES}
    assert bare == smk - curve_jobs(folds, fractions)


# --- one real curve per engine, then one more fraction ------------------------------------------------------------

FRACTIONS = list(CURVE_FRACTIONS)  # tiny_params' two
TARGET = "results/learning_curve.md"


def ran(output: str) -> set:
    """The jobs an engine's log says it ran: Snakemake's `rule X:` (and its wildcards), DVC's `Running stage 'X@…'`."""
    jobs: list[tuple[str, dict]] = []
    for line in output.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line.strip()):
            jobs.append((match[1], {}))
        elif jobs and (match := re.match(r"\s+wildcards: (.+)$", line)):
            jobs[-1][1].update(item.split("=", 1) for item in match[1].split(", "))
        elif match := re.match(r"Running stage '(\w+)(?:@(\d+)-([\d.]+))?'", line):
            jobs.append((match[1], {"fold": match[2], "fraction": match[3]} if match[2] else {}))
    return {key(rule, wildcards) for rule, wildcards in jobs if rule not in TARGET_RULES}


@pytest.mark.slow
def test_a_real_curve_then_a_new_fraction_runs_only_its_jobs_in_both_engines(tiny_project: Path) -> None:
    """Snakemake makes the curve from nothing; DVC takes its run over (`dvc commit`: up to date); then one more fraction
    runs exactly its own jobs, and the gathering, in each engine, with the same numbers."""
    params = read_params(tiny_project)
    assert params["learning_curve"]["fractions"] == FRACTIONS
    params["decode"]["beam"] = False  # greedy is the curve's rate; the n-gram LM has its own tests
    params["resources"]["threads"] = len(os.sched_getaffinity(0))  # every core per job, in both engines alike
    write_params(tiny_project, params)
    smk = [str(BIN / "snakemake"), "--cores", str(params["resources"]["threads"]), TARGET]

    run(smk, tiny_project, timeout=1800)
    table = pd.read_csv(tiny_project / "results/learning_curve.csv")
    assert sorted(zip(table["fraction"], table["fold"], strict=True)) == [(x, f) for x in FRACTIONS for f in (0, 1)]
    assert table["cer"].between(0, 2).all() and (table["minutes"] > 0).all()
    assert table.groupby("fold")["minutes"].apply(lambda m: m.is_monotonic_increasing).all()
    md = (tiny_project / TARGET).read_text(encoding="utf-8")
    assert "not trustworthy" in md and "only 2 fraction" in md
    assert (tiny_project / "results/learning_curve.png").stat().st_size > 0
    assert not (tiny_project / "results/summary.csv").exists(), "the curve needs none of the grid's training"

    dvc_project = tiny_project.parent / "dvc"
    shutil.copytree(tiny_project, dvc_project, symlinks=True)
    run([str(BIN / "dvc"), "commit", "-f", "-q", "--with-deps", "learning_curve"], dvc_project)
    status = run([str(BIN / "dvc"), "status", "--with-deps", "learning_curve"], dvc_project).stdout
    assert "up to date" in status, status

    for project, command in ((tiny_project, smk), (dvc_project, [str(BIN / "dvc"), "repro", "learning_curve"])):
        params["learning_curve"]["fractions"] = [0.25, *FRACTIONS]
        write_params(project, params)
        proc = run(command, project, timeout=1800)
        assert ran(proc.stdout + proc.stderr) == curve_jobs([0, 1], [0.25]), command[0]
    grown = [pd.read_csv(p / "results/learning_curve.csv") for p in (tiny_project, dvc_project)]
    pd.testing.assert_frame_equal(*grown)  # DVC's new fraction = Snakemake's: same seed, same threads
    assert len(grown[0]) == 6 and "only 2 fraction" not in (tiny_project / TARGET).read_text(encoding="utf-8")
