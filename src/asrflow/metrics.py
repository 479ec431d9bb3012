"""Error rates, as every stage that scores transcripts computes them (jiwer's alignment, corpus-level sums)."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

from asrflow.graphemes import split_units


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (CER, WER): errors summed over utterances, divided by the reference length."""
    return float(jiwer.cer(references, hypotheses)), float(jiwer.wer(references, hypotheses))


class _ReduceToListOfListOfUnits(jiwer.ReduceToListOfListOfChars):
    """jiwer's character split, with each declared grapheme one unit (asrflow.graphemes.split_units)."""

    def __init__(self, graphemes: Sequence[str]) -> None:
        super().__init__()
        self.graphemes = graphemes

    def process_string(self, s: str) -> list[list[str]]:
        return [split_units(s, self.graphemes)]


def grapheme_error_rate(references: list[str], hypotheses: list[str], graphemes: Sequence[str]) -> float:
    """Corpus-level GER: the CER with every declared grapheme one unit (jiwer's CER otherwise: spaces count, ends
    stripped); equal to the CER when no graphemes are declared."""
    transform = jiwer.Compose([jiwer.Strip(), _ReduceToListOfListOfUnits(graphemes)])
    return float(jiwer.cer(references, hypotheses, reference_transform=transform, hypothesis_transform=transform))
