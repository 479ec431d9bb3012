"""GPU training benchmark: every method on an MMS-1B-shaped model, through asrflow's own methods and loop pieces.

A randomly initialised model with MMS-1B's shape (wav2vec2, 48 layers of 1280, 16 heads, FFN 5120, stable layer norm,
layer-normed 7 × 512 conv encoder, attention adapters of 16) is saved as a local safetensors checkpoint folder and
described as the pretrain stage describes a base, so each method loads it exactly as in a real run
(`methods.get(name).prepare(...)`, `.task(...)`, `task.prepare(clips)` with its feature cache). Each method × setting
(bf16, bf16 + gradient checkpointing; `--precisions` adds fp32/fp16) then runs warm-up steps and timed steps of the
loop's step (accumulate_loss under autocast, grad clipping, the optimiser from make_optimizer, the lr schedule) on
synthetic batches: random audio, random label sequences of ~15 characters per second, clips of --clip-seconds packed
into batches of --batch-seconds by asrflow's own bucket_batches.

Reported per configuration: audio seconds trained per second, peak memory (CUDA: max_memory_allocated; CPU: the
process' peak RSS), FLOPs of one training step counted by torch.utils.flop_counter.FlopCounterMode (forward +
backward as executed), achieved TFLOP/s, and model FLOP utilisation (MFU) = achieved / the device's dense bf16 peak.
With gradient checkpointing, MFU counts the model's FLOPs (the step without recomputation, counted in the same
method's run without checkpointing) and HFU the executed ones (with the recomputed forward passes).

From the measured rates it projects the wall time of the project's target run: one fold of 18 min of audio, speed-
perturbed ×3 (54 min = 3,240 s per epoch), × 50 epochs = 162,000 audio-seconds; target ≤ 10 min for `adapter` on an
H100/H200-class GPU.

    python benchmarks/gpu.py                       # MMS-1B shape, all methods, bf16 ± checkpointing, on cuda
    python benchmarks/gpu.py --precisions bf16,fp32 --json results/gpu_benchmark.json
    python benchmarks/gpu.py --tiny --device cpu   # smoke test (seconds; what CI runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import random
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
import transformers
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_flop_count,
    flop_registry,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, get_linear_schedule_with_warmup

from asrflow import config, methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, bucket_batches, model_inputs
from asrflow.checkpoint import Base, describe
from asrflow.features import CACHE_ENV
from asrflow.loop import (
    LoopConfig,
    enable_gradient_checkpointing,
    loop_config,
    make_optimizer,
    model_overrides,
    seed_everything,
    train_step,
)
from asrflow.model import make_processor
from asrflow.resume import Optimisation

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "adapter", "lora", "frozen", "scratch")
CHARS_PER_SECOND = 15  # realistic transcript density: labels per audio second

# The project's target: one fold's 18 min of training audio, speed-perturbed ×3, 50 epochs, in ≤ 10 min (adapter).
FOLD_AUDIO_SECONDS = 18 * 60
SPEED_COPIES = 3
EPOCHS = 50
EPOCH_AUDIO_SECONDS = FOLD_AUDIO_SECONDS * SPEED_COPIES  # 3,240
TARGET_AUDIO_SECONDS = EPOCH_AUDIO_SECONDS * EPOCHS  # 162,000
TARGET_WALL_SECONDS = 10 * 60
TARGET_METHOD = "adapter"
TARGET_DEVICES = re.compile(r"\b(G?H100|H200)\b")

# Dense (no sparsity) tensor-core peak in TFLOP/s, bf16 (fp16 where the GPU has no bf16), from NVIDIA's data sheets;
# the first pattern that matches torch.cuda.get_device_name() wins (so "A100" is tried before "A10").
PEAK_TFLOPS: list[tuple[str, float, str]] = [
    (r"H100.*NVL", 835.0, "H100 NVL, bf16 dense"),
    (r"H200.*NVL", 835.0, "H200 NVL, bf16 dense"),
    (r"H100.*PCIe", 756.0, "H100 PCIe, bf16 dense"),
    (r"\bG?H100\b", 989.0, "H100 SXM, bf16 dense"),
    (r"\bG?H200\b", 989.0, "H200, bf16 dense"),
    (r"\bA100\b", 312.0, "A100, bf16 dense"),
    (r"\bL40S\b", 362.0, "L40S, bf16 dense"),
    (r"\bA10G?\b", 125.0, "A10/A10G, bf16 dense"),
    (r"RTX 4090", 165.0, "RTX 4090, bf16 dense (fp32 accumulate)"),
    (r"\bT4\b", 65.0, "T4, fp16 dense (no bf16)"),
    (r"\bV100\b", 125.0, "V100, fp16 dense (no bf16)"),
]


@dataclasses.dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    ffn: int
    heads: int
    conv_dim: int
    conv_pos: int  # num_conv_pos_embeddings
    vocab: int = 40


MMS_1B = Shape(layers=48, hidden=1280, ffn=5120, heads=16, conv_dim=512, conv_pos=128)
TINY = Shape(layers=2, hidden=64, ffn=256, heads=2, conv_dim=32, conv_pos=16)


@dataclasses.dataclass(frozen=True)
class Setting:
    precision: str
    checkpointing: bool

    @property
    def label(self) -> str:
        return self.precision + (" + ckpt" if self.checkpointing else "")


@dataclasses.dataclass
class Context:
    """What every configuration shares."""

    args: argparse.Namespace
    device: torch.device
    base: Base
    params: dict
    vocab: dict[str, int]
    clips: list[Clip]
    workdir: Path
    model_flops: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (method, precision) → FLOPs


# ---------------------------------------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cuda, cuda:N or cpu (default: cuda when available)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument(
        "--precisions",
        default="bf16",
        help="comma-separated fp32|bf16|fp16; each runs without and with gradient checkpointing",
    )
    parser.add_argument("--steps", type=int, help="timed steps per configuration (default 10; tiny 2)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps (default 3; tiny 1)")
    parser.add_argument("--batch-seconds", type=float, help="audio per batch (default 96 on GPU, 16 on CPU; tiny 4)")
    parser.add_argument("--clip-seconds", type=float, help="length of every synthetic clip (default 8; tiny 2)")
    parser.add_argument(
        "--micro-batch-seconds",
        type=float,
        default=None,
        help="train.micro_batch_seconds: accumulate over micro-batches of this much audio",
    )
    parser.add_argument("--optimizer", choices=("adamw", "adafactor"), help="default: params.yaml's train.optimizer")
    for name, default in (
        ("layers", MMS_1B.layers),
        ("hidden", MMS_1B.hidden),
        ("ffn", MMS_1B.ffn),
        ("heads", MMS_1B.heads),
        ("conv-dim", MMS_1B.conv_dim),
    ):
        parser.add_argument(f"--{name}", type=int, help=f"model shape override (MMS-1B: {default})")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke mode: 2 layers of 64, 2 steps, small batches; seconds on a CPU"
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: looked up by name)")
    parser.add_argument(
        "--params",
        type=Path,
        default=ROOT / "params.yaml",
        help="params.yaml whose train/augment settings the methods use",
    )
    parser.add_argument("--workdir", type=Path, help="where the checkpoint and feature caches go (default: a temp dir)")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write the results here")
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0):
        parser.error("--steps must be at least 1 and --warmup at least 0")
    bad = set(args.precisions.split(",")) - {"fp32", "bf16", "fp16"}
    if bad:
        parser.error(f"unknown precisions {sorted(bad)}; known: fp32, bf16, fp16")
    return args


def resolve_shape(args: argparse.Namespace) -> Shape:
    shape = TINY if args.tiny else MMS_1B
    overrides = {
        "layers": args.layers,
        "hidden": args.hidden,
        "ffn": args.ffn,
        "heads": args.heads,
        "conv_dim": args.conv_dim,
    }
    shape = dataclasses.replace(shape, **{k: v for k, v in overrides.items() if v is not None})
    if shape.hidden % shape.heads:
        raise SystemExit(f"--hidden {shape.hidden} is not divisible by --heads {shape.heads}")
    return shape


def resolve_run_lengths(args: argparse.Namespace, device: torch.device) -> None:
    """Fill in the defaults that depend on --tiny and the device."""
    tiny = {"steps": 2, "warmup": 1, "batch_seconds": 4.0, "clip_seconds": 2.0}
    full = {"steps": 10, "warmup": 3, "batch_seconds": 96.0 if device.type == "cuda" else 16.0, "clip_seconds": 8.0}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def settings(args: argparse.Namespace) -> list[Setting]:
    return [Setting(p, ckpt) for p in args.precisions.split(",") for ckpt in (False, True)]


# ----------------------------------------------------------------------------------------------------------- device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").is_file()
        else platform.processor()
    )
    return f"CPU: {model} ({torch.get_num_threads()} threads)"


def device_peak(name: str, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, where it came from)."""
    if override is not None:
        return override, "--peak-tflops"
    for pattern, tflops, label in PEAK_TFLOPS:
        if re.search(pattern, name):
            return tflops, label
    return None, "unknown (not in the peak table; pass --peak-tflops)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process' RSS high-water mark (Linux clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process' since it started


