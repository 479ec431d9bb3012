"""The training loop every method, the release refit and the demo base's pre-training use; no stage owns it.

The loop: length-bucketed batches capped by total audio seconds, AdamW (or Adafactor), linear warm-up then linear
decay, gradient clipping, dev-CER early stopping with patience, the best checkpoint saved through a callback. Clips too
short for their transcript under CTC (fewer frames than labels) are dropped and reported, not fed to an inf loss; a
non-finite loss stops the run naming the batch's utterances.

Memory (for 300 M – 1 B parameter bases on one GPU): `precision` bf16/fp16 autocasts forward passes (float32 master
weights; fp16 with a gradient scaler; the CTC loss in float32), `gradient_checkpointing` recomputes each layer's
activations in the backward pass, and `micro_batch_seconds` cuts each batch into micro-batches whose gradients are
accumulated, weighted by their share of the batch's utterances, so that one optimiser step still covers
`batch_seconds` of audio and gives the gradient of the whole batch (exactly, up to floating-point order).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_scheduler
from transformers.optimization import Adafactor

from asrflow import distributed, methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, bucket_batches, pack
from asrflow.checkpoint import Base
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path, write_json
from asrflow.manifest import Utterance
from asrflow.metrics import error_rates
from asrflow.model import autocast, compute_device, model_device
from asrflow.resume import Checkpoints, LoopState, Optimisation, fingerprint, resume_dir

log = logging.getLogger(__name__)


class TrainingError(AsrflowError):
    """Training cannot go on (e.g. a non-finite loss); the message names the utterances involved."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    lr: float
    max_epochs: int
    patience: int
    batch_seconds: float
    warmup_steps: int
    grad_clip: float
    seed: int
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    micro_batch_seconds: float | None = None  # None: the whole batch at once
    optimizer: str = "adamw"
    schedule: str = "linear"  # decay after warm-up: linear or cosine (train.<method>.schedule; CTC methods: linear)

    @property
    def micro_seconds(self) -> float:
        return min(self.micro_batch_seconds or self.batch_seconds, self.batch_seconds)


# Loop settings a method may override under train.<method>; every one of them also has a train-wide value.


LOOP_OVERRIDES = (
    "max_epochs",
    "patience",
    "batch_seconds",
    "precision",
    "gradient_checkpointing",
    "micro_batch_seconds",
    "optimizer",
)


