"""The `plan` stage: before any training, whether one method can train on the base, and in how much memory.

For the configured base and method it checks the method can take the base (asrflow.methods.check_available: a
refusal names the base, the reason and the methods that can), then estimates the peak accelerator memory of one
training step with the configured precision, gradient checkpointing, micro-batch and optimiser (asrflow.memory:
weights, gradients and optimiser state counted; activations measured by a short probe on the device at hand) for
clips as long as `audio.max_seconds`, the longest a corpus may hold. The budget is `resources.gpu_memory_gb`, or the
memory of the GPU at hand; on a CPU without one the plan reports the peak and judges nothing.

Output (`--out`, data/models/plan/<method>.json): every component in bytes, `fits`, `largest_micro_batch_seconds`,
and `message` (what to change when it does not fit). The stage stops with that message when nothing fits. Each train
job checks the same on its own GPU before it trains (asrflow.train), so a job that cannot fit fails in seconds.
"""

from __future__ import annotations

import argparse
import logging

import torch

from asrflow import config, memory, methods
from asrflow.checkpoint import Base, open_base
from asrflow.errors import AsrflowError
from asrflow.io import write_json
from asrflow.manifest import Utterance
from asrflow.model import compute_device

log = logging.getLogger(__name__)
GB = 1024 ** 3


class PlanError(AsrflowError):
    """The configured training does not fit the GPU; the message says which setting to change."""


def budget_bytes(gpu_memory_gb: float | None, device: torch.device) -> int | None:
    """The memory one training job may use: a share (memory.USABLE) of the configured GPU size, else of the GPU at
    hand's, else none. The rest is for the CUDA context and the caching allocator's rounding and fragmentation, which
    the tensor peak does not count."""
    if gpu_memory_gb:
        return int(gpu_memory_gb * GB * memory.USABLE)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * memory.USABLE)
    return None


def require_fit(result: dict) -> None:
    """Stop with the plan's own advice when the step does not fit."""
    if result["fits"] is False:
        raise PlanError(f"{result['method']} on {result['base']}: {result['message']}")


def check_device_fits(base: Base, method: str, train_cfg: dict, utterances: list[Utterance]) -> None:
    """On a GPU, stop before training when the configured step does not fit its memory (longest clip: the longest of
    `utterances`). On a CPU nothing is checked: main memory is not what stops these runs, and the probe costs time."""
    device = compute_device()
    if device.type == "cuda":
        longest = max(u.duration or 0.0 for u in utterances)
        require_fit(memory.plan(base, method, train_cfg, longest, budget_bytes(None, device), device))


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "plan", args.method)
    base = open_base(args.base)
    methods.check_available(base, args.method, params["train"])
    device = compute_device()
    result = memory.plan(base, args.method, params["train"], params["audio"]["max_seconds"],
                         budget_bytes(params["resources"]["gpu_memory_gb"], device), device)
    write_json(args.out, result)
    log.info("memory plan for %s on %s (%s): peak %.2f GiB = weights %.2f + gradients %.2f + optimiser %.2f + "
             "activations %.2f; %s", args.method, base.name, device, result["peak_bytes"] / GB,
             result["weights"] / GB, result["gradients"] / GB, result["optimizer"] / GB,
             result["activations"] / GB, result["message"] or "no budget to judge against (no GPU here and "
             "resources.gpu_memory_gb unset)")
    require_fit(result)
