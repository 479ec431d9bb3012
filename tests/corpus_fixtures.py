"""Small corpora in every import format, written from a list of rows: real audio (soundfile), real ELAN files (pympi).

A Row is one utterance as a corpus would state it. Its `path` (when given) is written verbatim where the format names
audio (metadata.csv file_name, the tsv's path, wav.scp, the eaf's RELATIVE_MEDIA_URL), so tests can plant `../` or
absolute paths; `audio=False` leaves its audio file unwritten (a missing file).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from praatio.data_classes.interval_tier import IntervalTier
from praatio.textgrid import Textgrid
from praatio.utilities.constants import Interval
from pympi.Elan import Eaf

GAP_SECONDS = 0.4  # silence between utterances in a long (Kaldi segments / ELAN) recording


def tone(seconds: float, rate: int = 16000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@dataclasses.dataclass
class Row:
    utt: str
    speaker: str
    text: str
    samples: np.ndarray = dataclasses.field(default_factory=lambda: tone(1.0))
    rate: int = 16000
    path: str | None = None
    audio: bool = True


def _csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(
            handle,
            delimiter=delimiter,
            lineterminator="\n",
            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        )
        writer.writerows(rows)


def _write(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate)


def audiofolder(root: Path, rows: list[Row]) -> dict:
    table = [["file_name", "transcription", "speaker_id"]]
    for row in rows:
        name = row.path or f"wav/{row.utt}.wav"
        if row.audio and row.path is None:
            _write(root / name, row.samples, row.rate)
        table.append([name, row.text, row.speaker])
    _csv(root / "metadata.csv", table)
    return {"format": "audiofolder"}


def commonvoice(root: Path, rows: list[Row]) -> dict:
    """Common Voice ships mp3 clips and a tab-separated table with many more columns than asrflow reads."""
    table = [["client_id", "path", "sentence_id", "sentence", "up_votes", "down_votes", "age", "gender"]]
    for i, row in enumerate(rows):
        name = row.path or f"{row.utt}.mp3"
        if row.audio and row.path is None:
            (root / "clips").mkdir(parents=True, exist_ok=True)
            sf.write(root / "clips" / name, row.samples, row.rate, format="MP3")
        table.append([row.speaker, name, str(i), row.text, "2", "0", "", ""])
    _csv(root / "validated.tsv", table, delimiter="\t")
    return {"format": "commonvoice", "commonvoice": {"tsv": "validated.tsv"}}


def long_recordings(rows: list[Row]) -> dict[str, tuple[np.ndarray, int, list[tuple[Row, float, float]]]]:
    """Per speaker: their rows' audio joined with silent gaps (one rate per speaker), and each row's (start, end)."""
    joined: dict[str, tuple[list[np.ndarray], int, list[tuple[Row, float, float]]]] = {}
    for row in rows:
        parts, rate, times = joined.setdefault(row.speaker, ([], row.rate, []))
        start = sum(len(p) for p in parts) / rate + GAP_SECONDS
        parts += [np.zeros(int(GAP_SECONDS * rate), np.float32), row.samples]
        times.append((row, round(start, 3), round(start + len(row.samples) / rate, 3)))
    return {
        s: (np.concatenate([*parts, np.zeros(int(GAP_SECONDS * rate), np.float32)]), rate, times)
        for s, (parts, rate, times) in joined.items()
    }


def kaldi(root: Path, rows: list[Row], segmented: bool = True) -> dict:
    """A Kaldi data dir. Segmented: one flac per speaker and a segments file; else one wav per utterance."""
    text = [[row.utt, row.text] for row in rows]
    utt2spk = [[row.utt, row.speaker] for row in rows]
    scp, segments = [], []
    if segmented:
        for speaker, (samples, rate, times) in long_recordings(rows).items():
            _write(root / f"audio/{speaker}.flac", samples, rate)
            scp.append([speaker, f"audio/{speaker}.flac"])
            segments += [[row.utt, speaker, f"{start:.3f}", f"{end:.3f}"] for row, start, end in times]
        _csv(root / "segments", segments, delimiter=" ")
    else:
        for row in rows:
            name = row.path or f"audio/{row.utt}.wav"
            if row.audio and row.path is None:
                _write(root / name, row.samples, row.rate)
            scp.append([row.utt, name])
    _csv(root / "wav.scp", scp, delimiter=" ")
    (root / "text").write_text("".join(f"{u} {t}\n" for u, t in text), encoding="utf-8")
    _csv(root / "utt2spk", utt2spk, delimiter=" ")
    return {"format": "kaldi"}


def elan(root: Path, rows: list[Row], tier: str = "transcription", mapped: tuple[str, ...] = ()) -> dict:
    """One eaf per speaker, linked to that speaker's long wav. Speakers in `mapped` get no PARTICIPANT: their name
    comes from the speakers.csv mapping file instead."""
    mapping = [["eaf_file", "tier", "speaker"]]
    for speaker, (samples, rate, times) in long_recordings(rows).items():
        eaf = Eaf(author="asrflow-tests")
        eaf.add_tier(tier, part="" if speaker in mapped else speaker)
        for row, start, end in times:
            eaf.add_annotation(tier, int(start * 1000), int(end * 1000), row.text)
        linked = next((row.path for row, _, _ in times if row.path), None)
        eaf.add_linked_file(
            f"file:///elsewhere/{speaker}.wav", relpath=linked or f"./{speaker}.wav", mimetype="audio/x-wav"
        )
        eaf.remove_tier("default")
        eaf.to_file(str(root / f"{speaker}.eaf"))
        if linked is None:
            _write(root / f"{speaker}.wav", samples, rate)
        if speaker in mapped:
            mapping.append([f"{speaker}.eaf", tier, speaker])
    speakers = None
    if mapped:
        _csv(root / "speakers.csv", mapping)
        speakers = "speakers.csv"
    return {"format": "elan", "elan": {"tier": tier, "speakers": speakers}}


WRITERS: dict[str, Callable[[Path, list[Row]], dict]] = {
    "audiofolder": audiofolder,
    "commonvoice": commonvoice,
    "kaldi": kaldi,
    "elan": elan,
}


# Formats every test above does not take (no audio path of their own to plant): written by their own tests.


def textgrid(root: Path, rows: list[Row]) -> dict:
    """Praat: one long wav per speaker with a TextGrid beside it, whose interval tier `transcription@<speaker>` holds
    each row as a labelled interval (praatio writes it); the speaker comes from the tier's name."""
    for speaker, (samples, rate, times) in long_recordings(rows).items():
        _write(root / f"{speaker}.wav", samples, rate)
        grid = Textgrid()
        intervals = [Interval(start, end, row.text) for row, start, end in times]
        grid.addTier(IntervalTier(f"transcription@{speaker}", intervals, 0, len(samples) / rate))
        grid.save(str(root / f"{speaker}.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    return {"format": "textgrid", "textgrid": {"tier_pattern": "transcription@(?P<speaker>.+)"}}


def wav_bytes(row: Row) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, row.samples, row.rate, format="WAV")
    return buffer.getvalue()


def hf(root: Path, rows: list[Row], layout: str = "save_to_disk") -> dict:
    """A Hugging Face dataset written by `datasets` itself (no audio decoding: `Audio(decode=False)`): each row's wav
    held as bytes with its audiofolder path (`wav/<utt>.wav`), or, for a row with a `path`, only that path."""
    from datasets import Audio, Dataset

    table = {
        "audio": [
            {"bytes": None if row.path else wav_bytes(row), "path": row.path or f"wav/{row.utt}.wav"} for row in rows
        ],
        "transcription": [row.text for row in rows],
        "speaker_id": [row.speaker for row in rows],
    }
    dataset = Dataset.from_dict(table).cast_column("audio", Audio(decode=False))
    if layout == "parquet":
        (root / "data").mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    else:
        dataset.save_to_disk(str(root))
    return {"format": "hf"}
