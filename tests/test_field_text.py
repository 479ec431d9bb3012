"""Metadata and transcripts as field tools write them: an Excel metadata.csv (a BOM, CRLF, `;` or tab between cells,
a quoted cell holding a line break or a `""` escape, blank rows at the end) is read as CSV, cell by cell; invisible
format characters and odd spaces typed into transcripts are removed or made spaces, and the data report lists each."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import ROOT
from corpus_fixtures import tone

from asrflow import config, stages
from asrflow import data_report as data_report_stage
from asrflow.config import ParamsError
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.data_report import data_report
from asrflow.import_ import import_corpus
from asrflow.io import write_json
from asrflow.manifest import ManifestError, Rejects, Utterance, read_manifest, write_manifest
from asrflow.resample import resample
from asrflow.transcripts import grapheme_inventory, normalise

AUDIO = {"sample_rate": 16000, "min_seconds": 0.3, "max_seconds": 5.0, "on_bad_audio": "error", "too_long": "split"}
TEXT = config.defaults("text") | {"unicode": "NFC", "lowercase": True, "remove": ",.?!", "graphemes": []}

# As Excel saves "CSV UTF-8" in a locale whose decimal mark is a comma: a BOM, `;` between cells, CRLF after rows,
# a cell with a line break quoted (the break as typed: CRLF here), quotes doubled, and empty rows at the end.
EXCEL = (
    "\ufefffile_name;transcription;speaker_id\r\n"
    'story.wav;"first phrase\r\nsecond phrase";s1\r\n'
    'quote.wav;"she said ""ŋa"", twice";s2\r\n'
    "plain.wav;ta ka;s2\r\n"
    ";;\r\n"
    "\r\n"
    ";;\r\n"
)


def phrases(*seconds: float, pause: float = 0.8) -> np.ndarray:
    """Tones separated by silent pauses, like phrases of a long recording."""
    silence = np.zeros(int(pause * 16000), np.float32)
    return np.concatenate(
        [silence, *(np.concatenate([tone(s, hz=200 + 50 * i), silence]) for i, s in enumerate(seconds))]
    )


def corpus(root: Path, metadata: str, clips: dict[str, np.ndarray]) -> Path:
    """An audiofolder corpus: `metadata` written byte for byte (UTF-8) beside each clip."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_bytes(metadata.encode("utf-8"))
    for name, samples in clips.items():
        sf.write(root / name, samples, 16000)
    return root


def excel_corpus(root: Path) -> Path:
    return corpus(root, EXCEL, {"story.wav": phrases(3.0, 2.5), "quote.wav": tone(1.0), "plain.wav": tone(1.0)})


# --- metadata read as CSV -------------------------------------------------------------------------------------------


def test_excel_metadata_imports_cell_by_cell(tmp_path: Path) -> None:
    utterances = import_audiofolder(excel_corpus(tmp_path), Rejects("import", "error"))  # blank rows are no rows
    assert [(u.utt_id, u.text, u.speaker, u.origin) for u in utterances] == [
        ("story", "first phrase\nsecond phrase", "s1", "metadata.csv:2"),
        ("quote", 'she said "ŋa", twice', "s2", "metadata.csv:4"),  # the line its row starts on
        ("plain", "ta ka", "s2", "metadata.csv:5"),
    ]
    assert normalise(utterances[0].text, TEXT) == "first phrase second phrase", "the line break keeps words apart"


def test_a_line_break_in_a_cell_is_a_phrase_boundary_for_split(tmp_path: Path) -> None:
    utterances = import_audiofolder(excel_corpus(tmp_path / "corpus"), Rejects("import", "error"))
    write_manifest(tmp_path / "corpus.csv", utterances)  # the import's manifest keeps the break
    resample(read_manifest(tmp_path / "corpus.csv"), tmp_path / "out", AUDIO, cores=1)
    pieces = {u.origin: u.text for u in read_manifest(tmp_path / "out/manifest.csv")}
    assert (pieces["metadata.csv:2 line 1"], pieces["metadata.csv:2 line 2"]) == ("first phrase", "second phrase")


@pytest.mark.parametrize("line_break", ["\r\n", "\r", "\n"])
def test_every_line_break_in_a_cell_is_read_as_one_newline(tmp_path: Path, line_break: str) -> None:
    metadata = f'file_name,transcription,speaker_id{line_break}a.wav,"ta{line_break}ka",s1{line_break}'
    [utt] = import_audiofolder(corpus(tmp_path, metadata, {"a.wav": tone(1.0)}))
    assert utt.text == "ta\nka"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_delimiter_is_the_one_that_makes_the_header_hold_the_columns(tmp_path: Path, delimiter: str) -> None:
    """Commas, semicolons and tabs inside transcripts do not fool the choice: only the header decides."""
    cells = {",": '"ŋa, ta; ka\tx"', ";": "ŋa, ta, ka", "\t": "ŋa, ta; ka"}[delimiter]
    metadata = f"file_name{delimiter}transcription{delimiter}speaker_id\na.wav{delimiter}{cells}{delimiter}s1\n"
    [utt] = import_audiofolder(corpus(tmp_path, metadata, {"a.wav": tone(1.0)}))
    assert (utt.text, utt.speaker) == (cells.strip('"'), "s1")


