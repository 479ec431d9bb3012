"""What every importer shares: a corpus row before it is checked (Entry), and the checks that turn rows into
utterances (admit), so that every format rejects the same problems with the same reasons.

A path that leaves the corpus folder is always an error (see paths.confined); every other problem of a row follows
`audio.on_bad_audio` through the stage's Rejects (stop at the first, or list it and go on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from asrflow.corpus.paths import CorpusFiles, confined
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


# What an id keeps of a name: Unicode letters, combining marks and digits (IPA, Cyrillic, any script) and `_ - .`.
# Every other run of characters becomes one `_`. An id names files too (resampled audio, cached features), so it is
# kept well under the 255 bytes a file name may have.
ID_PUNCTUATION = frozenset("_-.")
MAX_ID_BYTES = 120
# Marks the digest that keeps apart names an id would merge; never a character `safe_id` keeps, so a digested id can
# never equal a readable one.
DIGEST_MARK = "~"
DIGEST_CHARACTERS = 10


def _kept(character: str) -> bool:
    return character in ID_PUNCTUATION or unicodedata.category(character)[0] in "LMN"


def safe_id(text: str) -> str:
    """A readable, file-name-safe id for `text` (NFC): `spk 1/a b` → `spk_1_a_b`, `сказка/ŋa` → `сказка_ŋa`.
    Distinct names can map to one id: `unique_ids` keeps them apart."""
    pieces, mapped = [], False
    for character in unicodedata.normalize("NFC", text):
        if _kept(character):
            pieces.append(character)
            mapped = False
        elif not mapped:
            pieces.append("_")
            mapped = True
    return "".join(pieces).strip("_")


def utt_id_for(file_name: str) -> str:
    """A stable id from the file's path inside the corpus: `wav/spk1/a b.wav` → `wav_spk1_a_b` (`\\` as `/`)."""
    return safe_id(str(PurePosixPath(file_name.replace("\\", "/")).with_suffix("")))


def _digested(readable: str, identity: str) -> str:
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_CHARACTERS]
    budget = MAX_ID_BYTES - len(DIGEST_MARK) - DIGEST_CHARACTERS
    prefix = readable.encode()[:budget].decode(errors="ignore")
    return f"{prefix}{DIGEST_MARK}{digest}"


def identity(utt: Utterance) -> str:
    """What makes an utterance this one: its recording (the path params.yaml and the corpus name) and its span."""
    return f"{utt.audio}\0{utt.start}\0{utt.end}"


def unique_ids(utterances: list[Utterance]) -> list[Utterance]:
    """The utterances with ids that are unique by construction: each keeps its readable id unless another utterance
    has the same one (distinct names that `safe_id` maps alike, a.wav beside a.flac, the same name in two sources)
    or it is too long for a file name; then every one of them gets `~` and a digest of its identity. Stable across
    runs and machines: the ids follow from the corpus' names alone."""
    count = Counter(utt.utt_id for utt in utterances)
    return [
        utt
        if count[utt.utt_id] == 1 and utt.utt_id and len(utt.utt_id.encode()) <= MAX_ID_BYTES
        else utt.replace(utt_id=_digested(utt.utt_id, identity(utt)))
        for utt in utterances
    ]


def refused_name(name: str, where: str) -> None:
    """A name no file-name-safe id or workflow engine can carry (a line break, any control character) stops the
    import naming it: it is neither audio to reject nor a name to guess at."""
    control = [character for character in name if unicodedata.category(character) == "Cc"]
    if control:
        raise ManifestError(
            f"{where}: the file name {name!r} holds the control character(s) {sorted(set(control))}; rename the "
            f"file (and its row) without line breaks, tabs or other control characters"
        )


def read_utf8(path: Path) -> str:
    """The text of a metadata file; one that is not UTF-8 stops the import naming the byte (a BOM is allowed).
    Every CRLF and CR reads as "\n" (universal newlines), inside a quoted cell too: one line break, however written."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 (byte {error.start}); re-save it as UTF-8") from None


def problem(entry: Entry, root: Path, files: CorpusFiles, seen: dict[tuple, str]) -> tuple[str, str]:
    """(the entry's audio as it is on disk, why it cannot become an utterance or ''). Its path is confined first:
    leaving the corpus folder raises whatever on_bad_audio says. A duplicate is the same audio (the same file and
    span) as an earlier row, however the rows spell its name."""
    if not entry.audio:
        return "", "no audio file named"
    refused_name(entry.audio, entry.origin)
    confined(root, entry.audio.replace("\\", "/"), entry.origin)
    audio, missing = files.locate(entry.audio)
    if missing:
        return "", missing
    confined(root, audio, entry.origin)  # the file found: a symlink out of the corpus folder is refused too
    span = (audio, entry.start, entry.end)
    if span in seen:
        return "", f"duplicate: the same audio ({audio}{_span_text(entry)}) as {seen[span]}"
    seen[span] = entry.origin
    if not entry.speaker.strip():
        return "", "empty speaker"
    if not entry.text.strip():
        return "", "empty transcript"
    if entry.start is not None and entry.end is not None and entry.end <= entry.start:
        return "", f"segment ends ({entry.end} s) before it starts ({entry.start} s)"
    return audio, ""


def _span_text(entry: Entry) -> str:
    return "" if entry.start is None and entry.end is None else f", {entry.start}-{entry.end} s"


def admit(root: Path, entries: Iterable[Entry], rejects: Rejects) -> list[Utterance]:
    """The entries that pass every check, as utterances with audio paths under `root` (as the files are spelt on
    disk); each other one goes to `rejects` with its reason. Ids are made unique across sources by `unique_ids`."""
    utterances: list[Utterance] = []
    files = CorpusFiles(root)
    seen: dict[tuple, str] = {}  # (audio, start, end) → the row that first named it
    for entry in entries:
        audio, reason = problem(entry, root, files, seen)
        if reason:
            rejects.bad(entry, reason)
            continue
        utterances.append(
            Utterance(
                utt_id=entry.utt_id,
                audio=str(root / audio),
                speaker=entry.speaker.strip(),
                text=entry.text,
                start=entry.start,
                end=entry.end,
                origin=entry.origin,
            )
        )
    return utterances
