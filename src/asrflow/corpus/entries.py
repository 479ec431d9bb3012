"""What every importer shares: a corpus row before it is checked (Entry), and the checks that turn rows into
utterances (admit), so that every format rejects the same problems with the same reasons.

A path that leaves the corpus folder is always an error (see paths.confined); every other problem of a row follows
`audio.on_bad_audio` through the stage's Rejects (stop at the first, or list it and go on).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

from asrflow.corpus.paths import confined
from asrflow.manifest import ManifestError, Rejects, Utterance


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row as the corpus files state it. `audio` is relative to the corpus folder; start/end are seconds into it
    (None: the whole file)."""

    utt_id: str
    audio: str
    speaker: str
    text: str
    origin: str
    start: float | None = None
    end: float | None = None


def safe_id(text: str) -> str:
    """Letters, digits and `_ - .` only: `spk 1/a b` → `spk_1_a_b`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def utt_id_for(file_name: str) -> str:
    """A stable id from the file's path inside the corpus: `wav/spk1/a b.wav` → `wav_spk1_a_b`."""
    return safe_id(str(Path(file_name).with_suffix("")))


def read_utf8(path: Path) -> str:
    """The text of a metadata file; one that is not UTF-8 stops the import naming the byte (a BOM is allowed)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 (byte {error.start}); re-save it as UTF-8") from None


def problem(entry: Entry, root: Path, seen: dict[str, str], present: dict[str, bool]) -> str:
    """Why `entry` cannot become an utterance ('' if it can). Its path is confined first: leaving the corpus folder
    raises whatever on_bad_audio says."""
    if not entry.audio:
        return "no audio file named"
    audio = confined(root, entry.audio, entry.origin)
    if entry.utt_id in seen:
        return f"duplicate utterance id {entry.utt_id!r} (first at {seen[entry.utt_id]})"
    seen[entry.utt_id] = entry.origin
    if entry.audio not in present:
        present[entry.audio] = audio.is_file()
    if not present[entry.audio]:
        return f"audio file {entry.audio} not found in {root}"
    if not entry.speaker.strip():
        return "empty speaker"
    if not entry.text.strip():
        return "empty transcript"
    if entry.start is not None and entry.end is not None and entry.end <= entry.start:
        return f"segment ends ({entry.end} s) before it starts ({entry.start} s)"
    return ""


def admit(root: Path, entries: Iterable[Entry], rejects: Rejects) -> list[Utterance]:
    """The entries that pass every check, as utterances with audio paths under `root`; each other one goes to
    `rejects` with its reason."""
    utterances: list[Utterance] = []
    seen: dict[str, str] = {}
    present: dict[str, bool] = {}  # one stat per recording, however many segments it has
    for entry in entries:
        reason = problem(entry, root, seen, present)
        if reason:
            rejects.bad(entry, reason)
            continue
        utterances.append(
            Utterance(
                utt_id=entry.utt_id,
                audio=str(root / entry.audio),
                speaker=entry.speaker.strip(),
                text=entry.text,
                start=entry.start,
                end=entry.end,
                origin=entry.origin,
            )
        )
    return utterances
