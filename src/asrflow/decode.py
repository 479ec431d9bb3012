"""CTC decoding beyond greedy: beam search with a fold's n-gram LM (pyctcdecode + KenLM), and alpha/beta tuning.

The decoder's alphabet is the model's own tokenizer vocabulary in id order, one label per output of the CTC head:
a label list built any other way (sorted characters, a vocab.json of another fold) silently shifts every id, the
mismatch reported in transformers#18231 and #15311. The tokenizer's special tokens are mapped to what pyctcdecode
means by them: the pad token (the CTC blank) → "", the word delimiter `|` → " ", the unknown token → "⁇".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyctcdecode import Alphabet, BeamSearchDecoderCTC, build_ctcdecoder
from pyctcdecode.alphabet import UNK_TOKEN
from pyctcdecode.language_model import load_unigram_set_from_arpa
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from asrflow.batching import Clip, InputSpec
from asrflow.metrics import error_rates
from asrflow.model import audio_logits, clip_logits, greedy_texts
from asrflow.ngram import ARPA_FILE, BINARY_FILE, LMError


def decoder_labels(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """pyctcdecode labels for every token id of `tokenizer`, in id order."""
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in by_id] != list(range(len(vocab))):
        raise LMError(
            f"the tokenizer's ids are not 0…{len(vocab) - 1} without gaps; a CTC decoder needs one label per output id"
        )
    special = {tokenizer.pad_token: "", tokenizer.word_delimiter_token: " ", tokenizer.unk_token: UNK_TOKEN}
    labels = [special.get(token, token) for token in by_id]
    # pyctcdecode re-reads labels by heuristics (e.g. "##x" or "▁x" make it a BPE alphabet): refuse any change.
    try:
        normalised = Alphabet.build_alphabet(labels).labels
    except ValueError as error:
        raise LMError(f"pyctcdecode refuses the vocabulary {labels}: {error}") from None
    if normalised != labels:
        raise LMError(f"pyctcdecode would read the vocabulary {labels} as {normalised}")
    return labels


def lm_decoder(tokenizer: PreTrainedTokenizerBase, lm_dir: Path) -> BeamSearchDecoderCTC:
    """A pyctcdecode beam-search decoder over `tokenizer`'s ids with the KenLM model in `lm_dir` (asrflow lm)."""
    binary, arpa = lm_dir / BINARY_FILE, lm_dir / ARPA_FILE
    if not (binary.is_file() and arpa.is_file()):
        raise LMError(f"{lm_dir}: no {BINARY_FILE}/{ARPA_FILE}; build it with `asrflow lm` while decode.beam is true")
    # The ARPA file lists the unigrams pyctcdecode needs for partial-word scoring; the binary loads fast.
    return build_ctcdecoder(decoder_labels(tokenizer), str(binary), unigrams=load_unigram_set_from_arpa(str(arpa)))


def frame_logits(model: torch.nn.Module, clips: list[Clip], spec: InputSpec, batch_seconds: float) -> list[np.ndarray]:
    """Per clip, in clip order, the CTC head's float32 logits over its own frames (padding frames cut off)."""
    return [row.float().cpu().numpy() for row in clip_logits(model, clips, batch_seconds, audio_logits(model, spec))]


def greedy_transcripts(logits: Sequence[np.ndarray], processor: ProcessorMixin) -> list[str]:
    """Best-path transcripts (asrflow.model.greedy_texts) of logits already computed, clip by clip."""
    return greedy_texts([torch.from_numpy(x) for x in logits], processor)


def beam_decode(decoder: BeamSearchDecoderCTC, logits: Sequence[np.ndarray], beam_width: int) -> list[str]:
    """Beam-search transcripts; pyctcdecode scores log-probabilities, so the logits are log-softmaxed first."""
    return [decoder.decode(torch.log_softmax(torch.from_numpy(x), -1).numpy(), beam_width=beam_width) for x in logits]


def tune(
    decoder: BeamSearchDecoderCTC, logits: Sequence[np.ndarray], references: list[str], decode_cfg: dict
) -> pd.DataFrame:
    """Dev CER/WER for every (alpha, beta) of the grid, best first (ties: grid order); the decoder keeps the best."""
    rows = []
    for alpha, beta in itertools.product(decode_cfg["alpha"], decode_cfg["beta"]):
        decoder.reset_params(alpha=alpha, beta=beta)
        cer, wer = error_rates(references, beam_decode(decoder, logits, decode_cfg["beam_width"]))
        rows.append({"alpha": alpha, "beta": beta, "dev_cer": round(cer, 5), "dev_wer": round(wer, 5)})
    grid = pd.DataFrame(rows).sort_values(["dev_cer", "dev_wer"], kind="stable", ignore_index=True)
    decoder.reset_params(alpha=float(grid.at[0, "alpha"]), beta=float(grid.at[0, "beta"]))
    return grid
