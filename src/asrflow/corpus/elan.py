"""ELAN: `.eaf` annotation files (anywhere under the corpus folder) with their long recordings.

Every annotation of the chosen tier(s) becomes an utterance cut from the recording by its times; `resample` does the
cutting. Parsing is pympi-ling's (`pympi.Elan.Eaf`). The tiers: `corpus.elan.tier` (a name, or a list of names for
one tier per speaker), `tier_index`, `tier_pattern` or `tier_type` (its linguistic type); empty and doubtful
(`corpus.elan.doubtful`) annotations are listed in the rejects (asrflow.corpus.tiers).

- Speaker: the row for (eaf file, tier) in the mapping file `corpus.elan.speakers` (a CSV `eaf_file,tier,speaker`
  inside the corpus folder, eaf_file relative to it) if given, else the `speaker` group of `tier_pattern`, else the
  tier's PARTICIPANT attribute.
- Recording: the eaf's linked audio (its RELATIVE_MEDIA_URL, relative to the eaf, which must stay inside the corpus
  folder; the absolute MEDIA_URL is never followed), else an audio file with the eaf's stem beside it. The media's
  TIME_ORIGIN (ms) shifts every annotation, as in ELAN.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

from pympi.Elan import Eaf

from asrflow.corpus.entries import Entry, admit, read_utf8, safe_id
from asrflow.corpus.paths import confined
from asrflow.corpus.tiers import (
    AUDIO_SUFFIXES,
    TierChoice,
    audio_beside,
    keep_annotation,
    mapping_key,
    read_speakers,
    select_tiers,
    tier_choice,
)
from asrflow.manifest import ManifestError, Rejects, Utterance

OPTION = "corpus.elan"
NO_RECORDING = (
    "no recording: the eaf links no audio file inside the corpus folder and there is no "
    f"audio file named like it ({', '.join(AUDIO_SUFFIXES)})"
)


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
    return audio_beside(root, eaf_rel), 0.0


def tier_speaker(eaf: Eaf, eaf_rel: str, tier: str, named: str, speakers: dict[tuple[str, str], str]) -> str:
    """The mapping file's speaker for the tier, else the one its name gives (tier_pattern), else its PARTICIPANT."""
    speaker = (
        speakers.get(mapping_key(eaf_rel, tier)) or named or eaf.get_parameters_for_tier(tier).get("PARTICIPANT", "")
    )
    if not speaker.strip():
        raise ManifestError(
            f"{eaf_rel}: tier {tier!r} has no PARTICIPANT and corpus.elan.speakers has no row "
            f"for it; set the participant in ELAN or add `{eaf_rel},{tier},<speaker>` to the mapping"
        )
    return speaker.strip()


def tier_entries(
    eaf: Eaf, eaf_rel: str, tier: str, speaker: str, recording: tuple[str, float], *, doubtful: str, rejects: Rejects
) -> list[Entry]:
    rows = []
    audio, offset = recording
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
        elif keep_annotation(entry, doubtful, OPTION, rejects, NO_RECORDING):
            rows.append(entry)
    return rows


def file_entries(
    root: Path,
    eaf_path: Path,
    choice: TierChoice,
    speakers: dict[tuple[str, str], str],
    *,
    doubtful: str,
    rejects: Rejects,
) -> list[Entry]:
    eaf_rel = eaf_path.relative_to(root).as_posix()
    eaf = read_eaf(confined(root, eaf_rel, eaf_rel))  # a symlink out of the corpus folder is refused too
    in_order = sorted(eaf.tiers, key=lambda name: eaf.tiers[name][3])  # pympi keeps each tier's position
    types = {name: eaf.tiers[name][2].get("LINGUISTIC_TYPE_REF", "") for name in in_order}
    picked = select_tiers(choice, in_order, types, str(eaf_path))
    recording = media_path(root, eaf_rel, eaf)
    return [
        entry
        for tier, named in picked.items()
        for entry in tier_entries(
            eaf,
            eaf_rel,
            tier,
            tier_speaker(eaf, eaf_rel, tier, named, speakers),
            recording,
            doubtful=doubtful,
            rejects=rejects,
        )
    ]


def import_elan(
    root: Path,
    rejects: Rejects,
    *,
    tier: str | list[str] | None = None,
    tier_index: int | None = None,
    tier_pattern: str | None = None,
    tier_type: str | None = None,
    speakers: str | None = None,
    doubtful: str = "??",
) -> list[Utterance]:
    choice = tier_choice(OPTION, tier, tier_index, tier_pattern, tier_type)
    eaf_files = sorted(root.rglob("*.eaf"))
    if not eaf_files:
        raise ManifestError(f"{root}: no .eaf files; an ELAN corpus is .eaf files with their recordings")
    mapping = read_speakers(root, speakers, "eaf_file", OPTION)
    rows = [
        entry
        for path in eaf_files
        for entry in file_entries(root, path, choice, mapping, doubtful=doubtful, rejects=rejects)
    ]
    return admit(root, rows, rejects)
