"""Metadata tables (audiofolder's metadata.csv, Common Voice's tsv) parsed as CSV over the whole file, never line by
line: a quoted cell may hold a line break (Excel writes one for Alt+Enter), the delimiter or a doubled `""`.

The file is read as read_utf8 reads it (a BOM dropped; CRLF and CR read as "\\n", in a cell too). The delimiter is the
one of `delimiters` that makes the header line hold the required columns: those names never contain a delimiter, so
exactly one fits any real header, whatever the transcripts below it hold (csv.Sniffer guesses from the rows, and a
transcript full of commas can fool it). A row whose cells are all blank (Excel's trailing `;;`) is no row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from asrflow.corpus.entries import read_utf8
from asrflow.manifest import ManifestError

# Excel writes `,`, or `;` where the locale's decimal mark is a comma; its "Unicode text" and Common Voice use tabs.
DELIMITERS = (",", ";", "\t")

Row = tuple[int, dict[str, str]]  # the line the row starts on (1: the header), and its cells by column


def _stream(text: str) -> io.StringIO:
    # newline="": the parser, not a line splitter, decides where a row ends (a quoted cell may hold "\n").
    return io.StringIO(text, newline="")


def _header(text: str, delimiter: str, quoting: int) -> list[str]:
    # Lenient: a header split at the wrong delimiter may be malformed CSV, and is only compared with the columns.
    return next(csv.reader(_stream(text), delimiter=delimiter, quoting=quoting), [])


def _delimiter(
    path: Path, text: str, columns: Sequence[str], *, what: str, delimiters: Sequence[str], quoting: int
) -> str:
    missing = {d: [c for c in columns if c not in _header(text, d, quoting)] for d in delimiters}
    fits = [d for d in delimiters if not missing[d]]
    if len(fits) > 1:
        raise ManifestError(
            f"{path}: its header line holds the columns {list(columns)} whether split at {fits[0]!r} or at "
            f"{fits[1]!r}; separate its cells by one of them only"
        )
    if not fits:
        closest = min(delimiters, key=lambda d: len(missing[d]))
        separated = f", separated by one of {' '.join(map(repr, delimiters))}" if len(delimiters) > 1 else ""
        raise ManifestError(
            f"{path}: missing column(s) {missing[closest]}; {what} needs {list(columns)} in its header line{separated}"
        )
    return fits[0]


def _cells(path: Path, line: int, header: list[str], cells: list[str]) -> dict[str, str]:
    if len(cells) > len(header):
        # Silently shifting cells would give a speaker id half a transcript.
        raise ManifestError(
            f"{path}:{line}: {len(cells)} cells for {len(header)} columns; quote the cell that holds the delimiter "
            f'("ŋa; ta"), or remove the extra cells'
        )
    return dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))


def read_table(
    path: Path,
    columns: Sequence[str],
    *,
    what: str,
    delimiters: Sequence[str] = DELIMITERS,
    quoting: int = csv.QUOTE_MINIMAL,
) -> list[Row]:
    """The rows of the table at `path` whose header holds `columns` (`what` names the table in errors), each with the
    line it starts on; cells missing at a row's end are ''. Malformed CSV (a quote left open) stops the import."""
    text = read_utf8(path)
    delimiter = _delimiter(path, text, columns, what=what, delimiters=delimiters, quoting=quoting)
    # Strict: an unclosed quote would otherwise swallow every row after it into one cell.
    reader = csv.reader(_stream(text), delimiter=delimiter, quoting=quoting, strict=True)
    rows: list[Row] = []
    start = 1
    try:
        header = next(reader)  # _delimiter found it
        start = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((start, _cells(path, start, header, cells)))
            start = reader.line_num + 1
    except csv.Error as error:
        raise ManifestError(
            f"{path}:{reader.line_num}: not valid CSV ({error}, in the row from line {start}); close the quote of a "
            f'quoted cell and double each quote inside it ("she said ""ŋa""")'
        ) from None
    return rows
