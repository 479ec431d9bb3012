"""The `learning_curve` stage: is more recording worth it? CER against training minutes, fitted and extrapolated.

It reads every fold × fraction of the curve (`subset` cut the fold's training minutes, `curve_train` and
`curve_evaluate` trained and tested `learning_curve.method` on it, on the fold's unseen test speakers) and fits

    CER(minutes) = a · minutes^(-b) + c        (b > 0: more data helps, less and less; c >= 0: the floor)

to all the points at once (least squares; for each b on a grid the best a, c are linear, then the grid is refined
around the best b). The prediction at 2× and 4× the full training minutes carries an interval from the folds: the
range spanned by its own prediction and those of the fits that leave one fold out. The markdown says plainly when the
fit is not to be trusted (`doubts`): too few fractions, a CER that does not fall, a floor at the observed values, an
exponent at its bound, an interval wider than the gain it predicts.

Outputs: `--table` (one row per fold × fraction: minutes and error rates), `--markdown`, `--plot` (per-fold points,
the fit, the predictions with their intervals).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asrflow.config import load_stage
from asrflow.io import atomic_path, read_json, write_text
from asrflow.results import DECIMALS, LM_METRICS, MetricsError

log = logging.getLogger(__name__)

B_BOUNDS = (0.01, 5.0)  # the exponent's search range: b > 0, and beyond 5 the curve is a step
SCALES = (2, 4)  # predictions at these multiples of the full training minutes
FLOOR_NEAR = 0.8  # a floor c above this share of the lowest observed mean CER is "near the observed values"
COLUMNS = ["method", "fraction", "fold", "minutes", "cer", "wer", *LM_METRICS, "n_utts", "test_speakers"]


@dataclass(frozen=True)
class PowerLaw:
    """CER(minutes) = a · minutes^(-b) + c, and the root mean square error of the fit."""

    a: float
    b: float
    c: float
    rmse: float

    def __call__(self, minutes: Any) -> Any:
        return self.a * np.power(minutes, -self.b) + self.c


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, c, sse) of y ≈ a·x + c with c >= 0: unconstrained least squares, else c = 0."""
    design = np.column_stack([x, np.ones_like(x)])
    (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    if c < 0:
        a, c = float(x @ y / (x @ x)), 0.0
    return float(a), float(c), float(np.sum((a * x + c - y) ** 2))


def fit_power_law(minutes: Any, cer: Any) -> PowerLaw:
    """Least-squares CER = a·minutes^(-b) + c with b in B_BOUNDS and c >= 0 (a coarse grid of b, then a fine one
    around its best point: the linear parameters are solved exactly for each b, so no start values are needed)."""
    x, y = np.asarray(minutes, dtype=float), np.asarray(cer, dtype=float)
    if len(x) < 2 or np.any(x <= 0):
        raise ValueError(f"a power law needs 2 or more points with minutes > 0, got {list(x)}")
    grid = np.geomspace(*B_BOUNDS, 400)
    for _ in range(3):
        sse = [_linear_fit(np.power(x, -b), y)[2] for b in grid]
        best = int(np.argmin(sse))
        grid = np.geomspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 200)
    b = float(grid[int(np.argmin([_linear_fit(np.power(x, -b), y)[2] for b in grid]))])
    a, c, sse = _linear_fit(np.power(x, -b), y)
    return PowerLaw(a, b, c, float(np.sqrt(sse / len(x))))


@dataclass(frozen=True)
class Prediction:
    minutes: float
    cer: float
    low: float  # the range of the predictions of this fit and of the fits leaving one fold out
    high: float


def predict(points: pd.DataFrame, fit: PowerLaw, full_minutes: float) -> list[Prediction]:
    """The fit at SCALES × the full minutes, each with the range it spans with the fits leaving one fold out (which
    need not straddle the fit of every fold)."""
    held_out = [
        fit_power_law(rest["minutes"], rest["cer"])
        for fold in sorted(points["fold"].unique())
        if (rest := points[points["fold"] != fold])["minutes"].nunique() >= 2
    ]
    predictions = []
    for scale in SCALES:
        minutes = scale * full_minutes
        cers = [float(fit(minutes)), *(float(f(minutes)) for f in held_out)]
        predictions.append(Prediction(minutes, cers[0], min(cers), max(cers)))
    return predictions