def test_a_header_without_the_columns_names_what_is_missing(tmp_path: Path) -> None:
    corpus(tmp_path, "file_name;text;speaker_id\na.wav;ta;s1\n", {"a.wav": tone(1.0)})
    with pytest.raises(ManifestError, match=r"metadata\.csv: missing column\(s\) \['transcription'\]; .*separated by"):
        import_audiofolder(tmp_path)


def test_a_row_with_more_cells_than_columns_stops_the_import_naming_its_line(tmp_path: Path) -> None:
    """An unquoted `;` inside a transcript would otherwise shift the speaker id into the transcript's second half."""
    corpus(tmp_path, "file_name;transcription;speaker_id\na.wav;ta;s1\nb.wav;ŋa; ta;s1\n", {"a.wav": tone(1.0)})
    with pytest.raises(ManifestError, match=r"metadata\.csv:3: 4 cells for 3 columns; quote the cell"):
        import_audiofolder(tmp_path)


def test_an_unclosed_quote_stops_the_import_naming_its_line(tmp_path: Path) -> None:
    corpus(tmp_path, 'file_name,transcription,speaker_id\na.wav,"ta,s1\nb.wav,ka,s1\n', {"a.wav": tone(1.0)})
    with pytest.raises(ManifestError, match=r"metadata\.csv:3: .*unexpected end of data.*close the quote"):
        import_audiofolder(tmp_path)


def test_common_voice_tsv_with_a_bom_crlf_quotes_and_a_line_separator_in_a_sentence(tmp_path: Path) -> None:
    """Common Voice quotes nothing (a `"` is text); only CR/LF end its rows, not a U+2028 typed inside a sentence."""
    (tmp_path / "clips").mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / "clips" / name, tone(1.0), 16000)
    tsv = '\ufeffclient_id\tpath\tsentence\r\nc1\ta.wav\tshe said "ŋa\r\nc2\tb.wav\tta\u2028ka\r\n'
    (tmp_path / "validated.tsv").write_bytes(tsv.encode("utf-8"))
    utterances = import_corpus(
        {"format": "commonvoice", "path": str(tmp_path), "commonvoice": {"tsv": "validated.tsv"}},
        Rejects("import", "error"),
    )
    assert [(u.speaker, u.text, u.origin) for u in utterances] == [
        ("c1", 'she said "ŋa', "validated.tsv:2"),
        ("c2", "ta\u2028ka", "validated.tsv:3"),
    ]


# --- invisible characters and odd spaces in transcripts ------------------------------------------------------------

FORMAT_CHARACTERS = {
    "\u200e": "LEFT-TO-RIGHT MARK",
    "\u200f": "RIGHT-TO-LEFT MARK",
    "\u202a": "LEFT-TO-RIGHT EMBEDDING",
    "\u202b": "RIGHT-TO-LEFT EMBEDDING",
    "\u202c": "POP DIRECTIONAL FORMATTING",
    "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u2067": "RIGHT-TO-LEFT ISOLATE",
    "\u2069": "POP DIRECTIONAL ISOLATE",
    "\ufeff": "ZERO WIDTH NO-BREAK SPACE",  # a BOM inside a cell
    "\u00ad": "SOFT HYPHEN",
    "\u2060": "WORD JOINER",
    "\u200b": "ZERO WIDTH SPACE",
    "\u200d": "ZERO WIDTH JOINER",
    "\u200c": "ZERO WIDTH NON-JOINER",
}
ODD_SPACES = ["\u00a0", "\u202f", "\u2007", "\u2009", "\u2003", "\u3000"]


@pytest.mark.parametrize("character", list(FORMAT_CHARACTERS))
def test_invisible_format_characters_are_removed(character: str) -> None:
    assert normalise(f"{character}ŋa{character}tʃ ka{character}", TEXT) == "ŋatʃ ka"


@pytest.mark.parametrize("space", ODD_SPACES)
def test_odd_spaces_are_spaces(space: str) -> None:
    assert normalise(f"ŋa{space}tʃ{space}{space}ka", TEXT) == "ŋa tʃ ka"


def test_joiners_are_kept_when_text_declares_them() -> None:
    kept = {**TEXT, "keep_format_characters": ["\u200d", "\u200c"]}
    assert normalise("क्\u200dष मे\u200cरा\u200f", kept) == "क्\u200dष मे\u200cरा"
    assert normalise("क्\u200dष मे\u200cरा\u200f", TEXT) == "क्ष मेरा"


