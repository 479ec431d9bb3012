"""The `normalize` stage: Unicode normalisation, optional lowercasing, literal character removal. IPA-safe.

Nothing here uses a regex character class built from user input (HF's example pastes chars_to_ignore unescaped), and
nothing strips non-ASCII: ʼ ː ŋ and combining diacritics pass through unchanged.
"""

from __future__ import annotations

import argparse
import logging
import unicodedata

from asrflow import config
from asrflow.manifest import ManifestError, Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)


def normalise(text: str, text_cfg: dict) -> str:
    text = unicodedata.normalize(text_cfg["unicode"], text)
    if text_cfg["lowercase"]:
        text = text.lower()
    removed = set(unicodedata.normalize(text_cfg["unicode"], text_cfg["remove"]))
    text = "".join(ch for ch in text if ch not in removed)
    # Every kind of Unicode whitespace becomes one plain space: CTC's word delimiter is derived from it.
    return " ".join(text.split())


def normalise_all(utterances: list[Utterance], text_cfg: dict) -> list[Utterance]:
    result = []
    for utt in utterances:
        clean = normalise(utt.text, text_cfg)
        if not clean:
            raise ManifestError(f"{utt.origin or utt.utt_id}: transcript {utt.text!r} is empty after normalisation; "
                                f"fix the transcript or the text.remove setting")
        result.append(utt.replace(text=clean))
    return result


def run_cli(args: argparse.Namespace) -> None:
    text_cfg = config.load_stage(args.params, "normalize")["text"]
    utterances = normalise_all(read_manifest(args.manifest), text_cfg)
    write_manifest(args.out, utterances)
    chars = sorted({ch for u in utterances for ch in u.text})
    log.info("normalised %d transcripts; %d distinct characters: %s", len(utterances), len(chars), "".join(chars))