def doubts(points: pd.DataFrame, fit: PowerLaw, predictions: list[Prediction], full_minutes: float) -> list[str]:
    """Why the fit is not to be trusted, in plain words; [] when no warning sign shows."""
    found = []
    fractions = sorted(points["fraction"].unique())
    if len(fractions) < 3:
        found.append(
            f"only {len(fractions)} fraction(s): three parameters (a, b, c) need at least 3 amounts of data; "
            f"add fractions to learning_curve.fractions"
        )
    means = points.groupby("fraction")["cer"].mean().sort_index()
    if len(means) >= 2 and not all(later < earlier for earlier, later in zip(means, means.iloc[1:], strict=False)):
        found.append(
            "the mean CER does not fall with every added fraction ("
            + ", ".join(f"{100 * cer:.1f} %" for cer in means)
            + "): the differences are within the noise, or more data does not help this method"
        )
    if fit.a <= 0:
        found.append("the fitted curve does not fall with more minutes (a <= 0)")
    elif fit.c >= FLOOR_NEAR * means.min():
        found.append(
            f"the fitted floor c = {100 * fit.c:.1f} % lies near the lowest observed CER ({100 * means.min():.1f} %): "
            f"the points cannot tell a floor from a slow decline, so the predicted gain rests on the curve's shape"
        )
    if not B_BOUNDS[0] * 1.01 < fit.b < B_BOUNDS[1] / 1.01:
        found.append(f"the exponent b = {fit.b:.3g} sits at its bound {B_BOUNDS}: no power law fits these points")
    last = predictions[-1]
    gain = float(fit(full_minutes)) - last.cer
    if last.high - last.low > max(gain, 0.0):
        found.append(
            f"the leave-one-fold-out interval at {SCALES[-1]}× ({100 * last.low:.1f}–{100 * last.high:.1f} %) is "
            f"wider than the gain the fit predicts there ({100 * gain:.1f} points)"
        )
    return found


# --- reading the curve's results --------------------------------------------------------------------------------


