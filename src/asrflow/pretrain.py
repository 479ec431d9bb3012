"""The `pretrain` stage: make the base model every method starts from.

`model.base: demo` pre-trains a tiny multilingual wav2vec2 CTC model (stable-layer-norm layout with adapter layers,
like MMS) on the demo's source languages with the same training loop as fine-tuning. Any other value must be a local
directory holding a Hugging Face checkpoint of a family asrflow trains (asrflow.checkpoint: wav2vec2/MMS/XLS-R,
HuBERT, WavLM, data2vec-audio, Wav2Vec2-BERT; e.g. facebook/mms-1b-all downloaded beforehand): the stage validates
it and writes its description with the folder's path, so no multi-GB copy is made and the rest of the pipeline runs
unchanged. Either way the output folder holds `base.json` (asrflow.checkpoint.describe), which every later stage
reads instead of hashing the weights again.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow import config
from asrflow.audio import load_mono
from asrflow.batching import bucket_batches, load_clips
from asrflow.checkpoint import DESCRIPTION, describe
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.io import atomic_path, describe_local, write_json
from asrflow.loop import LoopConfig, fit, seed_everything, split_alignable
from asrflow.model import AudioTask, compute_device, default_feature_extractor, make_processor
from asrflow.transcripts import normalise
from asrflow.vocab import build_vocab

log = logging.getLogger(__name__)

SOURCE_TEXT = {
    "unicode": "NFC",
    "lowercase": False,
    "remove": "",
    "keep_format_characters": [],
}  # the demo writes clean IPA already
DEV_FRACTION = 0.1


def demo_config(cfg: dict, vocab_size: int) -> Wav2Vec2Config:
    """A small MMS-shaped config: stable layer norm, layer-normed conv encoder, adapter layers."""
    return Wav2Vec2Config(
        vocab_size=vocab_size,
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        conv_dim=(cfg["conv_dim"],) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=16 if cfg["hidden_size"] % 16 == 0 else 1,
        adapter_attn_dim=cfg["adapter_attn_dim"],
        pad_token_id=0,
        ctc_loss_reduction="mean",
        # From scratch on minutes of audio, dropout and SpecAugment keep CTC on its all-blank plateau for hundreds of
        # steps (measured: no escape in 400 steps with them, escape by ~150 without); fine-tuning sets its own masking.
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        mask_time_prob=0.0,
    )


def warmup_steps(clips: list, cfg: dict) -> int:
    """A quarter of all optimiser steps, at most 100: a gentle start, then most steps at full lr."""
    batches = bucket_batches([c.n_samples for c in clips], cfg["batch_seconds"], random.Random(0))
    return max(1, min(100, len(batches) * cfg["epochs"] // 4))


def pretrain_demo(source_dir: Path, cfg: dict, out_dir: Path) -> dict:
    seed_everything(cfg["seed"])
    utterances = [u.replace(text=normalise(u.text, SOURCE_TEXT)) for u in import_audiofolder(source_dir)]
    shuffled = random.Random(cfg["seed"]).sample(utterances, len(utterances))
    n_dev = max(1, int(len(shuffled) * DEV_FRACTION))
    dev_utts, train_utts = shuffled[:n_dev], shuffled[n_dev:]
    vocab = build_vocab([u.text for u in train_utts])
    processor = make_processor(vocab, default_feature_extractor())
    model = Wav2Vec2ForCTC(demo_config(cfg, len(vocab))).to(compute_device())

    def encode(text: str) -> list[int]:
        return processor.tokenizer(text).input_ids

    train_clips, _ = split_alignable(
        model, load_clips(train_utts, encode, processor.feature_extractor, reader=load_mono)
    )
    dev_clips = load_clips(dev_utts, encode, processor.feature_extractor, reader=load_mono)
    loop = LoopConfig(
        lr=cfg["lr"],
        max_epochs=cfg["epochs"],
        patience=cfg["epochs"],
        batch_seconds=cfg["batch_seconds"],
        warmup_steps=warmup_steps(train_clips, cfg),
        grad_clip=1.0,
        seed=cfg["seed"],
    )
    with atomic_path(out_dir) as tmp:

        def save_best(trained: torch.nn.Module) -> None:
            trained.save_pretrained(tmp, safe_serialization=True)
            processor.save_pretrained(tmp)

        info = fit(
            AudioTask(model, processor), train_clips, dev_clips, loop, save_best, curve_path=None, label="pretrain"
        )
        write_json(
            tmp / "pretraining.json",
            {**info, "train_utterances": len(train_clips), "dev_utterances": len(dev_clips), "vocab_size": len(vocab)},
        )
        write_json(tmp / DESCRIPTION, {"path": None, **describe(tmp)})  # path None: this folder itself
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow pretrain`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--source", required=True, type=Path, help="source-language corpus (audiofolder layout)")
    parser.add_argument("--out", required=True, type=Path)


def run_cli(args: argparse.Namespace) -> None:
    model_cfg = config.load_stage(args.params, "pretrain")["model"]
    if model_cfg["base"] == "demo":
        pretrain_demo(args.source, model_cfg["demo"], args.out)
        return
    description = describe_local(model_cfg["base"], describe, args.out, DESCRIPTION)
    log.info(
        "base model: %s (%s, %d layers of %d; validated and described, not copied)",
        description["path"],
        description["model_type"],
        description["num_hidden_layers"],
        description["hidden_size"],
    )
