"""The seconds-scale configuration of the demo that tests and benchmarks run: a plain module (no fixtures), so a
benchmark can use it without importing the test suite's conftest."""

from __future__ import annotations

from typing import Any

CURVE_FRACTIONS = (0.5, 1.0)  # the learning curve's, where params.yaml declares one: two fractions of the minutes


def shrink(params: dict[str, Any], k: int, methods: list[str] | None = None) -> dict[str, Any]:
    """`params` cut to seconds per job, in place: 5 target speakers × 4 utterances, 2 source languages × 2 speakers
    × 4 utterances, k folds, a one-layer 32-wide base trained one epoch, fine-tuning one epoch, one thread per job,
    a learning curve of two fractions, the demo decoder where the projector is in the grid.
    `methods` defaults to the params' own list."""
    demo = params["corpus"]["demo"]
    demo.update(
        speakers=5,
        utterances_per_speaker=4,
        source_languages=demo["source_languages"][:2],
        source_speakers=2,
        source_utterances_per_speaker=4,
    )
    params["folds"].update(k=k, ids=list(range(k)), dev_speakers=1)
    params["augment"]["speed"] = params["augment"]["speed"][:1]
    params["model"]["demo"].update(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=32,
        adapter_attn_dim=8,
        epochs=1,
    )
    if "decoder_demo" in params["model"]:  # the projector method's demo causal LM (the decoder stage)
        params["model"]["decoder_demo"].update(hidden_size=32, intermediate_size=64, num_attention_heads=2, epochs=3)
    params["train"].update(max_epochs=1, patience=1, warmup_steps=2)
    params.setdefault("resources", {})["threads"] = 1
    if "learning_curve" in params:
        params["learning_curve"]["fractions"] = list(CURVE_FRACTIONS)
    if methods is not None:
        params["methods"] = list(methods)
    if "projector" in params["methods"] and params["model"].get("decoder") is None:
        params["model"]["decoder"] = "demo"  # the projector needs a causal LM: the tiny one the decoder stage trains
    return params