def loop_config(train_cfg: dict, method: str) -> LoopConfig:
    """The loop settings of `method`: train.<method> may override any of LOOP_OVERRIDES (an epoch of the frozen
    method costs a fraction of one of full fine-tuning; a 1 B full fine-tune may need bf16 where an adapter does
    not)."""
    own = train_cfg[method]
    shared = {key: own.get(key, train_cfg[key]) for key in LOOP_OVERRIDES}  # absent under train.<method>: common
    return LoopConfig(
        lr=own["lr"],
        warmup_steps=train_cfg["warmup_steps"],
        grad_clip=train_cfg["grad_clip"],
        seed=train_cfg["seed"],
        schedule=own.get("schedule", "linear"),
        **shared,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_set(train: list[Utterance], speed_copies: list[Utterance]) -> list[Utterance]:
    """The fold's training utterances plus the speed-perturbed copies of exactly those (never dev/test copies)."""
    train_ids = {u.utt_id for u in train}
    return train + [c for c in speed_copies if c.origin in train_ids]


def model_overrides(augment_cfg: dict, vocab: dict[str, int]) -> dict:
    """Config values the fine-tuned model takes instead of the base's: SpecAugment, the blank id, the loss reduction."""
    return {
        "mask_time_prob": augment_cfg["mask_time_prob"],
        "mask_time_length": augment_cfg["mask_time_length"],
        "pad_token_id": vocab["<pad>"],
        "ctc_loss_reduction": "mean",
    }


def prepare_model(base: Base, method_name: str, vocab: dict[str, int], params: dict) -> torch.nn.Module:
    """The method's model for `vocab` on the compute device, seeded (params: the train/ release stage's view)."""
    train_cfg = params["train"]
    seed_everything(train_cfg["seed"])
    language = params["corpus"]["language"]
    return (
        methods.get(method_name)
        .prepare(
            base,
            vocab,
            model_overrides(params["augment"], vocab),
            train_cfg[method_name],
            language,
            warm_language=params["model"]["base_language"] or language,
        )
        .to(compute_device())
    )


def ctc_frames_needed(labels: list[int]) -> int:
    """CTC needs one frame per label plus a blank between repeated labels."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)


def ctc_rejection(clip: Clip, frames: int) -> str:
    """Why CTC cannot align `clip` ('' if it can): fewer output frames than its labels need, or no labels."""
    if not clip.labels:
        return "no labels: empty transcript"
    needed = ctc_frames_needed(clip.labels)
    if frames < needed:
        return (
            f"too short for its transcript under CTC: {clip.n_samples / TARGET_RATE:.2f} s gives {frames} "
            f"frames, its {len(clip.labels)} labels need {needed}"
        )
    return ""


def split_alignable(model: torch.nn.Module, clips: list[Clip]) -> tuple[list[Clip], list[tuple[Clip, str]]]:
    """(clips CTC can align, [(clip, reason)] for the others): rejected with a reason, never fed to an inf loss."""
    lengths = torch.tensor([len(c.inputs) for c in clips])
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    reasons = [ctc_rejection(c, n) for c, n in zip(clips, frames)]
    dropped = [(c, r) for c, r in zip(clips, reasons) if r]
    for clip, reason in dropped:
        log.warning("dropped %s: %s", clip.utt_id, reason)
    return [c for c, r in zip(clips, reasons) if not r], dropped


def _write_curve(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _shard(batch_ids: list[int]) -> list[int]:
    """This process's share of a batch: every process sees the same batches (same seed), each a different slice."""
    return batch_ids[distributed.rank() :: distributed.world_size()]


def micro_batches(clips: list[Clip], max_seconds: float) -> list[list[Clip]]:
    """`clips` (one batch) in consecutive micro-batches whose padded audio stays within `max_seconds` (at least one
    clip each): one micro-batch when the whole batch fits."""
    groups = pack(list(range(len(clips))), [c.n_samples for c in clips], max_seconds)
    return [[clips[i] for i in group] for group in groups]


def accumulate_loss(task, clips: list[Clip], cfg: LoopConfig, scaler: torch.amp.GradScaler) -> float:
    """Forward and backward over `clips` in micro-batches; the gradients add up to the whole batch's (each
    micro-batch's mean loss weighted by its share of the utterances). Returns the batch's loss."""
    total = 0.0
    groups = micro_batches(clips, cfg.micro_seconds)
    for group in groups:
        with autocast(cfg.precision, model_device(task.model)):
            loss = task.loss(group)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite CTC loss ({loss.item()}) on the batch of utterances "
                f"{[c.utt_id for c in group]}; check their audio and transcripts, or lower the lr"
            )
        if len(groups) > 1:  # a single micro-batch is left untouched: bit-identical to training without accumulation
            loss = loss * (len(group) / len(clips))
        scaler.scale(loss).backward()
        total += loss.item()
    return total


def train_step(
    task, clips: list[Clip], cfg: LoopConfig, optimisation: Optimisation, params: list[torch.nn.Parameter]
) -> float:
    """One optimiser step on this process's share of a batch (possibly none: it still joins the gradient average);
    returns the batch's loss (NaN without clips)."""
    optimizer, scaler = optimisation.optimizer, optimisation.scaler
    loss = accumulate_loss(task, clips, cfg, scaler) if clips else math.nan
    distributed.average_gradients(params)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    scaler.step(optimizer)  # skipped by an fp16 scaler when the gradients overflowed; it then lowers its scale
    scaler.update()
    optimisation.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def _train_epoch(
    task,
    clips: list[Clip],
    cfg: LoopConfig,
    optimisation: Optimisation,
    params: list[torch.nn.Parameter],
    *,
    rng: random.Random,
    desc: str,
) -> tuple[float, float]:
    """One pass over `clips`; returns (mean loss, audio seconds seen by all processes)."""
    task.train()
    losses, seconds = [], 0.0
    batches = bucket_batches([c.n_samples for c in clips], cfg.batch_seconds, rng)
    for batch_ids in tqdm(
        batches, desc=desc, unit="batch", mininterval=2.0, leave=False, disable=not distributed.is_main()
    ):
        loss = train_step(task, [clips[i] for i in _shard(batch_ids)], cfg, optimisation, params)
        losses.append(distributed.mean(loss))
        seconds += sum(clips[i].n_samples for i in batch_ids) / TARGET_RATE
    return float(np.nanmean(losses)), seconds