def test_only_format_characters_can_be_declared_kept() -> None:
    """An odd space becomes a space whatever the list says (CTC's word delimiter), and a letter is never removed."""
    with pytest.raises(ParamsError, match=r"\['U\+0061 LATIN SMALL LETTER A', 'U\+00A0 NO-BREAK SPACE'\] are not"):
        normalise("ta", {**TEXT, "keep_format_characters": ["a", "\u00a0", "\u200d"]})


def test_declared_graphemes_are_cleaned_like_the_transcripts() -> None:
    assert grapheme_inventory({**TEXT, "graphemes": ["t\u00adʃ", "k\u200dʼ"]}) == ["tʃ", "kʼ"]
    assert grapheme_inventory({**TEXT, "graphemes": ["k\u200dʼ"], "keep_format_characters": ["\u200d"]}) == ["k\u200dʼ"]


# --- the data report ------------------------------------------------------------------------------------------------

IMPORTED = [
    Utterance("u1", "u1.wav", "s1", "first phrase\nsecond\u200f phrase", 1.0, origin="metadata.csv:2"),
    Utterance("u2", "u2.wav", "s2", "ta\u00a0ka\u200f\u200f", 1.0, origin="metadata.csv:4"),
    Utterance("u3", "u3.wav", "s2", "क्\u200dष", 1.0, origin="metadata.csv:5"),
]


def folds(root: Path) -> Path:
    write_json(
        root / "folds.json",
        {
            "fold0": {"speakers": {"train": ["s2"], "dev": ["s2"], "test": ["s1"]}},
            "fold1": {"speakers": {"train": ["s1"], "dev": ["s1"], "test": ["s2"]}},
        },
    )
    return root


def normalised(text_cfg: dict) -> list[Utterance]:
    return [u.replace(text=normalise(u.text, text_cfg)) for u in IMPORTED]


def test_the_data_report_counts_line_breaks_and_lists_what_the_text_rule_changed(tmp_path: Path) -> None:
    text_cfg = {**TEXT, "keep_format_characters": ["\u200d"]}
    kept = frozenset(text_cfg["keep_format_characters"])
    table = data_report(normalised(text_cfg), folds(tmp_path / "folds"), 2, [], tmp_path, imported=IMPORTED, keep=kept)
    markdown = (tmp_path / "data_report.md").read_text(encoding="utf-8")
    assert "1 of 3 imported transcripts hold a line break" in markdown
    assert "| U+00A0 NO-BREAK SPACE | mapped to a space | 1 |" in markdown
    assert "| U+200D ZERO WIDTH JOINER | kept (text.keep_format_characters) | 1 |" in markdown
    assert "| U+200F RIGHT-TO-LEFT MARK | removed | 2 |" in markdown, "counted per transcript"
    rows = table[table.section == "imported"]
    assert rows[["item", "utterances", "reason"]].values.tolist() == [
        ["line break", 1, "kept: a phrase boundary under audio.too_long: split, a space otherwise"],
        ["\u00a0", 1, "mapped to a space"],
        ["\u200d", 1, "kept (text.keep_format_characters)"],
        ["\u200f", 2, "removed"],
    ]


def test_the_data_report_says_when_nothing_was_changed(tmp_path: Path) -> None:
    plain = [u.replace(text="ta ka") for u in IMPORTED]
    data_report(plain, folds(tmp_path / "folds"), 2, [], tmp_path, imported=plain)
    markdown = (tmp_path / "data_report.md").read_text(encoding="utf-8")
    assert "0 of 3 imported transcripts hold a line break" in markdown
    assert "No invisible format character or odd space in any transcript." in markdown


def test_the_data_report_stage_reads_the_imported_manifest_and_the_text_section(tmp_path: Path) -> None:
    stage = stages.stage("data_report")
    assert stage.deps["imported"] == "data/interim/corpus.csv" and "text" in stage.params
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["text"]["keep_format_characters"] = ["\u200d"]
    params["folds"] |= {"k": 2, "ids": [0, 1]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    write_manifest(tmp_path / "corpus.csv", IMPORTED)
    write_manifest(tmp_path / "utterances.csv", normalised(params["text"]))
    folds(tmp_path / "folds")
    Rejects("import", "skip").write(tmp_path / "rejects.csv")
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=Path)
    data_report_stage.add_arguments(parser)
    arguments = f"--params {tmp_path}/params.yaml --in {tmp_path}/utterances.csv --imported {tmp_path}/corpus.csv"
    arguments += f" --folds {tmp_path}/folds --rejects {tmp_path}/rejects.csv --out {tmp_path}/results"
    data_report_stage.run_cli(parser.parse_args(arguments.split()))
    table = pd.read_csv(tmp_path / "results/data_report.csv", keep_default_na=False)
    assert "kept (text.keep_format_characters)" in set(table[table.section == "imported"]["reason"])
