"""The CTC vocabulary: its special tokens and how a vocabulary is built from transcripts.

Every model asrflow trains numbers its tokens this way (blank/pad 0, unknown 1, word delimiter 2, then characters),
so the tokenizer (asrflow.model), the warm-started head (asrflow.methods.base) and the memory probe agree on them.
"""

from __future__ import annotations

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"


def build_vocab(texts: list[str]) -> dict[str, int]:
    """CTC vocabulary: blank/pad first (id 0), unknown, word delimiter, then characters in code-point order."""
    chars = sorted({ch for text in texts for ch in text if ch != " "})
    return {token: i for i, token in enumerate([PAD, UNK, WORD_DELIMITER, *chars])}
