"""The memory plan (asrflow.memory): its counted components against hand counts, its measured activations, its
advice, and the acceptance criterion: the prediction within 25 % of the peak measured on this CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from checkpoint_layouts import STABLE_LAYER_NORM, tiny_sizes
from conftest import ROOT, read_params
from transformers import Wav2Vec2Config

from asrflow import memory
from asrflow.checkpoint import Base
from asrflow.loop import loop_config, make_optimizer

CPU = torch.device("cpu")
METHODS = ["full", "adapter", "lora", "frozen", "scratch"]
LONGEST = 1.0  # seconds: short clips keep the tiny probes fast
# Which parameters each method trains, by name, written out independently of the methods' code.
TRAINS = {
    "full": lambda n: not n.startswith("wav2vec2.feature_extractor."),
    "adapter": lambda n: ".adapter_layer." in n or n.startswith("lm_head."),
    "lora": lambda n: "lora_" in n or "modules_to_save" in n,
    "frozen": lambda n: n.startswith("lm_head.") or ".encoder.layers.3." in n or ".encoder.layer_norm." in n,
    "scratch": lambda n: True,
}


def train_section(**settings) -> dict:
    """params.yaml's train section with `settings` for every method."""
    return read_params(ROOT)["train"] | settings


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    """An MMS-shaped tiny base (stable layer norm, adapters) four layers deep, so that the plan extrapolates from its
    one- and two-layer probes."""
    config = Wav2Vec2Config(**tiny_sizes(num_hidden_layers=4), **STABLE_LAYER_NORM, adapter_attn_dim=8)
    return memory.config_base(config, tmp_path_factory.mktemp("base"))


def full_model(base: Base, method: str, train_cfg: dict) -> torch.nn.Module:
    return memory.build(base, method, train_cfg, base.info["num_hidden_layers"], memory.probe_vocab(), device=CPU)


def test_tracker_counts_each_new_storage_once_while_alive() -> None:
    weight = torch.ones(1000)
    with memory.LiveTensorBytes() as tracker:
        first = torch.empty(1000, dtype=torch.uint8)
        view = first[10:]  # same storage: no new memory
        weight.mul_(2)  # in place on a tensor from before: no new memory
        alias = weight.view(10, 100)  # a view of a tensor from before: no new memory
        del first, view
        second = torch.empty(300, dtype=torch.uint8)
        third = second + 1
    assert tracker.peak == 1000 and tracker.current == 600
    assert alias.shape == (10, 100) and third.shape == (300,)


@pytest.mark.parametrize("method", METHODS)
def test_counted_components_match_hand_counts(base: Base, method: str) -> None:
    train_cfg = train_section()
    planned = memory.plan(base, method, train_cfg, LONGEST, device=CPU)
    assert planned["probe"]["layers"] == [1, 2]  # frozen trains the top layer: it too needs one
    model = full_model(base, method, train_cfg)  # params.yaml: frozen trains the top layer
    named = dict(model.named_parameters())
    trained = {n: p for n, p in named.items() if TRAINS[method](n)}
    assert {n for n, p in named.items() if p.requires_grad} == set(trained)
    assert planned["weights"] == 4 * sum(p.numel() for p in named.values())
    assert planned["gradients"] == 4 * sum(p.numel() for p in trained.values())
    assert planned["optimizer"] == 8 * sum(p.numel() for p in trained.values()) + 4 * len(trained)  # moments, step


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for entry in optimizer.state.values()
        for t in entry.values()
        if isinstance(t, torch.Tensor)
    )


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_optimizer_state_is_what_the_optimizer_allocates(base: Base, optimizer: str) -> None:
    train_cfg = train_section(optimizer=optimizer)
    model = full_model(base, "full", train_cfg)
    params = memory.trainable(model)
    real = make_optimizer(params, loop_config(train_cfg, "full"))
    memory.initialise_state(real, params)
    assert memory.optimizer_state_bytes(params, optimizer) == state_bytes(real)
    if optimizer == "adafactor":  # rows + columns of each matrix, full vectors, one RMS scalar each
        by_hand = sum(
            (math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1] if p.dim() > 1 else p.numel()) + 1
            for p in params
        )
        assert state_bytes(real) == 4 * by_hand < 2 * 4 * sum(p.numel() for p in params) / 10


def probe(base: Base, layers: list[int], clips: list[int], **settings) -> memory.Probe:
    train_cfg = train_section(**settings)
    return memory.probe(
        base,
        "full",
        train_cfg,
        loop_config(train_cfg, "full"),
        LONGEST,
        layer_counts=layers,
        clip_counts=clips,
        device=CPU,
    )


