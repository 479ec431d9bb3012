"""Confidences from the model's own frame posteriors (asrflow.confidence) and what `asrflow transcribe` does with them:
the csv column, the ELAN confidence and words tiers, and review.csv, least confident phrase first.

The functions are checked on logits built from posteriors chosen by hand (expected values worked out in the
comments); transcribe end to end on espeak speech with a random-weight tiny model (untrained: its confidences mean
nothing, but every number in the outputs must agree with every other), greedily and with a KenLM LM."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pympi
import pytest
import soundfile as sf
import torch
from conftest import ROOT, stage
from pyctcdecode import build_ctcdecoder
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow import cli
from asrflow.audio import load_mono
from asrflow.confidence import (
    AlignmentError,
    aligned_word_confidences,
    forced_emissions,
    greedy_emissions,
    greedy_word_confidences,
    phrase_confidence,
)
from asrflow.corpus.demo import SAMPLE_RATE, espeak, make_speakers
from asrflow.decode import decoder_labels
from asrflow.manifest import Utterance, write_manifest
from asrflow.model import make_processor
from asrflow.transcribe import (
    CONFIDENCE_TIER,
    FRAME_LOGITS,
    HYPOTHESIS_TIER,
    REVIEW_FILE,
    WORDS_TIER,
    Word,
    make_pipeline,
    phrases,
    write_review,
)
from asrflow.vocab import build_vocab

VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}
PAD = 0


def logits_of(posteriors: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is `posteriors` (rows over <pad>, <unk>, |, a, b; each sums to 1)."""
    table = np.array(posteriors)
    assert np.allclose(table.sum(axis=1), 1)
    return np.log(table).astype(np.float32)


# Best path: a a <pad> b | b <pad> b → "ab bb".
GREEDY = logits_of(
    [
        [0.20, 0.05, 0.05, 0.60, 0.10],  # a 0.6
        [0.10, 0.05, 0.05, 0.70, 0.10],  # a 0.7: the run's peak, the a's confidence
        [0.50, 0.10, 0.10, 0.20, 0.10],  # blank
        [0.10, 0.05, 0.05, 0.20, 0.60],  # b 0.6 → "ab": min(0.7, 0.6) = 0.6
        [0.20, 0.05, 0.60, 0.05, 0.10],  # word delimiter
        [0.30, 0.05, 0.05, 0.10, 0.50],  # b 0.5
        [0.60, 0.05, 0.05, 0.10, 0.20],  # blank: the next b is a second b
        [0.10, 0.05, 0.05, 0.10, 0.70],  # b 0.7 → "bb": min(0.5, 0.7) = 0.5
    ]
)


def test_greedy_confidence_is_each_tokens_peak_and_each_words_weakest_token() -> None:
    emissions = greedy_emissions(GREEDY, blank=PAD)
    assert [(e.token, e.start, e.end) for e in emissions] == [(3, 0, 2), (4, 3, 4), (2, 4, 5), (4, 5, 6), (4, 7, 8)]
    assert [e.posterior for e in emissions] == pytest.approx([0.7, 0.6, 0.6, 0.5, 0.7])
    # The word spans the pipeline gets from the tokenizer, exactly as transformers decodes a greedy path.
    tokenizer = make_processor(VOCAB).tokenizer
    decoded = tokenizer.decode(GREEDY.argmax(axis=1), output_word_offsets=True)
    offsets = decoded["word_offsets"]
    assert [w["word"] for w in offsets] == ["ab", "bb"]
    spans = [(w["start_offset"], w["end_offset"]) for w in offsets]
    assert greedy_word_confidences(GREEDY, spans, blank=PAD) == pytest.approx([0.6, 0.5])


