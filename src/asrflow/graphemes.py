"""Multi-character graphemes (params `text.graphemes`): units such as tʃ, kʼ or ˥˩ that the CTC vocabulary treats as
ONE token, so the model emits them in one frame and the grapheme error rate counts them as one unit.

`split_units` is the one tokenisation every consumer shares: vocabulary building, label encoding, the LM alphabet
and the grapheme error rate. With an empty inventory it is `list(text)`: one unit per code point, as before.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_units(text: str, inventory: Sequence[str]) -> list[str]:
    """`text` split into units: each listed multi-character grapheme is one unit (longest match first, scanning left
    to right), every other character is its own unit."""
    multi = sorted({g for g in inventory if len(g) > 1}, key=len, reverse=True)
    if not multi:
        return list(text)
    units: list[str] = []
    i = 0
    while i < len(text):
        unit = next((g for g in multi if text.startswith(g, i)), text[i])
        units.append(unit)
        i += len(unit)
    return units
