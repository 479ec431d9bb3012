"""Memory settings of the training loop, on the same batch: bf16 autocast against fp32, gradient checkpointing
against none, two accumulated half batches against one full batch; fp16 with its gradient scaler and Adafactor run
and resume. Tiny random models in the MMS (stable-layer-norm, adapters) layout, real audio-shaped input."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from checkpoint_layouts import build

from asrflow import config, methods
from asrflow.batching import Clip, load_clips
from asrflow.checkpoint import DESCRIPTION, describe, open_base
from asrflow.features import CACHE_ENV
from asrflow.io import write_json
from asrflow.loop import LoopConfig, accumulate_loss, enable_gradient_checkpointing, fit, make_optimizer, micro_batches
from asrflow.manifest import Utterance
from asrflow.model import make_processor
from asrflow.resume import Checkpoints
from asrflow.vocab import build_vocab

TEXTS = ["taka kita", "ŋata", "kitaŋa taka", "ta ki"]
# Measured here on these tiny models (torch 2.13 CPU autocast): bf16's loss within 9e-5 of fp32's (relative), its
# gradients at cosine similarity ≥ 0.99998 with fp32's, for full/adapter/lora/frozen. The bounds leave room for other
# CPUs' and GPUs' bf16 kernels.
BF16_LOSS_RTOL, BF16_GRAD_COSINE = 5e-3, 0.999


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Feature caches of these random models go to a temporary folder, never the checkout's data/cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """An MMS-layout base (adapters), its description, a vocabulary, and four clips of 1–2.5 s."""
    root = tmp_path_factory.mktemp("precision")
    base_dir = build("mms-1b-all", root / "base")
    write_json(base_dir / DESCRIPTION, {"path": None, **describe(base_dir)})
    base = open_base(base_dir)
    vocab = build_vocab(TEXTS)
    processor = make_processor(vocab, base.feature_extractor())
    rng = np.random.default_rng(0)
    utterances = []
    for index, (text, seconds) in enumerate(zip(TEXTS, [1.0, 1.5, 2.5, 2.0])):
        path = root / f"u{index}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        utterances.append(Utterance(f"u{index}", str(path), "s", text, seconds))
    clips = load_clips(utterances, lambda t: processor.tokenizer(t).input_ids, processor.feature_extractor)
    return base, vocab, processor, clips


DETERMINISTIC = {
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
}


def settings(method: str) -> dict:
    """train.<method> as the schema fills it in, frozen training its top layer."""
    return config.defaults(f"train.{method}") | ({"train_top_layers": 1} if method == "frozen" else {})


def model_for(setup: tuple, method: str) -> torch.nn.Module:
    base, vocab, _, _ = setup
    torch.manual_seed(0)
    return methods.get(method).prepare(
        base,
        vocab,
        {**DETERMINISTIC, "pad_token_id": vocab["<pad>"], "ctc_loss_reduction": "mean"},
        settings(method),
        "xx",
    )


def loss_and_grads(setup: tuple, method: str, cfg: LoopConfig) -> tuple[float, dict]:
    """One forward/backward of the whole batch under `cfg`, through the method's own task."""
    base, _, processor, clips = setup
    model = model_for(setup, method)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        assert inner.is_activation_checkpointing
    task = methods.get(method).task(model, processor, settings(method), base)
    task.train()
    prepared = task.prepare(clips)
    loss = accumulate_loss(task, prepared, cfg, torch.amp.GradScaler("cpu", enabled=False))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    return loss, grads


FP32 = LoopConfig(lr=1e-3, max_epochs=1, patience=1, batch_seconds=20, warmup_steps=0, grad_clip=1.0, seed=0)


def cosine(a: dict, b: dict) -> float:
    flat_a = torch.cat([a[n].flatten() for n in sorted(a)])
    flat_b = torch.cat([b[n].flatten() for n in sorted(b)])
    return float(torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0))


@pytest.mark.parametrize("method", ["full", "adapter", "lora", "frozen"])
def test_bf16_autocast_matches_fp32_within_tolerance(setup: tuple, method: str) -> None:
    loss32, grads32 = loss_and_grads(setup, method, FP32)
    loss16, grads16 = loss_and_grads(setup, method, dataclasses.replace(FP32, precision="bf16"))
    assert loss16 == pytest.approx(loss32, rel=BF16_LOSS_RTOL)
    assert cosine(grads16, grads32) >= BF16_GRAD_COSINE
    assert all(g.dtype == torch.float32 for g in grads16.values()), "float32 master weights get float32 gradients"


