"""The `import` stage: read a corpus folder in `corpus.format` into a manifest (see asrflow.manifest).

The demo corpus is written in the audiofolder layout, so `demo` and `audiofolder` share one importer.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asrflow import config
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.manifest import Utterance, write_manifest

log = logging.getLogger(__name__)

IMPORTERS = {"demo": import_audiofolder, "audiofolder": import_audiofolder}


def import_corpus(fmt: str, path: Path) -> list[Utterance]:
    if not path.is_dir():
        raise config.ParamsError(f"corpus.path: {path} is not a folder; point corpus.path at your corpus")
    return IMPORTERS[fmt](path)


def run_cli(args: argparse.Namespace) -> None:
    corpus = config.load_stage(args.params, "import")["corpus"]
    utterances = import_corpus(corpus["format"], Path(corpus["path"]))
    write_manifest(args.out, utterances)
    speakers = {u.speaker for u in utterances}
    log.info("imported %d utterances from %d speakers (%s, %s)", len(utterances), len(speakers),
             corpus["format"], corpus["path"])
