"""Multi-character graphemes (`text.graphemes`): one CTC token each, labels encoded per unit, decoded back to text by
the saved tokenizer and by pyctcdecode, and a grapheme error rate beside the per-character CER."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, read_params, stage, tiny_params, write_params
from pyctcdecode import build_ctcdecoder
from transformers import AutoProcessor

from asrflow import config
from asrflow.decode import beam_decode, decoder_labels, greedy_transcripts
from asrflow.graphemes import split_units
from asrflow.io import read_json
from asrflow.manifest import read_manifest
from asrflow.metrics import error_rates, grapheme_error_rate
from asrflow.model import make_processor
from asrflow.transcripts import grapheme_inventory
from asrflow.vocab import PAD, build_vocab, encode_labels

GRAPHEMES = ["tʃ", "ts", "kʼ", "˥˩", "tʃʼ"]
# IPA sentences of a made-up language: affricates, an ejective, tone letters, a combining diacritic (n̩) and a grapheme
# written twice in a row (CTC must keep both).
SENTENCES = [
    "tʃatʃa kʼo˥˩",
    "tsi tʃʼa n̩ta˥˩",
    "tʃtʃ tsts kʼkʼ",
    "t ʃ a˥ ˩",
]


def ctc_path(ids: list[int], blank: int) -> list[int]:
    """A best path that CTC collapses to `ids`: each label on two frames, a blank between equal neighbours."""
    path: list[int] = []
    for token in ids:
        if path and path[-1] == token:
            path.append(blank)
        path += [token, token]
    return path


def one_hot(path: list[int], size: int) -> np.ndarray:
    logits = np.zeros((len(path), size), dtype=np.float32)
    logits[np.arange(len(path)), path] = 10.0
    return logits


def test_split_units_longest_match_first() -> None:
    assert split_units("tʃʼa", GRAPHEMES) == ["tʃʼ", "a"]  # tʃʼ beats its prefix tʃ
    assert split_units("tʃa", GRAPHEMES) == ["tʃ", "a"]
    assert split_units("tsʃ", ["ts", "sʃ"]) == ["ts", "ʃ"]  # overlapping entries: left to right, first match wins
    assert split_units("ttʃ", GRAPHEMES) == ["t", "tʃ"]
    assert split_units("a˥˩˥", GRAPHEMES) == ["a", "˥˩", "˥"]  # tone letters: a contour is one unit, a level tone one


def test_split_units_other_characters_stay_single() -> None:
    text = unicodedata.normalize("NFD", "ŋ̊á kʼ")  # combining ring and acute: characters of their own unless listed
    assert split_units(text, GRAPHEMES) == ["ŋ", "\u030a", "a", "\u0301", " ", "kʼ"]
    assert split_units(text, [*GRAPHEMES, "ŋ\u030a"]) == ["ŋ\u030a", "a", "\u0301", " ", "kʼ"]
    assert "".join(split_units(text, GRAPHEMES)) == text
    assert split_units("tʃa kʼ", []) == list("tʃa kʼ")
    assert split_units("", GRAPHEMES) == []


def test_declared_graphemes_are_normalised_like_transcripts() -> None:
    text_cfg = config.defaults("text") | {"unicode": "NFC", "lowercase": True, "remove": "", "graphemes": ["Tʃ"]}
    assert grapheme_inventory(text_cfg) == ["tʃ"]
    text_cfg |= {"graphemes": ["kʼ"], "remove": "ʼ"}
    with pytest.raises(config.ParamsError, match=r"text.graphemes: 'kʼ' is 'k'"):
        grapheme_inventory(text_cfg)
    with pytest.raises(config.ParamsError, match="text.graphemes"):
        config.validate(read_params(ROOT) | {"text": {**read_params(ROOT)["text"], "graphemes": ["t ʃ"]}})


def test_vocabulary_has_one_id_per_grapheme() -> None:
    vocab = build_vocab(SENTENCES, GRAPHEMES)
    units = {u for s in SENTENCES for u in split_units(s, GRAPHEMES)} - {" "}
    assert set(vocab) - {"<pad>", "<unk>", "|"} == units
    assert {"tʃ", "ts", "kʼ", "˥˩", "tʃʼ", "t", "ʃ", "˥", "˩"} <= set(vocab)  # t ʃ also occur on their own
    assert sorted(vocab.values()) == list(range(len(vocab)))
    plain = build_vocab(SENTENCES)  # nothing declared: one token per character, the specials aside
    assert plain == build_vocab(SENTENCES, []) and [t for t in plain if len(t) > 1] == ["<pad>", "<unk>"]


def test_labels_are_units_and_the_saved_tokenizer_decodes_them(tmp_path: Path) -> None:
    vocab = build_vocab(SENTENCES, GRAPHEMES)
    make_processor(vocab).save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)  # as evaluate and transcribe load it
    for sentence in SENTENCES:
        ids = encode_labels(sentence, vocab)
        units = split_units(sentence, GRAPHEMES)
        assert len(ids) == len(units) and vocab["|"] in ids
        assert processor.decode(ids, group_tokens=False) == sentence
        assert processor.batch_decode([ctc_path(ids, vocab[PAD])]) == [sentence]
    # Why not the tokenizer's own encoding: it drops the spaces around a multi-character token it knows.
    assert processor.tokenizer(SENTENCES[0]).input_ids != encode_labels(SENTENCES[0], vocab)


def test_greedy_and_pyctcdecode_read_graphemes_as_units() -> None:
    vocab = build_vocab(SENTENCES, GRAPHEMES)
    processor = make_processor(vocab)
    labels = decoder_labels(processor.tokenizer)
    assert "tʃ" in labels and "˥˩" in labels and len(labels) == len(vocab)
    logits = [one_hot(ctc_path(encode_labels(s, vocab), vocab[PAD]), len(vocab)) for s in SENTENCES]
    assert greedy_transcripts(logits, processor) == SENTENCES
    assert beam_decode(build_ctcdecoder(labels), logits, beam_width=8) == SENTENCES


def test_grapheme_error_rate_counts_a_grapheme_once() -> None:
    references, hypotheses = ["tʃa kʼa˥˩", "tsi"], ["ta ka˥", "tsi"]
    # References: 9 + 3 characters; 6 + 2 graphemes (tʃ a ␣ kʼ a ˥˩, ts i). Errors: tʃ→t, kʼ→k, ˥˩→˥.
    cer, _ = error_rates(references, hypotheses)
    assert cer == pytest.approx(3 / 12)  # three deleted characters: ʃ ʼ ˩
    assert grapheme_error_rate(references, hypotheses, GRAPHEMES) == pytest.approx(3 / 8)  # three substitutions
    assert grapheme_error_rate(references, hypotheses, []) == cer
    assert grapheme_error_rate(SENTENCES, SENTENCES, GRAPHEMES) == 0.0


def test_default_labels_match_the_tokenizer_on_ipa_text() -> None:
    """No graphemes declared: labels are exactly what the tokenizer made before graphemes existed (the demo's
    numbers do not move)."""
    texts = [*SENTENCES, "ŋ̊á ɓɛ̃ː ʔa", "a  b"]
    vocab = build_vocab(texts)
    tokenizer = make_processor(vocab).tokenizer
    for text in texts:
        assert encode_labels(text, vocab) == tokenizer(text).input_ids
    assert encode_labels("q", vocab) == [vocab["<unk>"]]


def test_evaluation_scores_ger_only_when_graphemes_are_declared() -> None:
    from asrflow.evaluate import score

    rows = pd.DataFrame({"reference": ["tʃa kʼa"], "hypothesis": ["ta ka"]})
    assert set(score(rows)) == {"cer", "wer", "n_utts"}
    scores = score(rows, GRAPHEMES)
    assert scores["ger"] == round(grapheme_error_rate(["tʃa kʼa"], ["ta ka"], GRAPHEMES), 5) > scores["cer"]


# --- the demo corpus through the real stages, graphemes declared --------------------------------------------------

# Prenasalised stops and the affricate of the demo's Swahili IPA (espeak-ng), written as one unit each.
DEMO_GRAPHEMES = ["tʃ", "mb", "nd", "nz", "ɲɟ", "ŋɡ"]


@pytest.fixture(scope="module")
def grapheme_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo (conftest.tiny_params) with DEMO_GRAPHEMES declared: corpus, split, base, fold 0's LM, one epoch
    of full fine-tuning on fold 0 and its evaluation, all by the real stages."""
    from asrflow.features import CACHE_ENV

    project = tmp_path_factory.mktemp("graphemes")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    params = tiny_params(project, methods=["full"])
    params["text"]["graphemes"] = DEMO_GRAPHEMES
    write_params(project, params)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv(CACHE_ENV, str(project / "cache"))
        stage(project, "demo", "--target", "data/raw/demo", "--source", "data/raw/demo-source")
        stage(project, "import", "--out", "data/corpus.csv", "--rejects", "data/import_rejects.csv")
        stage(project, "resample", "--in", "data/corpus.csv", "--out", "data/resampled")
        normalize = ["--in", "data/resampled/manifest.csv", "--out", "data/utts.csv"]
        stage(project, "normalize", *normalize, "--rejects", "data/normalize_rejects.csv")
        stage(project, "split", "--in", "data/utts.csv", "--out", "data/folds")
        stage(project, "augment", "--in", "data/utts.csv", "--out", "data/speed")
        stage(project, "pretrain", "--source", "data/raw/demo-source", "--out", "data/base")
        stage(project, "lm", "--train", "data/folds/fold0/train.csv", "--out", "data/lm")
        fold = ["--fold", "0", "--method", "full", "--folds", "data/folds"]
        stage(
            project,
            "train",
            *fold,
            "--speed",
            "data/speed",
            "--base",
            "data/base",
            "--out",
            "model",
            "--curve",
            "c.csv",
        )
        stage(
            project,
            "evaluate",
            *fold,
            "--model",
            "model",
            "--out",
            "metrics",
            "--publish",
            "published",
            "--lm",
            "data/lm",
        )
    return project


