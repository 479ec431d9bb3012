"""The `curves` stage: every fold's per-epoch training curve (results/curves/<method>-fold<k>.csv, written by train)
in one figure, results/training_curves.png: dev CER and training loss by epoch, one colour per method, one line per
fold. It shows at a glance whether training had converged when it stopped (early stopping on dev CER, patience) and
whether a method's folds behave alike. `dvc plots show` draws the same CSVs one by one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asrflow.config import load_stage
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path

log = logging.getLogger(__name__)

# The curve columns drawn, each in its own panel, with its axis label; train (asrflow.loop) writes them every epoch.
PANELS = {"dev_cer": "dev CER (%)", "train_loss": "training loss (CTC)"}
PERCENT = {"dev_cer"}


def curve_path(curves_dir: Path, method: str, fold: int) -> Path:
    """Where train writes a fold's curve (the stage table's train out results/curves/{method}-fold{fold}.csv)."""
    return curves_dir / f"{method}-fold{fold}.csv"


def load_curves(curves_dir: Path, methods: list[str], folds: list[int]) -> pd.DataFrame:
    """Every method × fold's curve in one table (columns method, fold, epoch and the curve's own)."""
    tables = []
    for method in methods:
        for fold in folds:
            path = curve_path(curves_dir, method, fold)
            if not path.is_file():
                raise AsrflowError(f"{path}: no training curve for method {method!r}, fold {fold}; train it first")
            curve = pd.read_csv(path)
            missing = {"epoch", *PANELS} - set(curve.columns)
            if missing or curve.empty:
                raise AsrflowError(
                    f"{path}: a training curve needs rows with columns epoch, {', '.join(PANELS)}"
                    f" (missing: {', '.join(sorted(missing)) or 'every row'}); train again to rewrite it"
                )
            tables.append(curve.assign(method=method, fold=fold))
    return pd.concat(tables, ignore_index=True)


def curves_figure(curves: pd.DataFrame, methods: list[str]) -> Figure:
    """One panel per PANELS column against epoch; a colour per method, a line with markers per fold (markers: a
    run of one epoch is a point, not an invisible line)."""
    fig = Figure(figsize=(6.0 * len(PANELS), 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    axes = fig.subplots(1, len(PANELS))
    colours = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    for ax, (column, label) in zip(axes, PANELS.items()):
        scale = 100 if column in PERCENT else 1
        for (method, fold), curve in curves.groupby(["method", "fold"], sort=False):
            ax.plot(
                curve["epoch"],
                scale * curve[column],
                marker="o",
                markersize=3,
                color=colours[method],
                alpha=0.8,
                label=method if fold == curves.loc[curves["method"] == method, "fold"].iloc[0] else None,
            )
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    fig.suptitle("Training curves: one line per fold")
    handles, labels = axes[0].get_legend_handles_labels()  # one entry per method (every panel has the same)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(methods), 6), fontsize="small")
    return fig


def curves(curves_dir: str | Path, out: str | Path, methods: list[str], folds: list[int]) -> pd.DataFrame:
    """Write the figure of every method × fold's curve to `out` (PNG); return the curves read."""
    table = load_curves(Path(curves_dir), methods, folds)
    with atomic_path(out) as tmp:
        curves_figure(table, methods).savefig(tmp, format="png", dpi=150)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow curves`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--curves", required=True, type=Path, help="folder of train's <method>-fold<k>.csv curves")
    parser.add_argument("--out", required=True, type=Path, help="the figure (PNG)")


def run_cli(args: argparse.Namespace) -> None:
    params = load_stage(args.params, "curves")
    table = curves(args.curves, args.out, params["methods"], params["folds"]["ids"])
    log.info(
        "training curves: %d method × fold curves, %d epochs at most → %s",
        table.groupby(["method", "fold"]).ngroups,
        table["epoch"].max(),
        args.out,
    )