def test_activations_grow_linearly_with_the_micro_batch(base: Base) -> None:
    measured = probe(base, [1], [1, 2, 3])
    for key in ("passes", "saved"):
        one, two, three = (measured.steps[1, n][key] for n in (1, 2, 3))
        assert 0 < one < two < three
        assert abs((three - two) - (two - one)) < 0.05 * (two - one), key  # a straight line in clips of one length


def test_checkpointing_and_bf16_lower_the_activations(base: Base) -> None:
    """What one more transformer layer saves for the backward pass (what the plan multiplies by the depth)."""
    fp32 = probe(base, [1, 2], [2]).saved_per_layer(2)
    assert probe(base, [1, 2], [2], gradient_checkpointing=True).saved_per_layer(2) < 0.1 * fp32  # layer inputs only
    assert probe(base, [1, 2], [2], precision="bf16").saved_per_layer(2) < 0.85 * fp32


def test_nothing_fits_a_tiny_budget_and_the_plan_says_what_to_change(base: Base) -> None:
    unbounded = memory.plan(base, "full", train_section(batch_seconds=8), LONGEST, device=CPU)
    budget = unbounded["weights"] + unbounded["optimizer"] // 2  # the weights fit, nothing else does
    planned = memory.plan(base, "full", train_section(batch_seconds=8), LONGEST, budget_bytes=budget, device=CPU)
    assert planned["fits"] is False and planned["largest_micro_batch_seconds"] is None
    for setting in (
        "train.precision: bf16",
        "train.gradient_checkpointing: true",
        "train.optimizer: adafactor",
        "adapter, lora or frozen",
        "audio.max_seconds",
    ):
        assert setting in planned["message"], planned["message"]
    too_small = memory.plan(base, "full", train_section(), LONGEST, budget_bytes=1000, device=CPU)
    assert "weights alone" in too_small["message"]


def test_the_largest_micro_batch_reported_fits_when_replanned(base: Base) -> None:
    train_cfg = train_section(batch_seconds=8 * LONGEST)
    whole = memory.plan(base, "full", train_cfg, LONGEST, device=CPU)
    one = memory.plan(base, "full", train_cfg | {"micro_batch_seconds": LONGEST}, LONGEST, device=CPU)
    budget = (whole["peak_bytes"] + one["peak_bytes"]) // 2
    planned = memory.plan(base, "full", train_cfg, LONGEST, budget_bytes=budget, device=CPU)
    largest = planned["largest_micro_batch_seconds"]
    assert planned["fits"] is False and LONGEST <= largest < 8 * LONGEST
    assert f"micro_batch_seconds: {largest:g}" in planned["message"]
    replanned = memory.plan(
        base, "full", train_cfg | {"micro_batch_seconds": largest}, LONGEST, budget_bytes=budget, device=CPU
    )
    assert replanned["fits"] is True and replanned["peak_bytes"] <= budget
    larger = memory.plan(
        base, "full", train_cfg | {"micro_batch_seconds": largest + LONGEST}, LONGEST, budget_bytes=budget, device=CPU
    )
    assert larger["fits"] is False


def test_a_hypothetical_base_is_planned_at_its_full_depth(tmp_path: Path) -> None:
    config = Wav2Vec2Config(**tiny_sizes(num_hidden_layers=12), **STABLE_LAYER_NORM, vocab_size=40)
    truncated = memory.config_base(config, tmp_path / "base", layers=2)
    planned = memory.plan(truncated, "full", train_section(), LONGEST, device=CPU, layers=12)
    assert truncated.info["num_hidden_layers"] == 2 and planned["layers"] == 12
    assert planned["weights"] == 4 * memory.meta_parameter_count(config)


@pytest.fixture(scope="module")
def wider(tmp_path_factory) -> Base:
    """Small but not trivial: 4 layers of 256 (4 heads, FFN 1024), MMS-shaped."""
    config = Wav2Vec2Config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        conv_dim=(128,) * 7,
        adapter_attn_dim=16,
        **STABLE_LAYER_NORM,
    )
    return memory.config_base(config, tmp_path_factory.mktemp("wider"))


@pytest.mark.parametrize("method", METHODS)
def test_prediction_within_25_percent_of_the_measured_peak(wider: Base, method: str) -> None:
    """The acceptance criterion: the plan (extrapolated from one- and two-layer probes) against the exact tensor peak
    of one step of the whole model, one 8-s clip."""
    train_cfg = train_section(batch_seconds=8)
    predicted = memory.plan(wider, method, train_cfg, 8.0, device=CPU)["peak_bytes"]
    measured = memory.measure_training_step(wider, method, train_cfg, 8.0, device=CPU)["peak_bytes"]
    assert abs(predicted - measured) <= 0.25 * measured, (predicted, measured)
