"""The cross-validation results: every method × fold's metrics.json (written by `evaluate`) read, checked and gathered
into one table, and the mean dev CER that chooses between methods and settings.

The report, release and search stages all read results this way; their tables round error rates to DECIMALS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from asrflow.errors import AsrflowError
from asrflow.io import read_json

FOLD_COLUMNS = [
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
# Written by `evaluate` only when it decodes with a language model too.
LM_METRICS = ["cer_lm", "wer_lm"]
DECIMALS = 4
# hypotheses.csv's text columns (besides hypothesis, hypothesis_lm, ...): everything else in it is a number.
TEXT_COLUMNS = ["utt_id", "speaker", "reference"]


class MetricsError(AsrflowError):
    """A metrics.json that is missing or does not belong where it lies; the message names the file and the fix."""


def metrics_path(metrics_dir: Path, method: str, fold: int) -> Path:
    return metrics_dir / method / f"fold{fold}" / "metrics.json"


def load_fold(metrics_dir: Path, method: str, fold: int) -> dict[str, Any]:
    """One fold's metrics, checked to have the keys the report reads and to be the method and fold its path says."""
    path = metrics_path(metrics_dir, method, fold)
    if not path.is_file():
        raise MetricsError(
            f"{path}: metrics not found; it is written by `asrflow evaluate --method {method} "
            f"--fold {fold}` (run the evaluate stage for every method and fold first)"
        )
    data = read_json(path)
    missing = [key for key in FOLD_COLUMNS if key not in data]
    if missing:
        raise MetricsError(f"{path}: missing key(s) {missing}; re-run `asrflow evaluate` to rewrite it")
    if data["method"] != method or int(data["fold"]) != fold:
        # A copied or misplaced file would otherwise be averaged under the wrong method or fold.
        raise MetricsError(
            f"{path}: holds method {data['method']!r} fold {data['fold']}, "
            f"but its path says method {method!r} fold {fold}"
        )
    return data


def load_hypotheses(metrics_dir: Path, methods: list[str], k: int) -> pd.DataFrame:
    """Every test utterance's transcripts (evaluate's hypotheses.csv), one row per method × utterance, with `method`
    and `fold` columns; text read verbatim (an empty hypothesis stays "", never NaN)."""
    tables = []
    for method in methods:
        for fold in range(k):
            path = metrics_path(metrics_dir, method, fold).with_name("hypotheses.csv")
            if not path.is_file():
                raise MetricsError(
                    f"{path}: test transcripts not found; they are written by `asrflow evaluate --method {method} "
                    f"--fold {fold}` beside metrics.json (re-run it)"
                )
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            for column in [c for c in table if c not in TEXT_COLUMNS and not c.startswith("hypothesis")]:
                table[column] = pd.to_numeric(table[column])  # the per-utterance error rates
            tables.append(table.assign(method=method, fold=fold))
    return pd.concat(tables, ignore_index=True)


def folds_table(metrics_dir: Path, methods: list[str], k: int) -> pd.DataFrame:
    """One row per method × fold, in `methods` then fold order; LM columns only where some fold has them."""
    records = [load_fold(metrics_dir, method, fold) for method in methods for fold in range(k)]
    lm_columns = [m for m in LM_METRICS if any(m in r for r in records)]
    table = pd.DataFrame([{c: r.get(c, math.nan) for c in FOLD_COLUMNS + lm_columns} for r in records])
    table["test_speakers"] = table["test_speakers"].map(" ".join)
    return table


def mean_dev_cer(folds: pd.DataFrame) -> pd.Series:
    """Per method (in the table's order), the dev CER at the best epoch averaged over folds: what chooses between
    methods and settings, so that the test speakers only ever score."""
    return folds.groupby("method", sort=False)["dev_cer"].mean()
