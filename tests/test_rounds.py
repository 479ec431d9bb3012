"""A documentation round, end to end (docs/corpus.md): a tiny model trained by Snakemake transcribes two held-out
recordings into ELAN; the hypotheses are corrected (with pympi, as a linguist would in ELAN: some annotations
rewritten, one marked `???`), the folder is added as a second corpus source, and Snakemake re-runs exactly what the
new data changes — the import and everything after it, not the pre-training — with the corrected utterances in the
manifest and the doubtful one in the import's rejects.

The tiny one-epoch model emits (almost) only blanks; as in test_transcribe, the transcribing model is it with the
blank's output bias pushed down, so that every recording gets phrases to correct. Nothing here measures accuracy.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, ROOT, copy_project, dvc_stages, engine_env, run, tiny_params, write_params
from pympi.Elan import Eaf
from test_engines import key
from test_reruns import snakemake_plan

from asrflow.inference import load_for_inference
from asrflow.manifest import read_manifest, read_rejects

pytestmark = pytest.mark.slow

MODEL = "results/models/full/fold0"  # the target: one fold of one method is model enough to transcribe with
ROUND = "data/raw/round1"
SOURCE = {"format": "elan", "path": ROUND, "elan": {"tier": "hypothesis"}}  # transcribe's tier, by name


def hold_out(corpus: Path, count: int) -> list[dict[str, str]]:
    """The last utterance of `count` speakers, taken out of the audiofolder corpus (rows and audio files)."""
    with (corpus / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    last = {row["speaker_id"]: row for row in rows}
    held = list(last.values())[:count]
    with (corpus / "metadata.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if row not in held)
    return held


def talkative(model: Path, out: Path) -> Path:
    model_, processor = load_for_inference(model)
    with torch.no_grad():
        model_.lm_head.bias[processor.tokenizer.pad_token_id] = -1e4
    model_.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def correct(eaf_path: Path, speaker: str, text: str, doubtful: bool) -> int:
    """The linguist's pass over one transcribed recording: the hypothesis tier's participant set and every
    annotation rewritten to `text`, the first one marked `???` when `doubtful`. Returns how many annotations."""
    eaf = Eaf(str(eaf_path))
    eaf.tiers["hypothesis"][2]["PARTICIPANT"] = speaker
    annotations = sorted(eaf.get_annotation_data_for_tier("hypothesis"))
    for number, (start, end, _) in enumerate(annotations):
        eaf.remove_annotation("hypothesis", (start + end) // 2)
        eaf.add_annotation("hypothesis", start, end, f"{text} ???" if doubtful and number == 0 else text)
    eaf.to_file(str(eaf_path))
    return len(annotations)


def test_a_corrected_round_comes_back_into_the_corpus(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    (made / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(made)
    run([str(BIN / "asrflow"), "demo", "--target", "corpus", "--source", "unused", "--threads", "1"], made)

    project = copy_project(tmp_path / "project")
    params = tiny_params(project, methods=["full"], k=2)
    params["corpus"].update(format="audiofolder", path="data/raw/corpus")
    params["decode"]["beam"] = False
    write_params(project, params)
    shutil.copytree(made / "corpus", project / "data/raw/corpus")
    held = hold_out(project / "data/raw/corpus", 2)
    (project / ROUND).mkdir(parents=True)
    recordings = []
    for number, row in enumerate(held):
        recordings.append(project / ROUND / f"session{number}.wav")
        (project / "data/raw/corpus" / row["file_name"]).rename(recordings[-1])

    first_run = snakemake_plan(project, MODEL)
    run([str(BIN / "snakemake"), "--cores", "2", MODEL], project, timeout=1800)
    before = read_manifest(project / "data/interim/corpus.csv")
    import_onward = snakemake_plan(project, MODEL, "--forcerun", "import")

    run(
        [
            str(BIN / "asrflow"),
            "transcribe",
            "--model",
            str(talkative(project / MODEL, tmp_path / "talkative")),
            *map(str, recordings),
            "--out",
            str(project / ROUND),
            "--eaf",
            "--threads",
            "1",
        ],
        project,
    )
    corrected = correct(project / ROUND / "session0.eaf", held[0]["speaker_id"], held[0]["transcription"], False)
    marked = correct(project / ROUND / "session1.eaf", held[1]["speaker_id"], held[1]["transcription"], True)

    params["corpus"]["sources"] = [SOURCE]
    write_params(project, params)
    refused = run_import(project)
    assert refused.returncode == 2 and "run `asrflow dvc-yaml`" in refused.stderr, refused.stderr
    run([str(BIN / "asrflow"), "dvc-yaml"], project)
    [import_stage] = [s for s in dvc_stages(project) if s["stage"] == "import"]
    assert ROUND in import_stage["deps"], "DVC hashes the round's folder too"

    # Exactly the import and everything after it (what a forced re-run of the import re-runs); not the base model.
    assert snakemake_plan(project, MODEL) == import_onward
    assert key("import", {}) in import_onward and key("train", {"fold": 0, "method": "full"}) in import_onward
    assert key("pretrain", {}) in first_run - import_onward
    run([str(BIN / "snakemake"), "--cores", "2", "data/interim/corpus.csv"], project)

    after = read_manifest(project / "data/interim/corpus.csv")
    assert after[: len(before)] == before, "the main corpus' utterances unchanged, first"
    new = after[len(before) :]
    expected = [(held[0]["speaker_id"], held[0]["transcription"])] * corrected
    expected += [(held[1]["speaker_id"], held[1]["transcription"])] * (marked - 1)  # all but the doubtful one
    assert [(u.speaker, u.text) for u in new] == expected
    assert all(Path(u.audio).parent == Path(ROUND) for u in new)
    [doubtful] = read_rejects(project / "data/interim/import_rejects.csv")
    assert doubtful.origin.startswith("session1.eaf:hypothesis:") and doubtful.reason.startswith("doubtful")


def run_import(project: Path) -> subprocess.CompletedProcess:
    """`asrflow import` as the engines call it (here without them), to see it refuse a stale dvc.yaml."""
    return subprocess.run(
        [str(BIN / "asrflow"), "import", "--out", "x.csv", "--rejects", "r.csv", "--audio", "a"],
        cwd=project,
        env=engine_env(),
        capture_output=True,
        text=True,
    )
