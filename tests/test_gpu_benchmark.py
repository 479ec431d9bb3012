"""benchmarks/gpu.py: the smoke mode runs every method × configuration on the CPU and reports what the GPU run will
(throughput, a counted FLOP number, MFU arithmetic, the 162,000 audio-second projection); on a machine with CUDA a
short real GPU configuration runs too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
METHODS = ["full", "adapter", "lora", "frozen", "scratch"]
CONFIGS = ["bf16", "bf16 + ckpt"]
PEAK = 2.0  # a made-up peak (TFLOP/s): the CPU has no table entry, and MFU must then be achieved / this


def run_benchmark(tmp_path: Path, *args: str, timeout: float = 600) -> dict:
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPT), *args, "--workdir", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.startswith("command: "), proc.stdout[:200]
    assert "| method | config |" in proc.stdout  # the markdown table for the docs
    return json.loads(out.read_text(encoding="utf-8"))


def test_tiny_cpu_run_reports_every_method_and_configuration(tmp_path: Path) -> None:
    # One thread: the smoke run must not depend on (or fight over) the machine's cores.
    result = run_benchmark(tmp_path, "--tiny", "--device", "cpu", "--threads", "1", "--peak-tflops", str(PEAK))
    assert result["versions"]["torch"] == torch.__version__
    assert result["device"]["type"] == "cpu" and result["device"]["peak_tflops"] == PEAK
    rows = {(r["method"], r["config"]): r for r in result["results"]}
    assert set(rows) == {(m, c) for m in METHODS for c in CONFIGS}
    for (method, config), row in rows.items():
        assert row["status"] == "ok", (method, config, row["status"])
        assert row["audio_seconds_per_second"] > 0 and row["peak_memory_bytes"] > 0
        assert row["flops_per_step"] > 0 and row["model_flops_per_step"] > 0
        assert row["mfu"] == pytest.approx(row["model_flops_per_step"] / row["step_seconds"] / 1e12 / PEAK)
        assert 0 < row["trainable_params"] <= row["total_params"]
        assert row["projected_seconds"] == pytest.approx(
            162_000 / row["audio_seconds_per_second"] + 3_240 * row["prepare_seconds_per_audio_second"]
        )
    for method in METHODS:
        plain, checkpointed = rows[(method, "bf16")], rows[(method, "bf16 + ckpt")]
        # Checkpointing recomputes forward passes: more FLOPs executed, the same model FLOPs (MFU's numerator).
        assert checkpointed["flops_per_step"] > plain["flops_per_step"]
        assert checkpointed["model_flops_per_step"] == plain["model_flops_per_step"]
    # Fewer trained weights, less backward work: adapter/LoRA/frozen steps cost less than full fine-tuning's.
    for method in ("adapter", "lora", "frozen"):
        assert rows[(method, "bf16")]["flops_per_step"] < rows[("full", "bf16")]["flops_per_step"]

    projection = result["projection"]
    assert projection["target_audio_seconds"] == 162_000 == 18 * 60 * 3 * 50
    assert projection["target_wall_seconds"] == 600 and projection["target_method"] == "adapter"
    assert set(projection["per_method"]) == set(METHODS)
    assert all(
        isinstance(v, float) and v > 0 for entry in projection["per_method"].values() for v in entry["configs"].values()
    )
    assert projection["target_best_seconds"] > 0
    assert projection["target_met"] is None  # not an H100/H200: no verdict on the target
    assert set(result["full_needs"]["configs"]) == set(CONFIGS)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device on this machine: the GPU configuration "
    "of benchmarks/gpu.py runs only where torch sees a GPU",
)
def test_short_gpu_configuration(tmp_path: Path) -> None:
    result = run_benchmark(
        tmp_path,
        "--device",
        "cuda",
        "--methods",
        "adapter,full",
        "--layers",
        "2",
        "--hidden",
        "256",
        "--ffn",
        "1024",
        "--heads",
        "4",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-seconds",
        "32",
    )
    assert result["device"]["type"] == "cuda" and result["device"]["name"]
    for row in result["results"]:
        assert row["status"] == "ok", (row["method"], row["config"], row["status"])
        assert row["audio_seconds_per_second"] > 0 and row["flops_per_step"] > 0
        assert row["peak_memory_bytes"] > 0  # torch.cuda.max_memory_allocated
        if result["device"]["peak_tflops"]:
            assert 0 < row["mfu"] < 1
    assert result["projection"]["target_best_seconds"] > 0
