"""n-gram LM decoding: the LM is built from a fold's training text only, the decoder's alphabet follows the model's
vocabulary ids, LM beam search runs with numpy 2, and evaluation reports it next to greedy decoding."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, read_params, stage, write_params

from asrflow import config
from asrflow.decode import beam_decode, decoder_labels, greedy_transcripts, lm_decoder, tune
from asrflow.io import read_json
from asrflow.lm import kenlm_tool
from asrflow.manifest import Utterance, read_manifest, write_manifest
from asrflow.model import make_processor
from asrflow.ngram import ARPA_FILE, BINARY_FILE, INFO_FILE, TEXT_FILE, LMError

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

# Ids deliberately not in character order: a decoder whose labels were sorted or rebuilt would misread every id.
VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "t": 3, "a": 4, "ŋ": 5, "k": 6, "i": 7}
TRAIN = ["taŋa kita", "kita taŋa taŋa", "taŋa kita kita", "kita taŋa"]
DEV = ["kita taŋa kita"]
TEST = ["tiki kaŋa"]  # words no training or dev sentence has


def manifest(path: Path, speaker: str, texts: list[str]) -> Path:
    write_manifest(
        path, [Utterance(f"{speaker}-{i}", f"{speaker}-{i}.wav", speaker, text) for i, text in enumerate(texts)]
    )
    return path


def arpa_unigrams(arpa: Path) -> set[str]:
    """The words of an ARPA file's \\1-grams section (each line: log10 p, word, optional backoff)."""
    section = arpa.read_text(encoding="utf-8").split("\\1-grams:")[1].split("\\2-grams:")[0]
    return {line.split("\t")[1] for line in section.strip().splitlines()}


