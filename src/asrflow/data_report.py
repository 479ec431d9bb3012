"""The `data_report` stage: what the corpus holds after import, resampling and normalisation, and what was left out.

Outputs (in `out_dir`):
- `data_report.md`   per speaker minutes and utterances (and the fold that tests them); the character inventory with
                     Unicode names, flagging characters only one speaker uses and characters only one fold's test
                     speakers use (that fold's training text lacks them, so its model cannot learn them); every
                     rejected item with its stage and reason; from the imported (raw) transcripts, how many hold a
                     line break and every invisible format character or odd space normalisation removed, made a space
                     or kept (asrflow.transcripts), with the number of transcripts holding it.
- `data_report.csv`  the same tables in one tidy CSV, told apart by the `section` column
                     (`speaker`, `character`, `imported`, `rejected`).

Clips the train stage drops (too short for their transcript under CTC) depend on the model: they are listed with
their reason in each checkpoint's training.json (`dropped_utterances`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from asrflow import config
from asrflow.io import atomic_path, read_json, write_text
from asrflow.manifest import Rejected, Utterance, read_manifest, read_rejects
from asrflow.transcripts import invisible, kept_format_characters

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "section",
    "item",
    "description",
    "utterances",
    "minutes",
    "count",
    "speakers",
    "test_folds",
    "stage",
    "origin",
    "reason",
]


def tested_in(folds_dir: Path, k: int) -> dict[str, int]:
    """{speaker: the fold whose test set holds them}."""
    summary = read_json(folds_dir / "folds.json")
    return {speaker: fold for fold in range(k) for speaker in summary[f"fold{fold}"]["speakers"]["test"]}


def speaker_table(utterances: list[Utterance], fold_of: dict[str, int]) -> pd.DataFrame:
    rows = defaultdict(lambda: {"utterances": 0, "seconds": 0.0})
    for utt in utterances:
        rows[utt.speaker]["utterances"] += 1
        rows[utt.speaker]["seconds"] += utt.duration or 0.0
    return pd.DataFrame(
        [
            {
                "speaker": s,
                "utterances": r["utterances"],
                "minutes": round(r["seconds"] / 60, 2),
                "test_fold": fold_of.get(s),
            }
            for s, r in sorted(rows.items())
        ]
    )


def character_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '(no name)')}"


def shown(ch: str) -> str:
    """A combining mark is shown on a dotted circle, so that it does not merge with the text around it."""
    return f"\u25cc{ch}" if unicodedata.combining(ch) else ch


def character_table(utterances: list[Utterance], fold_of: dict[str, int]) -> pd.DataFrame:
    """One row per character (spaces aside) in code-point order: count, speakers, the folds testing them, and a note."""
    counts: Counter[str] = Counter()
    speakers: dict[str, set[str]] = defaultdict(set)
    for utt in utterances:
        for ch in utt.text.replace(" ", ""):
            counts[ch] += 1
            speakers[ch].add(utt.speaker)
    rows = []
    for ch in sorted(counts):
        folds = sorted({fold_of[s] for s in speakers[ch] if s in fold_of})
        notes = []
        if len(speakers[ch]) == 1:
            notes.append(f"only speaker {next(iter(speakers[ch]))}")
        if len(folds) == 1:
            notes.append(f"only fold {folds[0]}'s test speakers: not learnt in fold {folds[0]}")
        rows.append(
            {
                "character": ch,
                "description": character_name(ch),
                "count": counts[ch],
                "speakers": " ".join(sorted(speakers[ch])),
                "test_folds": " ".join(map(str, folds)),
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows, columns=["character", "description", "count", "speakers", "test_folds", "note"])


LINE_BREAK = "kept: a phrase boundary under audio.too_long: split, a space otherwise"
KEPT = "kept (text.keep_format_characters)"


@dataclasses.dataclass(frozen=True)
class ImportedText:
    """What normalisation does to the imported transcripts that the normalised ones no longer show: `table` has one
    row for the line break, then one per invisible character or odd space, each with the transcripts holding it."""

    transcripts: int
    table: pd.DataFrame


def _fate(ch: str, keep: frozenset[str]) -> str:
    if ch in keep:
        return KEPT
    return "removed" if invisible(ch) == "" else "mapped to a space"


def imported_text(imported: list[Utterance], keep: frozenset[str]) -> ImportedText:
    holding: Counter[str] = Counter(ch for utt in imported for ch in set(utt.text) if invisible(ch) is not None)
    # A CR is left only where a format keeps text raw (an hf table); resample's split takes it for a line break too.
    breaks = sum("\n" in utt.text or "\r" in utt.text for utt in imported)
    line_break = {"item": "line break", "description": "a line break inside a transcript", "reason": LINE_BREAK}
    rows = [{**line_break, "utterances": breaks}]
    rows += [
        {"item": ch, "description": character_name(ch), "utterances": holding[ch], "reason": _fate(ch, keep)}
        for ch in sorted(holding)
    ]
    return ImportedText(len(imported), pd.DataFrame(rows, columns=["item", "description", "utterances", "reason"]))


def tidy(
    speakers: pd.DataFrame, characters: pd.DataFrame, rejected: list[Rejected], imported: ImportedText
) -> pd.DataFrame:
    parts = [
        pd.DataFrame(
            {
                "section": "speaker",
                "item": speakers["speaker"],
                "utterances": speakers["utterances"],
                "minutes": speakers["minutes"],
                "test_folds": speakers["test_fold"],
            }
        ),
        pd.DataFrame(
            {
                "section": "character",
                "item": characters["character"],
                "description": characters["description"],
                "count": characters["count"],
                "speakers": characters["speakers"],
                "test_folds": characters["test_folds"],
                "reason": characters["note"],
            }
        ),
        imported.table.assign(section="imported"),
        pd.DataFrame(
            [
                {
                    "section": "rejected",
                    "item": r.utt_id,
                    "description": r.audio,
                    "stage": r.stage,
                    "origin": r.origin,
                    "reason": r.reason,
                }
                for r in rejected
            ]
        ),
    ]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True).reindex(columns=CSV_COLUMNS)
    return table.astype({"utterances": "Int64", "count": "Int64"})  # counts stay integers beside empty cells


def _cell(value: object) -> str:
    # A `|` would end a Markdown table cell.
    return str(value).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def imported_markdown(imported: ImportedText) -> list[str]:
    breaks, *characters = imported.table.itertuples()
    return [
        "## Transcripts as imported",
        f"{breaks.utterances} of {imported.transcripts} imported transcripts hold a line break: a phrase boundary "
        "under `audio.too_long: split`, a space otherwise. Before normalisation, invisible format characters "
        "(Unicode Cf: bidi marks, soft hyphens, zero-width spaces and joiners, …) are removed unless "
        "`text.keep_format_characters` lists them, and odd spaces (Zs: no-break, thin, ideographic, …) made spaces:",
        _md_table(
            ["code point and name", "normalisation", "transcripts"],
            [[r.description, r.reason, r.utterances] for r in characters],
        )
        if characters
        else "No invisible format character or odd space in any transcript.",
    ]


def markdown(speakers: pd.DataFrame, characters: pd.DataFrame, rejected: list[Rejected], imported: ImportedText) -> str:
    by_stage = Counter(r.stage for r in rejected)
    flagged = characters[characters["note"] != ""]
    return (
        "\n\n".join(
            [
                "# Data report",
                f"{int(speakers['utterances'].sum())} utterances, {speakers['minutes'].sum():.1f} minutes, "
                f"{len(speakers)} speakers after import, resampling and normalisation; {len(rejected)} items rejected "
                f"({', '.join(f'{n} by {stage}' for stage, n in by_stage.items()) or 'none'}).",
                "## Speakers",
                _md_table(
                    ["speaker", "utterances", "minutes", "test fold"],
                    speakers[["speaker", "utterances", "minutes", "test_fold"]].values.tolist(),
                ),
                "## Characters",
                f"{len(characters)} distinct characters (spaces aside). {len(flagged)} are flagged: a character only "
                "one speaker uses, or only one fold's test speakers use, cannot be learnt in the fold that tests them.",
                _md_table(
                    ["character", "code point and name", "count", "speakers", "test folds", "note"],
                    [
                        [shown(r.character), r.description, r.count, r.speakers, r.test_folds, r.note]
                        for r in characters.itertuples()
                    ],
                ),
                *imported_markdown(imported),
                "## Rejected",
                "Everything a stage left out, with the reason (kept + rejected = input at every stage). Clips too "
                "short for their transcript under CTC are listed per fold and method in each checkpoint's "
                "training.json.",
                _md_table(
                    ["stage", "utterance", "origin", "reason"],
                    [[r.stage, r.utt_id, r.origin, r.reason] for r in rejected],
                )
                if rejected
                else "Nothing.",
            ]
        )
        + "\n"
    )


def data_report(
    utterances: list[Utterance],
    folds_dir: Path,
    k: int,
    rejected: list[Rejected],
    out_dir: Path,
    *,
    imported: list[Utterance],
    keep: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """The report of the normalised `utterances`, and of what normalisation changed in the raw text of the `imported`
    ones (`keep`: text.keep_format_characters)."""
    fold_of = tested_in(folds_dir, k)
    speakers = speaker_table(utterances, fold_of)
    characters = character_table(utterances, fold_of)
    raw = imported_text(imported, keep)
    table = tidy(speakers, characters, rejected, raw)
    with atomic_path(out_dir / "data_report.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(out_dir / "data_report.md", markdown(speakers, characters, rejected, raw))
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow data_report`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path, help="the normalised utterances")
    parser.add_argument(
        "--imported", required=True, type=Path, help="the import's manifest: line breaks and invisible characters"
    )
    parser.add_argument("--folds", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path, nargs="+", help="every stage's rejects file")
    parser.add_argument("--out", required=True, type=Path, help="folder for data_report.md and data_report.csv")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "data_report")
    rejected = [r for path in args.rejects for r in read_rejects(path)]
    table = data_report(
        read_manifest(args.manifest),
        args.folds,
        params["folds"]["k"],
        rejected,
        args.out,
        imported=read_manifest(args.imported),
        keep=kept_format_characters(params["text"]),
    )
    log.info(
        "data report: %d speakers, %d characters, %d rejected → %s",
        (table["section"] == "speaker").sum(),
        (table["section"] == "character").sum(),
        len(rejected),
        args.out / "data_report.md",
    )
