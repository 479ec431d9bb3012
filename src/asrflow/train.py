"""The `train` stage: fine-tune one method on one fold with the training loop (asrflow.loop), and save the best
checkpoint in Hugging Face format with its processor and `training.json`.

Before loading anything it refuses a method the base cannot take, and on a GPU it checks that the configured training
step fits the GPU's memory (asrflow.memory), so a job that cannot fit fails in seconds instead of hours.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import torch

from asrflow import config, distributed, methods
from asrflow.batching import load_clips
from asrflow.checkpoint import DESCRIPTION, open_base
from asrflow.io import atomic_path, read_json
from asrflow.loop import (
    fit,
    fold_checkpoints,
    loop_config,
    prepare_model,
    save_trained,
    split_alignable,
    training_info,
    training_set,
)
from asrflow.manifest import read_manifest, total_seconds
from asrflow.memory import check_device_fits
from asrflow.methods import projector
from asrflow.model import make_processor
from asrflow.vocab import encode_labels

log = logging.getLogger(__name__)


def train_fold(
    fold_dir: Path,
    speed_manifest: Path,
    base_dir: Path,
    method_name: str,
    params: dict,
    *,
    out_dir: Path,
    curve_path: Path,
) -> dict:
    train_cfg, augment_cfg = params["train"], params["augment"]
    language = params["corpus"]["language"]
    method = methods.get(method_name)
    base = open_base(base_dir)
    vocab = read_json(fold_dir / "vocab.json")
    feature_extractor = base.feature_extractor()
    processor = make_processor(vocab, feature_extractor)
    train_utts = training_set(read_manifest(fold_dir / "train.csv"), read_manifest(speed_manifest))
    methods.check_available(base, method_name, train_cfg)
    check_device_fits(base, method_name, train_cfg, train_utts)
    model = prepare_model(base, method_name, vocab, params)

    def encode(text: str) -> list[int]:
        return encode_labels(text, vocab)  # the fold's graphemes one label each, as split's vocabulary has them

    train_clips, dropped = split_alignable(model, load_clips(train_utts, encode, feature_extractor))
    dev_clips = load_clips(read_manifest(fold_dir / "dev.csv"), encode, feature_extractor)
    trainable, total = methods.count_parameters(model)
    log.info(
        "%s fold %s: %d training clips (%.1f min with speed copies), %d dev clips, %d/%d parameters train",
        method_name,
        fold_dir.name,
        len(train_clips),
        total_seconds(train_utts) / 60,
        len(dev_clips),
        trainable,
        total,
    )

    # base.json holds the digest of every base tensor: the resumed run starts from the same weights.
    inputs = [
        fold_dir / "train.csv",
        fold_dir / "dev.csv",
        fold_dir / "vocab.json",
        speed_manifest,
        base_dir / DESCRIPTION,
    ]
    checkpoints = fold_checkpoints(out_dir, params, inputs)

    def save_best(trained: torch.nn.Module) -> None:
        with atomic_path(checkpoints.best) as tmp:
            method.save(trained, tmp, language)
            processor.save_pretrained(tmp)

    settings = loop_config(train_cfg, method_name)
    result = fit(
        method.task(model, processor, train_cfg[method_name], base),
        train_clips,
        dev_clips,
        settings,
        save_best,
        curve_path=curve_path,
        label=f"{method_name}/{fold_dir.name}",
        checkpoints=checkpoints,
    )
    info = training_info(
        result,
        params,
        method_name,
        fold_dir,
        base,
        settings=settings,
        trainable_params=trainable,
        total_params=total,
        trained=train_clips,
        dropped=dropped,
        more_settings={"augment": augment_cfg},
    )
    save_trained(checkpoints, out_dir, info)
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow train`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--fold", required=True, type=int)
    parser.add_argument("--method", required=True)
    parser.add_argument("--folds", required=True, type=Path)
    parser.add_argument("--speed", required=True, type=Path)
    parser.add_argument("--base", required=True, type=Path)
    parser.add_argument(
        "--decoder", default=Path("data/models/decoder"), type=Path, help="the decoder stage's folder (projector only)"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--curve", required=True, type=Path, help="per-epoch metrics CSV (for dvc plots)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one params key this job reads, e.g. train.adapter.lr=0.001 (a search trial's)",
    )


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "train", args.method, overrides=args.set)
    processes = params["train"]["processes"]
    if processes > 1 and not distributed.launched_by_torchrun():
        relaunch_with_torchrun(processes, args.threads)
        return
    distributed.init_from_environment()
    if getattr(methods.get(args.method), "own_training", False):  # no CTC model: frozen encoder → projector → LM
        projector.train_fold(
            args.folds / f"fold{args.fold}",
            args.speed / "manifest.csv",
            args.base,
            args.decoder,
            params,
            out_dir=args.out,
            curve_path=args.curve,
        )
        return
    train_fold(
        args.folds / f"fold{args.fold}",
        args.speed / "manifest.csv",
        args.base,
        args.method,
        params,
        out_dir=args.out,
        curve_path=args.curve,
    )


def relaunch_with_torchrun(processes: int, threads: int) -> None:
    """Run this same command as `processes` data-parallel processes on this node, sharing its threads."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        # "--" ends torchrun's own options: otherwise it claims ours (--log is ambiguous with its --log-dir)
        "-m",
        "--",
        "asrflow.cli",
        *sys.argv[1:],
        "--threads",
        str(max(1, threads // processes)),
    ]
    log.info("launching %d training processes: %s", processes, " ".join(command))
    subprocess.run(command, check=True)
