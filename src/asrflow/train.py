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
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from asrflow import config, methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, bucket_batches, load_clips
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import Utterance, read_manifest, total_seconds
from asrflow.model import make_processor, resolve_base

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
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


def split_alignable(model: torch.nn.Module, clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    lengths = torch.tensor([len(c.samples) for c in clips])
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    kept = [c for c, n in zip(clips, frames) if n >= ctc_frames_needed(c.labels) and c.labels]
    dropped = [c for c, n in zip(clips, frames) if not (n >= ctc_frames_needed(c.labels) and c.labels)]
    for clip in dropped:
        log.warning("dropped %s: %.2f s gives fewer CTC frames than its %d labels need", clip.utt_id,
                    len(clip.samples) / TARGET_RATE, len(clip.labels))
    return kept, dropped


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus-level (CER, WER): errors summed over utterances, divided by the reference length."""
    return float(jiwer.cer(references, hypotheses)), float(jiwer.wer(references, hypotheses))


def _write_curve(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _train_epoch(task, optimizer, scheduler, clips: list[Clip], cfg: LoopConfig, rng: random.Random,
                 params: list[torch.nn.Parameter], desc: str) -> tuple[float, float]:
    """One pass over `clips`; returns (mean loss, audio seconds seen)."""
    task.train()
    losses, seconds = [], 0.0
    batches = bucket_batches([c.n_samples for c in clips], cfg.batch_seconds, rng)
    for batch_ids in tqdm(batches, desc=desc, unit="batch", mininterval=2.0, leave=False):
        batch_clips = [clips[i] for i in batch_ids]
        loss = task.loss(batch_clips)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite CTC loss ({loss.item()}) on the batch of utterances "
                                f"{[c.utt_id for c in batch_clips]}; check their audio and transcripts, or lower the lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds += sum(c.n_samples for c in batch_clips) / TARGET_RATE
    return float(np.mean(losses)), seconds


def fit(task, train: list[Clip], dev: list[Clip], cfg: LoopConfig, save_best: Callable[[torch.nn.Module], None],
        curve_path: Path | None, label: str) -> dict:
    """Train until max_epochs or until dev CER has not improved for `patience` epochs; save_best on each record."""
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    train, dev = task.prepare(train), task.prepare(dev)
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    steps_per_epoch = len(bucket_batches([c.n_samples for c in train], cfg.batch_seconds, random.Random(0)))
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, steps_per_epoch * cfg.max_epochs)
    best = {"dev_cer": math.inf, "dev_wer": math.inf, "epoch": 0}
    curve, stale, started = [], 0, time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        epoch_start = time.perf_counter()
        loss, seconds = _train_epoch(task, optimizer, scheduler, train, cfg, rng, params, f"{label} epoch {epoch}")
        train_time = time.perf_counter() - epoch_start
        dev_cer, dev_wer = error_rates([c.text for c in dev], task.transcribe(dev, cfg.batch_seconds * 2))
        improved = dev_cer < best["dev_cer"]
        if improved:
            best = {"dev_cer": dev_cer, "dev_wer": dev_wer, "epoch": epoch}
            save_best(task.model)
        stale = 0 if improved else stale + 1
        curve.append({"epoch": epoch, "train_loss": round(loss, 5), "dev_cer": round(dev_cer, 5),
                      "dev_wer": round(dev_wer, 5), "lr": f"{scheduler.get_last_lr()[0]:.3g}",
                      "audio_seconds_per_second": round(seconds / train_time, 2)})
        if curve_path is not None:
            _write_curve(curve_path, curve)
        log.info("%s epoch %d/%d: loss %.3f, dev CER %.4f, WER %.4f%s, %.0f s audio/s", label, epoch, cfg.max_epochs,
                 loss, dev_cer, dev_wer, " (best)" if improved else "", seconds / train_time)
        if stale >= cfg.patience:
            log.info("%s: early stop, no dev improvement for %d epochs", label, stale)
            break
    return {"best_epoch": best["epoch"], "dev_cer": best["dev_cer"], "dev_wer": best["dev_wer"],
            "epochs_run": len(curve), "train_seconds": round(time.perf_counter() - started, 2),
            "audio_seconds_per_second": round(float(np.median([r["audio_seconds_per_second"] for r in curve])), 2)}


def training_set(train: list[Utterance], speed_copies: list[Utterance]) -> list[Utterance]:
    """The fold's training utterances plus the speed-perturbed copies of exactly those (never dev/test copies)."""
    train_ids = {u.utt_id for u in train}
    return train + [c for c in speed_copies if c.origin in train_ids]


def loop_config(train_cfg: dict, method: str) -> LoopConfig:
    return LoopConfig(lr=train_cfg[method]["lr"], max_epochs=train_cfg["max_epochs"], patience=train_cfg["patience"],
                      batch_seconds=train_cfg["batch_seconds"], warmup_steps=train_cfg["warmup_steps"],
                      grad_clip=train_cfg["grad_clip"], seed=train_cfg["seed"])


def train_fold(fold_dir: Path, speed_manifest: Path, base_dir: Path, method_name: str, params: dict,
               out_dir: Path, curve_path: Path) -> dict:
    train_cfg, augment_cfg = params["train"], params["augment"]
    language = params["corpus"]["language"]
    method = methods.get(method_name)
    vocab = read_json(fold_dir / "vocab.json")
    processor = make_processor(vocab)
    seed_everything(train_cfg["seed"])
    overrides = {"mask_time_prob": augment_cfg["mask_time_prob"], "mask_time_length": augment_cfg["mask_time_length"],
                 "pad_token_id": vocab["<pad>"], "ctc_loss_reduction": "mean"}
    model = method.prepare(resolve_base(base_dir), vocab, overrides, train_cfg[method_name], language)

    def encode(text: str) -> list[int]:
        return processor.tokenizer(text).input_ids

    train_utts = training_set(read_manifest(fold_dir / "train.csv"), read_manifest(speed_manifest))
    train_clips, dropped = split_alignable(model, load_clips(train_utts, encode))
    dev_clips = load_clips(read_manifest(fold_dir / "dev.csv"), encode)
    trainable, total = methods.count_parameters(model)
    log.info("%s fold %s: %d training clips (%.1f min with speed copies), %d dev clips, %d/%d parameters train",
             method_name, fold_dir.name, len(train_clips), total_seconds(train_utts) / 60, len(dev_clips),
             trainable, total)

    with atomic_path(out_dir) as tmp:
        def save_best(trained: torch.nn.Module) -> None:
            method.save(trained, tmp, language)
            processor.save_pretrained(tmp)

        result = fit(method.task(model, processor, train_cfg[method_name]), train_clips, dev_clips, loop_config(train_cfg, method_name),
                     save_best, curve_path, f"{method_name}/{fold_dir.name}")
        info = {**result, "method": method_name, "fold": int(fold_dir.name.removeprefix("fold")),
                "language": language, "trainable_params": trainable, "total_params": total,
                "train_audio_seconds": round(sum(c.n_samples for c in train_clips) / TARGET_RATE, 2),
                "dropped_utterances": [c.utt_id for c in dropped], "base": resolve_base(base_dir),
                "settings": {k: v for k, v in train_cfg.items() if k in {"seed", "max_epochs", "patience",
                                                                        "batch_seconds", "warmup_steps", "grad_clip"}}
                | {method_name: train_cfg[method_name], "augment": augment_cfg}}
        write_json(tmp / "training.json", info)
    return info


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "train", args.method)
    train_fold(args.folds / f"fold{args.fold}", args.speed / "manifest.csv", args.base, args.method, params,
               args.out, args.curve)
