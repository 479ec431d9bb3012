"""The corpus from more than one folder and in more formats: Praat TextGrids and Hugging Face datasets on disk import
the same utterances as the audiofolder layout of the same speech; ELAN tiers chosen by name, linguistic type,
position or a name pattern; empty and doubtful annotations listed, never lost; several sources into one manifest,
with duplicates across them refused naming both; and the import's deps on every source folder in both engines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from conftest import ROOT
from corpus_fixtures import WRITERS, Row, hf, textgrid, tone
from pympi.Elan import Eaf

from asrflow import config, stages
from asrflow.audio import load_mono
from asrflow.import_ import import_corpus
from asrflow.manifest import BadItemError, ManifestError, Rejects, Utterance, read_manifest

SPEAKERS = ("amina", "bakari", "chausiku")


@pytest.fixture
def rows() -> list[Row]:
    """Nine utterances of three speakers, each its own tone (so samples tell them apart), one of them at 22.05 kHz."""
    texts = ["ta ka", "ka", "pa ta", "ma", "ta", "ka pa", "pa", "ma ta", "ka ka"]
    return [
        Row(f"u{i}", SPEAKERS[i % 3], text, tone(0.5 + 0.1 * i, 16000, 150 + 40 * i)) for i, text in enumerate(texts)
    ]


def imported(corpus: dict, tmp_path: Path, on_bad: str = "error") -> tuple[list[Utterance], Rejects]:
    rejects = Rejects("import", on_bad)
    params = {"corpus": {"name": "t", "language": "xx", **corpus}}
    config.with_defaults(params)  # the schema's defaults, as a params.yaml without these keys means
    return import_corpus(params["corpus"], rejects, tmp_path / "import_audio"), rejects


def samples(utt: Utterance) -> np.ndarray:
    """The utterance's audio at its file's own rate (its segment of the recording, if it has one)."""
    return load_mono(utt.audio, sf.info(utt.audio).samplerate, utt.start, utt.end)


def as_rows(utts: list[Utterance]) -> dict[tuple[str, str], np.ndarray]:
    return {(u.speaker, u.text): samples(u) for u in utts}


def write(tmp_path: Path, name: str, writer, rows: list[Row], **options) -> dict:
    root = tmp_path / name
    root.mkdir()
    return {**writer(root, rows, **options), "path": str(root)}


@pytest.mark.parametrize("fmt", ["textgrid", "hf-save_to_disk", "hf-parquet"])
def test_format_imports_what_audiofolder_does(tmp_path: Path, rows: list[Row], fmt: str) -> None:
    reference, _ = imported(write(tmp_path, "audiofolder", WRITERS["audiofolder"], rows), tmp_path)
    if fmt == "textgrid":
        settings = write(tmp_path, fmt, textgrid, rows)
    else:
        settings = write(tmp_path, fmt, hf, rows, layout=fmt.removeprefix("hf-"))
    utts, rejects = imported(settings, tmp_path)
    assert not rejects.items
    assert sorted(as_rows(utts)) == sorted(as_rows(reference))
    expected = as_rows(reference)
    for key, audio in as_rows(utts).items():
        np.testing.assert_array_equal(audio, expected[key], err_msg=str(key))
    if fmt == "textgrid":  # ids: <file>_<tier>_<start ms>, as ELAN's
        assert {u.utt_id for u in utts if u.speaker == "amina"} == {
            f"amina_transcription_amina_{round(u.start * 1000)}" for u in utts if u.speaker == "amina"
        }
        assert utts[0].origin.startswith("amina.TextGrid:transcription@amina:")
    else:  # ids from the audio path, as audiofolder's: parquet keeps the path, save_to_disk only the file's name
        ids = [u.utt_id for u in reference] if fmt == "hf-parquet" else [Path(u.audio).stem for u in reference]
        assert sorted(u.utt_id for u in utts) == sorted(ids)
        assert all(Path(u.audio).is_relative_to(tmp_path / "import_audio") for u in utts)


def test_hf_dataset_dict_splits_and_columns(tmp_path: Path, rows: list[Row], monkeypatch: pytest.MonkeyPatch) -> None:
    """A save_to_disk DatasetDict with its own column names: one split or both; a row without audio is listed."""
    from datasets import Audio, Dataset, DatasetDict

    def dataset(part: list[Row]) -> Dataset:
        table = {
            "audio": [{"bytes": None, "path": f"wav/{r.utt}.wav"} if r.audio else None for r in part],
            "sentence": [r.text for r in part],
            "client": [r.speaker for r in part],
            "key": [f"k{r.utt}" for r in part],
        }
        return Dataset.from_dict(table).cast_column("audio", Audio(decode=False))

    root = tmp_path / "dd"
    (root / "wav").mkdir(parents=True)
    for row in rows:
        sf.write(root / f"wav/{row.utt}.wav", row.samples, row.rate)
    rows[-1].audio = False
    with monkeypatch.context() as inside:
        inside.chdir(root)  # save_to_disk embeds the files the paths name, from the working directory
        DatasetDict({"train": dataset(rows[:6]), "test": dataset(rows[6:])}).save_to_disk(str(root))
    shutil.rmtree(root / "wav")
    columns = {"text_column": "sentence", "speaker_column": "client", "id_column": "key"}
    utts, rejects = imported({"format": "hf", "path": str(root), "hf": columns}, tmp_path, "skip")
    assert [u.utt_id for u in utts] == [f"k{r.utt}" for r in rows[:-1]]
    assert [(u.speaker, u.text) for u in utts] == [(r.speaker, r.text) for r in rows[:-1]]
    assert [(r.utt_id, r.origin, r.reason) for r in rejects.items] == [
        ("ku8", "test/data-00000-of-00001.arrow:2", "no audio: neither bytes nor a path")
    ]
    train, _ = imported({"format": "hf", "path": str(root), "hf": {**columns, "split": "train"}}, tmp_path)
    assert [u.text for u in train] == [r.text for r in rows[:6]]
    with pytest.raises(
        ManifestError,
        match=r"arrow: no column\(s\) \['transcription', 'speaker_id'\]; its columns are \['audio', 'sentence'",
    ):
        imported({"format": "hf", "path": str(root)}, tmp_path)


def test_hf_rows_naming_files(tmp_path: Path, rows: list[Row]) -> None:
    """Parquet rows holding only a path: a file inside the corpus folder, a missing one (listed), one outside (an
    error, whatever on_bad_audio says)."""
    root = tmp_path / "corpus"
    (root / "wav").mkdir(parents=True)
    sf.write(root / "wav/u0.wav", rows[0].samples, rows[0].rate)
    sf.write(tmp_path / "outside.wav", tone(1.0), 16000)

    def table(*paths: str) -> dict:
        audio = [{"bytes": None, "path": path} for path in paths]
        columns = {"audio": audio, "transcription": ["ta"] * len(paths), "speaker_id": ["s1"] * len(paths)}
        pq.write_table(pa.table(columns), root / "train.parquet")
        return {"format": "hf", "path": str(root)}

    utts, rejects = imported(table("wav/u0.wav", "wav/u9.wav"), tmp_path, "skip")
    assert [u.utt_id for u in utts] == ["wav_u0"]
    np.testing.assert_array_equal(samples(utts[0]), sf.read(root / "wav/u0.wav", dtype="float32")[0])
    assert [(r.origin, r.reason) for r in rejects.items] == [
        ("train.parquet:1", f"audio file wav/u9.wav not found in {root}")
    ]
    with pytest.raises(ManifestError, match=r"train\.parquet:1: audio path: path '\.\./outside\.wav' leaves the"):
        imported(table("wav/u0.wav", "../outside.wav"), tmp_path, "skip")


# --- ELAN tiers -----------------------------------------------------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """One recording with a tier per speaker (linguistic type `tx`, PARTICIPANT P1 / P2), a `notes` tier of another
    type, an empty annotation and a doubtful one."""
    root = tmp_path / "elan"
    root.mkdir()
    sf.write(root / "session.wav", tone(6.0), 16000)
    eaf = Eaf(author="asrflow-tests")
    eaf.add_linguistic_type("tx")
    eaf.add_tier("notes")
    for tier, participant in (("transcription@amina", "P1"), ("transcription@bakari", "P2")):
        eaf.add_tier(tier, ling="tx", part=participant)
    eaf.remove_tier("default")
    eaf.add_annotation("notes", 0, 6000, "a note, not a transcript")
    eaf.add_annotation("transcription@amina", 0, 1000, "ta ka")
    eaf.add_annotation("transcription@amina", 1000, 2000, "")
    eaf.add_annotation("transcription@bakari", 2500, 3500, "pa")
    eaf.add_annotation("transcription@bakari", 4000, 5000, "ma ??? ta")
    eaf.to_file(str(root / "session.eaf"))
    return root


def elan(root: Path, tmp_path: Path, **options: object) -> tuple[list[Utterance], Rejects]:
    return imported({"format": "elan", "path": str(root), "elan": options}, tmp_path)


def test_elan_tiers_by_pattern_type_and_index(session: Path, tmp_path: Path) -> None:
    by_pattern, rejects = elan(session, tmp_path, tier_pattern="transcription@(?P<speaker>.+)")
    assert [(u.utt_id, u.speaker, u.text) for u in by_pattern] == [
        ("session_transcription_amina_0", "amina", "ta ka"),
        ("session_transcription_bakari_2500", "bakari", "pa"),
    ]
    by_type, _ = elan(session, tmp_path, tier_type="tx")
    assert [(u.speaker, u.text) for u in by_type] == [("P1", "ta ka"), ("P2", "pa")], "the speaker: PARTICIPANT"
    by_index, _ = elan(session, tmp_path, tier_index=2, speakers=None)
    assert [(u.speaker, u.text) for u in by_index] == [("P2", "pa")]


def test_elan_tier_choice_errors(session: Path, tmp_path: Path) -> None:
    with pytest.raises(config.ParamsError, match=r"corpus\.elan: choose the transcript tiers one way .*got tier, "):
        elan(session, tmp_path, tier="notes", tier_index=0)
    with pytest.raises(config.ParamsError, match=r"corpus\.elan: choose .*none is set"):
        elan(session, tmp_path)
    with pytest.raises(ManifestError, match=r"session\.eaf: no tier with tier_type 'words'; its tiers are \['notes "):
        elan(session, tmp_path, tier_type="words")
    with pytest.raises(ManifestError, match=r"no tier with tier_index 3; its tiers are \['notes', "):
        elan(session, tmp_path, tier_index=3)
    with pytest.raises(ManifestError, match=r"tier 'notes' has no PARTICIPANT and corpus\.elan\.speakers"):
        elan(session, tmp_path, tier_pattern="no.*")


def test_empty_and_doubtful_annotations_are_listed_not_errors(session: Path, tmp_path: Path, rows: list[Row]) -> None:
    """Under on_bad_audio: error too: they are left out on purpose, each with its reason."""
    _, rejects = elan(session, tmp_path, tier_pattern="transcription@(?P<speaker>.+)")
    assert [(r.utt_id, r.origin, r.reason) for r in rejects.items] == [
        (
            "session_transcription_amina_1000",
            "session.eaf:transcription@amina:1000-2000ms",
            "empty transcript: the annotation is empty (not transcribed yet)",
        ),
        (
            "session_transcription_bakari_4000",
            "session.eaf:transcription@bakari:4000-5000ms",
            "doubtful: the annotation contains the marker '??' (corpus.elan.doubtful)",
        ),
    ]
    _, rejects = elan(session, tmp_path, tier_pattern="transcription@(?P<speaker>.+)", doubtful="ma")
    assert [r.reason.split(":")[0] for r in rejects.items] == ["empty transcript", "doubtful"]
    kept, rejects = elan(session, tmp_path, tier_pattern="transcription@(?P<speaker>.+)", doubtful="")
    assert [u.text for u in kept] == ["ta ka", "pa", "ma ??? ta"] and len(rejects.items) == 1

    # A TextGrid's doubtful label too (its empty intervals are Praat's gaps, not annotations).
    marked = [*rows[:2], Row("x", rows[0].speaker, "??? ka", tone(0.5))]
    utts, rejects = imported(write(tmp_path, "tg", textgrid, marked), tmp_path)
    assert len(utts) == 2 and [r.reason.split(":")[0] for r in rejects.items] == ["doubtful"]


# --- several sources ------------------------------------------------------------------------------------------------


def round_folder(tmp_path: Path, rows: list[Row]) -> dict:
    """A round of new recordings transcribed in ELAN: one eaf per speaker, PARTICIPANT the speaker id."""
    return {**write(tmp_path, "round2", WRITERS["elan"], rows), "elan": {"tier": "transcription"}}


def test_several_sources_make_one_manifest_with_the_same_speakers(tmp_path: Path, rows: list[Row]) -> None:
    main = write(tmp_path, "corpus", WRITERS["audiofolder"], rows[:6])
    new = [Row(f"n{i}", SPEAKERS[i % 2], "pa ka", tone(0.8, 16000, 500 + 50 * i)) for i in range(3)]
    source = round_folder(tmp_path, new)
    utts, rejects = imported({**main, "sources": [source]}, tmp_path)
    assert not rejects.items
    assert [u.utt_id for u in utts[:6]] == [f"wav_u{i}" for i in range(6)], "the main corpus first, ids unchanged"
    assert [(u.speaker, u.text) for u in utts[6:]] == [("amina", "pa ka"), ("amina", "pa ka"), ("bakari", "pa ka")]
    assert {u.speaker for u in utts} == set(SPEAKERS)
    assert all(Path(u.audio).parent == tmp_path / "round2" for u in utts[6:])


def test_a_duplicate_across_sources_is_refused_naming_both(tmp_path: Path, rows: list[Row]) -> None:
    main = write(tmp_path, "corpus", WRITERS["audiofolder"], rows[:3])
    again = write(tmp_path, "again", WRITERS["audiofolder"], rows[:1])  # the same name and the same audio
    copy = tmp_path / "copy"
    WRITERS["audiofolder"](copy, [Row("other", "amina", "x", rows[1].samples)])  # another name, the same audio
    sources = [again, {"format": "audiofolder", "path": str(copy)}]
    utts, rejects = imported({**main, "sources": sources}, tmp_path, "skip")
    assert [u.utt_id for u in utts] == ["wav_u0", "wav_u1", "wav_u2"]
    same_name, other_name = rejects.items
    assert same_name.reason == (
        f"duplicate recording span: imported from {main['path']} (audiofolder) (metadata.csv:2) and again from "
        f"{again['path']} (audiofolder) (metadata.csv:2); keep it in one source"
    )
    assert other_name.reason.startswith(f"duplicate recording span: imported from {main['path']} (audiofolder) ")
    assert f"again from {copy} (audiofolder)" in other_name.reason
    with pytest.raises(BadItemError, match=r"duplicate recording span: imported from .*corpus .* and again"):
        imported({**main, "sources": sources}, tmp_path, "error")
    # Within one source, identical recordings are no duplicate of another source: both kept.
    twins = write(tmp_path, "twins", WRITERS["audiofolder"], [rows[0], Row("twin", "amina", "ta", rows[0].samples)])
    assert len(imported(twins, tmp_path)[0]) == 2


def test_the_same_name_for_other_audio_in_two_sources_keeps_both_apart(tmp_path: Path, rows: list[Row]) -> None:
    """Two documentation rounds laid out alike (round1/wav/u0.wav, round2/wav/u0.wav): two recordings, both kept,
    each with an id of its own that says where it came from."""
    main = write(tmp_path, "round1", WRITERS["audiofolder"], rows[:2])
    later = write(tmp_path, "round2", WRITERS["audiofolder"], [Row("u0", "amina", "pa", rows[2].samples)])
    utts, rejects = imported({**main, "sources": [later]}, tmp_path, "error")
    assert not rejects.items and len(utts) == 3
    ids = [u.utt_id for u in utts]
    assert len(set(ids)) == 3 and ids[1] == "wav_u1", "a name no other utterance shares keeps its readable id"
    assert all(re.fullmatch(r"wav_u0~[0-9a-f]{10}", i) for i in (ids[0], ids[2])), ids
    assert ids == [u.utt_id for u in imported({**main, "sources": [later]}, tmp_path, "error")[0]], "stable"


def test_every_source_folder_is_a_dep_of_the_import_in_both_engines(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"]["sources"] = [
        {"format": "elan", "path": "data/raw/round1", "elan": {"tier": "hypothesis"}},
        {"format": "textgrid", "path": "data/raw/round2"},
    ]
    config.validate(params)
    import_ = stages.stage("import")
    assert stages.dep_paths(params, import_.deps["sources"]) == ["data/raw/round1", "data/raw/round2"]
    assert stages.dep_paths(params, import_.deps["corpus"]) == ["data/raw/demo"]
    deps = yaml.safe_load(stages.dvc_yaml(params))["stages"]["import"]["deps"]
    assert deps[:3] == ["${corpus.path}", "data/raw/round1", "data/raw/round2"]

    dvc_file = tmp_path / "dvc.yaml"
    dvc_file.write_text(stages.dvc_yaml(config.load_all(ROOT / "params.yaml")), encoding="utf-8")
    assert stages.stale_dvc_deps(import_, params, dvc_file) == ["data/raw/round1", "data/raw/round2"]
    dvc_file.write_text(stages.dvc_yaml(params), encoding="utf-8")
    assert stages.stale_dvc_deps(import_, params, dvc_file) == []
    assert stages.stale_dvc_deps(import_, params, tmp_path / "none.yaml") == []


def test_source_options_are_validated(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"]["sources"] = [{"format": "demo", "path": "x"}, {"format": "elan", "path": "y", "elan": {"t": 1}}]
    with pytest.raises(config.ParamsError) as error:
        config.validate(params)
    assert "corpus.sources.0.format: 'demo' is not allowed" in str(error.value)
    assert "unknown key corpus.sources.1.elan.t" in str(error.value)


def test_a_source_that_is_no_folder_is_named(tmp_path: Path, rows: list[Row]) -> None:
    main = write(tmp_path, "corpus", WRITERS["audiofolder"], rows[:2])
    missing = {"format": "elan", "path": str(tmp_path / "round9"), "elan": {"tier": "t"}}
    with pytest.raises(config.ParamsError, match=r"corpus\.sources\[0\]\.path: .*round9 \(elan\) is not a folder"):
        imported({**main, "sources": [missing]}, tmp_path)


def test_the_import_stage_writes_one_manifest_and_the_dataset_audio(
    tmp_path: Path, rows: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`asrflow import` on an hf corpus plus an audiofolder source: one manifest, the dataset's audio in --audio."""
    from asrflow import cli

    main = write(tmp_path, "hf", hf, rows[:4], layout="parquet")
    source = write(tmp_path, "more", WRITERS["audiofolder"], rows[4:])
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"].update(main, sources=[source])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # no dvc.yaml here: nothing to be stale
    (tmp_path / "out/audio/stale").mkdir(parents=True)
    argv = ["import", "--params", "params.yaml", "--out", "out/corpus.csv", "--rejects", "out/rejects.csv"]
    assert cli.main([*argv, "--audio", "out/audio", "--threads", "1"]) == 0
    utts = read_manifest(tmp_path / "out/corpus.csv")
    assert [(u.speaker, u.text) for u in utts] == [(r.speaker, r.text) for r in rows]
    assert sorted(p.relative_to(tmp_path / "out/audio").as_posix() for p in (tmp_path / "out/audio").rglob("*.*")) == [
        f"0/0/{n:06d}.wav"
        for n in range(4)  # source 0 (the main corpus), table 0, row n
    ]
    assert not (tmp_path / "out/audio/stale").exists(), "the stage's audio folder is its own"
