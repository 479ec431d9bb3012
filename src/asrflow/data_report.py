"""The `data_report` stage: what the corpus holds after import, resampling and normalisation, and what was left out.

Outputs (in `out_dir`):
- `data_report.md`   per speaker minutes and utterances (and the fold that tests them); the character inventory with
                     Unicode names, flagging characters only one speaker uses and characters only one fold's test
                     speakers use (that fold's training text lacks them, so its model cannot learn them); every
                     rejected item with its stage and reason.
- `data_report.csv`  the same three tables in one tidy CSV, told apart by the `section` column
                     (`speaker`, `character`, `rejected`).

Clips the train stage drops (too short for their transcript under CTC) depend on the model: they are listed with
their reason in each checkpoint's training.json (`dropped_utterances`).
"""

from __future__ import annotations

import argparse
import logging
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from asrflow import config
from asrflow.io import atomic_path, read_json, write_text
from asrflow.manifest import Rejected, Utterance, read_manifest, read_rejects

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


def tidy(speakers: pd.DataFrame, characters: pd.DataFrame, rejected: list[Rejected]) -> pd.DataFrame:
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


def markdown(speakers: pd.DataFrame, characters: pd.DataFrame, rejected: list[Rejected]) -> str:
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
    utterances: list[Utterance], folds_dir: Path, k: int, rejected: list[Rejected], out_dir: Path
) -> pd.DataFrame:
    fold_of = tested_in(folds_dir, k)
    speakers = speaker_table(utterances, fold_of)
    characters = character_table(utterances, fold_of)
    table = tidy(speakers, characters, rejected)
    with atomic_path(out_dir / "data_report.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(out_dir / "data_report.md", markdown(speakers, characters, rejected))
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow data_report`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--in", dest="manifest", required=True, type=Path, help="the normalised utterances")
    parser.add_argument("--folds", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path, nargs="+", help="every stage's rejects file")
    parser.add_argument("--out", required=True, type=Path, help="folder for data_report.md and data_report.csv")


def run_cli(args: argparse.Namespace) -> None:
    k = config.load_stage(args.params, "data_report")["folds"]["k"]
    rejected = [r for path in args.rejects for r in read_rejects(path)]
    table = data_report(read_manifest(args.manifest), args.folds, k, rejected, args.out)
    log.info(
        "data report: %d speakers, %d characters, %d rejected → %s",
        (table["section"] == "speaker").sum(),
        (table["section"] == "character").sum(),
        len(rejected),
        args.out / "data_report.md",
    )