@pytest.mark.slow
def test_demo_vocabulary_and_labels_use_the_graphemes(grapheme_run: Path) -> None:
    utterances = read_manifest(grapheme_run / "data/utts.csv")
    texts = [u.text for u in utterances]
    present = [g for g in DEMO_GRAPHEMES if any(g in t for t in texts)]
    assert len(present) >= 3, f"the demo corpus should hold several of {DEMO_GRAPHEMES}: {texts[:3]}"
    train = [u.text for u in read_manifest(grapheme_run / "data/folds/fold0/train.csv")]
    vocab = read_json(grapheme_run / "data/folds/fold0/vocab.json")
    assert set(vocab) == {"<pad>", "<unk>", "|"} | {u for t in train for u in split_units(t, DEMO_GRAPHEMES)} - {" "}
    assert [t for t in vocab if len(t) > 1 and t not in ("<pad>", "<unk>")] == sorted(
        g for g in DEMO_GRAPHEMES if any(g in t for t in train)
    )
    # Every transcript of the corpus round-trips through its units and the processor the model is saved with.
    everything = build_vocab(texts, DEMO_GRAPHEMES)
    make_processor(everything).save_pretrained(grapheme_run / "processor")
    processor = AutoProcessor.from_pretrained(grapheme_run / "processor")
    for text in texts:
        ids = encode_labels(text, everything)
        assert len(ids) == len(split_units(text, DEMO_GRAPHEMES))
        assert len(ids) < len(text) if any(g in text for g in present) else len(ids) == len(text)
        assert processor.decode(ids, group_tokens=False) == text
        assert processor.batch_decode([ctc_path(ids, everything[PAD])]) == [text]
    # Without graphemes the labels are the tokenizer's, character by character, as before graphemes existed.
    plain = build_vocab(texts)
    tokenizer = make_processor(plain).tokenizer
    assert all(encode_labels(t, plain) == tokenizer(t).input_ids for t in texts)


