"""Unit tests of the data stages on small real audio files and manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from asrflow import config
from asrflow.augment import augment
from asrflow.io import read_json
from asrflow.loop import training_set
from asrflow.manifest import BadItemError, ManifestError, Rejects, Utterance, read_manifest, write_manifest
from asrflow.normalize import normalise_all
from asrflow.resample import resample
from asrflow.split import FoldError, split, write_folds
from asrflow.transcripts import normalise

TEXT = config.defaults("text") | {"unicode": "NFC", "lowercase": True, "remove": ",.?[]^-\\"}
AUDIO = {"sample_rate": 16000, "min_seconds": 0.3, "max_seconds": 20.0, "on_bad_audio": "error", "too_long": "reject"}


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


# --- params ----------------------------------------------------------------------------------------------------


def test_params_file_is_valid() -> None:
    config.load_all("params.yaml")


def test_unknown_key_is_named_with_allowed_keys() -> None:
    params = config.load_all("params.yaml")
    params["text"]["lowercse"] = True
    allowed = r"allowed keys here: graphemes, keep_format_characters, lowercase, remove"
    with pytest.raises(config.ParamsError, match=rf"unknown key text\.lowercse; {allowed}"):
        config.validate(params)


def test_bad_enum_value_lists_allowed_values() -> None:
    params = config.load_all("params.yaml")
    params["corpus"]["format"] = "wavs"
    with pytest.raises(config.ParamsError, match=r"corpus\.format: 'wavs' is not allowed; allowed values: \['demo'"):
        config.validate(params)


def test_fold_ids_must_match_k() -> None:
    params = config.load_all("params.yaml")
    params["folds"]["k"] = 4
    with pytest.raises(config.ParamsError, match=r"folds\.ids: must be \[0, 1, 2, 3\]"):
        config.validate(params)


def test_stage_sees_only_its_declared_keys() -> None:
    view = config.load_stage("params.yaml", "train", "full")
    assert set(view) == {"train", "augment", "corpus", "model"}
    assert set(view["augment"]) == {"mask_time_prob", "mask_time_length"}
    assert view["model"] == {"base_language": None}, (
        "not model.base: a changed base re-runs pretrain, which re-runs this"
    )
    assert "full" in view["train"] and "evaluate" not in view


# --- manifests and text ----------------------------------------------------------------------------------------


def test_manifest_round_trip_and_duplicate_rows(tmp_path) -> None:
    utts = [Utterance("a", "x.wav", "s1", "ʔa ŋ", 1.5), Utterance("b", "y.wav", "s2", "", None, 0.5, 1.0, "m:3")]
    write_manifest(tmp_path / "m.csv", utts)
    assert read_manifest(tmp_path / "m.csv") == utts
    write_manifest(tmp_path / "dup.csv", [utts[0], utts[0]])
    with pytest.raises(ManifestError, match=r"dup\.csv:3: duplicate utt_id 'a' \(first on line 2\)"):
        read_manifest(tmp_path / "dup.csv")


@pytest.mark.parametrize("text", ["qʼaɬ", "tʃʰaː", "kʷʼe", "ã ẽ", "ŋ̊ɬʼ", "ɑ̃ːˀ", "ʔa|b"])
def test_ipa_survives_normalisation(text: str) -> None:
    import unicodedata

    assert normalise(text, TEXT) == unicodedata.normalize("NFC", text)


def test_normalisation_composes_lowercases_and_removes_literally() -> None:
    decomposed = "A\u0303ʼ, [ok]^\\ -x."
    assert normalise(decomposed, TEXT) == "ãʼ okx".replace("okx", "ok x")
    assert normalise("  Ŋa\u2003\tB ", {**TEXT, "lowercase": False}) == "Ŋa B"


def test_transcript_empty_after_normalisation_names_the_row() -> None:
    with pytest.raises(BadItemError, match=r"metadata\.csv:7: transcript '\?\.' is empty after normalisation"):
        normalise_all(
            [Utterance("a", "x", "s", "?.", 1.0, origin="metadata.csv:7")], TEXT, Rejects("normalize", "error")
        )


# --- folds -----------------------------------------------------------------------------------------------------


def corpus(n_speakers: int, per_speaker: int = 4) -> list[Utterance]:
    rng = np.random.default_rng(0)
    utts = []
    for s in range(n_speakers):
        for i in range(per_speaker):
            # speaker s4 alone says "ɮ": a test-only character in the fold that tests s4
            text = "ta ka" + (" ɮa" if s == 4 else "") + (" ŋa" if i % 2 else "")
            utts.append(Utterance(f"s{s}_{i}", f"s{s}_{i}.wav", f"s{s}", text, float(rng.uniform(1, 4))))
    return utts


@pytest.mark.parametrize("k,n_speakers", [(3, 9), (2, 5), (4, 6)])
def test_folds_are_speaker_independent(k: int, n_speakers: int) -> None:
    utts = corpus(n_speakers)
    folds = split(utts, {"k": k, "seed": 0, "dev_speakers": 1})
    tested = [s for f in folds for s in f["speakers"]["test"]]
    assert sorted(tested) == sorted({u.speaker for u in utts}), "every speaker is tested exactly once"
    for fold in folds:
        groups = [set(fold["speakers"][p]) for p in ("train", "dev", "test")]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert len(groups[1]) == 1 and groups[0]
        for part in ("train", "dev", "test"):
            assert {u.speaker for u in fold[part]} <= set(fold["speakers"][part])
        assert sum(len(fold[p]) for p in ("train", "dev", "test")) == len(utts)


def test_folds_balance_duration() -> None:
    utts = corpus(9)
    folds = split(utts, {"k": 3, "seed": 0, "dev_speakers": 1})
    seconds = [sum(u.duration for u in f["test"]) for f in folds]
    per_speaker = max(sum(u.duration for u in utts if u.speaker == s) for s in {u.speaker for u in utts})
    assert max(seconds) - min(seconds) <= per_speaker


def test_vocab_has_no_character_only_test_speakers_use() -> None:
    for fold in split(corpus(9), {"k": 3, "seed": 0, "dev_speakers": 1}):
        train_chars = {c for u in fold["train"] for c in u.text if c != " "}
        assert set(fold["vocab"]) - {"<pad>", "<unk>", "|"} == train_chars
        if "s4" in fold["speakers"]["test"] or "s4" in fold["speakers"]["dev"]:
            assert "ɮ" not in fold["vocab"]
        else:
            assert "ɮ" in fold["vocab"]


def test_too_few_speakers_says_how_many_are_needed() -> None:
    with pytest.raises(FoldError, match=r"has 3 speakers; folds\.k=3 with folds\.dev_speakers=1 needs at least 4"):
        split(corpus(3), {"k": 3, "seed": 0, "dev_speakers": 1})


def test_split_is_deterministic_and_written_atomically(tmp_path) -> None:
    cfg = {"k": 3, "seed": 5, "dev_speakers": 1}
    write_folds(split(corpus(9), cfg), tmp_path / "a")
    write_folds(split(corpus(9), cfg), tmp_path / "b")
    for name in ("folds.json", "fold0/train.csv", "fold2/vocab.json", "fold1/test.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"], "no temporary leftovers"
    assert read_json(tmp_path / "a" / "folds.json")["fold0"]["vocab_size"] > 3


# --- audio -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate,channels,fmt,subtype",
    [
        (44100, 2, "WAV", "PCM_24"),
        (8000, 1, "WAV", "PCM_U8"),
        (48000, 1, "WAV", "FLOAT"),
        (22050, 2, "FLAC", "PCM_16"),
        (32000, 1, "OGG", "VORBIS"),
        (16000, 1, "WAV", "PCM_16"),
        (44100, 2, "MP3", "MPEG_LAYER_III"),
        (24000, 1, "MP3", "MPEG_LAYER_III"),
        (96000, 2, "FLAC", "PCM_24"),
        (11025, 1, "WAV", "DOUBLE"),
    ],
)
def test_resample_decodes_any_format_to_16k_mono(tmp_path, rate, channels, fmt, subtype) -> None:
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, tone(1.25, rate, channels), rate, format=fmt, subtype=subtype)
    resample([Utterance("u1", str(path), "s", "a")], tmp_path / "out", AUDIO, cores=1)
    [kept] = read_manifest(tmp_path / "out" / "manifest.csv")
    data, out_rate = sf.read(kept.audio)
    assert out_rate == 16000 and data.ndim == 1
    assert kept.duration == pytest.approx(1.25, abs=0.01)


def test_resample_rejects_out_of_range_clips_and_keeps_count(tmp_path) -> None:
    utts = []
    for name, seconds in (("short", 0.1), ("ok", 1.0), ("long", 3.0)):
        sf.write(tmp_path / f"{name}.wav", tone(seconds, 22050), 22050)
        utts.append(Utterance(name, str(tmp_path / f"{name}.wav"), "s", "a", origin=f"metadata.csv:{name}"))
    resample(utts, tmp_path / "out", {**AUDIO, "max_seconds": 2.0}, cores=2)
    kept = read_manifest(tmp_path / "out" / "manifest.csv")
    rejects = (tmp_path / "out" / "rejects.csv").read_text().splitlines()
    assert [u.utt_id for u in kept] == ["ok"]
    assert len(kept) + len(rejects) - 1 == len(utts)
    assert "shorter than audio.min_seconds" in rejects[1] and "longer than audio.max_seconds" in rejects[2]


def test_undecodable_audio_names_file_and_row(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(
        BadItemError,
        match=r"^metadata\.csv:9: cannot decode audio .*\[.*bad\.wav\]; stopped because "
        r"audio\.on_bad_audio is 'error'",
    ):
        resample([Utterance("b", str(bad), "s", "a", origin="metadata.csv:9")], tmp_path / "out", AUDIO, cores=1)
    assert not (tmp_path / "out").exists(), "a failed stage leaves no output"


# --- augmentation ----------------------------------------------------------------------------------------------


def test_speed_copies_change_duration_and_only_training_copies_are_used(tmp_path) -> None:
    utts = []
    for name in ("tr", "dv", "te"):
        sf.write(tmp_path / f"{name}.wav", tone(2.0, 16000), 16000, subtype="PCM_16")
        utts.append(Utterance(name, str(tmp_path / f"{name}.wav"), name, "a", 2.0))
    augment(utts, [0.9, 1.1], tmp_path / "speed", cores=1)
    copies = read_manifest(tmp_path / "speed" / "manifest.csv")
    by_id = {c.utt_id: c for c in copies}
    assert by_id["tr_sp0.9"].duration == pytest.approx(2.0 / 0.9, abs=0.01)
    assert by_id["tr_sp1.1"].duration == pytest.approx(2.0 / 1.1, abs=0.01)
    chosen = training_set([utts[0]], copies)
    assert [u.utt_id for u in chosen] == ["tr", "tr_sp0.9", "tr_sp1.1"]


def test_keys_added_later_take_their_schema_default_when_a_params_file_lacks_them(tmp_path: Path) -> None:
    """A params.yaml written before the memory settings existed still validates and means what it meant."""
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    for key in ("precision", "gradient_checkpointing", "micro_batch_seconds", "optimizer"):
        del params["train"][key]
    del params["model"]["base_language"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    view = config.load_stage(tmp_path / "params.yaml", "train", "full")
    assert {
        k: view["train"][k] for k in ("precision", "gradient_checkpointing", "micro_batch_seconds", "optimizer")
    } == {"precision": "fp32", "gradient_checkpointing": False, "micro_batch_seconds": None, "optimizer": "adamw"}
    assert view["model"] == {"base_language": None}
