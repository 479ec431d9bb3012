"""The utterance manifest: the one record every stage reads and writes.

A manifest is a UTF-8 CSV with one row per utterance and these columns:

| column    | meaning                                                                                   |
|-----------|-------------------------------------------------------------------------------------------|
| utt_id    | unique id: letters of any script, marks, digits, `_ - .`, and `~digest` where names collide |
| audio     | path of the audio file, relative to the working directory (the repo root) or absolute      |
| speaker   | speaker id: folds are made of whole speakers                                                |
| text      | transcript (raw after import, normalised after `normalize`)                                 |
| duration  | seconds of audio at `audio` (empty before `resample` has measured it)                       |
| start     | seconds into `audio` where the utterance starts (empty: whole file); for ELAN/Kaldi segments |
| end       | seconds into `audio` where it ends (empty: whole file)                                       |
| origin    | where the row came from (`metadata.csv:12`), so errors can name the file and row            |

Optional fields are optional because whole-file corpora (audiofolder, Common Voice) have no segment times and nothing
is measured before resampling.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from asrflow.errors import AsrflowError
from asrflow.io import atomic_path


class ManifestError(AsrflowError):
    """A manifest that is missing, malformed, or inconsistent; the message names the file, the row and the fix."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    utt_id: str
    audio: str
    speaker: str
    text: str
    duration: float | None = None
    start: float | None = None
    end: float | None = None
    origin: str = ""

    def replace(self, **changes: object) -> Utterance:
        return dataclasses.replace(self, **changes)


COLUMNS = [f.name for f in dataclasses.fields(Utterance)]
REQUIRED = ["utt_id", "audio", "speaker", "text"]
_FLOATS = {"duration", "start", "end"}


def _parse_float(value: str, column: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ManifestError(f"{where}: column {column!r} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ManifestError(f"{where}: column {column!r} must be a finite number >= 0, got {value!r}")
    return number


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read and validate a manifest; every error names the file and row."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; run the stage that writes it first")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {missing}; a manifest needs {REQUIRED}")
        rows = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            values = {c: (row.get(c) or "") for c in COLUMNS}
            for column in REQUIRED:
                if column != "text" and not values[column].strip():
                    raise ManifestError(f"{where}: empty {column!r}")
            utt_id = values["utt_id"]
            if utt_id in seen:
                raise ManifestError(f"{where}: duplicate utt_id {utt_id!r} (first on line {seen[utt_id]})")
            seen[utt_id] = line
            floats = {c: _parse_float(values[c], c, where) for c in _FLOATS}
            rows.append(Utterance(**{**values, **floats}))
    return rows


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for utt in utterances:
                writer.writerow([_format(getattr(utt, c)) for c in COLUMNS])


def total_seconds(utterances: Iterable[Utterance]) -> float:
    return float(sum(u.duration or 0.0 for u in utterances))


# --- rejects: every item a stage leaves out, with the reason (kept + rejected = input) ---------------------------

REJECT_COLUMNS = ["stage", "utt_id", "audio", "origin", "reason"]


class BadItemError(ManifestError):
    """A broken input item (undecodable audio, missing file, empty transcript…) under `audio.on_bad_audio: error`."""


@dataclasses.dataclass(frozen=True)
class Rejected:
    stage: str
    utt_id: str
    audio: str
    origin: str
    reason: str


class Item(Protocol):
    """What a rejects row names: an Utterance, or an importer's row before it becomes one."""

    utt_id: str
    audio: str
    origin: str


class Rejects:
    """The items one stage leaves out.

    `bad` is for broken items and follows `audio.on_bad_audio`: `error` stops at the first one, with a message naming
    its row, its file and the reason; `skip` lists it and goes on. `drop` is for items a setting excludes on purpose
    (e.g. longer than audio.max_seconds): always listed, never an error.
    """

    def __init__(self, stage: str, on_bad: str) -> None:
        self.stage, self.on_bad = stage, on_bad
        self.items: list[Rejected] = []

    def bad(self, item: Item, reason: str) -> None:
        if self.on_bad == "error":
            raise BadItemError(
                f"{item.origin or item.utt_id}: {reason} [{item.audio or 'no audio file'}]; stopped "
                f"because audio.on_bad_audio is 'error': fix this item, or set audio.on_bad_audio: "
                f"skip to list every bad item in the {self.stage} stage's rejects file and go on"
            )
        self.drop(item, reason)

    def drop(self, item: Item, reason: str) -> None:
        self.items.append(Rejected(self.stage, item.utt_id, item.audio, item.origin, reason))

    def write(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(REJECT_COLUMNS)
                writer.writerows([getattr(r, c) for c in REJECT_COLUMNS] for r in self.items)


def read_rejects(path: str | Path) -> list[Rejected]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: rejects file not found; run the stage that writes it first")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != REJECT_COLUMNS:
            raise ManifestError(f"{path}: columns {reader.fieldnames}, expected {REJECT_COLUMNS}")
        return [Rejected(**row) for row in reader]
