"""The `import` stage: read a corpus folder in `corpus.format` into a manifest (see asrflow.manifest).

Formats: `audiofolder` (the demo corpus is written in it, so `demo` shares its importer), `commonvoice`, `kaldi`,
`elan`; one module each, all returning the same utterances. Rows that cannot become utterances (missing audio file,
empty transcript, duplicate id, …) follow `audio.on_bad_audio`: the first stops the import, or each is listed with
its reason in the import's rejects file. A path that leaves the corpus folder always stops it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from asrflow import config
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.corpus.commonvoice import import_commonvoice
from asrflow.corpus.elan import import_elan
from asrflow.corpus.kaldi import import_kaldi
from asrflow.manifest import Rejects, Utterance, write_manifest

log = logging.getLogger(__name__)

# Each importer takes the corpus folder, the stage's Rejects and its format's options (corpus.<format>) as keywords.
IMPORTERS: dict[str, Callable[..., list[Utterance]]] = {
    "demo": import_audiofolder,
    "audiofolder": import_audiofolder,
    "commonvoice": import_commonvoice,
    "kaldi": import_kaldi,
    "elan": import_elan,
}


def import_corpus(corpus: dict, rejects: Rejects) -> list[Utterance]:
    path = Path(corpus["path"])
    if not path.is_dir():
        raise config.ParamsError(f"corpus.path: {path} is not a folder; point corpus.path at your corpus")
    options = corpus.get(corpus["format"]) or {}
    return IMPORTERS[corpus["format"]](path, rejects, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow import`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path, help="rows left out, with the reason (CSV)")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "import")
    corpus = params["corpus"]
    rejects = Rejects("import", params["audio"]["on_bad_audio"])
    utterances = import_corpus(corpus, rejects)
    write_manifest(args.out, utterances)
    rejects.write(args.rejects)
    speakers = {u.speaker for u in utterances}
    log.info(
        "imported %d utterances from %d speakers (%s, %s); rejected %d (see %s)",
        len(utterances),
        len(speakers),
        corpus["format"],
        corpus["path"],
        len(rejects.items),
        args.rejects,
    )
