"""Hugging Face `audiofolder` layout: `metadata.csv` (file_name, transcription, speaker_id) beside the audio files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from asrflow.corpus.paths import confined
from asrflow.manifest import ManifestError, Utterance

COLUMNS = ("file_name", "transcription", "speaker_id")


def utt_id_for(file_name: str) -> str:
    """A stable id from the file's path inside the corpus: `wav/spk1/a b.wav` → `wav_spk1_a_b`."""
    stem = str(Path(file_name).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")


def _read_rows(metadata: Path) -> list[dict[str, str]]:
    try:
        text = metadata.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{metadata}: not UTF-8 (byte {error.start}); re-save it as UTF-8") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(f"{metadata}: missing column(s) {missing}; audiofolder metadata needs {list(COLUMNS)}")
    return list(reader)


def import_audiofolder(root: Path) -> list[Utterance]:
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise ManifestError(f"{metadata}: not found; an audiofolder corpus needs metadata.csv with {list(COLUMNS)}")
    utterances, first_line = [], {}
    for line, row in enumerate(_read_rows(metadata), start=2):
        where = f"{metadata}:{line}"
        file_name, speaker = (row["file_name"] or "").strip(), (row["speaker_id"] or "").strip()
        if not file_name or not speaker:
            raise ManifestError(f"{where}: empty file_name or speaker_id")
        audio = confined(root, file_name, where)
        if not audio.is_file():
            raise ManifestError(f"{where}: audio file {audio} not found")
        utt_id = utt_id_for(file_name)
        if utt_id in first_line:
            raise ManifestError(f"{where}: duplicate utterance {file_name!r} (first on line {first_line[utt_id]})")
        first_line[utt_id] = line
        utterances.append(Utterance(utt_id=utt_id, audio=str(audio), speaker=speaker,
                                    text=row["transcription"] or "", origin=f"{metadata.name}:{line}"))
    if not utterances:
        raise ManifestError(f"{metadata}: no rows")
    return utterances
