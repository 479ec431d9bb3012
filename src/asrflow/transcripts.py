"""Transcript normalisation: Unicode normalisation, optional lowercasing, literal character removal. IPA-safe. The
declared multi-character graphemes (`text.graphemes`) are normalised the same way.

Nothing here uses a regex character class built from user input (HF's example pastes chars_to_ignore unescaped), and
nothing strips non-ASCII: ʼ ː ŋ and combining diacritics pass through unchanged.
"""

from __future__ import annotations

import unicodedata

from asrflow.config import ParamsError


def normalise(text: str, text_cfg: dict) -> str:
    text = unicodedata.normalize(text_cfg["unicode"], text)
    if text_cfg["lowercase"]:
        text = text.lower()
    removed = set(unicodedata.normalize(text_cfg["unicode"], text_cfg["remove"]))
    text = "".join(ch for ch in text if ch not in removed)
    # Every kind of Unicode whitespace becomes one plain space: CTC's word delimiter is derived from it.
    return " ".join(text.split())


def grapheme_inventory(text_cfg: dict) -> list[str]:
    """The declared graphemes (`text.graphemes`) normalised as every transcript is (normalise), so that
    they match the normalised text they are looked for in."""
    result = []
    for grapheme in text_cfg["graphemes"]:
        clean = normalise(grapheme, text_cfg)
        if len(clean) < 2 or " " in clean:
            raise ParamsError(
                f"text.graphemes: {grapheme!r} is {clean!r} after transcript normalisation (text.unicode, "
                f"text.lowercase, text.remove), not a multi-character unit; drop it from text.graphemes or keep its "
                f"characters out of text.remove"
            )
        if clean not in result:
            result.append(clean)
    return result
