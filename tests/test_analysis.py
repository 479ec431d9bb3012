"""What a run teaches: bootstrap intervals over speakers and paired comparisons (report), symbol confusions and
suspect transcripts (analyze), on constructed transcripts; and, slow, a corrupted transcript found by a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd
import pytest
from conftest import BIN, copy_project, run, tiny_params, write_params

from asrflow import bootstrap
from asrflow.analyze import (
    DROPPED_REASON,
    GAP,
    analyze,
    confusions,
    dropped_by_training,
    suspects_table,
    symbol_group,
    symbol_table,
    write_errors,
)
from asrflow.manifest import Utterance, write_manifest
from asrflow.metrics import grapheme_error_rate
from asrflow.report import uncertainty

# --- bootstrap intervals ---------------------------------------------------------------------------------------------


def test_speakers_with_one_error_rate_give_a_zero_width_interval_at_it() -> None:
    errors, units = np.array([1, 2, 3, 5]), np.array([10, 20, 30, 50])  # every speaker at 10 %
    found = bootstrap.interval(errors, units, bootstrap.resample_indices(4, 500, seed=0))
    assert (found.estimate, found.low, found.high) == pytest.approx((0.1, 0.1, 0.1))


def test_interval_covers_the_true_pooled_rate_about_95_percent_of_the_time() -> None:
    """Speakers drawn from a known population: per-speaker rates Beta(2, 6) (mean 0.25), lengths independent of them,
    so the population's pooled rate E[errors] / E[units] is 0.25."""
    rng = np.random.default_rng(1)
    repetitions, speakers, covered = 200, 40, 0
    for repetition in range(repetitions):
        units = rng.integers(50, 400, size=speakers)
        errors = rng.binomial(units, rng.beta(2, 6, size=speakers))
        found = bootstrap.interval(errors, units, bootstrap.resample_indices(speakers, 500, seed=repetition))
        covered += found.low <= 0.25 <= found.high
    assert 0.88 <= covered / repetitions <= 0.99, covered


def test_paired_comparison_sign_and_win_fractions() -> None:
    rng = np.random.default_rng(0)
    units = rng.integers(100, 300, size=12)
    difficulty = rng.uniform(0.1, 0.6, size=12)  # speakers differ far more than the methods do
    worse = np.round(units * difficulty).astype(int)
    better = np.round(worse * 0.8).astype(int)  # 20 % fewer errors on every speaker
    indices = bootstrap.resample_indices(12, 1000, seed=0)

    found = bootstrap.paired(better, units, worse, units, indices)
    assert found.difference == pytest.approx(better.sum() / units.sum() - worse.sum() / units.sum())
    assert found.high < 0 and (found.a_wins, found.b_wins) == (1.0, 0.0)
    # Unpaired, the two intervals overlap; paired, the difference is clear.
    assert bootstrap.interval(better, units, indices).high > bootstrap.interval(worse, units, indices).low

    swapped = bootstrap.paired(worse, units, better, units, indices)
    assert swapped.low > 0 and (swapped.a_wins, swapped.b_wins) == (0.0, 1.0)
    tie = bootstrap.paired(worse, units, worse, units, indices)
    assert (tie.difference, tie.low, tie.high, tie.a_wins, tie.b_wins) == (0, 0, 0, 0, 0)


