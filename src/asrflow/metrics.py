"""Error rates, as every stage that scores transcripts computes them (jiwer's alignment, corpus-level sums)."""

from __future__ import annotations

import jiwer


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (CER, WER): errors summed over utterances, divided by the reference length."""
    return float(jiwer.cer(references, hypotheses)), float(jiwer.wer(references, hypotheses))