def peak_memory(device: torch.device) -> int:
    """Peak bytes since reset_peak_memory: tensors allocated on the GPU, or the process' resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def warm_up_device(device: torch.device) -> None:
    """Initialise cuBLAS/cuDNN before anything is timed (else the first configuration's feature cache pays for it)."""
    x = torch.randn(8, 1, 4000, device=device)
    torch.nn.functional.conv1d(x, torch.randn(4, 1, 10, device=device), stride=5)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        (x[:, 0, :64] @ x[:, 0, :64].T).sum().item()
    synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------- model & data


def make_vocab(size: int) -> dict[str, int]:
    """<pad> (the CTC blank), <unk>, the word delimiter and letters: `size` tokens, as build_vocab lays them out."""
    letters = list("abcdefghijklmnopqrstuvwxyzáàâäãåçéèêëíìîïñóòôöõúùûüýÿœæøß")
    return {token: i for i, token in enumerate(["<pad>", "<unk>", "|", *letters[: size - 3]])}


def model_config(shape: Shape) -> Wav2Vec2Config:
    """MMS-1B's architecture (facebook/mms-1b-all's config.json) at `shape`; dropout and layerdrop off so every step
    runs every layer (layerdrop would skip some and flatter the throughput)."""
    return Wav2Vec2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        hidden_act="gelu",
        conv_dim=(shape.conv_dim,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=shape.conv_pos,
        num_conv_pos_embedding_groups=16 if shape.hidden % 16 == 0 else 1,
        adapter_attn_dim=16,
        pad_token_id=0,
        ctc_loss_reduction="mean",
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        architectures=["Wav2Vec2ForCTC"],
    )


def build_base(directory: Path, shape: Shape, device: torch.device) -> Base:
    """A random MMS-shaped checkpoint folder (model.safetensors, preprocessor_config.json), described as the pretrain
    stage describes a base (base.json), so every method loads it as it loads a real one."""
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1 B parameters is much faster on the GPU
        model = Wav2Vec2ForCTC(model_config(shape))
    model.save_pretrained(directory, safe_serialization=True)
    del model
    free_memory(device)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=TARGET_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(directory)
    return Base(directory, {"path": None, **describe(directory)})


def synthetic_clips(count: int, seconds: float, vocab: dict[str, int], base: Base, seed: int) -> list[Clip]:
    """`count` clips of random audio with random transcripts of CHARS_PER_SECOND labels per second (never the blank),
    made into model inputs by the base's own feature extractor."""
    rng = np.random.default_rng(seed)
    feature_extractor = base.feature_extractor()
    tokens = {i: t for t, i in vocab.items() if t != "<pad>"}
    n_samples = int(seconds * TARGET_RATE)
    clips = []
    for index in range(count):
        samples = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
        labels = rng.choice(sorted(tokens), size=max(1, round(CHARS_PER_SECOND * seconds))).tolist()
        clips.append(
            Clip(
                f"synthetic-{index:04d}",
                "speaker",
                "".join(tokens[i] for i in labels),
                model_inputs(feature_extractor, samples),
                labels,
                n_samples,
            )
        )
    return clips


# ------------------------------------------------------------------------------------------------------ one config


def audio_seconds(clips: list) -> float:
    return sum(c.n_samples for c in clips) / TARGET_RATE


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _conv_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """torch's convolution_backward formula with the weight gradient divided by `groups`: torch 2.13 counts a grouped
    convolution's weight gradient as if the convolution were dense (wav2vec2's positional convolution has 16 groups:
    ×16 on its weight gradient would inflate a 1 B full fine-tuning step by ~20 %)."""

    def swap(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # grad_input: a transposed convolution of grad_out with the weight
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:  # grad_weight: a convolution of the input with grad_out, one per group
        a, b = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(swap(a), swap(b), swap(out_shape[1]), transposed=False) // groups
    return flops


def flop_formulas() -> dict:
    """Corrections to the counter's table: the grouped-convolution weight gradient (above), and torch's own attention
    formulas for the CPU's fused attention kernel, which the table lacks (CUDA's flash/efficient/cuDNN kernels are in
    it; without them attention would count 0 on a CPU)."""
    aten = torch.ops.aten
    formulas = {aten.convolution_backward: _conv_backward_flops}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_backward_flops),
    ):
        if hasattr(aten, name) and getattr(aten, name) not in flop_registry:
            formulas[getattr(aten, name)] = formula
    return formulas


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of `step` as executed (forward, backward, recomputation), counted per aten op by torch's
    FlopCounterMode (matrix products, convolutions, attention; element-wise ops and the optimiser count 0)."""
    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas())
    with counter:
        step()
    return int(counter.get_total_flops())


def loop_settings(ctx: Context, method: str, setting: Setting) -> LoopConfig:
    """The method's loop settings from params.yaml, with this benchmark's precision, checkpointing and batches."""
    cfg = loop_config(ctx.params["train"], method)
    return dataclasses.replace(
        cfg,
        precision=setting.precision,
        gradient_checkpointing=setting.checkpointing,
        batch_seconds=ctx.args.batch_seconds,
        micro_batch_seconds=ctx.args.micro_batch_seconds,
        optimizer=ctx.args.optimizer or cfg.optimizer,
    )


def run_configuration(ctx: Context, method_name: str, setting: Setting) -> dict:
    """Load, prepare (feature cache, cold), warm up, count one step's FLOPs, time `steps` steps."""
    args, device, train_cfg = ctx.args, ctx.device, ctx.params["train"]
    language = ctx.params["corpus"]["language"]
    method, method_cfg = methods.get(method_name), train_cfg[method_name]
    methods.check_available(ctx.base, method_name, train_cfg)
    os.environ[CACHE_ENV] = str(ctx.workdir / "cache" / f"{method_name}-{setting.precision}-{setting.checkpointing}")
    seed_everything(train_cfg["seed"])
    model = method.prepare(
        ctx.base,
        ctx.vocab,
        model_overrides(ctx.params["augment"], ctx.vocab),
        method_cfg,
        language,
        warm_language=ctx.params["model"].get("base_language") or language,
    ).to(device)
    trainable, total = methods.count_parameters(model)
    task = method.task(model, make_processor(ctx.vocab, ctx.base.feature_extractor()), method_cfg, ctx.base)

    synchronize(device)
    started = time.perf_counter()
    clips = task.prepare(ctx.clips)  # the one-off cost: cached conv / frozen-encoder features, computed cold
    synchronize(device)
    prepare_seconds = time.perf_counter() - started

    cfg = loop_settings(ctx, method_name, setting)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(task.model)
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    total_steps = args.warmup + 1 + args.steps
    scheduler = get_linear_schedule_with_warmup(optimizer, min(cfg.warmup_steps, total_steps), 10 * total_steps)
    optimisation = Optimisation(optimizer, scheduler, scaler)
    batches = [
        [clips[i] for i in ids]
        for ids in bucket_batches([c.n_samples for c in clips], cfg.batch_seconds, random.Random(0))
    ]
    task.train()

    def step(index: int) -> float:
        return train_step(task, batches[index % len(batches)], cfg, optimisation, params)

    for index in range(args.warmup):
        step(index)
    flops = count_flops(lambda: step(args.warmup))  # untimed: the counter slows the step down
    timed = range(args.warmup + 1, args.warmup + 1 + args.steps)
    synchronize(device)
    started = time.perf_counter()
    for index in timed:
        step(index)
    synchronize(device)
    elapsed = time.perf_counter() - started
    return {
        "trainable_params": trainable,
        "total_params": total,
        "prepare_seconds": prepare_seconds,
        "prepare_seconds_per_audio_second": prepare_seconds / audio_seconds(ctx.clips),
        "clips_per_batch": len(batches[0]),
        "batch_audio_seconds": audio_seconds(batches[args.warmup % len(batches)]),  # the FLOP-counted batch
        "timed_steps": args.steps,
        "timed_seconds": elapsed,
        "step_seconds": elapsed / args.steps,
        "audio_seconds_per_second": sum(audio_seconds(batches[i % len(batches)]) for i in timed) / elapsed,
        "flops_per_step": flops,
        "optimizer": cfg.optimizer,
        "micro_batch_seconds": cfg.micro_batch_seconds,
        "method_settings": method_cfg,
        "attention": getattr(task.model.config, "_attn_implementation", None),
    }


