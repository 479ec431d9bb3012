"""Uncertainty over speakers: bootstrap intervals of pooled error rates, resampling test speakers.

Cross-validation tests every speaker exactly once, so a method's test errors, pooled over folds, form one sample of
speakers. The error rate that generalises is about *new speakers*, and a speaker's utterances share one voice, so the
unit that is resampled is the speaker: each bootstrap resample draws as many speakers as were tested, with
replacement, keeping each drawn speaker's utterances together, and recomputes the pooled error rate

    sum of edits over the drawn speakers / sum of reference units (characters, words) over the drawn speakers.

The 95 % interval is the 2.5th–97.5th percentile of the resampled rates (percentile bootstrap). Comparing two methods
uses the *same* resampled speakers for both (a paired bootstrap: speaker difficulty, which both methods share, cancels
out of the difference). docs/analysis.md explains the method and how the pooled rate relates to the across-fold mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from asrflow.graphemes import split_units

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A pooled error rate over every tested speaker and its bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """Rate of method a − rate of method b on the same resampled speakers; negative: a makes fewer errors.
    `a_wins` / `b_wins`: the fraction of resamples in which a's / b's rate is strictly lower (ties count for neither).
    """

    difference: float
    low: float
    high: float
    a_wins: float
    b_wins: float


def edit_counts(
    references: list[str], hypotheses: list[str], unit: str, graphemes: Sequence[str] = ()
) -> tuple[int, int]:
    """(edits, reference units) of the utterances together, counted as asrflow.metrics scores them, so that
    edits / units is exactly the CER, WER or GER that evaluate reports. `unit`: "char", "word" (jiwer's alignment),
    or "grapheme": `graphemes` each one unit (asrflow.graphemes.split_units), ends stripped as in the CER; the
    Levenshtein distance is the minimal number of edits, the count jiwer's alignment gives."""
    if unit == "grapheme":
        pairs = [
            (split_units(r.strip(), graphemes), split_units(h.strip(), graphemes))
            for r, h in zip(references, hypotheses)
        ]
        return sum(Levenshtein.distance(r, h) for r, h in pairs), sum(len(r) for r, _ in pairs)
    process = {"char": jiwer.process_characters, "word": jiwer.process_words}[unit]
    out = process(references, hypotheses)
    return (
        out.substitutions + out.deletions + out.insertions,
        out.substitutions + out.deletions + out.hits,
    )


def speaker_counts(hypotheses: pd.DataFrame, column: str, unit: str, graphemes: Sequence[str] = ()) -> pd.DataFrame:
    """Per speaker (sorted by name): `errors` and `units` of the hypotheses in `column` against `reference`."""
    rows = []
    for speaker, group in hypotheses.groupby("speaker", sort=True):
        errors, units = edit_counts(group["reference"].tolist(), group[column].tolist(), unit, graphemes)
        rows.append({"speaker": speaker, "errors": errors, "units": units})
    return pd.DataFrame(rows, columns=["speaker", "errors", "units"])


def resample_indices(n_speakers: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` × `n_speakers` speaker indices drawn with replacement; one matrix serves every method and metric,
    which is what pairs the comparisons."""
    return np.random.default_rng(seed).integers(0, n_speakers, size=(resamples, n_speakers))


def resampled_rates(errors: np.ndarray, units: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The pooled rate of each resample (each row of `indices`)."""
    return errors[indices].sum(axis=1) / units[indices].sum(axis=1)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval(errors: np.ndarray, units: np.ndarray, indices: np.ndarray) -> Interval:
    """The pooled rate over all speakers and its percentile-bootstrap interval."""
    estimate = float(errors.sum() / units.sum())
    return Interval(estimate, *_percentiles(resampled_rates(errors, units, indices)))


def paired(
    errors_a: np.ndarray, units_a: np.ndarray, errors_b: np.ndarray, units_b: np.ndarray, indices: np.ndarray
) -> Paired:
    """Method a against method b, speaker by speaker the same (the arrays in one speaker order)."""
    rates_a = resampled_rates(errors_a, units_a, indices)
    rates_b = resampled_rates(errors_b, units_b, indices)
    difference = float(errors_a.sum() / units_a.sum() - errors_b.sum() / units_b.sum())
    return Paired(
        difference,
        *_percentiles(rates_a - rates_b),
        a_wins=float(np.mean(rates_a < rates_b)),
        b_wins=float(np.mean(rates_b < rates_a)),
    )
