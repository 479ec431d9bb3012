"""The `normalize` stage: every transcript normalised (asrflow.transcripts: invisible characters and odd spaces,
Unicode, case, removed characters; IPA-safe); an utterance whose transcript is left empty is a bad item. A line break
in a transcript (a phrase boundary the resample stage split at) becomes a space here.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asrflow import config
from asrflow.manifest import Rejects, Utterance, read_manifest, write_manifest
from asrflow.transcripts import normalise

log = logging.getLogger(__name__)


def normalise_all(utterances: list[Utterance], text_cfg: dict, rejects: Rejects) -> list[Utterance]:
    """Normalised utterances; one whose transcript is left empty is a bad item (see audio.on_bad_audio)."""
    result = []
    for utt in utterances:
        clean = normalise(utt.text, text_cfg)
        if not clean:
            rejects.bad(
                utt,
                f"transcript {utt.text!r} is empty after normalisation; fix the transcript or the text.remove setting",
            )
            continue
        result.append(utt.replace(text=clean))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow normalize`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path, help="utterances left out, with the reason (CSV)")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "normalize")
    rejects = Rejects("normalize", params["audio"]["on_bad_audio"])
    utterances = normalise_all(read_manifest(args.manifest), params["text"], rejects)
    write_manifest(args.out, utterances)
    rejects.write(args.rejects)
    chars = sorted({ch for u in utterances for ch in u.text})
    log.info(
        "normalised %d transcripts; %d distinct characters: %s; rejected %d (see %s)",
        len(utterances),
        len(chars),
        "".join(chars),
        len(rejects.items),
        args.rejects,
    )