# Greedy reads blank, blank, |, b → "b"; summed over its paths, "a" over the first two frames (0.35·0.35 + 0.35·0.55
# + 0.55·0.35 = 0.51) beats nothing there (0.55² = 0.30): beam search hears "a b", with an a that no frame's argmax is.
BEAM = logits_of(
    [
        [0.55, 0.025, 0.025, 0.35, 0.05],
        [0.55, 0.025, 0.025, 0.35, 0.05],
        [0.05, 0.025, 0.85, 0.025, 0.05],
        [0.05, 0.025, 0.025, 0.05, 0.85],
    ]
)


def test_beam_words_are_scored_on_their_forced_alignment() -> None:
    decoder = build_ctcdecoder(decoder_labels(make_processor(VOCAB).tokenizer))  # no LM: prefix beam search
    text, _, word_frames, _, _ = decoder.decode_beams(BEAM)[0]
    assert text == "a b"
    words = [([VOCAB[word]], start, end) for word, (start, end) in word_frames]
    # Every alignment of "a" to its span peaks at 0.35, whichever of its paths the beam kept the frames of.
    assert aligned_word_confidences(BEAM, words, blank=PAD) == pytest.approx([0.35, 0.85])
    # The best path itself says "b" with its 0.85 only.
    assert [e.posterior for e in greedy_emissions(BEAM, blank=PAD)] == pytest.approx([0.85, 0.85])


def test_forced_alignment_puts_a_blank_between_repeated_tokens() -> None:
    frames = logits_of(
        [
            [0.10, 0.025, 0.025, 0.80, 0.05],
            [0.40, 0.025, 0.025, 0.50, 0.05],
            [0.20, 0.025, 0.025, 0.70, 0.05],
        ]
    )
    # "aa" in 3 frames has one path: a, blank, a (the best path, a a a, spells "a").
    emissions = forced_emissions(frames, [3, 3], blank=PAD)
    assert [(e.token, e.start, e.end) for e in emissions] == [(3, 0, 1), (3, 2, 3)]
    assert [e.posterior for e in emissions] == pytest.approx([0.8, 0.7])
    # Without the blank both a's would be one: two frames cannot spell "aa".
    with pytest.raises(AlignmentError, match="cannot be spelt in 2 frames"):
        forced_emissions(frames[:2], [3, 3], blank=PAD)
    # "b" in the same frames: where its posterior peaks (0.05 everywhere: the first frame of the tie).
    [b] = forced_emissions(frames, [4], blank=PAD)
    assert b.posterior == pytest.approx(0.05)


def test_phrase_confidence_weighs_words_by_their_characters() -> None:
    assert phrase_confidence([("ab", 0.6), ("b", 0.9)]) == pytest.approx((2 * 0.6 + 0.9) / 3)
    words = [Word("ab", 0.0, 0.4, 0.6), Word("b", 0.5, 0.7, 0.9), Word("abab", 3.0, 3.5, 0.2)]
    assert phrases(words, pause=1.0) == [Word("ab b", 0.0, 0.7, pytest.approx(0.7)), Word("abab", 3.0, 3.5, 0.2)]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_review_queue_puts_the_least_confident_phrases_first(tmp_path: Path) -> None:
    first = [Word("ab b", 0.0, 6.0, 0.9), Word("ba", 7.0, 13.0, 0.4)]
    second = [Word("a", 0.0, 30.0, 0.7), Word("bb", 31.0, 43.0, 0.4), Word("b", 44.0, 50.0, 0.1)]
    write_review(tmp_path / REVIEW_FILE, {Path("one.wav"): first, Path("sub/two.wav"): second})
    rows = read_rows(tmp_path / REVIEW_FILE)
    assert list(rows[0]) == ["file", "start", "end", "hypothesis", "confidence", "minutes"]
    # Least confident first; the tie at 0.4 in file, then time order.
    assert [(r["file"], r["hypothesis"], r["confidence"]) for r in rows] == [
        ("sub/two.wav", "b", "0.100"),
        ("one.wav", "ba", "0.400"),
        ("sub/two.wav", "bb", "0.400"),
        ("sub/two.wav", "a", "0.700"),
        ("one.wav", "ab b", "0.900"),
    ]
    # Running minutes: 6 s, +6 s, +12 s, +30 s, +6 s.
    assert [r["minutes"] for r in rows] == ["0.10", "0.20", "0.40", "0.90", "1.00"]
    assert [(r["start"], r["end"]) for r in rows][:2] == [("44.000", "50.000"), ("7.000", "13.000")]


