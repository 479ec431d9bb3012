"""How sure a CTC model is of what it transcribed, from its own frame posteriors (the softmax of its CTC head's
logits, frame by frame). No calibration and no second model: a number a linguist can sort by, to correct the
least certain phrases first.

- Token: every token the output emits is one run of frames on a CTC path (the token repeated, blanks on either side).
  Its confidence is its posterior, the highest over the frames of that run. A CTC model emits a token as a spike of
  one or two frames flanked by frames it shares with the blank, so the maximum is the spike; a mean over the run
  would penalise a slowly spoken sound, not doubt. The path is the best path itself for greedy decoding
  (`greedy_emissions`), and for beam search with an LM, whose words need not be the best path's, the Viterbi
  (forced) alignment of the word's tokens to the frames pyctcdecode says the word spans (`forced_emissions`).
- Word: the lowest confidence of its tokens. A word is right only if every one of its tokens is; a geometric mean
  would let the sure tokens of a long word hide the one doubtful diacritic that a linguist has to fix.
- Phrase: the mean of its words' confidences, each weighted by its length in characters: characters are what a
  linguist corrects, so a long doubtful word weighs more than a short sure one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


class AlignmentError(ValueError):
    """Tokens that no CTC path over the given frames spells."""


@dataclasses.dataclass(frozen=True)
class Emission:
    token: int  # id in the model's vocabulary
    start: int  # first frame of the token's run on the path
    end: int  # one past its last frame
    posterior: float  # the token's highest posterior over [start, end)


def log_posteriors(logits: np.ndarray) -> np.ndarray:
    """log softmax over the vocabulary (frames × tokens), in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def runs(path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first frame, one past the last frame) of each run of equal values in `path`."""
    boundaries = np.flatnonzero(np.diff(path)) + 1
    return np.r_[0, boundaries], np.r_[boundaries, len(path)]


def greedy_emissions(logits: np.ndarray, blank: int) -> list[Emission]:
    """The tokens the best path (each frame's most probable token) emits, with their confidences."""
    path = logits.argmax(axis=-1)
    # The argmax token's posterior is 1 / Σ exp(logit - max logit): no full softmax over a long recording needed.
    best = 1.0 / np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)).sum(axis=-1)
    starts, ends = runs(path)
    peaks = np.maximum.reduceat(best, starts)
    return [
        Emission(int(path[start]), int(start), int(end), float(peak))
        for start, end, peak in zip(starts, ends, peaks)
        if path[start] != blank
    ]


def forced_emissions(logits: np.ndarray, tokens: Sequence[int], blank: int) -> list[Emission]:
    """`tokens` aligned to every frame of `logits` by Viterbi over the CTC topology (blank, token, blank, …, blank;
    a blank between two equal tokens is required): the most probable path spelling exactly `tokens`, and each
    token's emission on it."""
    if not tokens:
        raise AlignmentError("no tokens to align")
    log_probs = log_posteriors(logits)
    states = np.full(2 * len(tokens) + 1, blank)
    states[1::2] = tokens
    # A token state may be entered from the previous token's state (skipping the blank) unless both are the same.
    skip = np.zeros(len(states), dtype=bool)
    skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(len(states), -np.inf)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros((len(log_probs), len(states)), dtype=np.int64)  # how many states each step advanced: 0, 1, 2
    for t in range(1, len(log_probs)):
        candidates = np.stack(
            [score, np.r_[-np.inf, score[:-1]], np.where(skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)]
        )
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[t, states]
    state = len(states) - 1 if score[-1] >= score[-2] else len(states) - 2  # ends on the last token or a blank
    if not np.isfinite(score[state]):
        raise AlignmentError(f"{len(tokens)} tokens {list(tokens)} cannot be spelt in {len(log_probs)} frames")
    path = np.empty(len(log_probs), dtype=np.int64)
    for t in range(len(log_probs) - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    starts, ends = runs(path)
    return [
        Emission(int(states[path[s]]), int(s), int(e), float(np.exp(log_probs[s:e, states[path[s]]].max())))
        for s, e in zip(starts, ends)
        if path[s] % 2  # odd states are tokens, even ones blanks
    ]


def word_confidence(emissions: Sequence[Emission]) -> float:
    """The lowest confidence of a word's tokens (see the module docstring)."""
    if not emissions:
        raise AlignmentError("a word without tokens has no confidence")
    return min(e.posterior for e in emissions)


def greedy_word_confidences(logits: np.ndarray, spans: Sequence[tuple[int, int]], blank: int) -> list[float]:
    """Confidence of each greedy-decoded word, given as its frames [start, end) (the span of its tokens' runs, as
    the tokenizer's word offsets give them): the best-path tokens that start within it."""
    emissions = greedy_emissions(logits, blank)
    starts = np.array([e.start for e in emissions], dtype=np.int64)
    result = []
    for start, end in spans:
        first, last = np.searchsorted(starts, [start, end])
        if first == last:
            raise AlignmentError(f"the best path emits no token in frames {start}–{end}, where a word was decoded")
        result.append(word_confidence(emissions[first:last]))
    return result


def aligned_word_confidences(
    logits: np.ndarray, words: Sequence[tuple[Sequence[int], int, int]], blank: int
) -> list[float]:
    """Confidence of each beam-search word, given as (its token ids, first frame, one past its last frame) — the
    frame span pyctcdecode reports for it: its tokens force-aligned within that span."""
    return [word_confidence(forced_emissions(logits[start:end], tokens, blank)) for tokens, start, end in words]


def phrase_confidence(words: Sequence[tuple[str, float]]) -> float:
    """The mean confidence of a phrase's (text, confidence) words, weighted by their length in characters."""
    weights = [len(text) for text, _ in words]
    return sum(w * c for w, (_, c) in zip(weights, words)) / sum(weights)