def hypotheses_frame(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """(method, speaker, utt_id, reference, hypothesis) rows as load_hypotheses returns them (cer per utterance)."""
    frame = pd.DataFrame(rows, columns=["method", "speaker", "utt_id", "reference", "hypothesis"])
    frame["cer"] = [jiwer.cer(r, h) for r, h in zip(frame["reference"], frame["hypothesis"])]
    return frame


def test_pooled_rates_are_the_corpus_level_rates_evaluate_reports() -> None:
    transcripts = [
        ("s1", "u1", "ba zaɲo liɟe", "ba zaɲo liɟe"),
        ("s1", "u2", "nzoɟu va ba", "nzoɟu ɡa"),
        ("s2", "u3", "diru meba", "diru mba x"),
        ("s3", "u4", "ʃe oɟuɲo", ""),
    ]
    frame = hypotheses_frame([("full", *t) for t in transcripts] + [("lora", s, u, r, r) for s, u, r, _ in transcripts])
    pooled, comparisons = uncertainty(frame, ["full", "lora"], resamples=200, seed=0)
    pooled = pooled.set_index("method")
    references, hypotheses = [t[2] for t in transcripts], [t[3] for t in transcripts]
    assert pooled.loc["full", "cer_pooled"] == pytest.approx(jiwer.cer(references, hypotheses))
    assert pooled.loc["full", "wer_pooled"] == pytest.approx(jiwer.wer(references, hypotheses))
    assert pooled.loc["lora", ["cer_pooled", "cer_ci_low", "cer_ci_high"]].tolist() == [0, 0, 0]
    row = comparisons.iloc[0]
    assert (row["rate"], row["method_a"], row["method_b"]) == ("cer", "full", "lora")
    assert row["difference"] > 0 and row["b_wins"] > 0.5 and row["a_wins"] == 0
    assert "cer_lm_pooled" not in pooled  # no LM transcripts: no LM rates
    assert "ger_pooled" not in pooled  # no graphemes declared: evaluate wrote no GER


def test_pooled_grapheme_error_rate_counts_each_grapheme_as_one_unit() -> None:
    graphemes = ["nz", "ɟu"]
    transcripts = [("s1", "u1", "nzoɟu va", "zoɟu ba"), ("s2", "u2", "ba nzoɟu", "ba nzoju ")]
    frame = hypotheses_frame([("full", *t) for t in transcripts])
    frame["ger"] = [grapheme_error_rate([r], [h], graphemes) for _, _, r, h in transcripts]
    pooled, _ = uncertainty(frame, ["full"], resamples=200, seed=0, graphemes=graphemes)
    references, hypotheses = [t[2] for t in transcripts], [t[3] for t in transcripts]
    # nz|o|ɟu| |v|a → z|o|ɟu| |b|a: 2 edits of 6; b|a| |nz|o|ɟu → b|a| |nz|o|j|u: 2 edits of 6 (trailing space stripped)
    assert pooled.loc[0, "ger_pooled"] == pytest.approx(4 / 12)
    assert pooled.loc[0, "ger_pooled"] == pytest.approx(grapheme_error_rate(references, hypotheses, graphemes))
    assert pooled.loc[0, "cer_pooled"] == pytest.approx(jiwer.cer(references, hypotheses))


# --- symbol confusions -----------------------------------------------------------------------------------------------


def test_symbol_groups() -> None:
    assert [symbol_group(s) for s in ["a", "ɲ", "\u0303", "ʼ", "ː", "ˈ", "˥", "˩", " ", "1", "tʃ"]] == [
        "base letter",
        "base letter",
        "combining diacritic",
        "modifier letter",
        "modifier letter",
        "modifier letter",
        "tone letter",
        "tone letter",
        "space",
        "other",
        "multi-character unit",
    ]


def test_confusion_counts_match_a_hand_alignment() -> None:
    # kʼã ba → kã pa: ʼ deleted, b → p; é → è: the acute accent (a combining mark, NFD) substituted by a grave;
    # ta → taː: ː inserted.
    frame = pd.DataFrame(
        {
            "reference": ["kʼa\u0303 ba", "e\u0301", "ta"],
            "hypothesis": ["ka\u0303 pa", "e\u0300", "taː "],  # a trailing space is no error (as in the CER)
        }
    )
    counts = confusions(frame, [])
    assert counts[("ʼ", GAP)] == 1 and counts[("b", "p")] == 1 and counts[("\u0301", "\u0300")] == 1
    assert counts[(GAP, "ː")] == 1 and counts[("a", "a")] == 3 and counts[("\u0303", "\u0303")] == 1
    table = symbol_table(counts).set_index("symbol")
    assert table.loc["ʼ", ["group", "count", "correct", "deletions", "error_rate"]].tolist() == [
        "modifier letter",
        1,
        0,
        1,
        1.0,
    ]
    assert table.loc["b", ["substitutions", "top_substitutions", "error_rate"]].tolist() == [1, "p 1", 1.0]
    assert table.loc["\u0301", ["group", "substitutions", "top_substitutions"]].tolist() == [
        "combining diacritic",
        1,
        "\u0300 1",
    ]
    assert table.loc["ː", ["count", "insertions"]].tolist() == [0, 1] and np.isnan(table.loc["ː", "error_rate"])
    assert table.loc["a", ["count", "correct", "error_rate"]].tolist() == [3, 3, 0.0]
    assert table.loc["k", "name"] == "LATIN SMALL LETTER K" and table.loc["ʼ", "codepoints"] == "U+02BC"
    # With kʼ declared a grapheme it is one unit, substituted by k rather than losing its ejective mark.
    graphemes = symbol_table(confusions(frame, ["kʼ"])).set_index("symbol")
    assert graphemes.loc["kʼ", ["group", "top_substitutions"]].tolist() == ["multi-character unit", "k 1"]
    assert "ʼ" not in graphemes.index


def test_a_method_without_errors_gets_its_table_and_a_blank_heat_map(tmp_path: Path) -> None:
    frame = pd.DataFrame({"method": "full", "reference": ["ba zaɲo"], "hypothesis": ["ba zaɲo"]})
    write_errors(frame, ["full"], [], tmp_path / "errors")
    table = pd.read_csv(tmp_path / "errors" / "full.csv", keep_default_na=False)
    assert table["error_rate"].tolist() == [0.0] * 6 and table["count"].sum() == 7
    assert (tmp_path / "errors" / "full.png").read_bytes()[:4] == b"\x89PNG"


# --- suspect transcripts ---------------------------------------------------------------------------------------------

METHODS = ["full", "frozen"]


def constructed_run(corrupted: str = "s2_u3") -> pd.DataFrame:
    """3 speakers × 8 utterances, two methods; each speaker errs at its own level (one at exactly 0 everywhere), and
    the transcript of `corrupted` is another sentence: every method's hypothesis disagrees with it."""
    rng = np.random.default_rng(0)
    sentence = "nzoɟu va ba ʃendendi je tilula"
    rows = []
    for method in METHODS:
        for s, level in enumerate([0, 2, 5], start=1):
            for u in range(8):
                words = sentence.split()
                hypothesis = " ".join(w if rng.random() > level / 10 else w[:-1] for w in words)
                utt_id = f"s{s}_u{u}"
                reference = "diru meba kiru vehamenu liɟe upi" if utt_id == corrupted else sentence
                rows.append((method, f"s{s}", utt_id, reference, hypothesis))
    return hypotheses_frame(rows)


def test_a_corrupted_transcript_ranks_first() -> None:
    frame = constructed_run()
    audio = {u: f"wav/{u}.wav" for u in frame["utt_id"]}
    none_dropped = pd.DataFrame(columns=["utt_id", "dropped_by", "dropped"], dtype=str)
    table = suspects_table(frame, METHODS, audio, none_dropped)
    assert table.loc[0, ["rank", "utt_id", "audio"]].tolist() == [1, "s2_u3", "wav/s2_u3.wav"]
    assert "error far above its speaker's" in table.loc[0, "reason"]
    assert table["score"].is_monotonic_decreasing and len(table) == 24
    assert (table["reason"] != "").sum() == 1, "only the corrupted one is flagged"
    assert np.isfinite(table["score"]).all(), "a speaker without any error does not divide by zero"
    for column in ["speaker", "reference", "hypothesis_full", "hypothesis_frozen", "cer_full"]:
        assert column in table


def test_utterances_training_dropped_come_first_with_their_reason(tmp_path: Path) -> None:
    for method in METHODS:
        for fold in range(2):
            dropped = [{"utt_id": "s1_u1_sp1.1", "reason": "too short for its transcript under CTC: 0.30 s gives 14"}]
            path = tmp_path / method / f"fold{fold}" / "training.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"dropped_utterances": dropped if fold == 1 else []}), encoding="utf-8")
    dropped = dropped_by_training(tmp_path, METHODS, 2, {"s1_u1_sp1.1": "s1_u1"})
    assert dropped.to_dict("records") == [
        {
            "utt_id": "s1_u1",
            "dropped_by": "full fold1 (s1_u1_sp1.1); frozen fold1 (s1_u1_sp1.1)",
            "dropped": DROPPED_REASON,
        }
    ]
    frame = constructed_run()
    table = suspects_table(frame, METHODS, {u: u for u in frame["utt_id"]}, dropped)
    assert table.loc[0, ["utt_id", "reason"]].tolist() == ["s1_u1", DROPPED_REASON]
    assert table.loc[1, "utt_id"] == "s2_u3"


def test_analyze_writes_errors_and_suspects(tmp_path: Path) -> None:
    """The stage's function on a run's layout: metrics/<method>/fold<k>/hypotheses.csv, checkpoints' training.json,
    the utterances manifest and the speed copies' manifest."""
    frame = constructed_run()
    fold_of = {"s1": 0, "s2": 1, "s3": 1}
    for method in METHODS:
        for fold in range(2):
            rows = frame[(frame["method"] == method) & (frame["speaker"].map(fold_of) == fold)]
            folder = tmp_path / "metrics" / method / f"fold{fold}"
            folder.mkdir(parents=True)
            rows.drop(columns="method").to_csv(folder / "hypotheses.csv", index=False)
            (tmp_path / "checkpoints" / method / f"fold{fold}").mkdir(parents=True)
            (tmp_path / "checkpoints" / method / f"fold{fold}" / "training.json").write_text(
                '{"dropped_utterances": []}'
            )
    utterances = [Utterance(u, f"wav/{u}.wav", u.split("_")[0], "x") for u in sorted(set(frame["utt_id"]))]
    write_manifest(tmp_path / "utterances.csv", utterances)
    write_manifest(tmp_path / "speed" / "manifest.csv", [])
    analyze(
        tmp_path / "metrics",
        tmp_path / "checkpoints",
        tmp_path / "utterances.csv",
        tmp_path / "speed",
        errors_dir=tmp_path / "errors",
        suspects=tmp_path / "suspects.csv",
        methods=METHODS,
        k=2,
        inventory=[],
    )
    suspects = pd.read_csv(tmp_path / "suspects.csv", keep_default_na=False)
    assert list(suspects.columns[:7]) == ["rank", "utt_id", "speaker", "audio", "reference", "score", "reason"]
    assert suspects.loc[0, ["utt_id", "audio"]].tolist() == ["s2_u3", "wav/s2_u3.wav"]
    assert sorted(p.name for p in (tmp_path / "errors").iterdir()) == [
        "frozen.csv",
        "frozen.png",
        "full.csv",
        "full.png",
    ]
    errors = pd.read_csv(tmp_path / "errors" / "full.csv", keep_default_na=False)
    assert errors["count"].sum() == sum(len(r) for r in frame.loc[frame["method"] == "full", "reference"])
    assert (tmp_path / "errors" / "full.png").read_bytes()[:4] == b"\x89PNG"


# --- end to end ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_corrupted_transcript_of_a_tiny_run_ranks_first(tmp_path: Path) -> None:
    """The tiny demo corpus, as a folder of one's own, with one transcript replaced by other text: the sentences of
    15 other recordings, as a segmentation slip leaves a transcript. Through Snakemake to results/suspects.csv, it
    ranks first: the fold that trains on it drops it as too short for its transcript. (The tiny models, a few epochs
    on 4 speakers, write nothing greedily, so every CER is 1 there and the score ranks nothing: the score's own tests
    are above.)"""
    project = copy_project(tmp_path / "project")
    params = tiny_params(project, methods=["frozen"])
    snakemake = [str(BIN / "snakemake"), "--cores", "2"]
    run([*snakemake, "data/raw/demo"], project, timeout=900)
    shutil.copytree(project / "data/raw/demo", project / "data/raw/corpus")
    params["corpus"].update(format="audiofolder", path="data/raw/corpus")
    params["decode"]["beam"] = False  # greedy only: the LM plays no part here
    write_params(project, params)
    run([*snakemake, "data/processed/folds"], project, timeout=900)
    folds = json.loads((project / "data/processed/folds/folds.json").read_text(encoding="utf-8"))
    trained = folds["fold0"]["speakers"]["train"][0]  # a speaker fold 0 trains on (and fold 1 tests)
    metadata = project / "data/raw/corpus/metadata.csv"
    table = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    row = table.index[table["speaker_id"] == trained][0]
    table.loc[row, "transcription"] = " ".join(table.loc[table.index != row, "transcription"][:15])
    table.to_csv(metadata, index=False)

    run([*snakemake, "results/suspects.csv"], project, timeout=1500)
    suspects = pd.read_csv(project / "results/suspects.csv", keep_default_na=False)
    corrupted = Path(table.loc[row, "file_name"]).stem
    assert suspects.loc[0, "utt_id"].endswith(corrupted), suspects.head(3).to_string()
    assert suspects.loc[0, "reason"] == DROPPED_REASON and suspects.loc[0, "dropped_by"].startswith("frozen fold0")
    assert suspects.loc[0, "reference"] == table.loc[row, "transcription"]
    assert len(suspects) == len(table) and (project / suspects.loc[0, "audio"]).is_file()
    assert (project / "results/errors/frozen.csv").is_file() and (project / "results/errors/frozen.png").is_file()
