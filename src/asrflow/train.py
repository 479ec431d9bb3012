"""The `train` stage: fine-tune one method on one fold, and the one training loop every method (and the demo base
pre-training) uses.

The loop: length-bucketed batches capped by total audio seconds, AdamW, linear warm-up then linear decay, gradient
clipping, dev-CER early stopping with patience, the best checkpoint saved in Hugging Face format with its processor.
Clips too short for their transcript under CTC (fewer frames than labels) are dropped and reported, not fed to an
inf loss; a non-finite loss stops the run naming the batch's utterances.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import logging
import math
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from asrflow import config, distributed, methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, bucket_batches, load_clips
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import Utterance, read_manifest, total_seconds
from asrflow.model import compute_device, make_processor, resolve_base
from asrflow.resume import Checkpoints, LoopState, fingerprint, resume_dir

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ctc_frames_needed(labels: list[int]) -> int:
    """CTC needs one frame per label plus a blank between repeated labels."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)


def ctc_rejection(clip: Clip, frames: int) -> str:
    """Why CTC cannot align `clip` ('' if it can): fewer output frames than its labels need, or no labels."""
    if not clip.labels:
        return "no labels: empty transcript"
    needed = ctc_frames_needed(clip.labels)
    if frames < needed:
        return (f"too short for its transcript under CTC: {len(clip.samples) / TARGET_RATE:.2f} s gives {frames} "
                f"frames, its {len(clip.labels)} labels need {needed}")
    return ""


def split_alignable(model: torch.nn.Module, clips: list[Clip]) -> tuple[list[Clip], list[tuple[Clip, str]]]:
    """(clips CTC can align, [(clip, reason)] for the others): rejected with a reason, never fed to an inf loss."""
    lengths = torch.tensor([len(c.samples) for c in clips])
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    reasons = [ctc_rejection(c, n) for c, n in zip(clips, frames)]
    dropped = [(c, r) for c, r in zip(clips, reasons) if r]
    for clip, reason in dropped:
        log.warning("dropped %s: %s", clip.utt_id, reason)
    return [c for c, r in zip(clips, reasons) if not r], dropped


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (CER, WER): errors summed over utterances, divided by the reference length."""
    return float(jiwer.cer(references, hypotheses)), float(jiwer.wer(references, hypotheses))


def _write_curve(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _shard(batch_ids: list[int]) -> list[int]:
    """This process's share of a batch: every process sees the same batches (same seed), each a different slice."""
    return batch_ids[distributed.rank()::distributed.world_size()]


def _train_epoch(task, optimizer, scheduler, clips: list[Clip], cfg: LoopConfig, rng: random.Random,
                 params: list[torch.nn.Parameter], desc: str) -> tuple[float, float]:
    """One pass over `clips`; returns (mean loss, audio seconds seen by all processes)."""
    task.train()
    losses, seconds = [], 0.0
    batches = bucket_batches([c.n_samples for c in clips], cfg.batch_seconds, rng)
    for batch_ids in tqdm(batches, desc=desc, unit="batch", mininterval=2.0, leave=False,
                          disable=not distributed.is_main()):
        batch_clips = [clips[i] for i in _shard(batch_ids)]
        loss = task.loss(batch_clips) if batch_clips else None
        if loss is not None and not torch.isfinite(loss):
            raise TrainingError(f"non-finite CTC loss ({loss.item()}) on the batch of utterances "
                                f"{[c.utt_id for c in batch_clips]}; check their audio and transcripts, or lower the lr")
        if loss is not None:
            loss.backward()
        distributed.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(distributed.mean(loss.item() if loss is not None else math.nan))
        seconds += sum(clips[i].n_samples for i in batch_ids) / TARGET_RATE
    return float(np.nanmean(losses)), seconds


def parameter_digest(params: list[torch.nn.Parameter]) -> str:
    """A short hash of the trained values: equal across processes when data-parallel training kept them in sync."""
    digest = hashlib.sha256()
    for param in params:
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _evaluate_dev(task, dev: list, batch_seconds: float) -> tuple[float, float]:
    if not dev:
        return math.nan, math.nan
    return error_rates([c.text for c in dev], task.transcribe(dev, batch_seconds))