# --- end to end --------------------------------------------------------------------------------------------------

RECORDINGS = {"long": "long.wav", "short": "short.flac"}  # stem: file in the recordings folder
SENTENCES = ["habari ya asubuhi rafiki yangu", "leo ni siku nzuri sana", "tunakula chakula pamoja"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight one-layer, 32-wide wav2vec2 with one multi-character token, saved as transcribe loads
    it. Untrained, it emits every token now and then, sure of some more than of others."""
    torch.manual_seed(0)
    vocab = build_vocab([*SENTENCES, "tʃ"], graphemes=["tʃ"])
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embedding_groups=1,
        pad_token_id=0,
    )
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        # Peaked posteriors, as a trained model's: few tokens per frame for beam search to follow; the blank and the
        # word delimiter often on top (measured: about 40 % and 10 % of frames), so that there are words and phrases.
        model.lm_head.weight.mul_(100)
        model.lm_head.bias[vocab["<pad>"]] += 25
        model.lm_head.bias[vocab["|"]] += 12
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    make_processor(vocab).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of espeak speech: three sentences as one wav, one as flac, and a text file that is no recording."""
    folder = tmp_path_factory.mktemp("recordings")
    speaker = make_speakers("sw", 1, 0, "test", "{language}{number}")[0]
    clips = [espeak().synthesise(speaker, sentence).astype(np.float32) / 32768 for sentence in SENTENCES]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    sf.write(folder / RECORDINGS["long"], np.concatenate([c for clip in clips for c in (clip, gap)]), SAMPLE_RATE)
    sf.write(folder / RECORDINGS["short"], clips[0], SAMPLE_RATE)
    (folder / "notes.txt").write_text("not audio", encoding="utf-8")
    return folder


def transcribe(model_dir: Path, recordings: Path, out: Path, *extra: str) -> None:
    args = ["transcribe", "--model", str(model_dir), str(recordings), "--out", str(out), "--threads", "1"]
    assert cli.main([*args, "--eaf", "--chunk-seconds", "4", *extra]) == 0


def check_outputs(out: Path, recordings: Path) -> None:
    """Every file's csv, eaf and review.csv rows agree: phrases are the character-weighted means of their words."""
    queue = read_rows(out / REVIEW_FILE)
    confidences = [float(r["confidence"]) for r in queue]
    assert confidences == sorted(confidences)
    durations = np.cumsum([float(r["end"]) - float(r["start"]) for r in queue]) / 60
    assert [float(r["minutes"]) for r in queue] == pytest.approx(durations, abs=0.006)
    for stem, name in RECORDINGS.items():
        words = [
            Word(r["word"], float(r["start"]), float(r["end"]), float(r["confidence"]))
            for r in read_rows(out / f"{stem}.csv")
        ]
        assert words, f"{stem}: the random model emitted nothing"
        assert all(0 < w.confidence <= 1 for w in words)
        eaf = pympi.Elan.Eaf(str(out / f"{stem}.eaf"))
        assert list(eaf.get_tier_names()) == [HYPOTHESIS_TIER, CONFIDENCE_TIER, WORDS_TIER]
        for tier, constraint in ((CONFIDENCE_TIER, "Symbolic_Association"), (WORDS_TIER, "Included_In")):
            parameters = eaf.get_parameters_for_tier(tier)
            assert parameters["PARENT_REF"] == HYPOTHESIS_TIER
            assert eaf.linguistic_types[parameters["LINGUISTIC_TYPE_REF"]]["CONSTRAINTS"] == constraint
        hypothesis = sorted(eaf.get_annotation_data_for_tier(HYPOTHESIS_TIER))
        scores = sorted(eaf.get_ref_annotation_data_for_tier(CONFIDENCE_TIER))
        assert [(s, e, text) for s, e, _, text in scores] == hypothesis, "one confidence per phrase, on it"
        expected = phrases(words, pause=0.5)
        assert [p.text for p in expected] == [text for _, _, text in hypothesis]
        assert [float(value) for _, _, value, _ in scores] == pytest.approx([p.confidence for p in expected], abs=0.006)
        in_queue = [r for r in queue if r["file"] == str(recordings / name)]
        assert sorted((r["start"], r["hypothesis"]) for r in in_queue) == sorted(
            (f"{p.start:.3f}", p.text) for p in expected
        )
        timed = sorted(eaf.get_annotation_data_for_tier(WORDS_TIER))
        assert [text for _, _, text in timed] == [w.text for w in words]
        assert all(any(s <= ws and we <= e for s, e, _ in hypothesis) for ws, we, _ in timed), "words inside phrases"
    assert len(queue) == sum(
        len(pympi.Elan.Eaf(str(out / f"{s}.eaf")).get_annotation_data_for_tier(HYPOTHESIS_TIER)) for s in RECORDINGS
    )


def test_greedy_transcription_of_a_folder_scores_every_word_and_phrase(
    model_dir: Path, recordings: Path, tmp_path: Path
) -> None:
    transcribe(model_dir, recordings, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "long.csv",
        "long.eaf",
        "long.txt",
        REVIEW_FILE,
        "short.csv",
        "short.eaf",
        "short.txt",
    ]
    check_outputs(tmp_path, recordings)
    # A greedy word's tokens are each its frame's most probable: none can be below 1 / vocabulary size.
    vocabulary = len(make_processor(build_vocab([*SENTENCES, "tʃ"], graphemes=["tʃ"])).tokenizer)
    assert min(float(r["confidence"]) for r in read_rows(tmp_path / "long.csv")) >= 1 / vocabulary - 0.0005


def test_stitched_logits_are_the_frames_the_pipeline_decoded(model_dir: Path, recordings: Path) -> None:
    """Chunked (4 s chunks of a ~10 s recording): the logits the pipeline passes on spell its own transcript."""
    asr = make_pipeline(model_dir, int8=False, lm_dir=None, alpha=None, beta=None)
    samples = load_mono(recordings / "long.wav")
    result = asr(samples, chunk_length_s=4, return_timestamps="word")
    logits = result[FRAME_LOGITS]
    assert len(logits) == pytest.approx(len(samples) / 320, abs=2)
    assert asr.tokenizer.decode(logits.argmax(axis=1)) == result["text"]


def test_lm_transcription_scores_the_lm_words(model_dir: Path, recordings: Path, tmp_path: Path) -> None:
    """With --lm each word is scored on its own forced alignment: where the beam search read a word exactly as the
    best path did (same units, same frames), that alignment is the best path, and so is the confidence."""
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    train = tmp_path / "train.csv"
    write_manifest(train, [Utterance(f"u{i}", f"u{i}.wav", "s", s) for i, s in enumerate(SENTENCES * 3)])
    stage(tmp_path, "lm", "--train", str(train), "--out", str(tmp_path / "lm"))
    out = tmp_path / "out"
    transcribe(model_dir, recordings, out, "--lm", str(tmp_path / "lm"))
    check_outputs(out, recordings)
    transcribe(model_dir, recordings, tmp_path / "greedy")
    for stem in RECORDINGS:
        greedy, beam = (
            {(r["word"], r["start"], r["end"]): float(r["confidence"]) for r in read_rows(folder / f"{stem}.csv")}
            for folder in (tmp_path / "greedy", out)
        )
        shared = greedy.keys() & beam.keys()
        assert shared and len(shared) < len(beam), "the LM changes some words, not all"
        assert [beam[word] for word in shared] == pytest.approx([greedy[word] for word in shared], abs=0.0011)
