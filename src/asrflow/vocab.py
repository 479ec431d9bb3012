"""The CTC vocabulary: its special tokens, how a vocabulary is built from transcripts, and how a transcript becomes
label ids.

Every model asrflow trains numbers its tokens this way (blank/pad 0, unknown 1, word delimiter 2, then units), so the
tokenizer (asrflow.model), the warm-started head (asrflow.methods.base) and the memory probe agree on them. A unit is
one character, or one declared multi-character grapheme (`text.graphemes`, asrflow.graphemes).
"""

from __future__ import annotations

from collections.abc import Sequence

from asrflow.graphemes import split_units

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, UNK, WORD_DELIMITER)


def build_vocab(texts: list[str], graphemes: Sequence[str] = ()) -> dict[str, int]:
    """CTC vocabulary: blank/pad first (id 0), unknown, word delimiter, then the units of `texts` (characters and
    the `graphemes` they contain) in code-point order."""
    units = sorted({unit for text in texts for unit in split_units(text, graphemes) if unit != " "})
    return {token: i for i, token in enumerate([*SPECIAL_TOKENS, *units])}


def vocab_graphemes(vocab: dict[str, int]) -> list[str]:
    """The multi-character graphemes `vocab` holds as tokens (none when no graphemes were declared)."""
    return [token for token in vocab if len(token) > 1 and token not in SPECIAL_TOKENS]


def encode_labels(text: str, vocab: dict[str, int]) -> list[int]:
    """Label ids of `text`: one per unit (asrflow.graphemes.split_units over the vocabulary's own graphemes), a space
    as the word delimiter, a unit the vocabulary lacks as unknown. Wav2Vec2CTCTokenizer cannot do this: it splits
    every character, and strips the spaces around a multi-character token it knows."""
    units = split_units(text, vocab_graphemes(vocab))
    return [vocab.get(WORD_DELIMITER if unit == " " else unit, vocab[UNK]) for unit in units]
