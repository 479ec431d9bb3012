"""`asrflow transcribe`: a 3-minute recording (demo clips end to end, as 22.05 kHz stereo FLAC) is transcribed in
chunks across its whole length, exactly as transformers' own pipeline does it, into text, word times and ELAN.

The tiny one-epoch models emit (almost) only blanks, which would make every check here vacuous; the model used is the
tiny `full` model with the blank's output bias pushed down, so that it emits a token on every frame. Nothing here
measures accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

import jiwer
import numpy as np
import pympi
import pytest
import soundfile as sf
import soxr
import torch
from conftest import stage
from transformers import pipeline

from asrflow import cli
from asrflow.audio import TARGET_RATE, load_mono, read_wav
from asrflow.inference import load_for_inference
from asrflow.manifest import read_manifest
from asrflow.transcribe import CONFIDENCE_TIER, HYPOTHESIS_TIER, WORDS_TIER, Word, phrases

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

RECORDING_SECONDS = 180
CHUNK_SECONDS = 20


@pytest.fixture(scope="module")
def recording(tiny_run: Path) -> Path:
    """The tiny corpus' clips one after another, 0.3 s apart, until 3 minutes; 22.05 kHz stereo FLAC."""
    clips = [read_wav(u.audio) for u in read_manifest(tiny_run / "data/processed/utts.csv")]
    gap = np.zeros(int(0.3 * TARGET_RATE), dtype=np.float32)
    pieces, length, i = [], 0, 0
    while length < RECORDING_SECONDS * TARGET_RATE:
        pieces += [clips[i % len(clips)], gap]
        length += len(clips[i % len(clips)]) + len(gap)
        i += 1
    samples = soxr.resample(np.concatenate(pieces), TARGET_RATE, 22050)
    path = tiny_run / "recordings/long.flac"
    path.parent.mkdir(exist_ok=True)
    sf.write(path, np.stack([samples, 0.5 * samples], axis=1), 22050)
    return path


@pytest.fixture(scope="module")
def talkative(tiny_run: Path) -> Path:
    """The tiny full model, never emitting the blank (see the module docstring)."""
    model, processor = load_for_inference(tiny_run / "published/full")
    with torch.no_grad():
        model.lm_head.bias[processor.tokenizer.pad_token_id] = -1e4
    folder = tiny_run / "talkative"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def read_words(path: Path) -> list[Word]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            Word(r["word"], float(r["start"]), float(r["end"]), float(r["confidence"])) for r in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def transcribed(tiny_run: Path, talkative: Path, recording: Path) -> Path:
    out = tiny_run / "transcripts"
    stage(
        tiny_run,
        "transcribe",
        "--model",
        str(talkative),
        str(recording),
        "--out",
        str(out),
        "--eaf",
        "--chunk-seconds",
        str(CHUNK_SECONDS),
    )
    return out


