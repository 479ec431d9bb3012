"""The `analyze` stage: what a run teaches beyond its error rates, from every test utterance's cross-validated
transcripts (each utterance is tested exactly once, by models that never heard its speaker).

Outputs:
- `errors/<method>.csv`  per symbol (a unit of `text.graphemes`, else a character) of the greedy transcripts, all
                         folds together: its Unicode group, how often the references hold it, how often it was
                         recognised, substituted (and into what), deleted or inserted, and its symbol error rate
- `errors/<method>.png`  a heat-map of the most confused symbols: reference symbol → what the model wrote instead
- `suspects.csv`         every utterance ranked by how far its error lies above its own speaker's typical error
                         (robust z, median over methods), the utterances training dropped as too short for their
                         transcript first; with its audio, reference and every method's transcript

docs/analysis.md explains the alignment, the groups and the score.
"""

from __future__ import annotations

import argparse
import logging
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rapidfuzz.distance import Levenshtein

from asrflow.config import load_stage
from asrflow.graphemes import split_units
from asrflow.io import atomic_path, read_json
from asrflow.manifest import read_manifest
from asrflow.results import DECIMALS, MetricsError, load_hypotheses
from asrflow.transcripts import grapheme_inventory

log = logging.getLogger(__name__)

GAP = ""  # the other side of a deletion (reference symbol, no hypothesis symbol) or an insertion
TONE_LETTERS = {chr(c) for c in range(0x02E5, 0x02EA)} | {chr(c) for c in range(0xA708, 0xA717)}
SYMBOL_COLUMNS = [
    "symbol",
    "codepoints",
    "name",
    "group",
    "count",
    "correct",
    "substitutions",
    "deletions",
    "insertions",
    "error_rate",
    "top_substitutions",
]
TOP_SUBSTITUTIONS = 5  # the substitutions of a symbol errors/<method>.csv names, most frequent first
HEATMAP_SYMBOLS = 15  # reference symbols (rows) and hypothesis symbols (columns) of the heat-map, most confused first

# The suspect score (docs/analysis.md): robust z of an utterance's CER within its speaker, median over methods.
MAD_SCALE = 1.4826  # MAD × this estimates a normal distribution's standard deviation
MAD_FLOOR = 0.05  # CER: a speaker whose utterances score (nearly) alike gets this spread, not a division by ~0
SUSPECT_Z = 3.5  # a score above this gets a reason (Iglewicz & Hoaglin's cut-off for robust z)
DROPPED_REASON = "dropped by training: too short for its transcript"


# --- symbols and their confusions ---------------------------------------------------------------------------------


def symbol_group(symbol: str) -> str:
    """The Unicode group of a symbol: base letter, combining diacritic, modifier letter (ʼ ː ˈ ʰ), tone letter
    (˥˦˧˨˩), space, multi-character unit (a `text.graphemes` entry), other (digits, punctuation ...)."""
    if len(symbol) > 1:
        return "multi-character unit"
    if symbol in TONE_LETTERS:
        return "tone letter"
    if symbol.isspace():
        return "space"
    category = unicodedata.category(symbol)
    if category.startswith("M"):
        return "combining diacritic"
    if category in ("Lm", "Sk"):
        return "modifier letter"
    if category.startswith("L"):
        return "base letter"
    return "other"


def describe(symbol: str) -> tuple[str, str]:
    """(code points as U+XXXX, Unicode names), each joined by spaces: a lone combining mark is hard to read."""
    codepoints = " ".join(f"U+{ord(c):04X}" for c in symbol)
    return codepoints, " + ".join(unicodedata.name(c, "?") for c in symbol)


def aligned_pairs(reference: list[str], hypothesis: list[str]) -> list[tuple[str, str]]:
    """Every reference and hypothesis unit paired by rapidfuzz's Levenshtein alignment: (r, r) recognised, (r, h)
    substituted, (r, GAP) deleted, (GAP, h) inserted."""
    ops = Levenshtein.editops(reference, hypothesis)
    substituted = {op.src_pos: hypothesis[op.dest_pos] for op in ops if op.tag == "replace"}
    deleted = {op.src_pos for op in ops if op.tag == "delete"}
    pairs = [(unit, GAP if i in deleted else substituted.get(i, unit)) for i, unit in enumerate(reference)]
    return pairs + [(GAP, hypothesis[op.dest_pos]) for op in ops if op.tag == "insert"]


