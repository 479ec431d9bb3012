"""Kaldi data directory: `wav.scp`, `text`, `utt2spk`, and optionally `segments`.

- `wav.scp`: `<recording-id> <path>`, the path relative to the data directory. Kaldi also allows commands
  (`sox a.flac -t wav - |`) and archive offsets (`a.ark:123`): asrflow never executes commands, so both stop the
  import with the fix (write each recording to a file).
- `text`: `<utterance-id> <transcript>`; one utterance per line, in the order of the manifest.
- `utt2spk`: `<utterance-id> <speaker-id>`.
- `segments` (optional): `<utterance-id> <recording-id> <start> <end>` in seconds (`end` -1: to the end of the
  recording). Without it, each utterance id is its own recording id, as in Kaldi.
"""

from __future__ import annotations

import math
from pathlib import Path

from asrflow.corpus.entries import Entry, admit, read_utf8, safe_id
from asrflow.corpus.paths import confined
from asrflow.manifest import ManifestError, Rejects, Utterance

REQUIRED = ("wav.scp", "text", "utt2spk")


def read_table(path: Path, min_fields: int) -> dict[str, tuple[list[str], int]]:
    """`key rest…` lines → {key: (fields after the key, line number)}; a repeated key stops the import (Kaldi's
    validate_data_dir.sh refuses it too)."""
    table: dict[str, tuple[list[str], int]] = {}
    for line_no, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < min_fields:
            raise ManifestError(f"{path}:{line_no}: expected at least {min_fields} fields, got {line!r}")
        if fields[0] in table:
            raise ManifestError(
                f"{path}:{line_no}: {fields[0]!r} repeats line {table[fields[0]][1]}; keys must be unique"
            )
        table[fields[0]] = (fields[1:], line_no)
    return table


def recording_paths(root: Path) -> dict[str, str]:
    """{recording: path relative to the data directory}, every path checked to stay inside it."""
    wav_scp = root / "wav.scp"
    paths = {}
    for recording, (fields, line_no) in read_table(wav_scp, 2).items():
        path, where = " ".join(fields), f"{wav_scp}:{line_no}"
        if path.endswith("|"):
            raise ManifestError(
                f"{where}: {recording} is a command ({path!r}); asrflow never runs commands from a "
                f"corpus: write the audio to a file and put its path here"
            )
        if ".ark:" in path or path.startswith("ark:"):
            raise ManifestError(
                f"{where}: {recording} points into a Kaldi archive ({path!r}); write each recording "
                f"to its own audio file and put its path here"
            )
        confined(root, path, where)
        paths[recording] = path
    return paths


def read_segments(path: Path) -> dict[str, tuple[str, float, float | None, int]]:
    """{utterance: (recording, start, end or None, line)}; times are seconds (end -1: the recording's end)."""
    segments = {}
    for utt, (fields, line_no) in read_table(path, 4).items():
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise ManifestError(f"{path}:{line_no}: start and end must be seconds, got {fields[1:3]}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise ManifestError(f"{path}:{line_no}: start and end must be finite seconds >= 0, got {fields[1:3]}")
        segments[utt] = (fields[0], start, None if end == -1 else end, line_no)
    return segments


def transcripts(text_file: Path) -> list[tuple[str, str, int]]:
    """(utterance, transcript, line) in file order; repeated ids are kept here so that `admit` rejects them."""
    rows = []
    for line_no, line in enumerate(read_utf8(text_file).splitlines(), start=1):
        if line.strip():
            utt, *transcript = line.split(maxsplit=1)
            rows.append((utt, " ".join(transcript).strip(), line_no))
    return rows


def missing_link(utt: str, recording: str, paths: dict, speakers: dict, segments: dict | None) -> str:
    """Why an utterance of `text` cannot be placed ('' if every file has its line)."""
    if segments is not None and utt not in segments:
        return "no line in segments"
    if recording not in paths:
        return f"recording {recording!r} is not in wav.scp"
    if utt not in speakers:
        return "no speaker in utt2spk"
    return ""


def entries(root: Path, rejects: Rejects) -> list[Entry]:
    """One entry per utterance in `text`; an utterance another file lacks is a bad item, named by its line."""
    paths = recording_paths(root)
    speakers = read_table(root / "utt2spk", 2)
    segments = read_segments(root / "segments") if (root / "segments").is_file() else None
    lines = transcripts(root / "text")
    rows = []
    for utt, transcript, line_no in lines:
        recording, start, end, _ = segments[utt] if segments and utt in segments else (utt, None, None, 0)
        entry = Entry(
            utt_id=safe_id(utt),
            audio=paths.get(recording, ""),
            speaker=speakers[utt][0][0] if utt in speakers else "",
            text=transcript,
            origin=f"text:{line_no}",
            start=start,
            end=end,
        )
        reason = missing_link(utt, recording, paths, speakers, segments)
        if reason:
            rejects.bad(entry, reason)
        else:
            rows.append(entry)
    # Utterances other files list but `text` lacks are rejected once each (named by utt2spk's line if it has one).
    transcribed = {utt for utt, _, _ in lines}
    listed = {utt: f"segments:{seg[3]}" for utt, seg in (segments or {}).items()}
    listed |= {utt: f"utt2spk:{line_no}" for utt, (_, line_no) in speakers.items()}
    for utt, origin in listed.items():
        if utt not in transcribed:
            rejects.bad(Entry(utt, "", "", "", origin), "no transcript in text")
    return rows


def import_kaldi(root: Path, rejects: Rejects) -> list[Utterance]:
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise ManifestError(
            f"{root}: missing {missing}; a Kaldi data directory needs {list(REQUIRED)} (and optionally segments)"
        )
    rows = entries(root, rejects)
    return admit(root, rows, rejects)
