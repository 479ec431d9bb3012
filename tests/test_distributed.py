"""Data-parallel training: `train.processes: 2` runs one training job as two gloo processes on CPU, each on its
shard of every batch, with gradients averaged so both end with the same parameters."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, engine_env, train_argv
from transformers import Wav2Vec2ForCTC

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["full", "frozen"])
def test_two_processes_stay_in_sync_and_save_a_loadable_model(tiny_run: Path, method: str) -> None:
    params = yaml.safe_load((tiny_run / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(processes=2, max_epochs=2, patience=2)
    params_file = tiny_run / f"params_ddp_{method}.yaml"
    params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
    out, log = tiny_run / "ddp" / method, tiny_run / "ddp" / f"{method}.log"
    extra = ["--params", str(params_file), "--threads", "2", "--log", str(log)]
    proc = subprocess.run(
        [str(BIN / "asrflow"), *train_argv(method, str(out), str(out) + ".csv", *extra)],
        cwd=tiny_run,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [
        re.findall(r"trained parameters digest (\w+) \(process (\d) of 2\)", path.read_text())
        for path in (log, Path(f"{log}.rank1"))
    ]
    assert [d[0][1] for d in digests] == ["0", "1"], "both processes trained"
    assert digests[0][0][0] == digests[1][0][0], "parameters identical across processes after training"
    assert "launching 2 training processes" in log.read_text(), "the launcher's log line survives process 0's"
    model = Wav2Vec2ForCTC.from_pretrained(out, use_safetensors=True)
    assert torch.isfinite(next(model.parameters())).all()
    assert yaml.safe_load((out / "training.json").read_text())["processes"] == 2