def confusions(hypotheses: pd.DataFrame, inventory: list[str], column: str = "hypothesis") -> Counter:
    """(reference unit, hypothesis unit) → count over every utterance; spaces around a transcript are ignored, as
    in the CER."""
    counts: Counter = Counter()
    for reference, hypothesis in zip(hypotheses["reference"], hypotheses[column]):
        counts.update(
            aligned_pairs(split_units(reference.strip(), inventory), split_units(hypothesis.strip(), inventory))
        )
    return counts


def symbol_table(counts: Counter) -> pd.DataFrame:
    """One row per symbol seen in a reference or a hypothesis, most errors first."""
    symbols = sorted({s for pair in counts for s in pair if s != GAP})
    rows = []
    for symbol in symbols:
        as_ref = {hyp: n for (ref, hyp), n in counts.items() if ref == symbol}
        count = sum(as_ref.values())
        substituted = Counter({hyp: n for hyp, n in as_ref.items() if hyp not in (symbol, GAP)})
        deletions = as_ref.get(GAP, 0)
        codepoints, name = describe(symbol)
        rows.append(
            {
                "symbol": symbol,
                "codepoints": codepoints,
                "name": name,
                "group": symbol_group(symbol),
                "count": count,
                "correct": as_ref.get(symbol, 0),
                "substitutions": sum(substituted.values()),
                "deletions": deletions,
                "insertions": counts.get((GAP, symbol), 0),
                "error_rate": (sum(substituted.values()) + deletions) / count if count else np.nan,
                "top_substitutions": "; ".join(f"{h} {n}" for h, n in substituted.most_common(TOP_SUBSTITUTIONS)),
            }
        )
    table = pd.DataFrame(rows, columns=SYMBOL_COLUMNS)
    errors = table["substitutions"] + table["deletions"] + table["insertions"]
    return table.assign(_errors=errors).sort_values(["_errors", "count"], ascending=False).drop(columns="_errors")


def _display(symbol: str) -> str:
    """A heat-map label: a combining mark on a dotted circle (alone it would sit on nothing), a gap as ∅, a space
    as ␣."""
    if symbol == GAP:
        return "∅"
    if symbol.isspace():
        return "␣"
    return f"◌{symbol}" if unicodedata.category(symbol[0]).startswith("M") else symbol


def confusion_figure(counts: Counter, method: str) -> Figure:
    """Counts of reference symbol (row) → hypothesis symbol (column) for the most confused symbols; ∅ as a column:
    deleted, as a row: inserted. Recognised symbols are left out: the colours show errors only."""
    errors = Counter({pair: n for pair, n in counts.items() if pair[0] != pair[1]})
    by_ref, by_hyp = Counter(), Counter()
    for (ref, hyp), n in errors.items():
        by_ref[ref] += n
        by_hyp[hyp] += n
    rows = [s for s, _ in by_ref.most_common(HEATMAP_SYMBOLS)]
    columns = [s for s, _ in by_hyp.most_common(HEATMAP_SYMBOLS)]
    matrix = np.zeros((len(rows), len(columns)))
    for i, ref in enumerate(rows):
        for j, hyp in enumerate(columns):
            matrix[i, j] = errors.get((ref, hyp), 0)
    fig = Figure(figsize=(1.5 + 0.45 * max(len(columns), 4), 1.5 + 0.4 * max(len(rows), 4)), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display, no pyplot global state
    ax = fig.add_subplot()
    image = ax.imshow(matrix if matrix.size else np.zeros((1, 1)), cmap="Reds", vmin=0)  # no error: one blank cell
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, f"{n:.0f}", ha="center", va="center", fontsize="x-small")
    ax.set_xticks(range(len(columns)), [_display(s) for s in columns])
    ax.set_yticks(range(len(rows)), [_display(s) for s in rows])
    ax.set_xlabel("written instead (∅: deleted)")
    ax.set_ylabel("reference symbol (∅: inserted)")
    ax.set_title(f"{method}: most confused symbols (greedy, all folds)", fontsize="medium")
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    return fig


