"""Praat: `.TextGrid` files (anywhere under the corpus folder), each beside its recording (same stem, any audio
suffix libsndfile reads). Parsing is praatio's (`praatio.textgrid.openTextgrid`; long or short text format, UTF-8 or
UTF-16 as Praat writes them).

Every labelled interval of the chosen interval tier(s) becomes an utterance cut from the recording by its times:
`corpus.textgrid.tier` (a name, or a list), `tier_index` or `tier_pattern` (asrflow.corpus.tiers). An interval with an
empty label is no annotation in Praat (the gaps between utterances): it is skipped, not listed. Labels containing the
doubtful marker (`corpus.textgrid.doubtful`) are listed in the rejects.

Speaker: the row for (TextGrid file, tier) in the mapping file `corpus.textgrid.speakers` (a CSV
`textgrid_file,tier,speaker` inside the corpus folder), else the `speaker` group of `tier_pattern`; a TextGrid tier
holds no speaker of its own, so one of the two must name it.
"""

from __future__ import annotations

from pathlib import Path

from praatio import textgrid
from praatio.data_classes.interval_tier import IntervalTier

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

OPTION = "corpus.textgrid"
SUFFIX = ".textgrid"  # Praat writes .TextGrid; matched without regard to case
NO_RECORDING = f"no recording: no audio file named like the TextGrid ({', '.join(AUDIO_SUFFIXES)})"


def read_textgrid(path: Path) -> textgrid.Textgrid:
    raw = path.read_bytes()
    if not raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 (with its byte-order mark) is Praat's other encoding
        read_utf8(path)
    try:
        return textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as error:  # praatio raises assorted errors for text it cannot parse
        raise ManifestError(f"{path}: not a readable TextGrid ({error}); open and save it again in Praat") from None


def tier_speaker(rel: str, tier: str, named: str, speakers: dict[tuple[str, str], str]) -> str:
    speaker = (speakers.get(mapping_key(rel, tier)) or named).strip()
    if not speaker:
        raise ManifestError(
            f"{rel}: no speaker for tier {tier!r}: a TextGrid names none, so add `{rel},{tier},<speaker>` to the "
            f"{OPTION}.speakers mapping, or choose tiers with {OPTION}.tier_pattern and a (?P<speaker>...) group"
        )
    return speaker


def tier_entries(
    rel: str, tier: IntervalTier, speaker: str, audio: str, *, doubtful: str, rejects: Rejects
) -> list[Entry]:
    rows = []
    stem = safe_id(str(Path(rel).with_suffix("")))
    for start, end, label in tier.entries:
        start_ms, end_ms = round(start * 1000), round(end * 1000)
        entry = Entry(
            utt_id=f"{stem}_{safe_id(tier.name)}_{start_ms}",
            audio=audio,
            speaker=speaker,
            text=label,
            origin=f"{rel}:{tier.name}:{start_ms}-{end_ms}ms",
            start=start,
            end=end,
        )
        if keep_annotation(entry, doubtful, OPTION, rejects, NO_RECORDING):
            rows.append(entry)
    return rows


def file_entries(
    root: Path, path: Path, choice: TierChoice, speakers: dict[tuple[str, str], str], *, doubtful: str, rejects: Rejects
) -> list[Entry]:
    rel = path.relative_to(root).as_posix()
    grid = read_textgrid(confined(root, rel, rel))  # a symlink out of the corpus folder is refused too
    picked = select_tiers(choice, grid.tierNames, {}, str(path))
    audio = audio_beside(root, rel)
    rows = []
    for name, named in picked.items():
        tier = grid.getTier(name)
        if not isinstance(tier, IntervalTier):
            raise ManifestError(f"{path}: tier {name!r} is a point tier; {OPTION} needs interval tiers")
        rows += tier_entries(
            rel, tier, tier_speaker(rel, name, named, speakers), audio, doubtful=doubtful, rejects=rejects
        )
    return rows


def import_textgrid(
    root: Path,
    rejects: Rejects,
    *,
    tier: str | list[str] | None = None,
    tier_index: int | None = None,
    tier_pattern: str | None = None,
    speakers: str | None = None,
    doubtful: str = "??",
) -> list[Utterance]:
    choice = tier_choice(OPTION, tier, tier_index, tier_pattern)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == SUFFIX and p.is_file())
    if not files:
        raise ManifestError(f"{root}: no .TextGrid files; a TextGrid corpus is .TextGrid files beside their recordings")
    mapping = read_speakers(root, speakers, "textgrid_file", OPTION)
    rows = [
        entry
        for path in files
        for entry in file_entries(root, path, choice, mapping, doubtful=doubtful, rejects=rejects)
    ]
    return admit(root, rows, rejects)