def guarded_run(ctx: Context, method: str, setting: Setting) -> dict:
    """run_configuration with its peak memory; an out-of-memory configuration is reported as "OOM" and freed."""
    row: dict[str, Any] = {
        "method": method,
        "precision": setting.precision,
        "gradient_checkpointing": setting.checkpointing,
        "config": setting.label,
    }
    free_memory(ctx.device)
    reset_peak_memory(ctx.device)
    try:
        row |= run_configuration(ctx, method, setting)
        row["status"] = "ok"
    except (torch.cuda.OutOfMemoryError, MemoryError):
        row["status"] = "OOM"
    except Exception as error:  # noqa: BLE001 - one broken configuration must not lose the others' GPU time
        traceback.print_exc()
        row["status"] = f"error: {type(error).__name__}: {error}"
    row["peak_memory_bytes"] = peak_memory(ctx.device)
    free_memory(ctx.device)
    return row


# --------------------------------------------------------------------------------------------------------- analysis


def add_utilisation(row: dict, ctx: Context, peak_tflops: float | None) -> None:
    """Achieved TFLOP/s, MFU (model FLOPs: without checkpointing's recomputation) and HFU (executed FLOPs)."""
    if row["status"] != "ok":
        return
    key = (row["method"], row["precision"])
    if not row["gradient_checkpointing"]:
        ctx.model_flops[key] = row["flops_per_step"]
    model_flops = ctx.model_flops.get(key)
    row["model_flops_basis"] = (
        "counted without checkpointing"
        if model_flops is not None
        else "executed (includes recomputation: the run without checkpointing failed)"
    )
    model_flops = model_flops if model_flops is not None else row["flops_per_step"]
    row["model_flops_per_step"] = model_flops
    row["model_flops_per_audio_second"] = model_flops / row["batch_audio_seconds"]
    row["achieved_tflops"] = model_flops / row["step_seconds"] / 1e12
    row["executed_tflops"] = row["flops_per_step"] / row["step_seconds"] / 1e12
    row["mfu"] = row["achieved_tflops"] / peak_tflops if peak_tflops else None
    row["hfu"] = row["executed_tflops"] / peak_tflops if peak_tflops else None
    row["projected_seconds"] = projected_seconds(row)


