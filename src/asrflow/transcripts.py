"""Transcript normalisation: invisible characters out, Unicode normalisation, optional lowercasing, literal character
removal. IPA-safe. The declared multi-character graphemes (`text.graphemes`) are normalised the same way.

Invisible format characters (Unicode category Cf: bidi marks, embeddings and isolates, a BOM inside a cell, soft
hyphens, word joiners, zero-width spaces and joiners) are removed, and odd spaces (category Zs other than U+0020:
no-break, narrow, thin, ideographic …) become spaces, first: they arrive from word processors and keyboards, not from
speech, and would otherwise be CTC tokens no one can see. A script that needs one (the zero-width joiner U+200D and
non-joiner U+200C in Indic and Persian orthographies) lists it in `text.keep_format_characters`. The data report lists
every one found (asrflow.data_report).

Nothing here uses a regex character class built from user input (HF's example pastes chars_to_ignore unescaped), and
nothing strips non-ASCII: ʼ ː ŋ and combining diacritics pass through unchanged.
"""

from __future__ import annotations

import unicodedata

from asrflow.config import ParamsError


def invisible(ch: str) -> str | None:
    """What normalisation makes of `ch` unless `text.keep_format_characters` lists it: '' for an invisible format
    character (Cf), ' ' for an odd space (Zs but U+0020), None for every other character."""
    category = unicodedata.category(ch)
    if category == "Cf":
        return ""
    if category == "Zs" and ch != " ":
        return " "
    return None


def kept_format_characters(text_cfg: dict) -> frozenset[str]:
    """`text.keep_format_characters`, each checked to be one normalisation would remove."""
    keep = frozenset(text_cfg["keep_format_characters"])
    # An odd space cannot be kept: every whitespace becomes one plain space (CTC's word delimiter), see normalise.
    wrong = [f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".strip() for ch in sorted(keep) if invisible(ch) != ""]
    if wrong:
        raise ParamsError(
            f"text.keep_format_characters: {wrong} are not invisible format characters (Unicode category Cf), the "
            f"only ones normalisation removes and so the only ones it can keep; drop them from the list"
        )
    return keep


def visible(text: str, keep: frozenset[str]) -> str:
    """`text` without its invisible format characters and with its odd spaces as spaces, but for those in `keep`."""
    return "".join(ch if ch in keep or invisible(ch) is None else invisible(ch) for ch in text)


def normalise(text: str, text_cfg: dict) -> str:
    text = visible(text, kept_format_characters(text_cfg))
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
                f"text.graphemes: {grapheme!r} is {clean!r} after transcript normalisation (invisible characters "
                f"out, text.unicode, text.lowercase, text.remove), not a multi-character unit; drop it from "
                f"text.graphemes or keep its characters out of text.remove"
            )
        if clean not in result:
            result.append(clean)
    return result