@pytest.mark.slow
def test_trained_model_decodes_graphemes_and_reports_ger(grapheme_run: Path) -> None:
    from asrflow.decode import lm_decoder

    model_dir = grapheme_run / "model"
    processor = AutoProcessor.from_pretrained(model_dir)
    vocab = processor.tokenizer.get_vocab()
    assert vocab == read_json(grapheme_run / "data/folds/fold0/vocab.json")
    assert read_json(model_dir / "config.json")["vocab_size"] == len(vocab)
    # The saved tokenizer and the LM decoder read each grapheme's id as the grapheme.
    test = [u.text for u in read_manifest(grapheme_run / "data/folds/fold0/test.csv")]
    known = [t for t in test if all(u in vocab for u in split_units(t, DEMO_GRAPHEMES) if u != " ")]
    assert known, "some test transcript uses only the fold's training units"
    logits = [one_hot(ctc_path(encode_labels(t, vocab), vocab[PAD]), len(vocab)) for t in known]
    assert greedy_transcripts(logits, processor) == known
    decoder = lm_decoder(processor.tokenizer, grapheme_run / "data/lm")
    assert beam_decode(decoder, logits, beam_width=8) == known
    # evaluate: GER beside the per-character CER, overall and per utterance, for greedy and LM decoding.
    metrics = read_json(grapheme_run / "metrics/metrics.json")
    rows = pd.read_csv(grapheme_run / "metrics/hypotheses.csv", keep_default_na=False)
    for suffix, column in (("", "hypothesis"), ("_lm", "hypothesis_lm")):
        references, hypotheses = rows["reference"].tolist(), rows[column].tolist()
        assert metrics[f"cer{suffix}"] == round(error_rates(references, hypotheses)[0], 5)
        assert metrics[f"ger{suffix}"] == round(grapheme_error_rate(references, hypotheses, DEMO_GRAPHEMES), 5)
        assert rows[f"ger{suffix}"].tolist() == [
            round(grapheme_error_rate([r], [h], DEMO_GRAPHEMES), 5) for r, h in zip(references, hypotheses)
        ]
    assert "ger" in pd.read_csv(grapheme_run / "metrics/speakers.csv")
    assert f"| test GER (greedy; each declared grapheme one unit) | {metrics['ger']:.4f} |" in (
        grapheme_run / "published/README.md"
    ).read_text(encoding="utf-8")
