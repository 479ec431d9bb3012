"""The `plan` stage: before any training, whether one method can train on the base, and in how much memory.

For the configured base and method it checks the method can take the base (asrflow.methods.check_available: a
refusal names the base, the reason and the methods that can), then estimates the peak accelerator memory of one
training step with the configured precision, gradient checkpointing, micro-batch and optimiser (asrflow.memory:
weights, gradients and optimiser state counted; activations measured by a short probe on the device at hand) for
clips as long as `audio.max_seconds`, the longest a corpus may hold. The budget is `resources.gpu_memory_gb`, or the
memory of the GPU at hand; on a CPU without one the plan reports the peak and judges nothing.

Output (`--out`, data/models/plan/<method>.json): every component in bytes, `fits`, `largest_micro_batch_seconds`,
and `message` (what to change when it does not fit). The stage stops with that message when nothing fits. Each train
and release job checks the same on its own GPU before it trains (asrflow.memory.check_device_fits), so a job that
cannot fit fails in seconds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asrflow import config, memory, methods
from asrflow.checkpoint import open_base
from asrflow.io import write_json
from asrflow.model import compute_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow plan`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--method", required=True)
    parser.add_argument("--base", required=True, type=Path, help="the pretrain stage's folder (data/models/base)")
    parser.add_argument("--out", required=True, type=Path, help="the plan (JSON)")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "plan", args.method)
    base = open_base(args.base)
    methods.check_available(base, args.method, params["train"])
    device = compute_device()
    if getattr(methods.get(args.method), "own_training", False):
        # The memory model measures CTC training steps; the projector trains a small MLP on cached features.
        write_json(
            args.out,
            {
                "base": base.name,
                "method": args.method,
                "device": str(device),
                "fits": None,
                "message": f"no memory plan for {args.method}: it trains on cached encoder features",
            },
        )
        return
    result = memory.plan(
        base,
        args.method,
        params["train"],
        params["audio"]["max_seconds"],
        memory.budget_bytes(params["resources"]["gpu_memory_gb"], device),
        device=device,
    )
    write_json(args.out, result)
    log.info(
        "memory plan for %s on %s (%s): peak %.2f GiB = weights %.2f + gradients %.2f + optimiser %.2f + "
        "activations %.2f; %s",
        args.method,
        base.name,
        device,
        result["peak_bytes"] / memory.GIB,
        result["weights"] / memory.GIB,
        result["gradients"] / memory.GIB,
        result["optimizer"] / memory.GIB,
        result["activations"] / memory.GIB,
        result["message"] or "no budget to judge against (no GPU here and resources.gpu_memory_gb unset)",
    )
    memory.require_fit(result)
