"""Hugging Face `datasets` on disk, read with pyarrow (no `datasets` needed, and none of its audio decoding):

- a `save_to_disk` folder: `state.json` + `dataset_info.json` + `data-*.arrow` (one dataset), or `dataset_dict.json`
  with one such folder per split;
- parquet files (`<split>-00000-of-00001.parquet`, as the Hub stores them) anywhere under the corpus folder.

Each row is one utterance: its audio column (`corpus.hf.audio_column`, default `audio`) is the `Audio` feature's
struct `{bytes, path}` (or a plain path), with the transcript and speaker in `text_column` / `speaker_column`. Audio
held in the table (`bytes`) is written, byte for byte, as one file per row into the import stage's audio folder
(its format read by libsndfile: bytes it cannot read are a bad item); a row with only a `path` names a file inside the
corpus folder, copied there too. Utterance ids: `id_column` if set, else the audio path as every format makes ids
(`wav/u1.wav` → `wav_u1`), else `<split>_<row>`. `corpus.hf.split` keeps one split (default: every split).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asrflow.config import ParamsError
from asrflow.corpus.entries import Entry, admit, safe_id, utt_id_for
from asrflow.corpus.paths import confined
from asrflow.corpus.tiers import AUDIO_SUFFIXES
from asrflow.manifest import ManifestError, Rejects, Utterance

OPTION = "corpus.hf"
BATCH_ROWS = 256  # rows decoded at a time: a table's audio is never all in memory


def tables(root: Path, split: str | None) -> list[tuple[str, Path]]:
    """(split, arrow or parquet file) of every table of the dataset, in a stable order."""
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        return [
            (name, table) for name in splits for _, table in tables(confined(root, name, "dataset_dict.json"), name)
        ]
    if (root / "state.json").is_file():
        state = json.loads((root / "state.json").read_text(encoding="utf-8"))
        name = state.get("_split") or split or "train"
        return [(name, confined(root, f["filename"], "state.json")) for f in state["_data_files"]]
    return [(p.stem.split("-")[0], p) for p in sorted(root.rglob("*.parquet"))]


def batches(path: Path, columns: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The table's rows, BATCH_ROWS at a time, with only `columns`; a missing column stops the import."""
    try:
        if path.suffix == ".parquet":
            table = pq.ParquetFile(path)
            schema, reader = table.schema_arrow, table.iter_batches(batch_size=BATCH_ROWS)
        else:  # save_to_disk writes Arrow's streaming format
            stream = pa.ipc.open_stream(pa.memory_map(str(path)))
            schema, reader = stream.schema, iter(stream)
    except (pa.ArrowException, OSError) as error:
        raise ManifestError(f"{path}: not a readable Arrow/parquet table ({error})") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ManifestError(f"{path}: no column(s) {missing}; its columns are {schema.names}: set {OPTION}.*_column")
    for batch in reader:
        yield batch.select(columns).to_pylist()


def audio_suffix(data: bytes, path: str) -> str:
    """The file suffix for audio `data` ('' if libsndfile cannot read it): the path's, else the format it finds."""
    suffix = Path(path).suffix.lower()
    try:
        found = sf.info(io.BytesIO(data)).format
    except (sf.LibsndfileError, RuntimeError):
        return ""
    return suffix if suffix in AUDIO_SUFFIXES else f".{found.lower()}"


def materialise(root: Path, audio: Any, audio_dir: Path, name: str, where: str) -> tuple[str, str]:
    """Write the row's audio as `name` + its suffix under `audio_dir`: (that path relative to audio_dir, '') or
    ('', the reason it cannot be)."""
    data, path = (audio.get("bytes"), audio.get("path") or "") if isinstance(audio, dict) else (None, audio or "")
    if data is None:
        if not path:
            return "", "no audio: neither bytes nor a path"
        source = confined(root, path, f"{where}: audio path")  # a path out of the corpus folder stops the import
        if not source.is_file():
            return "", f"audio file {path} not found in {root}"
        data = source.read_bytes()
    suffix = audio_suffix(data, path)
    if not suffix:
        return "", "audio bytes in no format libsndfile reads"
    target = audio_dir / f"{name}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return f"{name}{suffix}", ""


def row_id(row: dict[str, Any], id_column: str | None, audio: Any, split: str, number: int) -> str:
    if id_column:
        return safe_id(str(row[id_column] or ""))
    path = (audio.get("path") if isinstance(audio, dict) else audio) or ""
    return utt_id_for(path) if path else f"{split}_{number}"


def import_hf(
    root: Path,
    rejects: Rejects,
    *,
    audio_dir: Path | None = None,
    split: str | None = None,
    audio_column: str = "audio",
    text_column: str = "transcription",
    speaker_column: str = "speaker_id",
    id_column: str | None = None,
) -> list[Utterance]:
    if audio_dir is None:
        raise ParamsError(f"{OPTION}: the import stage needs --audio, the folder the dataset's audio is written to")
    found = [(name, path) for name, path in tables(root, split) if split is None or name == split]
    if not found:
        raise ManifestError(
            f"{root}: no {'split ' + repr(split) if split else 'table'}; a Hugging Face dataset on disk is a "
            "save_to_disk folder (state.json, dataset_dict.json) or *.parquet files"
        )
    columns = list(dict.fromkeys(c for c in (audio_column, text_column, speaker_column, id_column) if c))
    rows = []
    for table_number, (name, path) in enumerate(found):
        rel = path.relative_to(root).as_posix()
        number = 0
        for batch in batches(path, columns):
            for row in batch:
                audio = row[audio_column]
                entry = Entry(
                    utt_id=row_id(row, id_column, audio, name, number),
                    audio="",
                    speaker=str(row[speaker_column] or ""),
                    text=str(row[text_column] or ""),
                    origin=f"{rel}:{number}",
                )
                written, reason = materialise(root, audio, audio_dir, f"{table_number}/{number:06d}", entry.origin)
                if reason:
                    rejects.bad(entry, reason)
                else:
                    rows.append(dataclasses.replace(entry, audio=written))
                number += 1
    return admit(audio_dir, rows, rejects)
