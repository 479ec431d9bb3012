"""The report stage: aggregates fabricated per-fold metrics.json files into the results tables and chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from asrflow.cli import main
from asrflow.report import report
from asrflow.results import MetricsError

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# method -> per-fold (cer, wer); chosen so the means and sample stds are easy to check by hand.
CER_WER = {
    "full": [(0.10, 0.40), (0.20, 0.50), (0.30, 0.60)],
    "adapter": [(0.30, 0.70), (0.30, 0.80), (0.60, 0.90)],
}


def write_metrics(metrics_dir: Path, method: str, fold: int, cer: float, wer: float, **extra: Any) -> Path:
    data = {
        "method": method,
        "fold": fold,
        "cer": cer,
        "wer": wer,
        "n_utts": 40 + fold,
        "test_speakers": [f"spk{fold}a", f"spk{fold}b"],
        "dev_speakers": ["spk9"],
        "trainable_params": 1000 + fold,
        "total_params": 5000,
        "train_seconds": 10.0 * (fold + 1),
        "train_audio_seconds": 600.0,
        "best_epoch": 3,
        "dev_cer": 0.25,
        **extra,
    }
    path = metrics_dir / method / f"fold{fold}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    # evaluate's per-utterance transcripts beside it, which the bootstrap over speakers reads: one per test speaker
    hypotheses = pd.DataFrame(
        {
            "utt_id": [f"{s}_1" for s in data["test_speakers"]],
            "speaker": data["test_speakers"],
            "reference": ["ba zaɲo", "liɟe upi"],
            "hypothesis": ["ba zaɲo", "liɟe pi"],
            "cer": [0.0, 0.125],
        }
    )
    hypotheses.to_csv(path.with_name("hypotheses.csv"), index=False)
    return path


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    root = tmp_path / "metrics"
    for method, folds in CER_WER.items():
        for fold, (cer, wer) in enumerate(folds):
            write_metrics(root, method, fold, cer, wer)
    return root


def test_summary_means_and_sample_stds(metrics_dir: Path, tmp_path: Path) -> None:
    report(metrics_dir, tmp_path / "out", ["full", "adapter"], k=3)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("method")

    # full: CER 0.1 0.2 0.3 -> mean 0.2, sample std sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1
    assert summary.loc["full", "cer_mean"] == pytest.approx(0.2)
    assert summary.loc["full", "cer_std"] == pytest.approx(0.1)
    # adapter: CER 0.3 0.3 0.6 -> mean 0.4, sample std sqrt((.01 + .01 + .04) / 2) = sqrt(0.03) = 0.1732
    assert summary.loc["adapter", "cer_mean"] == pytest.approx(0.4)
    assert summary.loc["adapter", "cer_std"] == 0.1732
    assert summary.loc["adapter", "wer_mean"] == pytest.approx(0.8)
    assert summary.loc["adapter", "wer_std"] == pytest.approx(0.1)
    assert summary.loc["adapter", "cer_std"] == round(statistics.stdev([0.3, 0.3, 0.6]), 4)
    assert list(summary.loc["full", ["cer_fold0", "cer_fold1", "cer_fold2"]]) == pytest.approx([0.1, 0.2, 0.3])
    assert summary.loc["full", "n_folds"] == 3
    assert summary.loc["full", "trainable_params"] == 1001  # mean of 1000, 1001, 1002
    assert summary.loc["full", "train_seconds_mean"] == pytest.approx(20.0)


def test_summary_json_holds_error_rates_and_dev_cer_for_dvc_metrics(tmp_path: Path) -> None:
    for fold, (cer, wer) in enumerate(CER_WER["full"]):
        write_metrics(tmp_path / "m", "full", fold, cer, wer, dev_cer=0.1 * (fold + 1))
    report(tmp_path / "m", tmp_path / "out", ["full"], k=3)
    metrics = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert metrics == {
        "full": {"cer_mean": 0.2, "cer_std": 0.1, "wer_mean": 0.5, "wer_std": 0.1, "dev_cer_mean": 0.2}
    }  # no timings: they differ on every run


def test_summary_columns_and_row_order_follow_methods(metrics_dir: Path, tmp_path: Path) -> None:
    write_metrics(metrics_dir, "leftover", 0, 0.9, 0.9)  # not declared in params: ignored
    report(metrics_dir, tmp_path / "out", ["adapter", "full"], k=3)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    folds = pd.read_csv(tmp_path / "out" / "folds.csv")

    assert list(summary["method"]) == ["adapter", "full"]
    assert list(summary.columns) == [
        "method",
        "n_folds",
        "cer_mean",
        "cer_std",
        "wer_mean",
        "wer_std",
        "cer_fold0",
        "cer_fold1",
        "cer_fold2",
        "trainable_params",
        "train_seconds_mean",
        # pooled over the test speakers, with bootstrap intervals (test_analysis.py)
        "cer_pooled",
        "cer_ci_low",
        "cer_ci_high",
        "wer_pooled",
        "wer_ci_low",
        "wer_ci_high",
    ]
    assert list(zip(folds["method"], folds["fold"])) == [
        ("adapter", 0),
        ("adapter", 1),
        ("adapter", 2),
        ("full", 0),
        ("full", 1),
        ("full", 2),
    ]
    assert list(folds.columns) == [
        "method",
        "fold",
        "cer",
        "wer",
        "n_utts",
        "test_speakers",
        "trainable_params",
        "total_params",
        "train_seconds",
        "best_epoch",
        "dev_cer",
    ]
    assert folds.loc[0, "test_speakers"] == "spk0a spk0b"


def test_floats_are_rounded_to_four_decimals(tmp_path: Path) -> None:
    for fold, cer in enumerate([0.123456, 0.2, 0.3]):
        write_metrics(tmp_path / "m", "full", fold, cer, 0.5)
    report(tmp_path / "m", tmp_path / "out", ["full"], k=3)
    assert pd.read_csv(tmp_path / "out" / "folds.csv").loc[0, "cer"] == 0.1235
    assert pd.read_csv(tmp_path / "out" / "summary.csv").loc[0, "cer_fold0"] == 0.1235


def test_missing_metrics_file_names_path_and_stage(metrics_dir: Path, tmp_path: Path) -> None:
    missing = metrics_dir / "full" / "fold1" / "metrics.json"
    missing.unlink()
    with pytest.raises(MetricsError, match="asrflow evaluate") as error:
        report(metrics_dir, tmp_path / "out", ["full"], k=3)
    assert str(missing) in str(error.value)
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_misplaced_metrics_file_is_rejected(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "m", "full", 0, 0.1, 0.2)
    path.write_text(json.dumps({**json.loads(path.read_text()), "fold": 2}), encoding="utf-8")
    with pytest.raises(MetricsError, match="fold 2"):
        report(tmp_path / "m", tmp_path / "out", ["full"], k=1)


def test_lm_columns_only_when_every_fold_has_them(tmp_path: Path) -> None:
    for fold, (cer, wer) in enumerate(CER_WER["full"]):
        write_metrics(tmp_path / "m", "full", fold, cer, wer, cer_lm=cer / 2, wer_lm=wer / 2)
        # adapter has an LM result for fold 0 only: too few folds to aggregate
        extra = {"cer_lm": 0.01, "wer_lm": 0.02} if fold == 0 else {}
        write_metrics(tmp_path / "m", "adapter", fold, *CER_WER["adapter"][fold], **extra)
    summary = report(tmp_path / "m", tmp_path / "out", ["full", "adapter"], k=3).set_index("method")

    assert summary.loc["full", "cer_lm_mean"] == pytest.approx(0.1)
    assert summary.loc["full", "cer_lm_std"] == pytest.approx(0.05)
    assert summary.loc["full", "wer_lm_mean"] == pytest.approx(0.25)
    assert pd.isna(summary.loc["adapter", "cer_lm_mean"])
    assert {"cer_lm", "wer_lm"} <= set(pd.read_csv(tmp_path / "out" / "folds.csv").columns)
    assert "CER + LM %" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_no_lm_columns_without_lm_metrics(metrics_dir: Path, tmp_path: Path) -> None:
    report(metrics_dir, tmp_path / "out", ["full"], k=3)
    for name in ["summary.csv", "folds.csv"]:
        columns = pd.read_csv(tmp_path / "out" / name).columns
        assert not [c for c in columns if "_lm" in c], name
    assert "LM" not in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_summary_markdown_holds_the_table(metrics_dir: Path, tmp_path: Path) -> None:
    report(metrics_dir, tmp_path / "out", ["full", "adapter"], k=3)
    text = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "| method | CER % | WER % | CER % per fold | trainable params |" in text
    assert "| full | 20.0 ± 10.0 | 50.0 ± 10.0 | 10.0 / 20.0 / 30.0 | 1,001 |" in text
    assert "| adapter | 40.0 ± 17.3 |" in text
    assert "ddof=1" in text
    assert "never seen in training" in text
    assert "| 0 | spk0a spk0b | 40 |" in text


def test_summary_png_is_a_png(metrics_dir: Path, tmp_path: Path) -> None:
    report(metrics_dir, tmp_path / "out", ["full", "adapter"], k=3)
    png = tmp_path / "out" / "summary.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "comparisons.csv",
        "folds.csv",
        "summary.csv",
        "summary.json",
        "summary.md",
        "summary.png",
    ]


def test_cli_reads_methods_and_k_from_params(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["methods"] = ["full"]
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params), encoding="utf-8")
    k = params["folds"]["k"]
    for fold in range(k):
        write_metrics(tmp_path / "metrics", "full", fold, 0.1 * (fold + 1), 0.5)
    write_metrics(tmp_path / "metrics", "full", k, 0.9, 0.9)  # beyond folds.k: ignored
    write_metrics(tmp_path / "metrics", "adapter", 0, 0.5, 0.5)  # not in params.methods: ignored

    assert (
        main(
            [
                "report",
                "--params",
                str(params_path),
                "--metrics",
                str(tmp_path / "metrics"),
                "--out",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(summary["method"]) == ["full"]
    assert summary.loc[0, "n_folds"] == k
    assert summary.loc[0, "cer_mean"] == pytest.approx(0.1 * (k + 1) / 2)
    assert f"cer_fold{k}" not in summary


def test_summary_markdown_shows_intervals_and_the_pairwise_comparison(metrics_dir: Path, tmp_path: Path) -> None:
    report(metrics_dir, tmp_path / "out", ["full", "adapter"], k=3, bootstrap_cfg={"resamples": 200, "seed": 0})
    text = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    # 6 speakers, each with one utterance: 0 of 7 characters wrong, or 1 of 8 → pooled 3 / 45
    assert "## Uncertainty over speakers" in text and "| full | 6.7 [" in text and "200 bootstrap resamples" in text
    assert "| CER % | full − adapter | +0.0 [+0.0, +0.0] | 0.0 % / 0.0 % |" in text
    comparisons = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert comparisons[["rate", "method_a", "method_b", "difference"]].values.tolist() == [
        ["cer", "full", "adapter", 0]
    ]