def load_points(
    metrics_dir: Path, subsets_dir: Path, method: str, fractions: list[float], folds: list[int]
) -> pd.DataFrame:
    """One row per fold × fraction: the subset's training minutes and the test error rates."""
    rows = []
    for fraction in fractions:
        for fold in folds:
            where = f"{fraction}/fold{fold}"  # the folder names both engines give the grid's jobs
            path = metrics_dir / where / "metrics.json"
            subset = subsets_dir / where / "folds.json"
            for file, stage in ((path, "curve_evaluate"), (subset, "subset")):
                if not file.is_file():
                    raise MetricsError(
                        f"{file}: not found; it is written by the {stage} stage for fold {fold}, fraction {fraction} "
                        f"(run the learning curve's stages first: `snakemake results/learning_curve.md`)"
                    )
            metrics = read_json(path)
            if int(metrics["fold"]) != fold or metrics["method"] != method:
                raise MetricsError(
                    f"{path}: holds {metrics['method']} fold {metrics['fold']}, but the curve is {method} fold "
                    f"{fold}; re-run the learning curve's stages"
                )
            seconds = read_json(subset)[f"fold{fold}"]["seconds"]["train"]
            rows.append(
                {
                    "method": method,
                    "fraction": fraction,
                    "fold": fold,
                    "minutes": seconds / 60,
                    **{k: metrics.get(k) for k in ("cer", "wer", *LM_METRICS, "n_utts")},
                    "test_speakers": " ".join(metrics["test_speakers"]),
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.dropna(axis="columns", how="all")  # the LM rates only where the evaluation decoded with an LM


# --- the outputs ----------------------------------------------------------------------------------------------------


def markdown(
    points: pd.DataFrame, fit: PowerLaw, predictions: list[Prediction], found: list[str], full_minutes: float
) -> str:
    method, k = points["method"].iloc[0], points["fold"].nunique()
    per_fraction = points.groupby("fraction").agg(
        minutes=("minutes", "mean"), cer=("cer", "mean"), cer_std=("cer", "std"), per_fold=("cer", list)
    )
    rows = [
        f"| {fraction:g} | {row.minutes:.1f} | {100 * row.cer:.1f} ± {100 * np.nan_to_num(row.cer_std):.1f} | "
        + " / ".join(f"{100 * cer:.1f}" for cer in row.per_fold)
        + " |"
        for fraction, row in per_fraction.iterrows()
    ]
    lines = [
        f"# Learning curve: {method}",
        "",
        f"{method} trained on fractions of each fold's training minutes (every training speaker kept, whole "
        f"utterances) and tested on the same unseen speakers as the cross-validation ({k} folds; greedy decoding).",
        "",
        "| fraction | training minutes (mean) | CER % (mean ± std) | CER % per fold |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Fit over all {len(points)} points: CER = {fit.a:.4g} · minutes^(−{fit.b:.3g}) + {fit.c:.4g} "
        f"(floor {100 * fit.c:.1f} %, RMSE {100 * fit.rmse:.1f} points).",
        "",
        "| training minutes | predicted CER % | interval (leave one fold out) |",
        "|---|---|---|",
        f"| {full_minutes:.1f} (all recorded) | {100 * float(fit(full_minutes)):.1f} | |",
        *(
            f"| {p.minutes:.1f} ({p.minutes / full_minutes:.0f}×) | {100 * p.cer:.1f} | "
            f"{100 * p.low:.1f}–{100 * p.high:.1f} |"
            for p in predictions
        ),
        "",
    ]
    if found:
        lines += ["**The fit is not trustworthy:**", "", *(f"- {reason}" for reason in found)]
    else:
        lines.append(
            f"No warning sign: the CER falls with every fraction and the folds agree on the extrapolation. It is "
            f"still an extrapolation from {len(points)} points of {k} folds: the new recordings must be like these "
            f"(speakers, genre, recording conditions) for it to hold."
        )
    return "\n".join(lines) + "\n"


def figure(points: pd.DataFrame, fit: PowerLaw, predictions: list[Prediction], full_minutes: float) -> Figure:
    """Each fold's points, the fitted curve out to the last prediction, the predictions with their intervals."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    ax = fig.add_subplot()
    for fold, rows in points.groupby("fold"):
        ax.plot(rows["minutes"], 100 * rows["cer"], "o", label=f"fold {fold}")
    grid = np.geomspace(points["minutes"].min() * 0.8, predictions[-1].minutes * 1.1, 200)
    ax.plot(grid, 100 * fit(grid), "-", color="black", label="fit a·minutes^(−b) + c")
    ax.errorbar(
        [p.minutes for p in predictions],
        [100 * p.cer for p in predictions],
        yerr=[[100 * (p.cer - p.low) for p in predictions], [100 * (p.high - p.cer) for p in predictions]],
        fmt="s",
        color="tab:red",
        capsize=5,
        label="predicted (leave-one-fold-out range)",
    )
    ax.axvline(full_minutes, color="gray", linestyle=":", label="all recorded minutes")
    ax.set_xscale("log")
    ax.set_xlabel("training minutes (per fold)")
    ax.set_ylabel("CER on unseen test speakers (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Learning curve: {points['method'].iloc[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def learning_curve(
    metrics_dir: Path, subsets_dir: Path, curve_cfg: dict, folds: list[int], *, table: Path, md: Path, plot: Path
) -> list[str]:
    """Write the table, the markdown and the plot; return the doubts about the fit."""
    fractions = sorted(curve_cfg["fractions"])
    points = load_points(metrics_dir, subsets_dir, curve_cfg["method"], fractions, folds)
    full_minutes = float(points.loc[points["fraction"] == fractions[-1], "minutes"].mean())
    fit = fit_power_law(points["minutes"], points["cer"])
    predictions = predict(points, fit, full_minutes)
    found = doubts(points, fit, predictions, full_minutes)
    with atomic_path(table) as tmp:
        points.round(DECIMALS).to_csv(tmp, index=False)
    write_text(md, markdown(points, fit, predictions, found, full_minutes))
    with atomic_path(plot) as tmp:
        figure(points, fit, predictions, full_minutes).savefig(tmp, format="png", dpi=150)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow learning_curve`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--metrics", required=True, type=Path, help="<fraction>/fold<k>/metrics.json of the curve")
    parser.add_argument("--subsets", required=True, type=Path, help="<fraction>/fold<k>/folds.json of the subsets")
    parser.add_argument("--table", required=True, type=Path, help="CSV: one row per fold × fraction")
    parser.add_argument("--markdown", required=True, type=Path)
    parser.add_argument("--plot", required=True, type=Path, help="PNG")


def run_cli(args: argparse.Namespace) -> None:
    params = load_stage(args.params, "learning_curve")
    found = learning_curve(
        args.metrics,
        args.subsets,
        params["learning_curve"],
        params["folds"]["ids"],
        table=args.table,
        md=args.markdown,
        plot=args.plot,
    )
    log.info("learning curve written to %s; %s", args.markdown, "; ".join(found) or "no warning sign")
