"""The data report on a hand-made corpus: speakers, the character inventory and its flags, and rejected items."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from asrflow.data_report import data_report
from asrflow.io import write_json
from asrflow.manifest import Rejected, Utterance

# s1 and s2 are tested in fold 0, s3 and s4 in fold 1. Only s4 says "ɬ"; only fold 0's speakers say "ã" (a + U+0303).
UTTERANCES = [
    Utterance("u1", "u1.wav", "s1", "ta a\u0303", 30.0),
    Utterance("u2", "u2.wav", "s2", "ka a\u0303", 90.0),
    Utterance("u3", "u3.wav", "s3", "ta|ka", 60.0),
    Utterance("u4", "u4.wav", "s4", "ɬa", 60.0),
]
REJECTED = [
    Rejected("import", "u9", "wav/u9.wav", "metadata.csv:10", "empty transcript"),
    Rejected("resample", "u8", "wav/u8.wav", "metadata.csv:9", "cannot decode audio (bad | header)"),
]


def report(tmp_path: Path) -> tuple[pd.DataFrame, str]:
    write_json(
        tmp_path / "folds/folds.json",
        {
            "fold0": {"speakers": {"train": ["s3"], "dev": ["s4"], "test": ["s1", "s2"]}},
            "fold1": {"speakers": {"train": ["s1"], "dev": ["s2"], "test": ["s3", "s4"]}},
        },
    )
    data_report(UTTERANCES, tmp_path / "folds", 2, REJECTED, tmp_path / "results", imported=UTTERANCES)
    table = pd.read_csv(tmp_path / "results/data_report.csv", keep_default_na=False, dtype=str)
    return table, (tmp_path / "results/data_report.md").read_text(encoding="utf-8")


def test_speakers_minutes_and_test_folds(tmp_path: Path) -> None:
    table, markdown = report(tmp_path)
    speakers = table[table.section == "speaker"]
    assert speakers[["item", "utterances", "minutes", "test_folds"]].values.tolist() == [
        ["s1", "1", "0.5", "0"],
        ["s2", "1", "1.5", "0"],
        ["s3", "1", "1.0", "1"],
        ["s4", "1", "1.0", "1"],
    ]
    assert (
        "4 utterances, 4.0 minutes, 4 speakers" in markdown
        and "2 items rejected (1 by import, 1 by resample)" in markdown
    )


def test_character_inventory_names_and_flags(tmp_path: Path) -> None:
    table, markdown = report(tmp_path)
    chars = table[table.section == "character"].set_index("item")
    assert list(chars.index) == ["a", "k", "t", "|", "ɬ", "\u0303"], (
        "code-point order; a combining mark counts on its own"
    )
    assert chars.loc["\u0303", "description"] == "U+0303 COMBINING TILDE"
    assert chars.loc["ɬ", "description"] == "U+026C LATIN SMALL LETTER L WITH BELT"
    assert chars.loc["ɬ", "reason"] == "only speaker s4; only fold 1's test speakers: not learnt in fold 1"
    assert chars.loc["\u0303", "reason"] == "only fold 0's test speakers: not learnt in fold 0"
    assert chars.loc["a", "reason"] == "" and chars.loc["a", "count"] == "7" and chars.loc["a", "test_folds"] == "0 1"
    assert "| \u25cc\u0303 | U+0303 COMBINING TILDE |" in markdown, "a combining mark is shown on a dotted circle"
    assert "| \\| | U+007C VERTICAL LINE |" in markdown, "a | in a cell is escaped"


def test_everything_rejected_is_listed_with_its_reason(tmp_path: Path) -> None:
    table, markdown = report(tmp_path)
    rejected = table[table.section == "rejected"]
    assert rejected[["stage", "item", "origin", "reason"]].values.tolist() == [
        ["import", "u9", "metadata.csv:10", "empty transcript"],
        ["resample", "u8", "metadata.csv:9", "cannot decode audio (bad | header)"],
    ]
    assert "| resample | u8 | metadata.csv:9 | cannot decode audio (bad \\| header) |" in markdown
