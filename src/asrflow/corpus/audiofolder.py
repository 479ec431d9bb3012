"""Hugging Face `audiofolder` layout: `metadata.csv` (file_name, transcription, speaker_id) beside the audio files."""

from __future__ import annotations

import csv
from pathlib import Path

from asrflow.corpus.entries import Entry, admit, read_utf8, utt_id_for
from asrflow.manifest import ManifestError, Rejects, Utterance

COLUMNS = ("file_name", "transcription", "speaker_id")


def _read_rows(metadata: Path) -> list[dict[str, str]]:
    reader = csv.DictReader(read_utf8(metadata).splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(f"{metadata}: missing column(s) {missing}; audiofolder metadata needs {list(COLUMNS)}")
    return list(reader)


def entries(metadata: Path) -> list[Entry]:
    rows = []
    for line, row in enumerate(_read_rows(metadata), start=2):
        file_name = (row["file_name"] or "").strip()
        rows.append(
            Entry(
                utt_id=utt_id_for(file_name),
                audio=file_name,
                speaker=row["speaker_id"] or "",
                text=row["transcription"] or "",
                origin=f"{metadata.name}:{line}",
            )
        )
    return rows


def import_audiofolder(root: Path, rejects: Rejects | None = None) -> list[Utterance]:
    """The corpus' utterances; without `rejects`, the first bad row is an error."""
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise ManifestError(f"{metadata}: not found; an audiofolder corpus needs metadata.csv with {list(COLUMNS)}")
    rows = entries(metadata)
    if not rows:
        raise ManifestError(f"{metadata}: no rows")
    return admit(root, rows, rejects or Rejects("import", "error"))
