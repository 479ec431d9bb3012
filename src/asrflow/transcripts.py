"""Transcript normalisation: Unicode normalisation, optional lowercasing, literal character removal. IPA-safe.

Nothing here uses a regex character class built from user input (HF's example pastes chars_to_ignore unescaped), and
nothing strips non-ASCII: ʼ ː ŋ and combining diacritics pass through unchanged.
"""

from __future__ import annotations

import unicodedata


def normalise(text: str, text_cfg: dict) -> str:
    text = unicodedata.normalize(text_cfg["unicode"], text)
    if text_cfg["lowercase"]:
        text = text.lower()
    removed = set(unicodedata.normalize(text_cfg["unicode"], text_cfg["remove"]))
    text = "".join(ch for ch in text if ch not in removed)
    # Every kind of Unicode whitespace becomes one plain space: CTC's word delimiter is derived from it.
    return " ".join(text.split())