@pytest.mark.parametrize("method", ["full", "adapter", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(setup: tuple, method: str) -> None:
    """Adapters and LoRA sit on a frozen trunk: reentrant checkpointing would give them no gradient at all."""
    loss, grads = loss_and_grads(setup, method, FP32)
    loss_gc, grads_gc = loss_and_grads(setup, method, dataclasses.replace(FP32, gradient_checkpointing=True))
    assert loss_gc == pytest.approx(loss, rel=1e-6)
    assert grads_gc.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_gc[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("method", ["full", "adapter", "frozen", "scratch"])
def test_two_accumulated_half_batches_equal_one_full_batch(setup: tuple, method: str) -> None:
    clips = setup[3]
    half = max(c.n_samples for c in clips) * 2 / 16000  # two clips of the longest length per micro-batch
    assert [len(g) for g in micro_batches(clips, half)] == [2, 2]
    loss, grads = loss_and_grads(setup, method, FP32)
    loss_acc, grads_acc = loss_and_grads(setup, method, dataclasses.replace(FP32, micro_batch_seconds=half))
    assert loss_acc == pytest.approx(loss, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(grads_acc[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batches_keep_order_and_at_least_one_clip_each() -> None:
    clips = [Clip(f"u{i}", "s", "", np.zeros(n, np.float32), [1], n) for i, n in enumerate([16000, 32000, 48000])]
    assert [[c.utt_id for c in g] for g in micro_batches(clips, 4.0)] == [["u0", "u1"], ["u2"]]
    assert [[c.utt_id for c in g] for g in micro_batches(clips, 0.5)] == [["u0"], ["u1"], ["u2"]]
    assert [[c.utt_id for c in g] for g in micro_batches(clips, 100)] == [["u0", "u1", "u2"]]


@pytest.mark.parametrize("precision,optimizer", [("fp16", "adamw"), ("bf16", "adafactor")])
def test_a_run_in_reduced_precision_trains_and_resumes_to_the_same_model(
    setup: tuple, tmp_path: Path, precision: str, optimizer: str
) -> None:
    """Two epochs straight against a run killed after its first epoch's state was saved, then resumed: the same
    weights (fp16's gradient scaler and Adafactor's step counts travel in the resume state)."""
    base, _, processor, clips = setup
    cfg = dataclasses.replace(
        FP32, max_epochs=2, patience=2, batch_seconds=4, precision=precision, optimizer=optimizer, micro_batch_seconds=3
    )

    class Killed(Exception):
        pass

    class KilledAfterFirstEpoch(Checkpoints):
        def save(self, *args) -> None:
            super().save(*args)
            raise Killed

    def run(checkpoints: Checkpoints) -> dict[str, torch.Tensor]:
        model = model_for(setup, "full")
        fit(
            methods.get("full").task(model, processor, settings("full"), base),
            clips,
            [],
            cfg,
            lambda m: None,
            curve_path=None,
            label="t",
            checkpoints=checkpoints,
        )
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    straight = run(Checkpoints(tmp_path / "straight", "key"))
    with pytest.raises(Killed):
        run(KilledAfterFirstEpoch(tmp_path / "resumed", "key"))
    resumed = run(Checkpoints(tmp_path / "resumed", "key"))
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name
    before = {n: p.detach().clone() for n, p in model_for(setup, "full").named_parameters()}
    assert any(not torch.equal(before[n], straight[n]) for n in straight), "it trained"


def test_adafactor_keeps_far_less_state_than_adamw(setup: tuple) -> None:
    model = model_for(setup, "full")
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = {}
    for name in ("adamw", "adafactor"):
        optimizer = make_optimizer(params, dataclasses.replace(FP32, optimizer=name))
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        sizes[name] = sum(
            t.numel() for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)
        )
    trained = sum(p.numel() for p in params)
    assert sizes["adamw"] >= 2 * trained and sizes["adafactor"] < 0.6 * trained