@pytest.fixture
def params(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    return tmp_path / "params.yaml"


@pytest.fixture
def fold(tmp_path: Path, params: Path) -> Path:
    """A hand-made fold (train, dev and test sentences with disjoint extra words) and its LM, by `asrflow lm`."""
    fold_dir = tmp_path / "folds" / "fold0"
    manifest(fold_dir / "train.csv", "tr", TRAIN)
    manifest(fold_dir / "dev.csv", "dv", [*DEV, "dev only words"])
    manifest(fold_dir / "test.csv", "te", TEST)
    stage(params.parent, "lm", "--train", str(fold_dir / "train.csv"), "--out", str(tmp_path / "lm"))
    return fold_dir


def frames(text: str, vocab: dict[str, int], confidence: float = 10.0) -> np.ndarray:
    """Logits that spell `text` one token per frame, each followed by a blank frame (so repeats survive CTC).

    Every other token is below pyctcdecode's token_min_logp (-5), so only the alternatives a test adds compete: a
    beam ending in a word delimiter would score an empty last word as unknown in pyctcdecode 0.5.0 and share its
    score cache entry with the same text without the delimiter."""
    ids = [vocab["|" if ch == " " else ch] for ch in text]
    logits = np.zeros((2 * len(ids), len(vocab)), dtype=np.float32)
    for i, token in enumerate(ids):
        logits[2 * i, token] = confidence
        logits[2 * i + 1, vocab["<pad>"]] = confidence
    return logits


def test_lm_sees_only_training_text(fold: Path, tmp_path: Path) -> None:
    lm_dir = tmp_path / "lm"
    assert sorted(p.name for p in lm_dir.iterdir()) == sorted([TEXT_FILE, ARPA_FILE, BINARY_FILE, INFO_FILE])
    train_words = {w for s in TRAIN for w in s.split()}
    held_out = {
        w for u in read_manifest(fold / "test.csv") + read_manifest(fold / "dev.csv") for w in u.text.split()
    } - train_words
    assert held_out >= {"tiki", "kaŋa", "dev", "only", "words"}
    assert arpa_unigrams(lm_dir / ARPA_FILE) == train_words | {"<s>", "</s>", "<unk>"}
    assert (lm_dir / TEXT_FILE).read_text(encoding="utf-8").splitlines() == TRAIN
    info = read_json(lm_dir / INFO_FILE)
    assert info["built"] and info["order"] == 3 and info["sentences"] == 4 and info["vocabulary"] == 2
    assert re.search(r"^ngram 3=\d+$", (lm_dir / ARPA_FILE).read_text(encoding="utf-8"), re.M)


def test_decoder_alphabet_follows_the_vocabulary_ids() -> None:
    tokenizer = make_processor(VOCAB).tokenizer
    assert decoder_labels(tokenizer) == ["", "⁇", " ", "t", "a", "ŋ", "k", "i"]
    # Without an LM, beam search on confident frames must read exactly what greedy decoding reads.
    from pyctcdecode import build_ctcdecoder

    logits = [frames("taŋa kita", VOCAB), frames("tiki kaŋa", VOCAB)]
    beam = beam_decode(build_ctcdecoder(decoder_labels(tokenizer)), logits, beam_width=8)
    assert beam == greedy_transcripts(logits, make_processor(VOCAB)) == ["taŋa kita", "tiki kaŋa"]


def test_labels_pyctcdecode_would_misread_are_refused() -> None:
    tokenizer = make_processor({"<pad>": 0, "<unk>": 1, "|": 2, "▁a": 3}).tokenizer  # "▁" makes it "BPE"
    with pytest.raises(LMError, match="pyctcdecode"):
        decoder_labels(tokenizer)


def test_lm_beam_search_prefers_training_words(fold: Path, tmp_path: Path) -> None:
    """Acoustics favour the non-word "taŋi" a little; the LM (which knows "taŋa") overturns it, greedy cannot."""
    processor = make_processor(VOCAB)
    logits = frames("kita taŋa", VOCAB)
    last_vowel = 2 * len("kita taŋ")
    logits[last_vowel, VOCAB["a"]], logits[last_vowel, VOCAB["i"]] = 9.0, 9.5
    assert greedy_transcripts([logits], processor) == ["kita taŋi"]
    decoder = lm_decoder(processor.tokenizer, tmp_path / "lm")
    decoder.reset_params(alpha=1.0, beta=0.0)
    assert beam_decode(decoder, [logits], beam_width=16) == ["kita taŋa"]
    decoder.reset_params(alpha=0.0, beta=0.0)  # no LM weight: the acoustics win again
    assert beam_decode(decoder, [logits], beam_width=16) == ["kita taŋi"]


def test_tuning_scores_every_pair_and_keeps_the_best(fold: Path, tmp_path: Path) -> None:
    processor = make_processor(VOCAB)
    logits = frames("kita taŋa", VOCAB)
    logits[2 * len("kita taŋ"), VOCAB["i"]] = 10.5  # the non-word wins acoustically unless the LM weighs in
    decoder = lm_decoder(processor.tokenizer, tmp_path / "lm")
    grid = tune(decoder, [logits], ["kita taŋa"], {"alpha": [0.0, 2.0], "beta": [0.0, 1.0], "beam_width": 16})
    assert len(grid) == 4 and list(grid.columns) == ["alpha", "beta", "dev_cer", "dev_wer"]
    assert grid["dev_cer"].is_monotonic_increasing and grid.at[0, "alpha"] == 2.0 and grid.at[0, "dev_cer"] == 0
    assert beam_decode(decoder, [logits], beam_width=16) == ["kita taŋa"]  # the decoder keeps the best pair


def test_no_lm_is_built_when_beam_search_is_off(tmp_path: Path, params: Path) -> None:
    values = yaml.safe_load(params.read_text(encoding="utf-8"))
    values["decode"]["beam"] = False
    write_params(tmp_path, values)
    train = manifest(tmp_path / "train.csv", "tr", TRAIN)
    stage(tmp_path, "lm", "--train", str(train), "--out", str(tmp_path / "lm"))
    assert [p.name for p in (tmp_path / "lm").iterdir()] == [INFO_FILE]
    assert read_json(tmp_path / "lm" / INFO_FILE)["built"] is False


def test_missing_kenlm_names_the_install_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LMError, match="install_kenlm.sh"):
        kenlm_tool("lmplz")


