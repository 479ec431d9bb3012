"""ELAN: `.eaf` annotation files (anywhere under the corpus folder) with their long recordings.

Every annotation of the chosen tier(s) (`corpus.elan.tier`: a name, or a list of names for one tier per speaker)
becomes an utterance cut from the recording by its times; `resample` does the cutting. Parsing is pympi-ling's
(`pympi.Elan.Eaf`).

- Speaker: the row for (eaf file, tier) in the mapping file `corpus.elan.speakers` (a CSV `eaf_file,tier,speaker`
  inside the corpus folder, eaf_file relative to it) if given, else the tier's PARTICIPANT attribute.
- Recording: the eaf's linked audio (its RELATIVE_MEDIA_URL, relative to the eaf, which must stay inside the corpus
  folder; the absolute MEDIA_URL is never followed), else an audio file with the eaf's stem beside it. The media's
  TIME_ORIGIN (ms) shifts every annotation, as in ELAN.
"""

from __future__ import annotations

import csv
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

from pympi.Elan import Eaf

from asrflow.config import ParamsError
from asrflow.corpus.entries import Entry, admit, read_utf8, safe_id
from asrflow.corpus.paths import confined
from asrflow.manifest import ManifestError, Rejects, Utterance

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
SPEAKER_COLUMNS = ("eaf_file", "tier", "speaker")


def read_eaf(path: Path) -> Eaf:
    """Parse with pympi; a file that is not UTF-8 (when it declares UTF-8 or nothing) or not EAF stops the import."""
    head = path.read_bytes()[:200].decode("ascii", errors="replace")
    declared = re.search(r"encoding=[\"']([A-Za-z0-9_.-]+)", head)
    if declared is None or declared.group(1).lower().replace("_", "-") in ("utf-8", "utf8"):
        read_utf8(path)
    try:
        return Eaf(str(path))
    except Exception as error:  # pympi raises a bare Exception for XML it cannot parse
        raise ManifestError(f"{path}: not a readable EAF file ({error}); open and re-save it in ELAN") from None


def read_speakers(root: Path, mapping: str | None) -> dict[tuple[str, str], str]:
    """{(eaf file relative to the corpus, tier): speaker} from the mapping CSV, or {} without one."""
    if not mapping:
        return {}
    path = confined(root, mapping, "corpus.elan.speakers")
    if not path.is_file():
        raise ManifestError(
            f"{path}: not found; corpus.elan.speakers names a CSV {list(SPEAKER_COLUMNS)} inside the corpus folder"
        )
    reader = csv.DictReader(read_utf8(path).splitlines())
    if tuple(reader.fieldnames or ()) != SPEAKER_COLUMNS:
        raise ManifestError(f"{path}: columns {reader.fieldnames}, expected {list(SPEAKER_COLUMNS)}")
    return {
        (posixpath.normpath(row["eaf_file"].strip()), row["tier"].strip()): row["speaker"].strip() for row in reader
    }


def media_path(root: Path, eaf_rel: str, eaf: Eaf) -> tuple[str, float]:
    """(recording path relative to the corpus folder, or '' if none is found; its time origin in seconds)."""
    folder = posixpath.dirname(eaf_rel)
    for media in eaf.media_descriptors:
        relative = unquote(media.get("RELATIVE_MEDIA_URL") or "").removeprefix("file:")
        if not relative or not relative.lower().endswith(AUDIO_SUFFIXES):
            continue  # video, or no relative link: libsndfile reads audio files only
        # Relative to the eaf; normalised so that `../media/x.wav` from a sub-folder stays legal inside the corpus.
        path = posixpath.normpath(posixpath.join(folder, relative))
        if confined(root, path, f"{eaf_rel}: RELATIVE_MEDIA_URL").is_file():
            return path, int(media.get("TIME_ORIGIN") or 0) / 1000
    for suffix in AUDIO_SUFFIXES:
        beside = str(Path(eaf_rel).with_suffix(suffix))
        if (root / beside).is_file():
            return beside, 0.0
    return "", 0.0


def tier_speaker(eaf: Eaf, eaf_rel: str, tier: str, speakers: dict[tuple[str, str], str]) -> str:
    speaker = speakers.get((eaf_rel, tier)) or eaf.get_parameters_for_tier(tier).get("PARTICIPANT", "").strip()
    if not speaker:
        raise ManifestError(
            f"{eaf_rel}: tier {tier!r} has no PARTICIPANT and corpus.elan.speakers has no row "
            f"for it; set the participant in ELAN or add `{eaf_rel},{tier},<speaker>` to the mapping"
        )
    return speaker


def tier_entries(
    eaf: Eaf, eaf_rel: str, tier: str, speaker: str, audio: str, offset: float, rejects: Rejects
) -> list[Entry]:
    rows = []
    stem = safe_id(str(Path(eaf_rel).with_suffix("")))
    for start_ms, end_ms, value, *_ in sorted(eaf.get_annotation_data_for_tier(tier), key=lambda a: a[0] or 0):
        aligned = start_ms is not None and end_ms is not None
        entry = Entry(
            utt_id=f"{stem}_{safe_id(tier)}_{start_ms}",
            audio=audio,
            speaker=speaker,
            text=value or "",
            origin=f"{eaf_rel}:{tier}:{start_ms}-{end_ms}ms",
            start=start_ms / 1000 + offset if aligned else None,
            end=end_ms / 1000 + offset if aligned else None,
        )
        if not aligned:
            rejects.bad(entry, "annotation is not time-aligned")
        elif not audio:
            rejects.bad(
                entry,
                "no recording: the eaf links no audio file inside the corpus folder and there is no "
                f"audio file named like it ({', '.join(AUDIO_SUFFIXES)})",
            )
        else:
            rows.append(entry)
    return rows


def file_entries(
    root: Path, eaf_path: Path, tiers: list[str], speakers: dict[tuple[str, str], str], rejects: Rejects
) -> list[Entry]:
    eaf_rel = eaf_path.relative_to(root).as_posix()
    eaf = read_eaf(confined(root, eaf_rel, eaf_rel))  # a symlink out of the corpus folder is refused too
    present = [t for t in tiers if t in eaf.tiers]
    if not present:
        raise ManifestError(f"{eaf_path}: no tier {tiers}; its tiers are {sorted(eaf.tiers)}: set corpus.elan.tier")
    audio, offset = media_path(root, eaf_rel, eaf)
    return [
        entry
        for tier in present
        for entry in tier_entries(
            eaf, eaf_rel, tier, tier_speaker(eaf, eaf_rel, tier, speakers), audio, offset, rejects
        )
    ]


def import_elan(
    root: Path, rejects: Rejects, tier: str | list[str] | None = None, speakers: str | None = None
) -> list[Utterance]:
    if not tier:
        raise ParamsError("corpus.elan.tier: name the tier (or tiers) whose annotations are the transcripts")
    eaf_files = sorted(root.rglob("*.eaf"))
    if not eaf_files:
        raise ManifestError(f"{root}: no .eaf files; an ELAN corpus is .eaf files with their recordings")
    mapping = read_speakers(root, speakers)
    tiers = [tier] if isinstance(tier, str) else list(tier)
    rows = [entry for path in eaf_files for entry in file_entries(root, path, tiers, mapping, rejects)]
    return admit(root, rows, rejects)
