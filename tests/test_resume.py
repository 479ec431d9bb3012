"""Exact re-runs: the same seed gives the same model, and a training job killed with SIGKILL resumes from its last
finished epoch — to the very same model an uninterrupted run makes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, engine_env, train_argv

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

EPOCHS = 5


@pytest.fixture(scope="module")
def resume_params(tiny_run: Path) -> Path:
    """The tiny run's params with a few more epochs and no early stop, so there is something to interrupt."""
    params = yaml.safe_load((tiny_run / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(max_epochs=EPOCHS, patience=EPOCHS)
    path = tiny_run / "params_resume.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def train_command(project: Path, params: Path, name: str) -> list[str]:
    extra = ["--params", str(params), "--threads", "1", "--log", f"resume/{name}.log"]
    return [str(BIN / "asrflow"), *train_argv("full", f"resume/{name}", f"resume/{name}.csv", *extra)]


def train(project: Path, params: Path, name: str) -> Path:
    subprocess.run(
        train_command(project, params, name),
        cwd=project,
        env=engine_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return project / "resume" / name


def without_timing(training: dict) -> dict:
    return {k: v for k, v in training.items() if k not in ("train_seconds", "audio_seconds_per_second")}


def test_same_seed_gives_identical_models(tiny_run: Path, resume_params: Path) -> None:
    first, second = train(tiny_run, resume_params, "a"), train(tiny_run, resume_params, "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert without_timing(json.loads((first / "training.json").read_text())) == without_timing(
        json.loads((second / "training.json").read_text())
    )
    assert not (tiny_run / "resume" / ".a.resume").exists(), "the resume state is removed after success"


def test_sigkill_mid_training_resumes_to_the_same_model(tiny_run: Path, resume_params: Path) -> None:
    reference = tiny_run / "resume" / "a"
    if not reference.exists():
        reference = train(tiny_run, resume_params, "a")
    state = tiny_run / "resume" / ".killed.resume" / "state" / "loop.json"
    job = subprocess.Popen(
        train_command(tiny_run, resume_params, "killed"),
        cwd=tiny_run,
        env=engine_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not state.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_after = json.loads(state.read_text())["loop"]["epoch"]
    assert 1 <= killed_after < EPOCHS, "killed between two epochs"
    assert not (tiny_run / "resume" / "killed").exists(), "an interrupted stage leaves no output an engine accepts"

    resumed = train(tiny_run, resume_params, "killed")
    log = (tiny_run / "resume" / "killed.log").read_text()
    assert f"after epoch {killed_after}" in log and "resuming from" in log
    training = json.loads((resumed / "training.json").read_text())
    assert training["epochs_run"] == EPOCHS
    assert (resumed / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def test_a_resume_folder_from_other_settings_is_discarded(tiny_run: Path, resume_params: Path, tmp_path) -> None:
    from asrflow.resume import Checkpoints

    stale = tiny_run / "resume" / ".other.resume"
    (stale / "state").mkdir(parents=True, exist_ok=True)
    (stale / "state" / "loop.json").write_text(json.dumps({"key": "not-this-run"}))
    assert Checkpoints(stale, "this-run").load(None, None, None).epoch == 0
    assert not stale.exists()