def test_output_covers_the_whole_recording(recording: Path, transcribed: Path) -> None:
    duration = sf.info(recording).duration
    words = read_words(transcribed / "long.csv")
    assert (transcribed / "long.txt").read_text(encoding="utf-8").strip()
    assert all(0 <= w.start < w.end <= duration + 0.05 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    # Words in every chunk-long stretch of the recording, and up to its last clip.
    starts = np.array([w.start for w in words])
    for window in range(0, int(duration) - CHUNK_SECONDS, CHUNK_SECONDS):
        assert ((starts >= window) & (starts < window + CHUNK_SECONDS)).any(), f"no words in {window}–{window + 20} s"
    assert words[-1].end > duration - 3


def test_same_as_transformers_pipeline_on_the_decoded_audio(
    talkative: Path, recording: Path, transcribed: Path
) -> None:
    asr = pipeline("automatic-speech-recognition", model=str(talkative), device="cpu")
    result = asr(load_mono(recording), chunk_length_s=CHUNK_SECONDS, return_timestamps="word")
    assert (transcribed / "long.txt").read_text(encoding="utf-8") == result["text"] + "\n"
    expected = [
        (c["text"], round(float(c["timestamp"][0]), 3), round(float(c["timestamp"][1]), 3)) for c in result["chunks"]
    ]
    assert [(w.text, w.start, w.end) for w in read_words(transcribed / "long.csv")] == expected


def test_eaf_opens_in_pympi_with_time_aligned_phrases(recording: Path, transcribed: Path) -> None:
    eaf = pympi.Elan.Eaf(str(transcribed / "long.eaf"))
    assert list(eaf.get_tier_names()) == [HYPOTHESIS_TIER, CONFIDENCE_TIER, WORDS_TIER]
    [media] = eaf.get_linked_files()
    assert media["MEDIA_URL"] == recording.resolve().as_uri() and media["MIME_TYPE"] == "audio/flac"
    assert (transcribed / media["RELATIVE_MEDIA_URL"]).resolve() == recording.resolve()
    annotations = sorted(eaf.get_annotation_data_for_tier(HYPOTHESIS_TIER))
    words = read_words(transcribed / "long.csv")
    assert " ".join(a[2] for a in annotations) == " ".join(w.text for w in words)
    assert annotations[0][0] == round(words[0].start * 1000) and annotations[-1][1] == round(words[-1].end * 1000)
    assert all(start < end for start, end, _ in annotations)
    assert all(a[1] <= b[0] for a, b in zip(annotations, annotations[1:])), "phrases overlap"
    assert all(end - start <= 10_000 for start, end, _ in annotations)


def test_int8_transcribes_the_recording_like_float32(
    tiny_run: Path, talkative: Path, recording: Path, transcribed: Path
) -> None:
    out = tiny_run / "transcripts-int8"
    stage(
        tiny_run,
        "transcribe",
        "--model",
        str(talkative),
        str(recording),
        "--out",
        str(out),
        "--int8",
        "--chunk-seconds",
        str(CHUNK_SECONDS),
    )
    int8, fp32 = read_words(out / "long.csv"), read_words(transcribed / "long.csv")
    assert int8 and abs(int8[-1].end - fp32[-1].end) < 1.0
    # Quantisation moves a few frames' best token (1–2 % on this tiny model): the texts differ in a few characters.
    texts = [(folder / "long.txt").read_text(encoding="utf-8") for folder in (transcribed, out)]
    assert jiwer.cer(*texts) < 0.1


def test_phrases_break_at_pauses_and_at_the_length_limit() -> None:
    words = [
        Word("a", 0.0, 0.4, 0.5),
        Word("b", 0.5, 0.9, 0.7),
        Word("c", 2.0, 2.5, 0.9),
        Word("d", 2.6, 9.0, 0.9),
        Word("e", 9.1, 13.0, 0.2),
    ]
    assert phrases(words, pause=0.5) == [
        Word("a b", 0.0, 0.9, pytest.approx(0.6)),
        Word("c d", 2.0, 9.0, pytest.approx(0.9)),
        Word("e", 9.1, 13.0, 0.2),
    ]
    assert phrases(words, pause=2.0, longest=100) == [Word("a b c d e", 0.0, 13.0, pytest.approx(0.64))]
    assert phrases([], pause=0.5) == []


def test_errors_name_the_file_and_the_fix(
    tiny_run: Path, recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def refused(*args: str) -> str:
        """The error `asrflow transcribe` logs for `args` (it must exit with status 2)."""
        capsys.readouterr()
        assert cli.main(["transcribe", "--out", str(tmp_path / "out"), "--threads", "1", *args]) == 2
        return capsys.readouterr().err

    model = ("--model", str(tiny_run / "published/full"))
    assert "missing.wav" in refused(*model, str(tmp_path / "missing.wav"))
    twin = tmp_path / "other" / "long.wav"
    twin.parent.mkdir()
    sf.write(twin, np.zeros(TARGET_RATE, dtype=np.float32), TARGET_RATE)
    message = refused(*model, str(recording), str(twin))
    assert "long.txt" in message and str(twin) in message
    blip = tmp_path / "blip.wav"
    sf.write(blip, np.zeros(100, dtype=np.float32), 8000)
    assert "blip.wav" in refused(*model, str(blip))
    assert "not a model folder" in refused("--model", str(tmp_path), str(recording))
    assert "--stride-seconds 10" in refused(*model, str(recording), "--chunk-seconds", "20", "--stride-seconds", "10")
    assert not (tmp_path / "out").exists(), "nothing is written when an input is refused"


def test_lm_beam_search_is_the_pipeline_with_that_decoder(
    tiny_run: Path, talkative: Path, recording: Path, tmp_path: Path
) -> None:
    """With --lm: the pipeline with the fold's pyctcdecode decoder (on 25 s in 10 s chunks: beam search is slow)."""
    from asrflow.decode import lm_decoder

    excerpt = tmp_path / "excerpt.wav"
    sf.write(excerpt, load_mono(recording)[: 25 * TARGET_RATE], TARGET_RATE)
    lm = tiny_run / "data/processed/lm/fold0"
    stage(
        tiny_run,
        "transcribe",
        "--model",
        str(talkative),
        str(excerpt),
        "--out",
        str(tmp_path),
        "--lm",
        str(lm),
        "--alpha",
        "0.8",
        "--beta",
        "1.0",
        "--chunk-seconds",
        "10",
    )
    model, processor = load_for_inference(talkative)
    decoder = lm_decoder(processor.tokenizer, lm)
    decoder.reset_params(alpha=0.8, beta=1.0)
    asr = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        decoder=decoder,
        device="cpu",
    )
    assert asr.type == "ctc_with_lm"
    result = asr(load_mono(excerpt), chunk_length_s=10, return_timestamps="word")
    words = read_words(tmp_path / "excerpt.csv")
    assert words and [(w.text, w.start, w.end) for w in words] == [
        (c["text"], round(float(c["timestamp"][0]), 3), round(float(c["timestamp"][1]), 3)) for c in result["chunks"]
    ]
    lm_words = set((lm / "text.txt").read_text(encoding="utf-8").split())
    assert sum(w.text in lm_words for w in words) > len(words) / 2, "beam search prefers the LM's words"
