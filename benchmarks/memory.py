"""Peak memory of one training step, measured beside the memory plan's prediction (asrflow.memory), on this machine.

An MMS-300m-shaped random model (hidden 1024, 24 layers, 16 heads, FFN 4096, stable layer norm, layer-normed conv
encoder, adapters of 16) trains one step of one 10-s clip (batch_seconds 10) per method and configuration:

    fp32   float32, no checkpointing          bf16   autocast to bfloat16
    gc     gradient checkpointing             both   bf16 and gradient checkpointing

Each configuration runs in a fresh process, forked from this one once the imports are done (so its memory starts
from the same baseline and no import is paid twice); the plan's probe runs in another fresh process, so it cannot
warm the measured one's allocator. Measured: the exact tensor peak of the step (asrflow.memory.LiveTensorBytes on
the CPU, the allocator's statistics on CUDA; weights and optimiser state included), the process' peak RSS during the
step above its RSS before the model was built, and the step's seconds (tensor tracking included). The table gives
the plan's prediction beside each, its error in % of the tensor peak, and the ratios bf16/fp32, gc/fp32, both/fp32.

    python benchmarks/memory.py                                    # 24 layers, every method, fp32 and gc
    python benchmarks/memory.py --layers 4 --configs fp32,bf16,gc,both   # a quick run with bf16
    python benchmarks/memory.py --hypothetical                     # the plan's MMS-1B / XLS-R-300m × GPU table

bf16 is not run by default: on a CPU without native bf16 (AVX2 only, as here) autocast's bf16 matrix products are
about ten times slower than float32, and one 24-layer bf16 step alone would take about a quarter of an hour.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from transformers import Wav2Vec2Config

from asrflow import memory
from asrflow.checkpoint import Base

ROOT = Path(__file__).resolve().parents[1]
MMS_300M = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    adapter_attn_dim=16,
    **memory.STABLE,
)
CONFIGS = {
    "fp32": {"precision": "fp32", "gradient_checkpointing": False},
    "bf16": {"precision": "bf16", "gradient_checkpointing": False},
    "gc": {"precision": "fp32", "gradient_checkpointing": True},
    "both": {"precision": "bf16", "gradient_checkpointing": True},
}
CLIP_SECONDS = 10.0
# The hypothetical table: 20-s clips (audio.max_seconds), batches of up to 10 of them, micro-batches of one to plan.
TABLE_CLIP_SECONDS = 20.0
TABLE_SETTINGS = {
    "fp32": {},
    "gc": {"gradient_checkpointing": True},
    "gc+adafactor": {"gradient_checkpointing": True, "optimizer": "adafactor"},
}


def train_section(settings: dict) -> dict:
    """params.yaml's train section with `settings` (for every method) and one clip per batch."""
    train = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["train"]
    return train | {"batch_seconds": CLIP_SECONDS, "micro_batch_seconds": None} | settings


def in_fresh_process(function, *args):
    """`function(*args)` in a process forked for it alone: it starts from this process' memory and leaves nothing."""
    with multiprocessing.get_context("fork").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(function, args)


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def make_base(directory: Path, layers: int) -> Base:
    return memory.config_base(Wav2Vec2Config(**(MMS_300M | {"num_hidden_layers": layers})), directory)


