"""The `decoder` stage: the causal language model the `projector` method writes transcripts with.

`model.decoder: demo` pre-trains a tiny Llama-shaped causal LM (a few layers, a character-level tokenizer:
asrflow.causal_lm.char_tokenizer) on the transcripts of the demo's SOURCE languages only: the target corpus holds the
test speakers' sentences, and an LM that had read them would leak them into every fold's test score. Any other value
must be a local directory holding a Hugging Face causal LM in safetensors (SmolLM, Llama, Qwen, ... downloaded
beforehand): the stage validates it (it loads with AutoModelForCausalLM / AutoTokenizer, no remote code) and writes its
description with the folder's path, so no copy is made. Either way the output folder holds `decoder.json`.

A stage of its own, not part of `pretrain`: the speech base (data/models/base) is untouched by anything here, and
changing the decoder re-runs only what reads it.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from asrflow import config
from asrflow.causal_lm import DESCRIPTION, char_tokenizer, describe, encode
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.io import atomic_path, describe_local, write_json, write_json_folder
from asrflow.loop import seed_everything
from asrflow.model import compute_device
from asrflow.transcripts import normalise

log = logging.getLogger(__name__)

SOURCE_TEXT = {
    "unicode": "NFC",
    "lowercase": True,
    "remove": "",
    "keep_format_characters": [],
}  # as the target corpus is normalised by default
DEV_FRACTION = 0.1


def demo_config(cfg: dict, vocab_size: int, special: dict[str, int]) -> LlamaConfig:
    """A small Llama/SmolLM-shaped config: RMSNorm, rotary positions, grouped-query attention, tied embeddings."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=max(1, cfg["num_attention_heads"] // 2),
        max_position_embeddings=cfg["max_positions"],
        tie_word_embeddings=True,
        **special,
    )


def batches(sequences: list[list[int]], size: int, rng: random.Random) -> list[list[list[int]]]:
    order = rng.sample(range(len(sequences)), len(sequences))
    return [[sequences[i] for i in order[start : start + size]] for start in range(0, len(order), size)]


def lm_loss(model: LlamaForCausalLM, batch: list[list[int]], pad_id: int) -> torch.Tensor:
    """Next-token cross-entropy of right-padded sequences (padding masked out of attention and loss)."""
    longest = max(map(len, batch))
    ids = torch.full((len(batch), longest), pad_id)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, sequence in enumerate(batch):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    device = next(model.parameters()).device
    labels = ids.masked_fill(mask == 0, -100)
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss


def pretrain_demo(source_dir: Path, cfg: dict, out_dir: Path) -> dict:
    seed_everything(cfg["seed"])
    texts = [normalise(u.text, SOURCE_TEXT) for u in import_audiofolder(source_dir)]
    tokenizer = char_tokenizer("".join(texts))
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    model = LlamaForCausalLM(demo_config(cfg, len(tokenizer), special)).to(compute_device())
    sequences = [[tokenizer.bos_token_id, *encode(tokenizer, t), tokenizer.eos_token_id] for t in texts]
    sequences = [s[: cfg["max_positions"]] for s in sequences]
    rng = random.Random(cfg["seed"])
    shuffled = rng.sample(sequences, len(sequences))
    n_dev = max(1, int(len(shuffled) * DEV_FRACTION))
    dev, train = shuffled[:n_dev], shuffled[n_dev:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    steps = cfg["epochs"] * math.ceil(len(train) / cfg["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=steps, pct_start=0.1)
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        losses = []
        for batch in batches(train, cfg["batch_size"], rng):
            loss = lm_loss(model, batch, tokenizer.pad_token_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            dev_loss = lm_loss(model, dev, tokenizer.pad_token_id).item()
        log.info(
            "decoder epoch %d/%d: train loss %.3f, dev loss %.3f",
            epoch,
            cfg["epochs"],
            sum(losses) / len(losses),
            dev_loss,
        )
    info = {
        "train_sentences": len(train),
        "dev_sentences": len(dev),
        "train_loss": round(sum(losses) / len(losses), 4),
        "dev_loss": round(dev_loss, 4),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / DESCRIPTION, {"path": None, "pretraining": info, **describe(tmp)})  # None: this folder
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow decoder`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--source", required=True, type=Path, help="source-language corpus (audiofolder layout)")
    parser.add_argument("--out", required=True, type=Path)


def run_cli(args: argparse.Namespace) -> None:
    model_cfg = config.load_stage(args.params, "decoder")["model"]
    if model_cfg["decoder"] is None:  # no projector in the grid: train/evaluate jobs still depend on this folder
        write_json_folder(args.out, DESCRIPTION, {"path": None, "configured": False})
        log.info("decoder: none configured (model.decoder: null); only the projector method needs one")
        return
    if model_cfg["decoder"] == "demo":
        pretrain_demo(args.source, model_cfg["decoder_demo"], args.out)
        return
    description = describe_local(model_cfg["decoder"], describe, args.out, DESCRIPTION)
    log.info(
        "decoder: %s (%s, hidden size %d; validated, not copied)",
        description["path"],
        description["model_type"],
        description["hidden_size"],
    )
