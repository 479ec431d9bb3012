"""Data-parallel training across processes (`train.processes: N`, launched with torchrun).

Each process trains on its shard of every batch; after backward, gradients are averaged across processes (what
DistributedDataParallel does, done explicitly because the cached-feature tasks call parts of the model directly,
past DDP's forward hooks). On CPU the gloo backend is used, on GPUs NCCL. With one process every function here is a
no-op, so the same loop runs alone or distributed.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_environment() -> None:
    """Join the process group torchrun set up (env:// rendezvous)."""
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # one GPU per process, the one asrflow.model.compute_device picks
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend=backend)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    if world_size() == 1:
        return
    for param in params:
        if param.grad is None:  # this process's shard was empty: it contributes zeros
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= world_size()


def _collective_device() -> torch.device:
    """NCCL reduces tensors on the GPU only; gloo on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean(value: float) -> float:
    """The mean of `value` over processes (NaN-aware: a process with an empty shard reports NaN)."""
    if world_size() == 1:
        return value
    pair = torch.tensor(
        [0.0 if value != value else value, 0.0 if value != value else 1.0],
        dtype=torch.float64,
        device=_collective_device(),
    )
    dist.all_reduce(pair, op=dist.ReduceOp.SUM)
    return float(pair[0] / pair[1]) if pair[1] else float("nan")


def broadcast(value: int) -> int:
    """The first process's `value`, on every process (e.g. the early-stopping counter)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.broadcast(tensor, src=0)
    return int(tensor.item())
