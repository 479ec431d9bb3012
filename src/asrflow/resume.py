"""Resumable training: after every epoch the whole loop state goes to a folder beside the stage's output, so a job
that is killed (SIGKILL, a pre-empted cluster node) and started again continues from its last finished epoch instead
of starting over.

The folder (`.<output name>.resume/`) is never a declared output, so neither engine mistakes it for a finished
result. It holds `state/` (model, optimizer, gradient scaler, CPU and CUDA RNG and early-stopping state, rewritten
atomically each epoch) and
`best/` (the best model so far). Everything is safetensors or JSON: nothing is unpickled. A fingerprint of the job's
params and input files guards it: a folder left by a different configuration is discarded, not resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from asrflow.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoopState:
    """Where the loop stands after `epoch` finished epochs."""

    epoch: int = 0
    best: dict = dataclasses.field(default_factory=lambda: {"dev_cer": math.inf, "dev_wer": math.inf, "epoch": 0})
    stale: int = 0
    curve: list[dict] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # training wall time spent before this process started


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """The live objects every optimiser step moves and a checkpoint saves and restores: the optimiser, its
    learning-rate schedule and the gradient scaler (a disabled one unless fp16)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler: the loop's warm-up and decay, or the memory probe's constant one
    scaler: torch.amp.GradScaler


def fingerprint(settings: dict, files: list[Path]) -> str:
    """What the run depends on: its settings and the bytes of its input files."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resume_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.resume"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser's state as flat tensors (for safetensors) plus the JSON-able rest (plain numbers, such as
    Adafactor's step count)."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().clone().contiguous()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    numbers = {
        f"{index}.{name}": value
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if not isinstance(value, torch.Tensor)
    }
    return tensors, {"param_groups": state["param_groups"], "numbers": numbers}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in {**tensors, **rest.get("numbers", {})}.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def _rng_tensors() -> dict[str, torch.Tensor]:
    """torch's CPU generator and, on a GPU machine, every CUDA device's (dropout and SpecAugment draw from them)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda{i}"] for i in range(len(tensors) - 1)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _json_ready(value):
    """Python's and numpy's RNG states as nested lists (tuples and arrays do not survive JSON otherwise)."""
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Checkpoints:
    """Saves and restores the loop's state in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.key = directory, key

    @property
    def best(self) -> Path:
        return self.directory / "best"

    def load(self, model: torch.nn.Module, optimisation: Optimisation, rng: random.Random) -> LoopState:
        """The saved state, restored into the live objects; a fresh LoopState if there is nothing valid to resume."""
        state_dir = self.directory / "state"
        if not (state_dir / "loop.json").is_file():
            return LoopState()
        saved = read_json(state_dir / "loop.json")
        if saved["key"] != self.key:
            log.info("discarding %s: it was left by a run with other settings or inputs", self.directory)
            shutil.rmtree(self.directory)
            return LoopState()
        model.load_state_dict(load_file(str(state_dir / "model.safetensors")), strict=False)
        optimizer_tensors = load_file(str(state_dir / "optimizer.safetensors"))
        _restore_optimizer(optimisation.optimizer, optimizer_tensors, saved["optimizer"])
        optimisation.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            optimisation.scaler.load_state_dict(saved["scaler"])
        rng.setstate(_as_tuple(saved["python_rng"]))
        np.random.set_state(tuple(_as_tuple(saved["numpy_rng"])))
        _restore_rng(load_file(str(state_dir / "rng.safetensors")))
        state = LoopState(**saved["loop"])
        log.info(
            "resuming from %s after epoch %d (best so far: epoch %d)", self.directory, state.epoch, state.best["epoch"]
        )
        return state

    def save(self, model: torch.nn.Module, optimisation: Optimisation, rng: random.Random, state: LoopState) -> None:
        with atomic_path(self.directory / "state") as tmp:
            tmp.mkdir()
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            save_file(
                {n: t.detach().clone().contiguous() for n, t in model.state_dict().items() if n in trainable},
                str(tmp / "model.safetensors"),
            )
            tensors, rest = _optimizer_tensors(optimisation.optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
            write_json(
                tmp / "loop.json",
                {
                    "key": self.key,
                    "loop": dataclasses.asdict(state),
                    "optimizer": rest,
                    "scheduler": optimisation.scheduler.state_dict(),
                    "scaler": optimisation.scaler.state_dict(),
                    "python_rng": _json_ready(rng.getstate()),
                    "numpy_rng": _json_ready(np.random.get_state()),
                },
            )

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value