def fit(task, train: list[Clip], dev: list[Clip], cfg: LoopConfig, save_best: Callable[[torch.nn.Module], None],
        curve_path: Path | None, label: str, checkpoints: Checkpoints | None = None) -> dict:
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
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    steps_per_epoch = len(bucket_batches([c.n_samples for c in train], cfg.batch_seconds, random.Random(0)))
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, steps_per_epoch * cfg.max_epochs)
    state = checkpoints.load(task.model, optimizer, scheduler, rng) if checkpoints else LoopState()
    started = time.perf_counter() - state.seconds
    while state.epoch < cfg.max_epochs and not (early_stopping and state.stale >= cfg.patience):
        state.epoch += 1
        epoch_start = time.perf_counter()
        loss, seconds = _train_epoch(task, optimizer, scheduler, train, cfg, rng, params,
                                     f"{label} epoch {state.epoch}")
        train_time = time.perf_counter() - epoch_start
        if distributed.is_main():
            _finish_epoch(task, dev, cfg, state, save_best, loss, seconds / train_time, scheduler, curve_path, label)
        state.stale = distributed.broadcast(state.stale)
        state.seconds = time.perf_counter() - started
        if checkpoints and distributed.is_main():
            checkpoints.save(task.model, optimizer, scheduler, rng, state)
    log.info("%s: trained parameters digest %s (process %d of %d)", label, parameter_digest(params),
             distributed.rank(), distributed.world_size())
    if early_stopping and state.stale >= cfg.patience:
        log.info("%s: early stop, no dev improvement for %d epochs", label, state.stale)
    return {"best_epoch": state.best["epoch"], "dev_cer": state.best["dev_cer"], "dev_wer": state.best["dev_wer"],
            "epochs_run": state.epoch, "train_seconds": round(time.perf_counter() - started, 2),
            "processes": distributed.world_size(),
            "audio_seconds_per_second": round(float(np.median([r["audio_seconds_per_second"]
                                                               for r in state.curve] or [0])), 2)}


def _finish_epoch(task, dev: list, cfg: LoopConfig, state: LoopState, save_best: Callable[[torch.nn.Module], None],
                  loss: float, speed: float, scheduler, curve_path: Path | None, label: str) -> None:
    """Dev evaluation, best checkpoint, curve row and log line after one epoch (first process only)."""
    dev_cer, dev_wer = _evaluate_dev(task, dev, cfg.batch_seconds * 2)
    improved = dev_cer < state.best["dev_cer"] if dev else state.epoch == cfg.max_epochs
    if improved:
        state.best = {"dev_cer": dev_cer, "dev_wer": dev_wer, "epoch": state.epoch}
        save_best(task.model)
    state.stale = 0 if improved else state.stale + 1
    state.curve.append({"epoch": state.epoch, "train_loss": round(loss, 5), "dev_cer": round(dev_cer, 5),
                        "dev_wer": round(dev_wer, 5), "lr": f"{scheduler.get_last_lr()[0]:.3g}",
                        "audio_seconds_per_second": round(speed, 2)})
    if curve_path is not None:
        _write_curve(curve_path, state.curve)
    scores = f"dev CER {dev_cer:.4f}, WER {dev_wer:.4f}" if dev else "no dev speakers"
    log.info("%s epoch %d/%d: loss %.3f, %s%s, %.0f s audio/s", label, state.epoch, cfg.max_epochs, loss, scores,
             " (best)" if improved else "", speed)


def training_set(train: list[Utterance], speed_copies: list[Utterance]) -> list[Utterance]:
    """The fold's training utterances plus the speed-perturbed copies of exactly those (never dev/test copies)."""
    train_ids = {u.utt_id for u in train}
    return train + [c for c in speed_copies if c.origin in train_ids]


def loop_config(train_cfg: dict, method: str) -> LoopConfig:
    """The loop settings of `method`: train.<method> may override max_epochs, patience and batch_seconds (an epoch of
    the frozen method costs a fraction of one of full fine-tuning)."""
    own = train_cfg[method]
    return LoopConfig(lr=own["lr"], max_epochs=own.get("max_epochs", train_cfg["max_epochs"]),
                      patience=own.get("patience", train_cfg["patience"]),
                      batch_seconds=own.get("batch_seconds", train_cfg["batch_seconds"]),
                      warmup_steps=train_cfg["warmup_steps"], grad_clip=train_cfg["grad_clip"], seed=train_cfg["seed"])


