"""int8 inference: every Linear layer quantised, the float32 model untouched, and the quantised models of every
method load and transcribe like their float32 originals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ALL_METHODS
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from asrflow.batching import InputSpec, collate, for_model, load_clips
from asrflow.inference import load_for_inference, quantize_int8, serialized_bytes
from asrflow.manifest import read_manifest
from asrflow.model import output_lengths, transcribe_clips

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`


def test_quantize_int8_replaces_every_linear_and_leaves_the_original(tiny_run: Path) -> None:
    model, _ = load_for_inference(tiny_run / "published/full")
    linear = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    int8 = quantize_int8(model)
    assert linear and linear == {n for n, m in int8.named_modules() if isinstance(m, DynamicQuantizedLinear)}
    assert all(type(m) is torch.nn.Linear for n, m in model.named_modules() if n in linear)
    assert serialized_bytes(int8) < serialized_bytes(model)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_int8_models_transcribe_like_float32(tiny_run: Path, method: str) -> None:
    fp32, processor = load_for_inference(tiny_run / f"published/{method}")
    int8, _ = load_for_inference(tiny_run / f"published/{method}", int8=True)
    clips = load_clips(
        read_manifest(tiny_run / "data/processed/folds/fold0/test.csv"), lambda text: [], processor.feature_extractor
    )
    spec = InputSpec.of(processor.feature_extractor)
    inputs = for_model(collate(clips, spec), spec, labels=False)
    with torch.inference_mode():
        fp32_probs, int8_probs = (model(**inputs).logits.softmax(-1) for model in (fp32, int8))
    # Measured on these tiny models: at most 0.0012 apart on any frame and token.
    assert (fp32_probs - int8_probs).abs().max() < 0.02
    hypotheses = transcribe_clips(int8, clips, processor, 60)
    assert hypotheses == processor.batch_decode(
        [row[:n].tolist() for row, n in zip(int8_probs.argmax(-1), output_lengths(int8, inputs["attention_mask"]))]
    )
