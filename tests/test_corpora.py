"""Each import format through the tiny pipeline to a summary: Common Voice, Kaldi (with segments) and ELAN corpora
written from the demo's speech, with a few bad rows planted in each, run stage by stage with `asrflow <stage>` and
`audio.on_bad_audio: skip`. Every bad row is listed with its reason, nothing else is lost, and the data report says so.
Then ELAN's own layouts: a tier per speaker, media in a sibling folder, a time origin, the speaker mapping file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import ROOT, prepare_data, tiny_params
from corpus_fixtures import WRITERS, Row, tone
from pympi.Elan import Eaf

from asrflow import cli
from asrflow.checkpoint import open_base
from asrflow.features import CACHE_ENV
from asrflow.import_ import import_corpus
from asrflow.manifest import ManifestError, Rejects, read_manifest, read_rejects


def stage(params: Path, *args: str) -> None:
    assert cli.main([*args, "--params", str(params), "--threads", "1"]) == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Row], Path]:
    """The tiny demo corpus as rows (real espeak speech, 5 speakers) and a tiny base pre-trained on its source
    languages: the material every format's corpus is written from."""
    project = tmp_path_factory.mktemp("demo")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(project, methods=["full"])
    params = project / "params.yaml"
    stage(params, "demo", "--target", str(project / "target"), "--source", str(project / "source"))
    stage(params, "pretrain", "--source", str(project / "source"), "--out", str(project / "base"))
    with (project / "target/metadata.csv").open(encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            samples, rate = sf.read(project / "target" / row["file_name"], dtype="float32")
            rows.append(Row(Path(row["file_name"]).stem, row["speaker_id"], row["transcription"], samples, rate))
    return rows, open_base(project / "base").directory


# Each writes `rows` plus planted bad rows in its format; returns the importer settings, how many rows the corpus
# states, and the reason each planted row must be rejected with.


def commonvoice(root: Path, rows: list[Row]) -> tuple[dict, int, list[str]]:
    bad = [
        Row("lost", rows[0].speaker, "ta", audio=False),
        Row("blank", rows[1].speaker, " "),
        Row("again", rows[2].speaker, "ka", path=f"{rows[3].utt}.mp3"),
    ]
    return (
        WRITERS["commonvoice"](root, rows + bad),
        len(rows) + 3,
        [
            "audio file clips/lost.mp3 not found",
            "empty transcript",
            f"duplicate: the same audio (clips/{rows[3].utt}.mp3)",
        ],
    )


def kaldi(root: Path, rows: list[Row]) -> tuple[dict, int, list[str]]:
    settings = WRITERS["kaldi"](root, rows + [Row("blank", rows[0].speaker, "")])
    with (root / "text").open("a", encoding="utf-8") as text:
        text.write(f"stray ta ka\n{rows[1].utt} a second line for one id\n")
    return (
        settings,
        len(rows) + 3,
        ["empty transcript", "no line in segments", "duplicate: the same audio ("],
    )


def elan(root: Path, rows: list[Row]) -> tuple[dict, int, list[str]]:
    """One speaker named by the mapping file; an empty annotation; a 0.1 s annotation (under audio.min_seconds)."""
    bad = [Row("blank", rows[0].speaker, ""), Row("blip", rows[1].speaker, "ta", tone(0.1, rows[1].rate), rows[1].rate)]
    settings = WRITERS["elan"](root, rows + bad, mapped=(rows[-1].speaker,))
    return settings, len(rows) + 2, ["empty transcript", "shorter than audio.min_seconds (0.10 s < 0.3 s)"]


FORMATS = {"commonvoice": commonvoice, "kaldi": kaldi, "elan": elan}


def run_pipeline(project: Path, params: Path) -> None:
    data = project / "data"
    prepare_data(params, data)
    stage(params, "pretrain", "--source", f"{data}/unused", "--out", f"{data}/base")
    for fold in ("0", "1"):
        stage(params, "lm", "--train", f"{data}/folds/fold{fold}/train.csv", "--out", f"{data}/lm/fold{fold}")
        stage(
            params,
            "train",
            "--fold",
            fold,
            "--method",
            "full",
            "--folds",
            f"{data}/folds",
            "--speed",
            f"{data}/speed",
            "--base",
            f"{data}/base",
            "--out",
            f"{data}/models/fold{fold}",
            "--curve",
            f"{project}/results/curves/full-fold{fold}.csv",
        )
        stage(
            params,
            "evaluate",
            "--fold",
            fold,
            "--method",
            "full",
            "--folds",
            f"{data}/folds",
            "--model",
            f"{data}/models/fold{fold}",
            "--out",
            f"{project}/results/metrics/full/fold{fold}",
            "--publish",
            f"{project}/results/models/full/fold{fold}",
            "--lm",
            f"{data}/lm/fold{fold}",
        )
    stage(params, "report", "--metrics", f"{project}/results/metrics", "--out", f"{project}/results")
    stage(
        params,
        "data_report",
        "--in",
        f"{data}/utterances.csv",
        "--imported",
        f"{data}/corpus.csv",
        "--folds",
        f"{data}/folds",
        "--rejects",
        f"{data}/import_rejects.csv",
        f"{data}/resampled/rejects.csv",
        f"{data}/normalize_rejects.csv",
        "--out",
        f"{project}/results",
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_format_runs_through_the_pipeline_losing_nothing(
    tmp_path: Path, demo: tuple[list[Row], Path], monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    rows, base = demo
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    settings, n_stated, planted = FORMATS[fmt](corpus, rows)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"].update(settings, path=str(corpus), name=fmt)
    params["audio"]["on_bad_audio"] = "skip"
    params["model"]["base"] = str(base)
    params["decode"]["beam"] = False  # greedy decoding is all a summary needs; LM decoding is tested on its own
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    tiny_params(tmp_path, methods=["full"])
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    run_pipeline(tmp_path, tmp_path / "params.yaml")

    data = tmp_path / "data"
    imported, import_rejects = read_manifest(data / "corpus.csv"), read_rejects(data / "import_rejects.csv")
    resampled, resample_rejects = (
        read_manifest(data / "resampled/manifest.csv"),
        read_rejects(data / "resampled/rejects.csv"),
    )
    normalised, normalize_rejects = read_manifest(data / "utterances.csv"), read_rejects(data / "normalize_rejects.csv")
    unmatched = [r.reason for r in import_rejects + resample_rejects + normalize_rejects]
    for reason in planted:  # each planted row rejected once, with its reason; nothing else rejected
        [hit] = [r for r in unmatched if r.startswith(reason)]
        unmatched.remove(hit)
    assert not unmatched
    assert len(imported) + len(import_rejects) == n_stated
    assert len(resampled) + len(resample_rejects) == len(imported)
    assert len(normalised) + len(normalize_rejects) == len(resampled)
    assert len(normalised) == len(rows), "only the planted rows are left out"

    summary = pd.read_csv(tmp_path / "results/summary.csv")
    assert summary["method"].tolist() == ["full"] and summary["n_folds"].tolist() == [2]
    assert summary["cer_mean"].notna().all() and (summary["cer_mean"] >= 0).all()
    folds = pd.read_csv(tmp_path / "results/folds.csv")
    tested = sorted(s for speakers in folds["test_speakers"] for s in speakers.split())
    assert tested == sorted({row.speaker for row in rows}), "every speaker tested exactly once"

    report = (tmp_path / "results/data_report.md").read_text(encoding="utf-8")
    table = pd.read_csv(tmp_path / "results/data_report.csv", keep_default_na=False)
    assert sorted(table[table.section == "speaker"]["item"]) == sorted({row.speaker for row in rows})
    assert table[table.section == "speaker"]["utterances"].astype(int).sum() == len(normalised)
    assert len(table[table.section == "rejected"]) == len(planted)
    for reason in planted:
        assert reason in report


def test_elan_tiers_per_speaker_media_in_a_sibling_folder_and_time_origin(tmp_path: Path) -> None:
    """One eaf in eaf/ with a tier per speaker, its recording in media/ (linked as ../media/…), offset 0.5 s."""
    (tmp_path / "media").mkdir()
    sf.write(tmp_path / "media/session.wav", tone(4.0), 16000)
    eaf = Eaf(author="asrflow-tests")
    for tier, speaker in (("tx@A", "amina"), ("tx@B", "")):
        eaf.add_tier(tier, part=speaker)
    eaf.add_annotation("tx@A", 0, 1000, "ta")
    eaf.add_annotation("tx@B", 1500, 2500, "ka")
    eaf.add_linked_file(
        "file:///C:/fieldwork/session.wav", relpath="../media/session.wav", mimetype="audio/x-wav", time_origin=500
    )
    (tmp_path / "eaf").mkdir()
    eaf.to_file(str(tmp_path / "eaf/session.eaf"))
    (tmp_path / "who.csv").write_text("eaf_file,tier,speaker\neaf/session.eaf,tx@B,bakari\n", encoding="utf-8")

    def elan(**options: object) -> list:
        return import_corpus({"format": "elan", "path": str(tmp_path), "elan": options}, Rejects("import", "error"))

    utts = elan(tier=["tx@A", "tx@B"], speakers="who.csv")
    assert [(u.utt_id, u.speaker, u.text, u.start, u.end) for u in utts] == [
        ("eaf_session_tx_A_0", "amina", "ta", 0.5, 1.5),
        ("eaf_session_tx_B_1500", "bakari", "ka", 2.0, 3.0),
    ]
    assert {u.audio for u in utts} == {str(tmp_path / "media/session.wav")}
    assert utts[0].origin == "eaf/session.eaf:tx@A:0-1000ms"
    with pytest.raises(
        ManifestError,
        match=r"session\.eaf: tier 'tx@B' has no PARTICIPANT and corpus\.elan\.speakers "
        r"has no row for it",
    ):
        elan(tier="tx@B", speakers=None)
    with pytest.raises(
        ManifestError,
        match=r"session\.eaf: no tier \['words'\]; its tiers are \['default', 'tx@A', "
        r"'tx@B'\]: set corpus\.elan\.tier",
    ):
        elan(tier="words", speakers=None)