def model_overrides(augment_cfg: dict, vocab: dict[str, int]) -> dict:
    """Config values the fine-tuned model takes instead of the base's: SpecAugment, the blank id, the loss reduction."""
    return {"mask_time_prob": augment_cfg["mask_time_prob"], "mask_time_length": augment_cfg["mask_time_length"],
            "pad_token_id": vocab["<pad>"], "ctc_loss_reduction": "mean"}


def train_fold(fold_dir: Path, speed_manifest: Path, base_dir: Path, method_name: str, params: dict,
               out_dir: Path, curve_path: Path) -> dict:
    train_cfg, augment_cfg = params["train"], params["augment"]
    language = params["corpus"]["language"]
    method = methods.get(method_name)
    vocab = read_json(fold_dir / "vocab.json")
    processor = make_processor(vocab)
    seed_everything(train_cfg["seed"])
    model = method.prepare(resolve_base(base_dir), vocab, model_overrides(augment_cfg, vocab), train_cfg[method_name],
                           language).to(compute_device())

    def encode(text: str) -> list[int]:
        return processor.tokenizer(text).input_ids

    train_utts = training_set(read_manifest(fold_dir / "train.csv"), read_manifest(speed_manifest))
    train_clips, dropped = split_alignable(model, load_clips(train_utts, encode))
    dev_clips = load_clips(read_manifest(fold_dir / "dev.csv"), encode)
    trainable, total = methods.count_parameters(model)
    log.info("%s fold %s: %d training clips (%.1f min with speed copies), %d dev clips, %d/%d parameters train",
             method_name, fold_dir.name, len(train_clips), total_seconds(train_utts) / 60, len(dev_clips),
             trainable, total)

    inputs = [fold_dir / "train.csv", fold_dir / "dev.csv", fold_dir / "vocab.json", speed_manifest,
              *sorted(Path(resolve_base(base_dir)).glob("*.json")),
              *sorted(Path(resolve_base(base_dir)).glob("*.safetensors"))]
    checkpoints = Checkpoints(resume_dir(out_dir), fingerprint({**params, "processes": distributed.world_size()},
                                                                inputs))

    def save_best(trained: torch.nn.Module) -> None:
        with atomic_path(checkpoints.best) as tmp:
            method.save(trained, tmp, language)
            processor.save_pretrained(tmp)

    result = fit(method.task(model, processor, train_cfg[method_name]), train_clips, dev_clips,
                 loop_config(train_cfg, method_name), save_best, curve_path, f"{method_name}/{fold_dir.name}",
                 checkpoints)
    info = {**result, "method": method_name, "fold": int(fold_dir.name.removeprefix("fold")),
            "language": language, "trainable_params": trainable, "total_params": total,
            "train_audio_seconds": round(sum(c.n_samples for c in train_clips) / TARGET_RATE, 2),
            "dropped_utterances": [{"utt_id": c.utt_id, "reason": r} for c, r in dropped],
            "base": resolve_base(base_dir),
            "settings": {k: v for k, v in train_cfg.items() if k in {"seed", "max_epochs", "patience",
                                                                    "batch_seconds", "warmup_steps", "grad_clip"}}
            | {method_name: train_cfg[method_name], "augment": augment_cfg}}
    if distributed.is_main():
        with atomic_path(out_dir) as tmp:
            shutil.copytree(checkpoints.best, tmp)
            write_json(tmp / "training.json", info)
        checkpoints.clear()
    return info


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "train", args.method, overrides=args.set)
    processes = params["train"]["processes"]
    if processes > 1 and not distributed.launched_by_torchrun():
        relaunch_with_torchrun(processes, args.threads)
        return
    distributed.init_from_environment()
    train_fold(args.folds / f"fold{args.fold}", args.speed / "manifest.csv", args.base, args.method, params,
               args.out, args.curve)


def relaunch_with_torchrun(processes: int, threads: int) -> None:
    """Run this same command as `processes` data-parallel processes on this node, sharing its threads."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               # "--" ends torchrun's own options: otherwise it claims ours (--log is ambiguous with its --log-dir)
               "-m", "--", "asrflow.cli", *sys.argv[1:], "--threads", str(max(1, threads // processes))]
    log.info("launching %d training processes: %s", processes, " ".join(command))
    subprocess.run(command, check=True)
