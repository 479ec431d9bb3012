"""The `search` stage: a seeded random search over one method's training settings, chosen by mean dev CER.

params.yaml `search` declares it: `method`, `trials`, `seed` and `space`, a distribution per params key the method's
training reads (`train.adapter.lr: {log_uniform: [1.0e-4, 1.0e-2]}`, `{uniform: [low, high]}`, `{choice: [...]}`).
Trial n's settings depend on (seed, n, space) only, so adding trials keeps the ones already run. Snakemake trains and
evaluates every trial × fold with `asrflow train --set KEY=VALUE ...` (set_arguments) into
`results/search/trial<n>/metrics/<method>/fold<k>`; this stage gathers them into one row per trial and selects the
trial with the lowest mean dev CER. The test speakers' CER is reported beside it, never used to choose: a setting picked
on test speakers would make their CER an optimistic estimate.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asrflow.config import ParamsError, load_stage
from asrflow.io import write_text
from asrflow.results import DECIMALS, folds_table

log = logging.getLogger(__name__)

SIGNIFICANT_DIGITS = 3  # drawn numbers are rounded: readable commands and tables, no false precision


def _draw(rng: np.random.Generator, distribution: dict[str, list]) -> Any:
    ((kind, values),) = distribution.items()
    if kind == "choice":
        return values[int(rng.integers(len(values)))]
    low, high = values
    if kind == "log_uniform":  # learning rates: every decade as likely as the next
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def draw_trial(space: dict[str, dict[str, list]], seed: int, trial: int) -> dict[str, Any]:
    """Trial `trial`'s settings: one value per key of `space`, from a generator seeded by (seed, trial) alone."""
    rng = np.random.default_rng([seed, trial])
    return {key: _draw(rng, space[key]) for key in sorted(space)}


def set_arguments(settings: dict[str, Any]) -> str:
    """The `--set KEY=VALUE` arguments of `asrflow train` that run a trial (JSON values, shell-quoted)."""
    return " ".join(f"--set {shlex.quote(f'{key}={json.dumps(value)}')}" for key, value in settings.items())


def trial_row(metrics_dir: Path, search: dict[str, Any], trial: int, k: int) -> dict[str, Any]:
    """One trial: its settings, then mean and sample std over the k folds of dev CER (the choice) and test CER/WER."""
    folds = folds_table(metrics_dir / f"trial{trial}" / "metrics", [search["method"]], k)
    row: dict[str, Any] = {"trial": trial, **draw_trial(search["space"], search["seed"], trial), "n_folds": k}
    for metric in ("dev_cer", "cer", "wer"):
        row[f"{metric}_mean"] = folds[metric].mean()
        row[f"{metric}_std"] = folds[metric].std(ddof=1)
    return row


def search_table(metrics_dir: str | Path, search: dict[str, Any], k: int) -> pd.DataFrame:
    """One row per trial; `selected` marks the lowest mean dev CER (the earliest trial among equals)."""
    table = pd.DataFrame([trial_row(Path(metrics_dir), search, trial, k) for trial in range(search["trials"])])
    table["selected"] = table.index == table["dev_cer_mean"].idxmin()
    # Error rates rounded as in the report's tables; the drawn settings are kept as drawn (a learning rate of 1e-5
    # must not become 0).
    rates = [c for c in table if c.endswith(("_mean", "_std"))]
    return table.round({c: DECIMALS for c in rates})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow search`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--metrics", required=True, type=Path, help="folder of trial<n>/metrics/<method>/fold<k>")
    parser.add_argument("--out", required=True, type=Path, help="the search table (CSV)")


def run_cli(args: argparse.Namespace) -> None:
    params = load_stage(args.params, "search")
    if not params["search"]:
        raise ParamsError(
            f"{args.params}: no `search` section; declare method, trials, seed and space (docs/engines.md: "
            "Hyper-parameter search)"
        )
    table = search_table(args.metrics, params["search"], params["folds"]["k"])
    write_text(args.out, table.to_csv(index=False))
    best = table[table["selected"]].iloc[0]
    log.info(
        "search: %d trials of %s; selected trial %d (mean dev CER %.4f, test CER %.4f) → %s",
        len(table),
        params["search"]["method"],
        best["trial"],
        best["dev_cer_mean"],
        best["cer_mean"],
        args.out,
    )
