"""Mozilla Common Voice layout: a `*.tsv` (validated.tsv, train.tsv, …) beside `clips/`.

Each row's `path` names its clip in `clips/`, `sentence` is the transcript and `client_id` the speaker (Common Voice's
one stable speaker key; folds are made of whole speakers). The tsv name is `corpus.commonvoice.tsv`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from asrflow.corpus.entries import Entry, admit, utt_id_for
from asrflow.corpus.paths import confined
from asrflow.corpus.tables import Row, read_table
from asrflow.manifest import ManifestError, Rejects, Utterance

COLUMNS = ("client_id", "path", "sentence")
CLIPS = "clips"


def _read_rows(tsv: Path) -> list[Row]:
    # Common Voice quotes nothing: a `"` inside a sentence is text (csv's default quoting would swallow the tabs).
    return read_table(tsv, COLUMNS, what="a Common Voice tsv", delimiters=("\t",), quoting=csv.QUOTE_NONE)


def entries(tsv: Path) -> list[Entry]:
    rows = []
    for line, row in _read_rows(tsv):
        clip = row["path"].strip()
        # `path` is relative to clips/: joining keeps an absolute or ../ path visible to the corpus-folder check.
        audio = str(Path(CLIPS) / clip) if clip else ""
        rows.append(
            Entry(
                utt_id=utt_id_for(clip),
                audio=audio,
                speaker=row["client_id"],
                text=row["sentence"],
                origin=f"{tsv.name}:{line}",
            )
        )
    return rows


def import_commonvoice(root: Path, rejects: Rejects, tsv: str) -> list[Utterance]:
    table = confined(root, tsv, "corpus.commonvoice.tsv")
    if not table.is_file():
        raise ManifestError(
            f"{table}: not found; a Common Voice corpus needs the tsv named by corpus.commonvoice.tsv "
            f"(validated.tsv, train.tsv, …) and a {CLIPS}/ folder"
        )
    rows = entries(table)
    if not rows:
        raise ManifestError(f"{table}: no rows")
    return admit(root, rows, rejects)