def projected_seconds(row: dict) -> float:
    """The target run at this configuration's rates: TARGET_AUDIO_SECONDS of training steps plus the one-off feature
    cache of one epoch's audio (cached features serve every epoch). Dev evaluation is not included."""
    return (
        TARGET_AUDIO_SECONDS / row["audio_seconds_per_second"]
        + EPOCH_AUDIO_SECONDS * row["prepare_seconds_per_audio_second"]
    )


def projection(rows: list[dict], name: str) -> dict:
    """Per method, the projected wall time of every configuration and the best; the target verdict for adapter."""
    per_method: dict[str, dict] = {}
    for row in rows:
        entry = per_method.setdefault(row["method"], {"configs": {}, "best": None})
        entry["configs"][row["config"]] = row.get("projected_seconds", row["status"])
        if row["status"] == "ok" and (
            entry["best"] is None or row["projected_seconds"] < entry["configs"][entry["best"]]
        ):
            entry["best"] = row["config"]
    target = per_method.get(TARGET_METHOD, {})
    best = target["configs"][target["best"]] if target.get("best") else None
    applies = bool(TARGET_DEVICES.search(name))
    return {
        "target_audio_seconds": TARGET_AUDIO_SECONDS,
        "epoch_audio_seconds": EPOCH_AUDIO_SECONDS,
        "epochs": EPOCHS,
        "target_wall_seconds": TARGET_WALL_SECONDS,
        "target_method": TARGET_METHOD,
        "per_method": per_method,
        "target_best_seconds": best,
        "target_applies_to_device": applies,
        "target_met": (best <= TARGET_WALL_SECONDS) if (best is not None and applies) else None,
    }


