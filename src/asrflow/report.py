"""The `report` stage: aggregate every method × fold's metrics.json into the results tables and chart.

Outputs (in `out_dir`):
- `folds.csv`    tidy, one row per method × fold
- `summary.csv`  one row per method (in params order): mean and sample std (ddof=1) across folds, per-fold CER
- `summary.md`   the same numbers as a readable table, with what they mean
- `summary.png`  CER per method: mean bar, std error bar, one point per fold
- `summary.json` per method: the error rates' means and stds, and the mean dev CER (DVC `metrics`: `dvc exp show`)

`methods` in params.yaml is authoritative: every declared method must have all k folds, and any other method
directory under the metrics folder is ignored (it may be left over from an earlier configuration). The metrics are
read and checked by asrflow.results.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asrflow.config import load_stage
from asrflow.io import atomic_path, write_json, write_text
from asrflow.results import DECIMALS, LM_METRICS, folds_table, mean_dev_cer

log = logging.getLogger(__name__)


def summary_row(rows: pd.DataFrame, lm_columns: list[str]) -> dict[str, Any]:
    """Aggregate one method's fold rows; LM metrics only when every fold has them (else a mean over fewer folds)."""
    row: dict[str, Any] = {"method": rows["method"].iloc[0], "n_folds": len(rows)}
    for metric in ["cer", "wer"]:
        row[f"{metric}_mean"] = rows[metric].mean()
        row[f"{metric}_std"] = rows[metric].std(ddof=1)
    row.update({f"cer_fold{fold}": cer for fold, cer in zip(rows["fold"], rows["cer"])})
    # Per-fold vocabularies change the output layer's size slightly, so the count can differ between folds.
    row["trainable_params"] = round(rows["trainable_params"].mean())
    row["train_seconds_mean"] = rows["train_seconds"].mean()
    for metric in lm_columns:
        complete = rows[metric].notna().all()
        row[f"{metric}_mean"] = rows[metric].mean() if complete else math.nan
        row[f"{metric}_std"] = rows[metric].std(ddof=1) if complete else math.nan
    return row


def summary_table(folds: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    lm_columns = [m for m in LM_METRICS if m in folds]
    summary = pd.DataFrame([summary_row(folds[folds["method"] == m], lm_columns) for m in methods])
    # LM aggregates are reported only when at least one method has them for every fold.
    lm_summary = [f"{m}_{stat}" for m in lm_columns for stat in ("mean", "std")]
    return summary.drop(columns=[c for c in lm_summary if summary[c].isna().all()])


def summary_metrics(summary: pd.DataFrame, folds: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per method, the cross-fold error rates and the mean dev CER, as `dvc metrics show`/`dvc exp show` read them:
    experiments are compared on dev CER (the test speakers choose nothing), and timings are left out (never equal)."""
    dev_cer = mean_dev_cer(folds)
    metrics = {}
    for _, row in summary.iterrows():
        rates = {
            c: row[c] for c in summary.columns if c.split("_")[0] in ("cer", "wer") and c.endswith(("_mean", "_std"))
        }
        values = {**rates, "dev_cer_mean": dev_cer[row["method"]]}
        metrics[row["method"]] = {k: round(float(v), DECIMALS) for k, v in values.items() if not math.isnan(v)}
    return metrics


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def summary_markdown(summary: pd.DataFrame, folds: pd.DataFrame, k: int) -> str:
    fold_columns = [f"cer_fold{f}" for f in range(k)]
    lm_metrics = [m for m in LM_METRICS if f"{m}_mean" in summary]
    header = [
        "method",
        "CER %",
        "WER %",
        *(f"{m.upper().replace('_', ' + ')} %" for m in lm_metrics),
        "CER % per fold",
        "trainable params",
    ]
    rows = [
        [
            s["method"],
            _pct(s["cer_mean"], s["cer_std"]),
            _pct(s["wer_mean"], s["wer_std"]),
            *(_pct(s[f"{m}_mean"], s[f"{m}_std"]) for m in lm_metrics),
            " / ".join(f"{100 * s[c]:.1f}" for c in fold_columns),
            f"{int(s['trainable_params']):,}",
        ]
        for _, s in summary.iterrows()
    ]
    # The split is shared by every method, so the first method's rows describe each fold's test speakers.
    first = folds[folds["method"] == summary["method"].iloc[0]]
    fold_rows = [
        [str(f), speakers, str(n)] for f, speakers, n in zip(first["fold"], first["test_speakers"], first["n_utts"])
    ]
    return (
        "\n\n".join(
            [
                "# Results",
                f"Speaker-independent {k}-fold cross-validation: each fold tests on speakers never seen in training "
                "(nor used for early stopping), so these numbers estimate the error rate on a new speaker of the "
                "language. "
                "CER and WER are character and word error rates in percent (lower is better); "
                f"mean ± std are taken across the {k} folds, std being the sample standard deviation (ddof=1).",
                _md_table(header, rows),
                "## Folds",
                _md_table(["fold", "test speakers", "test utterances"], fold_rows),
            ]
        )
        + "\n"
    )


def summary_figure(summary: pd.DataFrame, folds: pd.DataFrame) -> Figure:
    """CER per method: a bar at the mean, an error bar of one std, and each fold's CER as a point."""
    fig = Figure(figsize=(max(6.0, 1.4 * len(summary) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    ax = fig.add_subplot()
    x = range(len(summary))
    ax.bar(
        x,
        100 * summary["cer_mean"],
        yerr=100 * summary["cer_std"],
        capsize=6,
        width=0.6,
        color="tab:blue",
        alpha=0.6,
        error_kw={"ecolor": "dimgray"},
        label="mean ± std over folds",
    )
    for i, method in enumerate(summary["method"]):
        cer = 100 * folds.loc[folds["method"] == method, "cer"]
        # Beside the error bar rather than on it, so points and bar stay distinguishable.
        ax.scatter([i + 0.15] * len(cer), cer, color="black", s=18, zorder=3, label="one fold" if i == 0 else None)
    ax.set_xticks(list(x), list(summary["method"]))
    ax.set_xlim(-0.75, len(summary) - 0.25)  # a lone method keeps a normal bar width
    ax.set_xlabel("method")
    ax.set_ylabel("CER on unseen test speakers (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Speaker-independent CER ({summary['n_folds'].iloc[0]}-fold cross-validation)")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")  # outside: never hides a point
    ax.grid(axis="y", alpha=0.3)
    return fig


def write_csv(target: Path, table: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        table.round(DECIMALS).to_csv(tmp, index=False)


def write_png(target: Path, fig: Figure) -> None:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=150)


def report(metrics_dir: str | Path, out_dir: str | Path, methods: list[str], k: int) -> pd.DataFrame:
    """Write folds.csv, summary.csv, summary.md, summary.png and summary.json into `out_dir`; return the summary."""
    out_dir = Path(out_dir)
    folds = folds_table(Path(metrics_dir), methods, k)
    summary = summary_table(folds, methods)
    write_csv(out_dir / "folds.csv", folds)
    write_csv(out_dir / "summary.csv", summary)
    write_text(out_dir / "summary.md", summary_markdown(summary, folds, k))
    write_png(out_dir / "summary.png", summary_figure(summary, folds))
    write_json(out_dir / "summary.json", summary_metrics(summary, folds))
    log.info("report: %d method(s) × %d folds → %s", len(methods), k, out_dir)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow report`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)


def run_cli(args: argparse.Namespace) -> None:
    params = load_stage(args.params, "report")
    report(args.metrics, args.out, params["methods"], params["folds"]["k"])