def write_errors(hypotheses: pd.DataFrame, methods: list[str], inventory: list[str], out_dir: Path) -> None:
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for method in methods:
            counts = confusions(hypotheses[hypotheses["method"] == method], inventory)
            symbol_table(counts).round(DECIMALS).to_csv(tmp / f"{method}.csv", index=False)
            confusion_figure(counts, method).savefig(tmp / f"{method}.png", format="png", dpi=150)


# --- suspect transcripts ------------------------------------------------------------------------------------------


def robust_z(cer: pd.Series, speakers: pd.Series) -> pd.Series:
    """(cer − its speaker's median) / (MAD_SCALE × its speaker's MAD, at least MAD_FLOOR)."""
    median = cer.groupby(speakers).transform("median")
    mad = (cer - median).abs().groupby(speakers).transform("median")
    return (cer - median) / (MAD_SCALE * mad.clip(lower=MAD_FLOOR))


def suspect_scores(hypotheses: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per utterance: each method's CER, transcript and robust z, and the score: the median of the methods' z (one
    method's odd failure does not make a transcript suspect; all methods failing on it does)."""
    wide = None
    for method in methods:
        rows = hypotheses[hypotheses["method"] == method]
        own = pd.DataFrame(
            {
                "utt_id": rows["utt_id"],
                "speaker": rows["speaker"],
                "reference": rows["reference"],
                f"cer_{method}": rows["cer"],
                f"z_{method}": robust_z(rows["cer"], rows["speaker"]),
                f"speaker_median_{method}": rows["cer"].groupby(rows["speaker"]).transform("median"),
                f"hypothesis_{method}": rows["hypothesis"],
            }
        )
        if wide is None:
            wide = own
            continue
        merged = wide.merge(own, on=["utt_id", "speaker", "reference"], validate="one_to_one")
        if not len(merged) == len(wide) == len(own):
            raise MetricsError(
                f"methods {methods[0]} and {method} were tested on different utterances or references: their "
                "evaluations come from different corpora or normalisations; re-run evaluate for both"
            )
        wide = merged
    wide["score"] = wide[[f"z_{m}" for m in methods]].median(axis=1)
    return wide


def score_reason(row: pd.Series, methods: list[str]) -> str:
    if row["score"] <= SUSPECT_Z:
        return ""
    cer = np.median([row[f"cer_{m}"] for m in methods])
    typical = np.median([row[f"speaker_median_{m}"] for m in methods])
    return (
        f"error far above its speaker's: CER {100 * cer:.0f} % against {100 * typical:.0f} % typical of "
        f"{row['speaker']} (robust z {row['score']:.1f}, median over methods)"
    )


def dropped_by_training(checkpoints: Path, methods: list[str], k: int, origins: dict[str, str]) -> pd.DataFrame:
    """Every utterance a training run dropped, as utt_id → the runs (and speed-perturbed copies) that dropped it and
    why. `origins`: the utt_id each speed-perturbed copy was made from."""
    found: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for method in methods:
        for fold in range(k):
            path = checkpoints / method / f"fold{fold}" / "training.json"
            if not path.is_file():
                raise MetricsError(
                    f"{path}: not found; it is written by `asrflow train --method {method} --fold {fold}`"
                )
            for item in read_json(path).get("dropped_utterances", []):
                utt_id = origins.get(item["utt_id"], item["utt_id"])
                copy = f" ({item['utt_id']})" if utt_id != item["utt_id"] else ""
                found.setdefault(utt_id, []).append(f"{method} fold{fold}{copy}")
                too_short = item["reason"].startswith("too short for its transcript")
                reasons[utt_id] = DROPPED_REASON if too_short else f"dropped by training: {item['reason']}"
    return pd.DataFrame(
        {
            "utt_id": list(found),
            "dropped_by": ["; ".join(v) for v in found.values()],
            "dropped": list(reasons.values()),
        },
        dtype=str,
    )


def suspects_table(
    hypotheses: pd.DataFrame, methods: list[str], audio: dict[str, str], dropped: pd.DataFrame
) -> pd.DataFrame:
    """Every tested utterance ranked: those training dropped first, then by score, highest first."""
    table = suspect_scores(hypotheses, methods)
    unknown = sorted(set(table["utt_id"]) - set(audio))
    if unknown:
        raise MetricsError(
            f"test utterances {unknown[:5]} are not in the utterances manifest: the evaluations come from another "
            "corpus or normalisation; re-run the pipeline"
        )
    untested = sorted(set(dropped["utt_id"]) - set(table["utt_id"]))
    if untested:
        raise MetricsError(
            f"utterances {untested[:5]} were dropped by training but never tested: the checkpoints and the "
            "evaluations come from different corpora; re-run the pipeline"
        )
    table["audio"] = table["utt_id"].map(audio)
    table = table.merge(dropped, on="utt_id", how="left").fillna({"dropped_by": "", "dropped": ""})
    table["reason"] = [
        "; ".join(r for r in (row["dropped"], score_reason(row, methods)) if r) for _, row in table.iterrows()
    ]
    table["_dropped"] = table["dropped"] != ""
    table = table.sort_values(["_dropped", "score", "utt_id"], ascending=[False, False, True], ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    columns = ["rank", "utt_id", "speaker", "audio", "reference", "score", "reason", "dropped_by"]
    return table[columns + [f"{kind}_{m}" for kind in ("cer", "hypothesis") for m in methods]]


def speed_origins(speed_dir: Path) -> dict[str, str]:
    """Speed-perturbed copy's utt_id → the utt_id it was made from (the augment stage's manifest)."""
    return {u.utt_id: u.origin for u in read_manifest(speed_dir / "manifest.csv")}


# --- the stage ----------------------------------------------------------------------------------------------------


def analyze(
    metrics_dir: Path,
    checkpoints: Path,
    utterances: Path,
    speed_dir: Path,
    *,
    errors_dir: Path,
    suspects: Path,
    methods: list[str],
    k: int,
    inventory: list[str],
) -> pd.DataFrame:
    """Write errors_dir/<method>.csv|png and the suspects table; return the suspects."""
    hypotheses = load_hypotheses(metrics_dir, methods, k)
    write_errors(hypotheses, methods, inventory, errors_dir)
    audio = {u.utt_id: u.audio for u in read_manifest(utterances)}
    dropped = dropped_by_training(checkpoints, methods, k, speed_origins(speed_dir))
    table = suspects_table(hypotheses, methods, audio, dropped)
    with atomic_path(suspects) as tmp:
        table.round(DECIMALS).to_csv(tmp, index=False)
    log.info(
        "analyze: %d method(s); %d utterances, %d above robust z %.1f, %d dropped by training",
        len(methods),
        len(table),
        int((table["score"] > SUSPECT_Z).sum()),
        SUSPECT_Z,
        len(dropped),
    )
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow analyze`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--metrics", required=True, type=Path, help="evaluate's folders: <method>/fold<k>/")
    parser.add_argument("--checkpoints", required=True, type=Path, help="train's folders: <method>/fold<k>/")
    parser.add_argument("--utterances", required=True, type=Path, help="the normalised manifest (audio paths)")
    parser.add_argument("--speed", required=True, type=Path, help="augment's folder (which copy came from what)")
    parser.add_argument("--errors", required=True, type=Path, help="output folder: <method>.csv and .png")
    parser.add_argument("--suspects", required=True, type=Path, help="output table of suspect transcripts")


def run_cli(args: argparse.Namespace) -> None:
    params = load_stage(args.params, "analyze")
    analyze(
        args.metrics,
        args.checkpoints,
        args.utterances,
        args.speed,
        errors_dir=args.errors,
        suspects=args.suspects,
        methods=params["methods"],
        k=params["folds"]["k"],
        inventory=grapheme_inventory(params["text"]),
    )
