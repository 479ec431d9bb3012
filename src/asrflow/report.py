"""The `report` stage: aggregate every method × fold's metrics.json into the results tables and chart.

Outputs (in `out_dir`):
- `folds.csv`    tidy, one row per method × fold
- `summary.csv`  one row per method (in params order): mean and sample std (ddof=1) across folds, per-fold CER; and
                 the error rates pooled over every test speaker with 95 % bootstrap intervals over speakers
                 (`cer_pooled`, `cer_ci_low`, `cer_ci_high`, the same for wer, the LM rates and, with declared
                 graphemes, the GER; asrflow.bootstrap)
- `summary.md`   the same numbers as readable tables, with what they mean, and the pairwise comparison of methods
- `comparisons.csv` every pair of methods compared on the same resampled speakers: the CER difference with its
                 95 % interval and the fraction of resamples each method wins (also with the LM, and the GER)
- `summary.png`  CER per method: mean bar, std error bar, one point per fold
- `summary.json` per method: the error rates' means and stds, and the mean dev CER (DVC `metrics`: `dvc exp show`)

`methods` in params.yaml is authoritative: every declared method must have all k folds, and any other method
directory under the metrics folder is ignored (it may be left over from an earlier configuration). The metrics are
read and checked by asrflow.results; the bootstrap reads every test utterance's transcripts (hypotheses.csv).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asrflow import bootstrap
from asrflow.config import defaults, load_stage
from asrflow.io import atomic_path, write_json, write_text
from asrflow.results import DECIMALS, LM_METRICS, MetricsError, folds_table, load_hypotheses, mean_dev_cer
from asrflow.transcripts import grapheme_inventory

log = logging.getLogger(__name__)

# Error rate → the hypotheses.csv column it scores and its unit, as evaluate computes it. A rate counts where its
# per-utterance column (`cer`, ..., `ger`: evaluate writes the GER only with declared text.graphemes) is filled in.
BOOTSTRAPPED = {
    "cer": ("hypothesis", "char"),
    "wer": ("hypothesis", "word"),
    "ger": ("hypothesis", "grapheme"),
    "cer_lm": ("hypothesis_lm", "char"),
    "wer_lm": ("hypothesis_lm", "word"),
    "ger_lm": ("hypothesis_lm", "grapheme"),
}
# The rates whose pairwise differences comparisons.csv holds, and its columns.
COMPARED = ["cer", "ger", "cer_lm", "ger_lm"]
COMPARISON_COLUMNS = [
    "rate",
    "method_a",
    "method_b",
    "rate_a",
    "rate_b",
    "difference",
    "ci_low",
    "ci_high",
    "a_wins",
    "b_wins",
    "resamples",
]


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


def tested_speakers(hypotheses: pd.DataFrame, methods: list[str]) -> list[str]:
    """The test speakers, checked to be the same for every method (the split is shared): a paired comparison needs
    each method's errors on the same speakers."""
    speakers = {m: sorted(set(hypotheses.loc[hypotheses["method"] == m, "speaker"])) for m in methods}
    first = speakers[methods[0]]
    for method, own in speakers.items():
        if own != first:
            raise MetricsError(
                f"methods {methods[0]} and {method} were tested on different speakers ({', '.join(first)} / "
                f"{', '.join(own)}): their evaluations come from different splits; re-run evaluate for both"
            )
    return first


def scored(rows: pd.DataFrame, rate: str) -> bool:
    """Whether every row holds the rate: its hypothesis (LM decoding may be missing from some folds) and, for the GER,
    its per-utterance score (evaluate writes it only with declared text.graphemes)."""
    column, unit = BOOTSTRAPPED[rate]
    needed = [column, rate] if unit == "grapheme" else [column]
    return all(c in rows and rows[c].notna().all() for c in needed)


