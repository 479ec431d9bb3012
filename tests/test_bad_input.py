"""Every kind of bad input: with `audio.on_bad_audio: error` the first bad item stops the stage naming its row, its file
and the reason; with `skip` it is listed in the stage's rejects file, and kept + rejected = input, always.

Audio formats that must simply decode (bit depths, rates, channels, mp3/ogg/flac) are in test_stages.py; paths that
leave the corpus folder are in test_security.py; each format's own importer is in test_corpora.py.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, read_params
from corpus_fixtures import WRITERS, Row, kaldi, tone
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow import config
from asrflow.batching import Clip
from asrflow.checkpoint import DESCRIPTION, describe
from asrflow.import_ import import_corpus
from asrflow.io import read_json, write_json
from asrflow.loop import LoopConfig, TrainingError, fit
from asrflow.manifest import (
    BadItemError,
    ManifestError,
    Rejects,
    Utterance,
    read_manifest,
    read_rejects,
    write_manifest,
)
from asrflow.model import AudioTask, make_processor
from asrflow.normalize import normalise_all
from asrflow.resample import resample
from asrflow.train import train_fold
from asrflow.vocab import build_vocab

AUDIO = {"sample_rate": 16000, "min_seconds": 0.3, "max_seconds": 20.0, "on_bad_audio": "skip", "too_long": "reject"}
TEXT = config.defaults("text") | {"unicode": "NFC", "lowercase": True, "remove": ",.?!"}


def import_rows(root: Path, rows: list[Row], on_bad: str, fmt: str = "audiofolder") -> tuple[list[Utterance], list]:
    settings = WRITERS[fmt](root, rows)
    rejects = Rejects("import", on_bad)
    return import_corpus({**settings, "path": str(root)}, rejects), rejects.items


def resample_files(tmp_path: Path, files: dict[str, Path], on_bad: str) -> tuple[list[Utterance], list]:
    utts = [
        Utterance(name, str(path), "s", "a", origin=f"metadata.csv:{i}")
        for i, (name, path) in enumerate(files.items(), start=2)
    ]
    resample(utts, tmp_path / "out", {**AUDIO, "on_bad_audio": on_bad}, cores=1)
    return read_manifest(tmp_path / "out/manifest.csv"), read_rejects(tmp_path / "out/rejects.csv")


def good_clip(tmp_path: Path, name: str = "good") -> Path:
    sf.write(tmp_path / f"{name}.wav", tone(1.0), 16000)
    return tmp_path / f"{name}.wav"


# --- audio the resample stage cannot use ---------------------------------------------------------------------------


def truncated(tmp_path: Path, fmt: str) -> Path:
    """A clip with its second half cut off, as an interrupted copy leaves it."""
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(path, tone(2.0), 16000, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt(tmp_path: Path) -> Path:
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    return tmp_path / "corrupt.wav"


def nan_samples(tmp_path: Path) -> Path:
    samples = tone(1.0)
    samples[100] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    return tmp_path / "nan.wav"


BROKEN_AUDIO = {
    "corrupt": (corrupt, r"cannot decode audio \(Error opening"),
    "truncated wav": (
        lambda p: truncated(p, "WAV"),
        r"truncated: its header declares 64000 bytes of audio, the file "
        r"holds 31978",
    ),
    "truncated mp3": (lambda p: truncated(p, "MP3"), r"truncated: decoded \d+ of the 32000 frames its header declares"),
    "truncated flac": (lambda p: truncated(p, "FLAC"), r"cannot decode audio \(.*flac decoder lost sync"),
    "nan samples": (nan_samples, r"holds NaN or infinite samples"),
}


@pytest.mark.parametrize("case", list(BROKEN_AUDIO))
def test_broken_audio_stops_the_run_naming_row_file_and_reason(tmp_path: Path, case: str) -> None:
    make, reason = BROKEN_AUDIO[case]
    bad = make(tmp_path)
    with pytest.raises(
        BadItemError,
        match=rf"^metadata\.csv:3: {reason}.* \[{bad}\]; stopped because "
        r"audio\.on_bad_audio is 'error'",
    ):
        resample_files(tmp_path, {"good": good_clip(tmp_path), "bad": bad}, "error")
    assert not (tmp_path / "out").exists(), "a failed stage leaves no output"


@pytest.mark.parametrize("case", list(BROKEN_AUDIO))
def test_broken_audio_is_listed_and_nothing_else_is_lost(tmp_path: Path, case: str) -> None:
    make, reason = BROKEN_AUDIO[case]
    files = {"good": good_clip(tmp_path), "bad": make(tmp_path), "good2": good_clip(tmp_path, "good2")}
    kept, rejected = resample_files(tmp_path, files, "skip")
    assert [u.utt_id for u in kept] == ["good", "good2"]
    [row] = rejected
    assert (row.stage, row.utt_id, row.origin) == ("resample", "bad", "metadata.csv:3")
    assert re.search(reason, row.reason), row.reason
    assert len(kept) + len(rejected) == len(files)


def test_a_streamed_wav_with_an_unknown_length_is_not_truncated(tmp_path: Path) -> None:
    """A wav written to a pipe has a placeholder data size (0xFFFFFFFF); its audio is complete."""
    path = good_clip(tmp_path)
    data = bytearray(path.read_bytes())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # the data chunk's size field
    path.write_bytes(bytes(data))
    kept, rejected = resample_files(tmp_path, {"streamed": path}, "error")
    assert not rejected and kept[0].duration == pytest.approx(1.0, abs=0.01)


def test_a_segment_beyond_the_recording_is_a_bad_item(tmp_path: Path) -> None:
    utts = [
        Utterance("in", str(good_clip(tmp_path)), "s", "a", start=0.2, end=0.8, origin="segments:1"),
        Utterance("past", str(tmp_path / "good.wav"), "s", "a", start=0.5, end=1.5, origin="segments:2"),
    ]
    resample(utts, tmp_path / "out", AUDIO, cores=1)
    [kept] = read_manifest(tmp_path / "out/manifest.csv")
    [row] = read_rejects(tmp_path / "out/rejects.csv")
    assert kept.utt_id == "in" and kept.duration == pytest.approx(0.6, abs=0.01)
    assert row.origin == "segments:2" and "segment 0.5–1.5 s lies beyond the recording's end (1.00 s)" in row.reason


# --- clips over audio.max_seconds ----------------------------------------------------------------------------------


def phrases(*seconds: float, pause: float = 0.8) -> np.ndarray:
    """Tones separated by silent pauses, like phrases of a long recording."""
    silence = np.zeros(int(pause * 16000), np.float32)
    parts = [silence]
    for i, s in enumerate(seconds):
        parts += [tone(s, hz=200 + 50 * i), silence]
    return np.concatenate(parts)


def long_clip(tmp_path: Path, text: str, too_long: str) -> tuple[list[Utterance], list]:
    sf.write(tmp_path / "story.wav", phrases(3.0, 2.5, 3.5), 16000)
    utts = [
        Utterance("story", str(tmp_path / "story.wav"), "s", text, origin="metadata.csv:2"),
        Utterance("short", str(good_clip(tmp_path)), "s", "a", origin="metadata.csv:3"),
    ]
    resample(utts, tmp_path / "out", {**AUDIO, "max_seconds": 5.0, "too_long": too_long}, cores=1)
    return read_manifest(tmp_path / "out/manifest.csv"), read_rejects(tmp_path / "out/rejects.csv")


def test_a_clip_over_max_seconds_is_rejected_with_its_length(tmp_path: Path) -> None:
    kept, [row] = long_clip(tmp_path, "one two three", "reject")
    assert [u.utt_id for u in kept] == ["short"]
    assert (row.utt_id, row.reason) == ("story", "longer than audio.max_seconds (12.20 s > 5.0 s)")


def test_split_cuts_a_long_clip_at_its_pauses_into_its_transcript_lines(tmp_path: Path) -> None:
    kept, rejected = long_clip(tmp_path, "first phrase\nsecond phrase\nthird phrase", "split")
    assert not rejected
    pieces = {u.utt_id: u for u in kept}
    assert [pieces[f"story~{i}"].text for i in (1, 2, 3)] == ["first phrase", "second phrase", "third phrase"]
    assert [round(pieces[f"story~{i}"].duration, 1) for i in (1, 2, 3)] == [4.2, 3.3, 4.7]  # phrase + pauses
    assert pieces["story~2"].origin == "metadata.csv:2 line 2"
    assert sum(u.duration for u in kept if u.utt_id.startswith("story")) == pytest.approx(12.2, abs=0.01)


@pytest.mark.parametrize(
    "text,why",
    [
        (
            "one transcript for it all",
            "its transcript is one line, and one transcript cannot be divided without an alignment",
        ),
        ("a\nb\nc\nd\ne", "2 pause\\(s\\) found for its 5 transcript lines"),
    ],
)
def test_split_never_guesses_how_to_divide_a_transcript(tmp_path: Path, text: str, why: str) -> None:
    kept, [row] = long_clip(tmp_path, text, "split")
    assert [u.utt_id for u in kept] == ["short"]
    assert re.match(rf"longer than audio\.max_seconds \(12\.20 s > 5\.0 s\); not split: {why}", row.reason), row.reason


# --- rows the import stage cannot use ------------------------------------------------------------------------------

IMPORT_CASES = {
    "missing file": (Row("b", "s2", "ba", audio=False), "audio file wav/b.wav not found in"),
    "empty transcript": (Row("b", "s2", "  "), "empty transcript"),
    "empty speaker": (Row("b", " ", "ba"), "empty speaker"),
    "duplicate id": (
        Row("a", "s2", "ba", path="wav/a.wav"),
        "duplicate: the same audio \\(wav/a.wav\\) as metadata.csv:2",
    ),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_bad_row_stops_the_import_naming_row_and_reason(tmp_path: Path, case: str) -> None:
    bad, reason = IMPORT_CASES[case]
    with pytest.raises(
        BadItemError,
        match=rf"^metadata\.csv:3: {reason}.*; stopped because audio\.on_bad_audio is "
        r"'error': fix this item, or set audio\.on_bad_audio: skip",
    ):
        import_rows(tmp_path, [Row("a", "s1", "ta"), bad, Row("c", "s3", "ka")], "error")


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_bad_row_is_listed_and_nothing_else_is_lost(tmp_path: Path, case: str) -> None:
    bad, reason = IMPORT_CASES[case]
    rows = [Row("a", "s1", "ta"), bad, Row("c", "s3", "ka")]
    kept, rejected = import_rows(tmp_path, rows, "skip")
    assert [u.utt_id for u in kept] == ["wav_a", "wav_c"]
    [row] = rejected
    assert (row.stage, row.origin) == ("import", "metadata.csv:3") and re.match(reason, row.reason), row.reason
    assert len(kept) + len(rejected) == len(rows)


def test_kaldi_rows_other_files_lack_are_listed(tmp_path: Path) -> None:
    rows = [Row(f"u{i}", f"s{i}", "ta") for i in range(4)]
    kaldi(tmp_path, rows, segmented=False)
    (tmp_path / "utt2spk").write_text("u0 s0\nu1 s1\nu3 s3\nu9 s9\n", encoding="utf-8")
    (tmp_path / "wav.scp").write_text("u0 audio/u0.wav\nu1 audio/u1.wav\nu2 audio/u2.wav\n", encoding="utf-8")
    rejects = Rejects("import", "skip")
    kept = import_corpus({"format": "kaldi", "path": str(tmp_path)}, rejects)
    assert [u.utt_id for u in kept] == ["u0", "u1"]
    assert [(r.utt_id, r.origin, r.reason) for r in rejects.items] == [
        ("u2", "text:3", "no speaker in utt2spk"),
        ("u3", "text:4", "recording 'u3' is not in wav.scp"),
        ("u9", "utt2spk:4", "no transcript in text"),
    ]


def test_elan_annotations_without_a_recording_are_listed(tmp_path: Path) -> None:
    rows = [Row("a", "s1", "ta"), Row("b", "s2", "ka"), Row("c", "s2", "ta ka")]
    settings = WRITERS["elan"](tmp_path, rows)
    (tmp_path / "s2.wav").unlink()  # the linked media and the same-stem file are the same here
    rejects = Rejects("import", "skip")
    kept = import_corpus({**settings, "path": str(tmp_path)}, rejects)
    assert [u.speaker for u in kept] == ["s1"]
    assert [r.origin for r in rejects.items] == ["s2.eaf:transcription:400-1400ms", "s2.eaf:transcription:1800-2800ms"]
    assert all(
        r.reason.startswith(
            "no recording: the eaf links no audio file inside the corpus folder and there is "
            "no audio file named like it"
        )
        for r in rejects.items
    )
    assert len(kept) + len(rejects.items) == len(rows)


def test_kaldi_commands_and_archives_are_refused(tmp_path: Path) -> None:
    kaldi(tmp_path, [Row("u0", "s0", "ta")], segmented=False)
    for line, message in (
        ("u0 sox audio/u0.wav -t wav - |", r"u0 is a command .*; asrflow never runs commands"),
        ("u0 raw.ark:1234", r"u0 points into a Kaldi archive .*; write each recording"),
    ):
        (tmp_path / "wav.scp").write_text(line + "\n", encoding="utf-8")
        with pytest.raises(ManifestError, match=rf"wav\.scp:1: {message}"):
            import_corpus({"format": "kaldi", "path": str(tmp_path)}, Rejects("import", "skip"))


# --- transcripts normalisation empties -----------------------------------------------------------------------------


def test_transcript_empty_after_normalisation_is_listed(tmp_path: Path) -> None:
    utts = [
        Utterance("a", "a.wav", "s", "Ta, ka.", 1.0, origin="metadata.csv:2"),
        Utterance("b", "b.wav", "s", " ?! ", 1.0, origin="metadata.csv:3"),
    ]
    rejects = Rejects("normalize", "skip")
    kept = normalise_all(utts, TEXT, rejects)
    assert [(u.utt_id, u.text) for u in kept] == [("a", "ta ka")]
    assert [(r.stage, r.utt_id, r.origin) for r in rejects.items] == [("normalize", "b", "metadata.csv:3")]
    assert rejects.items[0].reason.startswith("transcript ' ?! ' is empty after normalisation")
    rejects.write(tmp_path / "rejects.csv")
    assert read_rejects(tmp_path / "rejects.csv") == rejects.items


# --- metadata that is not UTF-8 ------------------------------------------------------------------------------------


def latin1(path: Path, word: str = "ʔa", replacement: str = "café") -> None:
    """Re-encode `path` in Latin-1, with a word that Latin-1 can hold in place of `word`."""
    text = path.read_text(encoding="utf-8").replace(word, replacement)
    path.write_bytes(text.encode("latin-1"))


METADATA = {"audiofolder": "metadata.csv", "commonvoice": "validated.tsv", "kaldi": "text", "elan": "s1.eaf"}


@pytest.mark.parametrize("fmt", list(METADATA))
def test_metadata_not_utf8_names_the_file_and_byte(tmp_path: Path, fmt: str) -> None:
    settings = WRITERS[fmt](tmp_path, [Row("a", "s1", "ʔa"), Row("b", "s2", "ka")])
    latin1(tmp_path / METADATA[fmt])
    with pytest.raises(ManifestError, match=rf"{METADATA[fmt]}: not UTF-8 \(byte \d+\); re-save it as UTF-8"):
        import_corpus({**settings, "path": str(tmp_path)}, Rejects("import", "skip"))


def test_elan_speaker_mapping_not_utf8(tmp_path: Path) -> None:
    settings = WRITERS["elan"](tmp_path, [Row("a", "s1", "ta"), Row("b", "sé", "ka")], mapped=("sé",))
    (tmp_path / "speakers.csv").write_bytes((tmp_path / "speakers.csv").read_text().encode("latin-1"))
    with pytest.raises(ManifestError, match=r"speakers\.csv: not UTF-8"):
        import_corpus({**settings, "path": str(tmp_path)}, Rejects("import", "skip"))


# --- training: clips CTC cannot align, non-finite losses -----------------------------------------------------------


def tiny_base(path: Path, vocab_size: int = 8) -> Path:
    """A random 1-layer wav2vec2 CTC checkpoint in safetensors (what `model.base` points at)."""
    config = Wav2Vec2Config(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(path, safe_serialization=True)
    write_json(path / DESCRIPTION, {"path": None, **describe(path)})  # what the pretrain stage writes
    return path


def test_a_clip_too_short_for_its_transcript_is_rejected_with_the_reason(tmp_path: Path) -> None:
    fold = tmp_path / "folds/fold0"
    utts = {
        "train": [
            ("ok1", 1.5, "ta ka"),
            ("short", 0.3, "a very long transcript for so little audio"),
            ("ok2", 1.2, "ka ta"),
        ],
        "dev": [("dev1", 1.0, "ta")],
    }
    for part, items in utts.items():
        for utt, seconds, _ in items:
            sf.write(tmp_path / f"{utt}.wav", tone(seconds), 16000, subtype="PCM_16")
        write_manifest(
            fold / f"{part}.csv",
            [Utterance(u, str(tmp_path / f"{u}.wav"), part, text, seconds) for u, seconds, text in items],
        )
    write_json(fold / "vocab.json", build_vocab([t for _, _, t in utts["train"]]))
    write_manifest(tmp_path / "speed.csv", [])
    params = config.with_defaults(
        {
            "train": {
                "seed": 0,
                "max_epochs": 1,
                "patience": 1,
                "batch_seconds": 10,
                "warmup_steps": 1,
                "grad_clip": 1.0,
                "scratch": {"lr": 1e-3},
            },
            "augment": {"mask_time_prob": 0.0, "mask_time_length": 2},
            "corpus": {"language": "xx"},
            "model": {},
        }
    )
    train_fold(
        fold,
        tmp_path / "speed.csv",
        tiny_base(tmp_path / "base"),
        "scratch",
        params,
        out_dir=tmp_path / "model",
        curve_path=tmp_path / "curve.csv",
    )
    info = read_json(tmp_path / "model/training.json")
    [dropped] = info["dropped_utterances"]
    assert dropped["utt_id"] == "short"
    # 0.3 s → 14 frames of wav2vec2's conv stack; 42 characters, and "tt" needs a blank between its two t's.
    assert dropped["reason"] == "too short for its transcript under CTC: 0.30 s gives 14 frames, its 42 labels need 43"
    assert info["train_audio_seconds"] == pytest.approx(1.5 + 1.2), "every other clip trained"


def test_a_non_finite_loss_stops_training_naming_the_batch(tmp_path: Path) -> None:
    vocab = build_vocab(["ta"])
    processor = make_processor(vocab)
    model = Wav2Vec2ForCTC.from_pretrained(tiny_base(tmp_path / "base", len(vocab)), use_safetensors=True)
    labels = processor.tokenizer("ta").input_ids
    samples = tone(1.0)
    broken = samples.copy()
    broken[:50] = math.nan  # what a decoder bug or an exploding model would feed the loss
    clips = [
        Clip("fine", "s", "ta", samples, labels, len(samples)),
        Clip("poisoned", "s", "ta", broken, labels, len(broken)),
    ]
    loop = LoopConfig(lr=1e-3, max_epochs=1, patience=1, batch_seconds=10, warmup_steps=0, grad_clip=1.0, seed=0)
    with pytest.raises(
        TrainingError,
        match=r"non-finite CTC loss \(nan\) on the batch of utterances \['fine', "
        r"'poisoned'\]|non-finite CTC loss \(nan\) on the batch of utterances "
        r"\['poisoned', 'fine'\]",
    ):
        fit(AudioTask(model, processor), clips, clips[:1], loop, lambda m: None, curve_path=None, label="nan-test")


# --- a bad params.yaml: every kind of schema error names its key (config._describe) ------------------------------
# (test_stages.py: an unknown key in a section, a value outside an enum; test_decode.py, test_search.py: a number out
# of range.)


@pytest.mark.parametrize(
    "change, message",
    [
        pytest.param(
            lambda p: p.update(extra=1),
            r"- unknown key extra; allowed keys here: audio, augment, corpus, decode, evaluate, folds, "
            r"learning_curve, methods, model, release, report, resources, search, text, train$",
            id="top level",
        ),
        # train.<method>: the method's own keys and the loop settings every method may override ($defs/method)
        pytest.param(
            lambda p: p["train"]["lora"].update(rank=4),
            r"- unknown key train\.lora\.rank; allowed keys here: "
            r"alpha, batch_seconds, dropout, gradient_checkpointing, lr, max_epochs, micro_batch_seconds, "
            r"optimizer, patience, precision, r, target_modules$",
            id="a method's section",
        ),
        pytest.param(lambda p: p["train"].pop("seed"), r"- train: 'seed' is a required property$", id="required"),
    ],
)
def test_a_bad_params_file_names_the_key_and_what_is_allowed(tmp_path: Path, change, message: str) -> None:
    params = read_params(ROOT)
    change(params)
    with pytest.raises(config.ParamsError, match=message):
        config.validate(params)