def make_optimizer(params: list[torch.nn.Parameter], cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW keeps two float32 moments per trained weight (8 bytes each: 8 GB for a 1 B model). Adafactor keeps
    factored second moments (rows + columns of each matrix) and no first moment: almost no optimiser memory, at the
    price of noisier updates; it is what large models are fine-tuned with when AdamW's state does not fit."""
    if cfg.optimizer == "adafactor":
        return Adafactor(params, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(params, lr=cfg.lr)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """transformers' own per-layer checkpointing, non-reentrant: the reentrant form gives no gradients to weights
    inside a checkpointed layer whose input does not require grad (adapters and LoRA on a frozen trunk)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def parameter_digest(params: list[torch.nn.Parameter]) -> str:
    """A short hash of the trained values: equal across processes when data-parallel training kept them in sync."""
    digest = hashlib.sha256()
    for param in params:
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _evaluate_dev(task, dev: list, batch_seconds: float, precision: str) -> tuple[float, float]:
    if not dev:
        return math.nan, math.nan
    with autocast(precision, model_device(task.model)):
        return error_rates([c.text for c in dev], task.transcribe(dev, batch_seconds))


def fit(
    task,
    train: list[Clip],
    dev: list[Clip],
    cfg: LoopConfig,
    save_best: Callable[[torch.nn.Module], None],
    *,
    curve_path: Path | None,
    label: str,
    checkpoints: Checkpoints | None = None,
) -> dict:
    """Train until max_epochs or until dev CER has not improved for `patience` epochs; save_best on each record.

    With no dev clips (a refit on every speaker: nothing is held out) train max_epochs and save the last. With
    `checkpoints`, the loop state is saved after every epoch and a previous run's state is resumed. Under
    torchrun (train.processes > 1) every process trains on its shard of each batch with averaged gradients; the
    first process evaluates, saves and decides when to stop.
    """
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    early_stopping = bool(dev)
    train, dev = task.prepare(train), task.prepare(dev) if distributed.is_main() else []
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(task.model)
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    scaler = torch.amp.GradScaler(model_device(task.model).type, enabled=cfg.precision == "fp16")
    steps_per_epoch = len(bucket_batches([c.n_samples for c in train], cfg.batch_seconds, random.Random(0)))
    scheduler = get_scheduler(cfg.schedule, optimizer, cfg.warmup_steps, steps_per_epoch * cfg.max_epochs)
    optimisation = Optimisation(optimizer, scheduler, scaler)
    state = checkpoints.load(task.model, optimisation, rng) if checkpoints else LoopState()
    started = time.perf_counter() - state.seconds
    while state.epoch < cfg.max_epochs and not (early_stopping and state.stale >= cfg.patience):
        state.epoch += 1
        epoch_start = time.perf_counter()
        loss, seconds = _train_epoch(
            task, train, cfg, optimisation, params, rng=rng, desc=f"{label} epoch {state.epoch}"
        )
        train_time = time.perf_counter() - epoch_start
        if distributed.is_main():
            _finish_epoch(
                task,
                dev,
                cfg,
                state,
                save_best,
                loss=loss,
                speed=seconds / train_time,
                scheduler=scheduler,
                curve_path=curve_path,
                label=label,
            )
        state.stale = distributed.broadcast(state.stale)
        state.seconds = time.perf_counter() - started
        if checkpoints and distributed.is_main():
            checkpoints.save(task.model, optimisation, rng, state)
    log.info(
        "%s: trained parameters digest %s (process %d of %d)",
        label,
        parameter_digest(params),
        distributed.rank(),
        distributed.world_size(),
    )
    if early_stopping and state.stale >= cfg.patience:
        log.info("%s: early stop, no dev improvement for %d epochs", label, state.stale)
    return {
        "best_epoch": state.best["epoch"],
        "dev_cer": state.best["dev_cer"],
        "dev_wer": state.best["dev_wer"],
        "epochs_run": state.epoch,
        "train_seconds": round(time.perf_counter() - started, 2),
        "processes": distributed.world_size(),
        "audio_seconds_per_second": round(
            float(np.median([r["audio_seconds_per_second"] for r in state.curve] or [0])), 2
        ),
    }


def _finish_epoch(
    task,
    dev: list,
    cfg: LoopConfig,
    state: LoopState,
    save_best: Callable[[torch.nn.Module], None],
    *,
    loss: float,
    speed: float,
    scheduler,
    curve_path: Path | None,
    label: str,
) -> None:
    """Dev evaluation, best checkpoint, curve row and log line after one epoch (first process only)."""
    dev_cer, dev_wer = _evaluate_dev(task, dev, cfg.batch_seconds * 2, cfg.precision)
    improved = dev_cer < state.best["dev_cer"] if dev else state.epoch == cfg.max_epochs
    if improved:
        state.best = {"dev_cer": dev_cer, "dev_wer": dev_wer, "epoch": state.epoch}
        save_best(task.model)
    state.stale = 0 if improved else state.stale + 1
    state.curve.append(
        {
            "epoch": state.epoch,
            "train_loss": round(loss, 5),
            "dev_cer": round(dev_cer, 5),
            "dev_wer": round(dev_wer, 5),
            "lr": f"{scheduler.get_last_lr()[0]:.3g}",
            "audio_seconds_per_second": round(speed, 2),
        }
    )
    if curve_path is not None:
        _write_curve(curve_path, state.curve)
    scores = f"dev CER {dev_cer:.4f}, WER {dev_wer:.4f}" if dev else "no dev speakers"
    log.info(
        "%s epoch %d/%d: loss %.3f, %s%s, %.0f s audio/s",
        label,
        state.epoch,
        cfg.max_epochs,
        loss,
        scores,
        " (best)" if improved else "",
        speed,
    )


# --- what one fold's training job leaves behind (asrflow.train, and the projector method's own train_fold) ----------

RECORDED_SETTINGS = {"seed", "max_epochs", "patience", "batch_seconds", "warmup_steps", "grad_clip"}


def fold_checkpoints(out_dir: Path, params: dict, inputs: list[Path]) -> Checkpoints:
    """The resume state of the job that writes `out_dir`: taken up again only with the same params, number of
    processes and `inputs` (their contents)."""
    return Checkpoints(resume_dir(out_dir), fingerprint({**params, "processes": distributed.world_size()}, inputs))


def training_info(
    result: dict,
    params: dict,
    method: str,
    fold_dir: Path,
    base: Base,
    *,
    settings: LoopConfig,
    trainable_params: int,
    total_params: int,
    trained: list[Clip],
    dropped: list[tuple[Clip, str]],
    more_settings: dict | None = None,
    **extra: Any,
) -> dict:
    """What `training.json` records of one trained fold, alike for every method: `fit`'s result, the method, fold and
    language, the parameter counts, the clips `trained` on and those `dropped` (with their reasons), the base, then a
    method's own `extra` keys, the train settings that shaped the run (with `more_settings`) and the loop's."""
    train_cfg = params["train"]
    recorded = {k: v for k, v in train_cfg.items() if k in RECORDED_SETTINGS}
    return {
        **result,
        "method": method,
        "fold": int(fold_dir.name.removeprefix("fold")),
        "language": params["corpus"]["language"],
        "trainable_params": trainable_params,
        "total_params": total_params,
        "train_audio_seconds": round(sum(c.n_samples for c in trained) / TARGET_RATE, 2),
        "dropped_utterances": [{"utt_id": c.utt_id, "reason": r} for c, r in dropped],
        "base": base.name,
        "base_model_type": base.model_type,
        **extra,
        "settings": recorded | {method: train_cfg[method], **(more_settings or {})},
        "loop": dataclasses.asdict(settings),
    }


def save_trained(checkpoints: Checkpoints, out_dir: Path, info: dict) -> None:
    """On the first process: the best checkpoint with `info` as its training.json becomes `out_dir` (atomically),
    and the resume state is cleared."""
    if distributed.is_main():
        with atomic_path(out_dir) as tmp:
            shutil.copytree(checkpoints.best, tmp)
            write_json(tmp / "training.json", info)
        checkpoints.clear()
