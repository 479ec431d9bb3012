"""The espeak-ng demo corpus: layout, audio format, clean IPA transcripts, distinct speakers, reproducibility."""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from asrflow.corpus import demo

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "seed": 13,
    "language": "sw",
    "speakers": 3,
    "utterances_per_speaker": 4,
    "source_languages": ["fi", "et"],
    "source_speakers": 1,
    "source_utterances_per_speaker": 3,
    "keep_stress": False,
}
NOT_IN_TRANSCRIPTS = set('()ˈˌ"[]^\u200d\u200c') | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def read_metadata(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (root / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny corpus, made the way the pipeline makes it: `asrflow demo` reading a params file."""
    root = tmp_path_factory.mktemp("demo")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"]["demo"] = TINY
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    args = argparse.Namespace(params=root / "params.yaml", target=root / "target", source=root / "source")
    demo.run_cli(args)
    return args.target, args.source


def test_layout_and_columns(corpus: tuple[Path, Path]) -> None:
    target, source = corpus
    columns, rows = read_metadata(target)
    assert columns == ["file_name", "transcription", "speaker_id"]
    assert len(rows) == 3 * 4
    assert sorted({r["speaker_id"] for r in rows}) == ["spk01", "spk02", "spk03"]
    assert rows[0]["file_name"] == "wav/spk01/spk01_0001.wav"

    columns, rows = read_metadata(source)
    assert columns == ["file_name", "transcription", "speaker_id", "language"]
    assert sorted((r["speaker_id"], r["language"]) for r in rows) == [("et_spk1", "et")] * 3 + [("fi_spk1", "fi")] * 3
    for root in corpus:
        _, rows = read_metadata(root)
        assert all((root / r["file_name"]).is_file() for r in rows)
        assert len(list(root.rglob("*.wav"))) == len(rows)


def test_audio_is_22050_hz_mono_int16_and_sane(corpus: tuple[Path, Path]) -> None:
    for root in corpus:
        for path in root.rglob("*.wav"):
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
            samples, _ = sf.read(path, dtype="int16")
            peak = np.abs(samples.astype(np.int32)).max()
            assert 0.3 < len(samples) / 22050 < 10, path
            assert 1000 < peak < 32767, f"{path}: silent or clipped (peak {peak})"


def test_transcripts_are_clean_ipa_with_word_spaces(corpus: tuple[Path, Path]) -> None:
    for root in corpus:
        for row in read_metadata(root)[1]:
            text = row["transcription"]
            assert not set(text) & NOT_IN_TRANSCRIPTS, text
            assert len(text.split()) >= 3 and "  " not in text and text == text.strip(), text


def test_keep_stress_changes_only_the_stress_marks() -> None:
    plain = demo.plan_target(TINY)
    stressed = demo.plan_target({**TINY, "keep_stress": True})
    assert all("ˈ" in u.sentence.transcription for u in stressed)
    unstressed = [u.sentence.transcription.replace("ˈ", "").replace("ˌ", "") for u in stressed]
    assert unstressed == [u.sentence.transcription for u in plain]


def test_same_seed_gives_byte_identical_corpus(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    demo.synthesise_demo(TINY, tmp_path / "target", tmp_path / "source")
    for first, again in zip(corpus, (tmp_path / "target", tmp_path / "source")):
        assert tree_bytes(first) == tree_bytes(again)


def test_other_seed_gives_other_corpus() -> None:
    first, other = demo.plan_target(TINY), demo.plan_target({**TINY, "seed": TINY["seed"] + 1})
    assert [u.sentence for u in first] != [u.sentence for u in other]
    assert {u.speaker for u in first} != {u.speaker for u in other}


def test_speakers_differ(corpus: tuple[Path, Path]) -> None:
    speakers = demo.make_speakers("sw", 9, seed=13, corpus="target", id_format="spk{number:02d}")
    assert len({s.variant for s in speakers}) == 9
    target, _ = corpus
    rows = read_metadata(target)[1]
    readers: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        readers.setdefault(row["transcription"], []).append(row)
    shared = [group for group in readers.values() if len(group) == 3]
    assert shared, "every speaker should read at least one common sentence"
    audio = [sf.read(target / r["file_name"], dtype="int16")[0] for r in shared[0]]
    for a, b in itertools.combinations(audio, 2):
        assert len(a) != len(b) or not np.array_equal(a, b)


def test_clean_ipa_removes_espeak_artefacts() -> None:
    raw = 'hˈɛlo (en)wˈɜːld(sw) "t^ˌa\u200db" [ka]'
    assert demo.clean_ipa(raw, keep_stress=False) == "hɛlo wɜːld tʲab ka"
    assert demo.clean_ipa(raw, keep_stress=True) == "hˈɛlo wˈɜːld tʲˌab ka"


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "write_metadata", fail)
    with pytest.raises(KeyboardInterrupt):
        demo.synthesise_demo(TINY, tmp_path / "target", tmp_path / "source")
    assert list(tmp_path.iterdir()) == []
