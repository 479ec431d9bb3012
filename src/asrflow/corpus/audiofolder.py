"""Hugging Face `audiofolder` layout: `metadata.csv` (file_name, transcription, speaker_id) beside the audio files.

The table is read as CSV (asrflow.corpus.tables): as Excel saves it too, with `;` or tabs between cells. A line break
inside a transcript cell is kept as "\n": a phrase boundary for `audio.too_long: split`, a space once normalised.
"""

from __future__ import annotations

from pathlib import Path

from asrflow.corpus.entries import Entry, admit, utt_id_for
from asrflow.corpus.tables import read_table
from asrflow.manifest import ManifestError, Rejects, Utterance

COLUMNS = ("file_name", "transcription", "speaker_id")


def entries(metadata: Path) -> list[Entry]:
    rows = []
    for line, row in read_table(metadata, COLUMNS, what="audiofolder metadata"):
        file_name = row["file_name"].strip()
        rows.append(
            Entry(
                utt_id=utt_id_for(file_name),
                audio=file_name,
                speaker=row["speaker_id"],
                text=row["transcription"],
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