def test_unigram_lm_order_is_refused(params: Path) -> None:
    values = yaml.safe_load(params.read_text(encoding="utf-8"))
    values["decode"]["lm_order"] = 1
    with pytest.raises(config.ParamsError, match="decode.lm_order"):
        config.validate(values)


def test_evaluation_reports_lm_next_to_greedy(tiny_run: Path) -> None:
    """The tiny pipeline (conftest.tiny_run) evaluated with its fold-0 LM: both decodings scored side by side."""
    tuning = read_params(tiny_run)["decode"]
    for method in ("full", "frozen"):
        metrics = read_json(tiny_run / f"metrics/{method}/metrics.json")
        assert {"cer", "wer", "cer_lm", "wer_lm", "lm_alpha", "lm_beta", "dev_cer_lm"} <= set(metrics)
        assert 0 <= metrics["cer_lm"] <= 1.5 and metrics["lm_alpha"] in tuning["alpha"]
        hyps = pd.read_csv(tiny_run / f"metrics/{method}/hypotheses.csv", keep_default_na=False)
        assert {"hypothesis", "hypothesis_lm", "cer", "cer_lm"} <= set(hyps.columns)
        grid = pd.read_csv(tiny_run / f"metrics/{method}/lm_tuning.csv")
        assert len(grid) == len(tuning["alpha"]) * len(tuning["beta"])
        assert (grid.at[0, "alpha"], grid.at[0, "beta"]) == (metrics["lm_alpha"], metrics["lm_beta"])
        assert {"cer_lm", "wer_lm"} <= set(pd.read_csv(tiny_run / f"metrics/{method}/speakers.csv").columns)
        card = yaml.safe_load((tiny_run / f"published/{method}/README.md").read_text(encoding="utf-8").split("---")[1])
        scores = {(m["type"], m["value"]) for m in card["model-index"][0]["results"][0]["metrics"]}
        assert scores == {(kind, metrics[f"{kind}{suffix}"]) for kind in ("cer", "wer") for suffix in ("", "_lm")}
    lm_words = arpa_unigrams(tiny_run / "data/processed/lm/fold0" / ARPA_FILE)
    train_words = {w for u in read_manifest(tiny_run / "data/processed/folds/fold0/train.csv") for w in u.text.split()}
    assert lm_words == train_words | {"<s>", "</s>", "<unk>"}


def test_beam_off_evaluates_greedily_only(tiny_run: Path, tmp_path: Path) -> None:
    values = read_params(tiny_run)
    values["decode"]["beam"] = False
    write_params(tmp_path, values)
    stage(
        tmp_path,
        "evaluate",
        "--fold",
        "0",
        "--method",
        "frozen",
        "--folds",
        "data/processed/folds",
        "--model",
        "models/frozen",
        "--out",
        str(tmp_path / "metrics"),
        "--publish",
        str(tmp_path / "published"),
        "--lm",
        str(tmp_path / "no-lm-needed"),
    )
    assert not [key for key in read_json(tmp_path / "metrics/metrics.json") if "lm" in key]
    hyps = pd.read_csv(tmp_path / "metrics/hypotheses.csv", keep_default_na=False)
    with_lm = pd.read_csv(tiny_run / "metrics/frozen/hypotheses.csv", keep_default_na=False)
    assert list(hyps.columns) == ["utt_id", "speaker", "reference", "hypothesis", "cer"]
    assert hyps["hypothesis"].tolist() == with_lm["hypothesis"].tolist()  # greedy is untouched by the LM
    assert not (tmp_path / "metrics/lm_tuning.csv").exists()
