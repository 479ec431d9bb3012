"""What the tier formats (ELAN `.eaf`, Praat `.TextGrid`) share: which tiers hold the transcripts, whose speech
each one is, and which annotations are left out on purpose.

Tiers are chosen by exactly one of: `tier` (a name, or a list of names), `tier_index` (the tier's position in its
file, 0 first), `tier_pattern` (a regular expression a tier's whole name matches; a named group `speaker` gives the
speaker id: `transcription@(?P<speaker>.+)` takes `transcription@amina` as amina's) or, for ELAN, `tier_type` (every
tier of that linguistic type).

Annotations left empty (segmented, not transcribed yet) and those containing the `doubtful` marker (default `??`,
so `???` too) are no utterances: each is listed in the import's rejects with that reason, never an error and never
dropped silently.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import unicodedata
from pathlib import Path

from asrflow.config import ParamsError
from asrflow.corpus.entries import Entry
from asrflow.corpus.paths import confined
from asrflow.corpus.tables import read_table
from asrflow.manifest import ManifestError, Rejects

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
SPEAKER_GROUP = "speaker"


@dataclasses.dataclass(frozen=True)
class TierChoice:
    """How one format's tiers are chosen (see the module docstring); `option` names its params section."""

    option: str
    names: tuple[str, ...] = ()
    index: int | None = None
    pattern: re.Pattern[str] | None = None
    type: str | None = None

    def describe(self) -> tuple[str, str]:
        """(the option's key, its value as messages show it)."""
        if self.names:
            return "tier", str(list(self.names))
        if self.index is not None:
            return "tier_index", str(self.index)
        if self.pattern is not None:
            return "tier_pattern", repr(self.pattern.pattern)
        return "tier_type", repr(self.type)


def tier_choice(
    option: str,
    tier: str | list[str] | None = None,
    tier_index: int | None = None,
    tier_pattern: str | None = None,
    tier_type: str | None = None,
) -> TierChoice:
    """The choice the params state; exactly one way must be set."""
    given = {
        "tier": bool(tier),
        "tier_index": tier_index is not None,
        "tier_pattern": bool(tier_pattern),
        "tier_type": bool(tier_type),
    }
    if sum(given.values()) != 1:
        ways = "tier, tier_index, tier_pattern" + (" or tier_type" if option == "corpus.elan" else "")
        stated = [key for key, value in given.items() if value]
        raise ParamsError(
            f"{option}: choose the transcript tiers one way ({ways}); "
            f"{'none is set' if not stated else 'got ' + ', '.join(stated)}"
        )
    pattern = None
    if tier_pattern:
        try:
            pattern = re.compile(tier_pattern)
        except re.error as error:
            raise ParamsError(f"{option}.tier_pattern: {tier_pattern!r} is no regular expression ({error})") from None
    names = (tier,) if isinstance(tier, str) else tuple(tier or ())
    return TierChoice(option, names, tier_index, pattern, tier_type)


def select_tiers(choice: TierChoice, tiers: list[str], types: dict[str, str], where: str) -> dict[str, str]:
    """{tier: speaker its name gives ('' if none)} of the file's `tiers` (in file order; `types`: each tier's
    linguistic type) that `choice` picks; none picked stops the import, naming the file's tiers."""
    if choice.names:
        picked = {name: "" for name in choice.names if name in tiers}
    elif choice.index is not None:
        picked = {tiers[choice.index]: ""} if choice.index < len(tiers) else {}
    elif choice.pattern is not None:
        matches = [(name, choice.pattern.fullmatch(name)) for name in tiers]
        picked = {name: (match.groupdict().get(SPEAKER_GROUP) or "") for name, match in matches if match}
    else:
        picked = {name: "" for name in tiers if types.get(name) == choice.type}
    if not picked:
        key, shown = choice.describe()
        known = [f"{name} ({types.get(name)})" for name in tiers] if choice.type else tiers
        wanted = shown if key == "tier" else f"with {key} {shown}"
        raise ManifestError(f"{where}: no tier {wanted}; its tiers are {known}: set {choice.option}.{key}")
    return picked


def read_speakers(root: Path, mapping: str | None, file_column: str, option: str) -> dict[tuple[str, str], str]:
    """{(file relative to the corpus, tier): speaker} from the mapping CSV `file_column,tier,speaker`, or {}."""
    if not mapping:
        return {}
    columns = (file_column, "tier", "speaker")
    path = confined(root, mapping, f"{option}.speakers")
    if not path.is_file():
        raise ManifestError(
            f"{path}: not found; {option}.speakers names a CSV {list(columns)} inside the corpus folder"
        )
    return {
        mapping_key(row[file_column], row["tier"]): row["speaker"].strip()
        for _, row in read_table(path, columns, what=f"the {option}.speakers mapping")
    }


def mapping_key(file: str, tier: str) -> tuple[str, str]:
    """How a speakers mapping names (file, tier), and how a file on disk is looked up in it: as paths.CorpusFiles
    finds audio, the same in any Unicode-equivalent spelling (NFC; a copy from macOS is NFD) and with `\\` as `/`."""
    file = posixpath.normpath(file.strip().replace("\\", "/"))
    return unicodedata.normalize("NFC", file), unicodedata.normalize("NFC", tier.strip())


def audio_beside(root: Path, relative: str) -> str:
    """The audio file with the same stem as `relative` (relative to the corpus folder), or '' if there is none."""
    for suffix in AUDIO_SUFFIXES:
        beside = str(Path(relative).with_suffix(suffix))
        if (root / beside).is_file():
            return beside
    return ""


def left_out(entry: Entry, doubtful: str, option: str, rejects: Rejects) -> bool:
    """Whether `entry`'s annotation is no utterance on purpose (listed in `rejects` with why); `option`: the params
    section that sets the marker."""
    if not entry.text.strip():
        rejects.drop(entry, "empty transcript: the annotation is empty (not transcribed yet)")
        return True
    if doubtful and doubtful in entry.text:
        rejects.drop(entry, f"doubtful: the annotation contains the marker {doubtful!r} ({option}.doubtful)")
        return True
    return False


def keep_annotation(entry: Entry, doubtful: str, option: str, rejects: Rejects, no_recording: str) -> bool:
    """Whether the time-aligned annotation `entry` is an utterance: not left out on purpose (left_out) and with a
    recording; one without a recording is listed in `rejects` as bad, `no_recording` saying why."""
    if left_out(entry, doubtful, option, rejects):
        return False
    if not entry.audio:
        rejects.bad(entry, no_recording)
        return False
    return True
