"""The `import` stage: read the corpus into one manifest (see asrflow.manifest).

Formats: `audiofolder` (the demo corpus is written in it, so `demo` shares its importer), `commonvoice`, `kaldi`,
`elan`, `textgrid` (Praat) and `hf` (Hugging Face datasets on disk); one module each, all returning the same
utterances. Rows that cannot become utterances (missing audio file, empty transcript, duplicate id, …) follow
`audio.on_bad_audio`: the first stops the import, or each is listed with its reason in the import's rejects file.
A path that leaves the corpus folder always stops it.

Several sources: `corpus.sources` lists more folders, each with its own format and options (declared like the main
corpus: `{format: elan, path: data/raw/round2, elan: {tier: hypothesis}}`), read after the main one into the same
manifest, speaker ids as each source states them. A row that repeats one of an earlier source — the same recording
span (audio of the same content, same start and end) — is a bad item whose reason names both sources.

Utterance ids are readable (a file's path in its corpus, in any script) and unique by construction
(asrflow.corpus.entries.unique_ids): names that would map to one id, within a source or across sources, each get a
short digest of their recording.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asrflow import config, stages
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.corpus.commonvoice import import_commonvoice
from asrflow.corpus.elan import import_elan
from asrflow.corpus.entries import unique_ids
from asrflow.corpus.hf import import_hf
from asrflow.corpus.kaldi import import_kaldi
from asrflow.corpus.textgrid import import_textgrid
from asrflow.manifest import Rejects, Utterance, write_manifest

log = logging.getLogger(__name__)

# Each importer takes the corpus folder, the stage's Rejects and its format's options (corpus.<format>) as keywords.
IMPORTERS: dict[str, Callable[..., list[Utterance]]] = {
    "demo": import_audiofolder,
    "audiofolder": import_audiofolder,
    "commonvoice": import_commonvoice,
    "kaldi": import_kaldi,
    "elan": import_elan,
    "textgrid": import_textgrid,
    "hf": import_hf,
}
# Formats whose audio lives inside their tables: the importer writes it into the stage's audio folder (--audio).
HOLDS_AUDIO = {"hf"}
# Formats with options (corpus.<format>); a source's options it leaves out take the schema's defaults.
OPTIONS = ("commonvoice", "elan", "textgrid", "hf")


def import_source(source: dict[str, Any], key: str, rejects: Rejects, audio_dir: Path | None) -> list[Utterance]:
    """One corpus folder (`path`, the params key `key`) in its `format`, with its options (`source[format]`)."""
    path, fmt = Path(source["path"]), source["format"]
    if not path.is_dir():
        raise config.ParamsError(f"{key}: {path} ({fmt}) is not a folder; point {key} at your corpus")
    options = {**(config.defaults(f"corpus.{fmt}") if fmt in OPTIONS else {}), **(source.get(fmt) or {})}
    if fmt in HOLDS_AUDIO:
        options["audio_dir"] = audio_dir
    return IMPORTERS[fmt](path, rejects, **options)


def content_digest(path: str, digests: dict[str, str]) -> str:
    """sha256 of the file's bytes (once per file)."""
    if path not in digests:
        with open(path, "rb") as handle:
            digests[path] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests[path]


def merge(sources: list[dict[str, Any]], imported: list[list[Utterance]], rejects: Rejects) -> list[Utterance]:
    """Every source's utterances in order, less those that repeat a recording span of an earlier source (a bad item
    each). Within one source, two files of the same content are two recordings (the importer keeps both)."""
    kept: list[Utterance] = []
    first: dict[tuple, tuple[Utterance, str]] = {}  # recording span → where it came from first
    digests: dict[str, str] = {}
    for source, utterances in zip(sources, imported, strict=True):
        where = f"{source['path']} ({source['format']})"
        for utt in utterances:
            span = (content_digest(utt.audio, digests), utt.start, utt.end)
            earlier = first.get(span)
            if earlier is not None and earlier[1] != where:
                seen, seen_where = earlier
                rejects.bad(
                    utt,
                    f"duplicate recording span: imported from {seen_where} ({seen.origin}) and again from {where} "
                    f"({utt.origin}); keep it in one source",
                )
                continue
            first.setdefault(span, (utt, where))
            kept.append(utt)
    return kept


def import_corpus(corpus: dict[str, Any], rejects: Rejects, audio_dir: Path | None = None) -> list[Utterance]:
    """The main corpus' utterances, then those of each of corpus.sources (their audio folders: audio_dir/<n>)."""
    sources = [corpus, *(corpus.get("sources") or [])]
    keys = ["corpus.path", *(f"corpus.sources[{n}].path" for n in range(len(sources) - 1))]
    imported = [
        import_source(source, key, rejects, audio_dir / str(n) if audio_dir else None)
        for n, (source, key) in enumerate(zip(sources, keys, strict=True))
    ]
    return unique_ids(imported[0] if len(sources) == 1 else merge(sources, imported, rejects))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow import`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path, help="rows left out, with the reason (CSV)")
    parser.add_argument(
        "--audio", type=Path, default=None, help="folder for audio held inside the corpus' tables (format hf)"
    )


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "import")
    missing = stages.stale_dvc_deps(stages.stage("import"), params)
    if missing:
        raise config.ParamsError(
            f"dvc.yaml: its import stage does not depend on {missing}, which params.yaml lists (corpus.sources "
            f"changed since dvc.yaml was written): run `asrflow dvc-yaml`, so that DVC sees changes there too"
        )
    corpus = params["corpus"]
    rejects = Rejects("import", params["audio"]["on_bad_audio"])
    if args.audio is not None:  # an output of the stage, fresh, even when no format fills it
        shutil.rmtree(args.audio, ignore_errors=True)
        args.audio.mkdir(parents=True)
    utterances = import_corpus(corpus, rejects, args.audio)
    write_manifest(args.out, utterances)
    rejects.write(args.rejects)
    speakers = {u.speaker for u in utterances}
    log.info(
        "imported %d utterances from %d speakers (%s, %s, %d more source(s)); rejected %d (see %s)",
        len(utterances),
        len(speakers),
        corpus["format"],
        corpus["path"],
        len(corpus.get("sources") or []),
        len(rejects.items),
        args.rejects,
    )
