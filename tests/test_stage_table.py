"""Adding a stage is one entry in the stage table plus its module: both engines then run it.

The test adds a `words` stage (per fold: the word count of the fold's training transcripts, lower-cased or not by
`text.lowercase`) to a copy of the project, regenerates dvc.yaml there with `asrflow dvc-yaml`, and runs it with
Snakemake and with DVC. The copy's own src/ is put first on PYTHONPATH, so the engines and the `asrflow` command read
its stage table and module, not the checkout's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, copy_project, engine_env, tiny_params

pytestmark = pytest.mark.slow

ENTRY = """
    Stage("words", "count the words of one fold's training transcripts (a test stage)",
          "--train {input.folds}/fold{fold}/train.csv --out {output.total}",
          deps={"folds": "data/processed/folds"}, outs={"total": Out("results/words/fold{fold}.txt")},
          params=("text.lowercase",), wildcards=("fold",), log="logs/words/fold{fold}.log"),
"""

MODULE = '''"""A test stage: the number of words in a manifest's transcripts."""

from __future__ import annotations

import argparse
from pathlib import Path

from asrflow import config
from asrflow.manifest import read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)


def run_cli(args: argparse.Namespace) -> None:
    lowercase = config.load_stage(args.params, "words")["text"]["lowercase"]
    words = [w for u in read_manifest(args.train) for w in u.text.split()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{len(words)} words, lowercase={lowercase}\\n", encoding="utf-8")
'''


def add_words_stage(project: Path) -> dict[str, str]:
    """The `words` stage in the project copy's table and package; the environment that makes the engines use them."""
    table = project / "src" / "asrflow" / "stages.py"
    text = table.read_text(encoding="utf-8")
    end = text.index("\n)\n\nBY_NAME")
    table.write_text(text[:end] + ENTRY.rstrip("\n") + text[end:], encoding="utf-8")
    (project / "src" / "asrflow" / "words.py").write_text(MODULE, encoding="utf-8")
    return {**engine_env(), "PYTHONPATH": str(project / "src")}


def run(args: list[str], project: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_one_table_entry_and_a_module_make_a_stage_both_engines_run(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    params = tiny_params(project)
    env = add_words_stage(project)

    run([str(BIN / "asrflow"), "dvc-yaml"], project, env)
    words = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["words"]
    assert words["matrix"] == {"fold": "${folds.ids}"}
    assert words["deps"] == [
        "data/processed/folds",
        "src/asrflow/words.py",
        "src/asrflow/manifest.py",
        "src/asrflow/params.schema.yaml",
    ]
    assert words["params"] == ["text.lowercase"] and words["outs"] == ["results/words/fold${item.fold}.txt"]

    targets = [f"results/words/fold{f}.txt" for f in params["folds"]["ids"]]
    run([str(BIN / "snakemake"), "--cores", "2", *targets], project, env)
    by_snakemake = {t: (project / t).read_text(encoding="utf-8") for t in targets}
    assert all(text.endswith("words, lowercase=True\n") and int(text.split()[0]) > 0 for text in by_snakemake.values())

    for t in targets:
        os.remove(project / t)
    # DVC takes over the data stages Snakemake ran (`dvc commit`, as a user does after a Snakemake run), so it runs
    # the new stage alone: the one this test is about, without making the tiny corpus a second time.
    run([str(BIN / "dvc"), "commit", "-f", "-q", "--with-deps", "split"], project, env)
    out = run([str(BIN / "dvc"), "repro", "words"], project, env)
    assert "Running stage 'words@0'" in out and "Running stage 'split'" not in out
    assert {t: (project / t).read_text(encoding="utf-8") for t in targets} == by_snakemake
