"""The `normalize` stage: Unicode normalisation, optional lowercasing, literal character removal. IPA-safe.

Nothing here uses a regex character class built from user input (HF's example pastes chars_to_ignore unescaped), and
nothing strips non-ASCII: ʼ ː ŋ and combining diacritics pass through unchanged.
"""

from __future__ import annotations

import argparse
import logging
import unicodedata

from asrflow import config
from asrflow.manifest import Rejects, Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)


def normalise(text: str, text_cfg: dict) -> str:
    text = unicodedata.normalize(text_cfg["unicode"], text)
    if text_cfg["lowercase"]:
        text = text.lower()
    removed = set(unicodedata.normalize(text_cfg["unicode"], text_cfg["remove"]))
    text = "".join(ch for ch in text if ch not in removed)
    # Every kind of Unicode whitespace becomes one plain space: CTC's word delimiter is derived from it.
    return " ".join(text.split())


def normalise_all(utterances: list[Utterance], text_cfg: dict, rejects: Rejects) -> list[Utterance]:
    """Normalised utterances; one whose transcript is left empty is a bad item (see audio.on_bad_audio)."""
    result = []
    for utt in utterances:
        clean = normalise(utt.text, text_cfg)
        if not clean:
            rejects.bad(utt, f"transcript {utt.text!r} is empty after normalisation; fix the transcript or the "
                             f"text.remove setting")
            continue
        result.append(utt.replace(text=clean))
    return result


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "normalize")
    rejects = Rejects("normalize", params["audio"]["on_bad_audio"])
    utterances = normalise_all(read_manifest(args.manifest), params["text"], rejects)
    write_manifest(args.out, utterances)
    rejects.write(args.rejects)
    chars = sorted({ch for u in utterances for ch in u.text})
    log.info("normalised %d transcripts; %d distinct characters: %s; rejected %d (see %s)", len(utterances),
             len(chars), "".join(chars), len(rejects.items), args.rejects)