def speaker_errors(
    hypotheses: pd.DataFrame, methods: list[str], graphemes: Sequence[str] = ()
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """rate → method → (edits, reference units) per speaker, in one speaker order; a method whose folds do not all
    hold a rate has none for it. `graphemes`: the units of the GER (text.graphemes, normalised)."""
    found: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for rate, (column, unit) in BOOTSTRAPPED.items():
        for method in methods:
            rows = hypotheses[hypotheses["method"] == method]
            if scored(rows, rate):
                counts = bootstrap.speaker_counts(rows, column, unit, graphemes)
                found.setdefault(rate, {})[method] = (counts["errors"].to_numpy(), counts["units"].to_numpy())
    return found


def compare(
    rate: str, a: str, b: str, errors: dict[str, tuple[np.ndarray, np.ndarray]], indices: np.ndarray
) -> dict[str, Any]:
    """One row of comparisons.csv: method a's pooled rate minus method b's, on the same resampled speakers."""
    found = bootstrap.paired(*errors[a], *errors[b], indices)
    return {
        "rate": rate,
        "method_a": a,
        "method_b": b,
        "rate_a": errors[a][0].sum() / errors[a][1].sum(),
        "rate_b": errors[b][0].sum() / errors[b][1].sum(),
        "difference": found.difference,
        "ci_low": found.low,
        "ci_high": found.high,
        "a_wins": found.a_wins,
        "b_wins": found.b_wins,
        "resamples": len(indices),
    }


def uncertainty(
    hypotheses: pd.DataFrame, methods: list[str], resamples: int, seed: int, graphemes: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per method: each rate pooled over the test speakers with its bootstrap interval; per pair of methods and
    compared rate: the paired difference). Every method and rate is resampled with the same speaker draws."""
    indices = bootstrap.resample_indices(len(tested_speakers(hypotheses, methods)), resamples, seed)
    errors = speaker_errors(hypotheses, methods, graphemes)
    rows = {method: {"method": method} for method in methods}
    for rate, by_method in errors.items():
        for method, (edits, units) in by_method.items():
            found = bootstrap.interval(edits, units, indices)
            rows[method] |= {
                f"{rate}_pooled": found.estimate,
                f"{rate}_ci_low": found.low,
                f"{rate}_ci_high": found.high,
            }
    comparisons = [
        compare(rate, a, b, errors[rate], indices)
        for rate in COMPARED
        if rate in errors
        for a, b in itertools.combinations(methods, 2)
        if a in errors[rate] and b in errors[rate]
    ]
    return pd.DataFrame(list(rows.values())), pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS)


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


def _pct_interval(estimate: float, low: float, high: float, sign: str = "") -> str:
    if math.isnan(estimate):
        return "–"
    return f"{100 * estimate:{sign}.1f} [{100 * low:{sign}.1f}, {100 * high:{sign}.1f}]"


def _label(rate: str) -> str:
    return f"{rate.upper().replace('_', ' + ')} %"


def uncertainty_markdown(summary: pd.DataFrame, comparisons: pd.DataFrame, n_speakers: int, bootstrap_cfg: dict) -> str:
    """The pooled rates with their intervals, and the pairwise comparisons (docs/analysis.md)."""
    rates = [rate for rate in BOOTSTRAPPED if f"{rate}_pooled" in summary]
    rows = [
        [s["method"], *(_pct_interval(s[f"{r}_pooled"], s[f"{r}_ci_low"], s[f"{r}_ci_high"]) for r in rates)]
        for _, s in summary.iterrows()
    ]
    pairs = [
        [
            _label(c["rate"]),
            f"{c['method_a']} − {c['method_b']}",
            _pct_interval(c["difference"], c["ci_low"], c["ci_high"], sign="+"),
            f"{100 * c['a_wins']:.1f} % / {100 * c['b_wins']:.1f} %",
        ]
        for _, c in comparisons.iterrows()
    ]
    sections = [
        "## Uncertainty over speakers",
        f"Each error rate pooled over all {n_speakers} test speakers (the edits of every test utterance divided by "
        "their reference length; the table above averages the folds' rates instead, so the two can differ slightly), "
        f"with a 95 % interval from {bootstrap_cfg['resamples']} bootstrap resamples of the test speakers "
        f"(seed {bootstrap_cfg['seed']}): how much the rate could move with other speakers of the language. "
        "Method, and how it relates to the table above: docs/analysis.md.",
        _md_table(["method", *(f"{_label(r)} [95 % interval]" for r in rates)], rows),
    ]
    if pairs:
        sections += [
            "## Pairwise comparison",
            "Method A's rate minus method B's in percentage points (negative: A makes fewer errors), with its 95 % "
            "interval, both methods scored on the same resampled speakers; and in what share of the resamples each "
            "method has the lower rate. An interval that includes 0 means these speakers cannot tell the two apart.",
            _md_table(["rate", "A − B", "difference [95 % interval]", "A lower / B lower"], pairs),
        ]
    return "\n\n".join(sections) + "\n"


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


def report(
    metrics_dir: str | Path,
    out_dir: str | Path,
    methods: list[str],
    k: int,
    *,
    bootstrap_cfg: dict[str, int] | None = None,
    graphemes: Sequence[str] = (),
) -> pd.DataFrame:
    """Write folds.csv, summary.csv, summary.md, summary.png, summary.json and comparisons.csv into `out_dir`;
    return the summary. `bootstrap_cfg`: params report.bootstrap (resamples, seed; None: the schema's defaults);
    `graphemes`: the GER's units, as evaluate used them (transcripts.grapheme_inventory)."""
    out_dir = Path(out_dir)
    bootstrap_cfg = bootstrap_cfg or defaults("report.bootstrap")
    folds = folds_table(Path(metrics_dir), methods, k)
    hypotheses = load_hypotheses(Path(metrics_dir), methods, k)
    pooled, comparisons = uncertainty(hypotheses, methods, bootstrap_cfg["resamples"], bootstrap_cfg["seed"], graphemes)
    # The across-fold columns first, unchanged; the pooled rates and their intervals after them.
    summary = summary_table(folds, methods).merge(pooled, on="method", how="left", validate="one_to_one")
    n_speakers = len(tested_speakers(hypotheses, methods))
    write_csv(out_dir / "folds.csv", folds)
    write_csv(out_dir / "summary.csv", summary)
    write_csv(out_dir / "comparisons.csv", comparisons)
    markdown = (
        summary_markdown(summary, folds, k)
        + "\n"
        + uncertainty_markdown(summary, comparisons, n_speakers, bootstrap_cfg)
    )
    write_text(out_dir / "summary.md", markdown)
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
    report(
        args.metrics,
        args.out,
        params["methods"],
        params["folds"]["k"],
        bootstrap_cfg=params["report"]["bootstrap"],
        graphemes=grapheme_inventory(params["text"]),
    )