def full_needs(rows: list[dict]) -> dict:
    """What full fine-tuning needs: measured peak memory and projected time per configuration, and the static part
    (float32 weights + gradients + AdamW's two moments: 16 bytes per trained parameter)."""
    full = [r for r in rows if r["method"] == "full"]
    trainable = next((r["trainable_params"] for r in full if "trainable_params" in r), None)
    return {
        "configs": {
            r["config"]: {
                "status": r["status"],
                "peak_memory_gib": r["peak_memory_bytes"] / 2**30,
                "projected_seconds": r.get("projected_seconds"),
            }
            for r in full
        },
        "trainable_params": trainable,
        "static_adamw_gib": trainable * 16 / 2**30 if trainable else None,
    }


# ---------------------------------------------------------------------------------------------------------- output


def si(value: float, unit: str) -> str:
    """`value` with an SI prefix: 156.6 MFLOP, 412.0 TFLOP/s."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def percent(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f} %"


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| method | config | trained params | audio s/s | peak memory | model FLOP/step | achieved FLOP/s | MFU "
        "| HFU | projected 162,000 s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        memory = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"
        if r["status"] != "ok":
            lines.append(
                f"| {r['method']} | {r['config']} | – | {r['status'].split(':')[0]} | {memory} | – | – | – | – | – |"
            )
            continue
        lines.append(
            f"| {r['method']} | {r['config']} | {r['trainable_params'] / 1e6:.2f} M "
            f"| {r['audio_seconds_per_second']:.1f} | {memory} | {si(r['model_flops_per_step'], 'FLOP')} "
            f"| {si(r['achieved_tflops'] * 1e12, 'FLOP/s')} | {percent(r['mfu'])} | {percent(r['hfu'])} "
            f"| {minutes(r['projected_seconds'])} |"
        )
    return "\n".join(lines)


def print_row(row: dict) -> None:
    rates = (
        f"{row['audio_seconds_per_second']:9.1f} audio-s/s, {si(row['achieved_tflops'] * 1e12, 'FLOP/s')}, "
        f"MFU {percent(row['mfu'])}, "
        if row["status"] == "ok"
        else ""
    )
    print(
        f"  {row['method']:8} {row['config']:12} {row['status']:4} {rates}"
        f"peak {row['peak_memory_bytes'] / 2**30:.2f} GiB",
        flush=True,
    )


def print_projection(result: dict) -> None:
    proj, needs = result["projection"], result["full_needs"]
    print(
        f"\nProjection: {FOLD_AUDIO_SECONDS // 60} min of audio × {SPEED_COPIES} (speed perturbation) = "
        f"{EPOCH_AUDIO_SECONDS:,} audio-s per epoch × {EPOCHS} epochs = {TARGET_AUDIO_SECONDS:,} audio-s; "
        f"time = {TARGET_AUDIO_SECONDS:,} / (audio s/s) + {EPOCH_AUDIO_SECONDS:,} × (feature-cache s per audio-s); "
        f"dev evaluation not included."
    )
    for method, entry in proj["per_method"].items():
        configs = ", ".join(
            f"{config}: {minutes(v) if isinstance(v, float) else v}" for config, v in entry["configs"].items()
        )
        print(f"  {method:8} {configs}" + (f"  (best: {entry['best']})" if entry["best"] else ""))
    best = proj["target_best_seconds"]
    verdict = (
        ("MET" if proj["target_met"] else "NOT MET")
        if proj["target_met"] is not None
        else "not judged: the target is set for an H100/H200-class GPU"
    )
    print(
        f"Target: {TARGET_METHOD} in ≤ {TARGET_WALL_SECONDS // 60} min on an H100/H200-class GPU: "
        f"projected {minutes(best)} on {result['device']['name']} → {verdict}"
    )
    if not needs["configs"]:
        return
    print(
        f"full fine-tuning needs: {needs['trainable_params'] or 0:,} trained parameters, "
        f"{needs['static_adamw_gib'] or 0:.1f} GiB of float32 weights + gradients + AdamW moments (16 bytes each) "
        f"before activations; measured:"
    )
    for setting, entry in needs["configs"].items():
        print(
            f"  {setting:12} {entry['status']:4} peak {entry['peak_memory_gib']:.2f} GiB, "
            f"projected {minutes(entry['projected_seconds'])}"
        )


def header(args: argparse.Namespace, device: torch.device, shape: Shape, peak: tuple[float | None, str]) -> dict:
    name = device_name(device)
    return {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        },
        "device": {"type": device.type, "name": name, "peak_tflops": peak[0], "peak_source": peak[1]},
        "shape": dataclasses.asdict(shape),
        "run": {
            "steps": args.steps,
            "warmup": args.warmup,
            "batch_seconds": args.batch_seconds,
            "clip_seconds": args.clip_seconds,
            "chars_per_second": CHARS_PER_SECOND,
            "micro_batch_seconds": args.micro_batch_seconds,
            "tiny": args.tiny,
        },
    }


# ------------------------------------------------------------------------------------------------------------ main


def benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False); use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    resolve_run_lengths(args, device)
    shape = resolve_shape(args)
    result = header(args, device, shape, device_peak(device_name(device), args.peak_tflops))
    print(f"command: {result['command']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v is not None))
    print(
        f"device: {result['device']['name']}; dense bf16 peak: "
        f"{result['device']['peak_tflops'] or 'unknown'} TFLOP/s ({result['device']['peak_source']})"
    )
    print(
        f"shape: {shape}; batches of {args.batch_seconds:g} s from {args.clip_seconds:g} s clips; "
        f"{args.warmup} warm-up + {args.steps} timed steps",
        flush=True,
    )
    if device.type != "cuda":
        print("NOTE: not a GPU: these figures are a smoke check of the benchmark itself, not GPU results", flush=True)
    params = config.load_all(args.params)
    with tempfile.TemporaryDirectory(prefix="asrflow-gpu-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        started = time.perf_counter()
        warm_up_device(device)
        base = build_base(workdir / "base", shape, device)
        vocab = make_vocab(shape.vocab)
        per_batch = max(1, int(args.batch_seconds // args.clip_seconds))
        clips = synthetic_clips(2 * per_batch, args.clip_seconds, vocab, base, params["train"]["seed"])
        print(
            f"base: {sum(base.info['weights'].values()) / 2**30:.2f} GiB checkpoint built and described in "
            f"{time.perf_counter() - started:.0f} s; {len(clips)} clips of {args.clip_seconds:g} s",
            flush=True,
        )
        ctx = Context(args, device, base, params, vocab, clips, workdir)
        rows = []
        for method in args.methods.split(","):
            for setting in settings(args):
                row = guarded_run(ctx, method, setting)
                add_utilisation(row, ctx, result["device"]["peak_tflops"])
                rows.append(row)
                print_row(row)
    result["results"] = rows
    result["projection"] = projection(rows, result["device"]["name"])
    result["full_needs"] = full_needs(rows)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # per-load progress bars would drown the report
    result = benchmark(args)
    print_projection(result)
    print("\n" + markdown_table(result["results"]))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    failed = [r for r in result["results"] if r["status"] not in ("ok", "OOM")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