def predict(base: Base, method: str, config: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    return memory.plan(base, method, train_section(CONFIGS[config]), CLIP_SECONDS, device=torch.device("cpu"))


def measure(base: Base, method: str, config: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    before = status_kib("VmRSS")
    result = memory.measure_training_step(
        base,
        method,
        train_section(CONFIGS[config]),
        CLIP_SECONDS,
        device=torch.device("cpu"),
        before_step=reset_peak_rss,
    )
    return result | {"rss_bytes": (status_kib("VmHWM") - before) * 1024}


def run(methods: list[str], configs: list[str], layers: int, threads: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="asrflow-memory-bench-") as tmp:
        base = in_fresh_process(make_base, Path(tmp) / "base", layers)
        for method in methods:
            for config in configs:
                plan = in_fresh_process(predict, base, method, config, threads)
                measured = in_fresh_process(measure, base, method, config, threads)
                rows.append({"method": method, "config": config, "plan": plan, **measured})
                print(
                    f"  {method:8s} {config:5s} measured {measured['peak_bytes'] / memory.GIB:6.2f} GiB, "
                    f"planned {plan['peak_bytes'] / memory.GIB:6.2f} GiB, {measured['seconds']:6.1f} s/step, "
                    f"probe {plan['probe']['seconds']:5.1f} s",
                    flush=True,
                )
    return rows


def error(row: dict, measured: str = "peak_bytes") -> float:
    """The plan's error in % of a measured peak (the tensor peak, or the process' RSS peak)."""
    return 100 * (row["plan"]["peak_bytes"] - row[measured]) / row[measured]


def table(rows: list[dict]) -> str:
    """Measured beside planned, GiB, with the plan's components."""
    header = (
        "| method | config | tensor peak | RSS peak | plan | error | vs RSS | weights | grads | optimiser "
        "| activations (saved) | s/step | probe s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        plan = row["plan"]
        cells = [
            row["method"],
            row["config"],
            *(f"{v / memory.GIB:.2f}" for v in (row["peak_bytes"], row["rss_bytes"], plan["peak_bytes"])),
            f"{error(row):+.1f} %",
            f"{error(row, 'rss_bytes'):+.1f} %",
            *(f"{plan[k] / memory.GIB:.2f}" for k in ("weights", "gradients", "optimizer")),
            f"{plan['activations'] / memory.GIB:.2f} ({plan['saved_activations'] / memory.GIB:.2f})",
            f"{row['seconds']:.1f}",
            f"{plan['probe']['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """Each configuration's peak over fp32's, measured (and planned), per method."""
    others = [c for c in ("bf16", "gc", "both") if any(r["config"] == c for r in rows)]
    header = "| method | " + " | ".join(f"{c}/fp32 measured (planned)" for c in others) + " |"
    lines = [header, "|" + "---|" * (len(others) + 1)]
    by_key = {(r["method"], r["config"]): r for r in rows}
    for method in dict.fromkeys(r["method"] for r in rows):
        base = by_key.get((method, "fp32"))
        if base is None:
            continue
        cells = []
        for config in others:
            row = by_key.get((method, config))
            cells.append(
                "–"
                if row is None
                else f"{row['peak_bytes'] / base['peak_bytes']:.2f} "
                f"({row['plan']['peak_bytes'] / base['plan']['peak_bytes']:.2f})"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hypothetical(methods: list[str], threads: int) -> str:
    torch.set_num_threads(threads)
    train = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["train"]
    train |= {"batch_seconds": 10 * TABLE_CLIP_SECONDS, "micro_batch_seconds": TABLE_CLIP_SECONDS}
    rows = memory.config_table(
        memory.HYPOTHETICAL, methods, train, TABLE_SETTINGS, TABLE_CLIP_SECONDS, device=torch.device("cpu")
    )
    return memory.format_config_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="full,adapter,lora,frozen,scratch")
    parser.add_argument("--configs", default="fp32,gc", help=f"of {','.join(CONFIGS)}")
    parser.add_argument("--layers", type=int, default=MMS_300M["num_hidden_layers"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--hypothetical",
        action="store_true",
        help="print the plan's table for MMS-1B and XLS-R-300m × methods × GPUs instead",
    )
    args = parser.parse_args()
    print("$ python " + shlex.join(sys.argv), flush=True)
    methods = args.methods.split(",")
    if args.hypothetical:
        print(in_fresh_process(hypothetical, methods, args.threads))
        return
    rows = run(methods, args.configs.split(","), args.layers, args.threads)
    print(f"\nOne step, one {CLIP_SECONDS:g}-s clip, {args.layers} layers of 1024, {args.threads} threads (GiB):\n")
    print(table(rows))
    errors = [abs(error(r)) for r in rows]
    print(f"\nplan error: mean |error| {sum(errors) / len(errors):.1f} %, largest {max(errors):.1f} %")
    if len({r["config"] for r in rows}) > 1:
        print("\nPeak over fp32's:\n")
        print(ratios(rows))


if __name__ == "__main__":
    main()
