"""int8 inference through ONNX Runtime (asrflow.inference): the int8 graph computes the float32 model's logits closely
and its greedy transcripts on real speech, is built once per model and rebuilt when the model changes, serves
`asrflow transcribe --int8` end to end, and without onnxruntime int8 falls back to PyTorch's quantisation, saying so.

The model is a random-weight two-layer, 64-wide wav2vec2 (seconds to build and export); its output layer is scaled
so that its posteriors are peaked, as a trained model's, and not a near-uniform soup where any rounding flips the best
token. Nothing here measures accuracy: benchmarks/int8_inference.py does, on the demo model."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow import cli
from asrflow.audio import TARGET_RATE
from asrflow.batching import InputSpec
from asrflow.corpus.demo import SAMPLE_RATE, espeak, make_speakers
from asrflow.inference import (
    CACHE_ENV,
    MISSING_ORT,
    export_onnx,
    int8_cache_dir,
    load_for_inference,
    with_onnx_forward,
)
from asrflow.model import default_feature_extractor, make_processor, output_lengths
from asrflow.vocab import build_vocab

SENTENCES = ["habari ya asubuhi rafiki yangu", "leo ni siku nzuri sana", "tunakula chakula pamoja"]


@pytest.fixture(autouse=True)
def int8_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test builds its graphs in its own cache, never the user's."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "int8"


def save_model(folder: Path, feat_extract_norm: str, seed: int = 0) -> Path:
    """A random model saved as transcribe loads it; `layer` takes an attention mask (as the demo's), `group` not
    (as wav2vec2-base)."""
    torch.manual_seed(seed)
    vocab = build_vocab(SENTENCES)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=feat_extract_norm == "layer",
        pad_token_id=0,
    )
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked posteriors (see the module docstring)
    extractor = default_feature_extractor()
    extractor.return_attention_mask = feat_extract_norm == "layer"
    model.save_pretrained(folder)
    make_processor(vocab, extractor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["layer", "group"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp(f"model-{request.param}"), request.param)


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """The sentences spoken by espeak, 16 kHz, each a different length."""
    speaker = make_speakers("sw", 1, 0, "test", "{language}{number}")[0]
    clips = [espeak().synthesise(speaker, s).astype(np.float32) / 32768 for s in SENTENCES]
    return [soxr.resample(clip, SAMPLE_RATE, TARGET_RATE) for clip in clips]


def batch_inputs(processor, speech: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """One padded batch of every clip, as the model takes it (the mask only where the model uses one)."""
    spec = InputSpec.of(processor.feature_extractor)
    inputs = processor.feature_extractor(
        speech, sampling_rate=TARGET_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    return {spec.name: inputs[spec.name], "attention_mask": inputs["attention_mask"]}


def greedy(model, processor, inputs: dict[str, torch.Tensor], logits: torch.Tensor) -> list[str]:
    """Best-path transcripts of a batch's logits, each cut to its clip's own frames."""
    lengths = output_lengths(model, inputs["attention_mask"])
    return processor.batch_decode([row[:n].tolist() for row, n in zip(logits.argmax(-1), lengths.tolist())])


def own_frames(model, inputs: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Each clip's logits over its own frames, stacked (padding frames of the shorter clips carry no speech)."""
    lengths = output_lengths(model, inputs["attention_mask"])
    return logits[torch.arange(logits.shape[1])[None] < lengths[:, None]]


def run_both(model_dir: Path, speech: list[np.ndarray], other) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Own-frame logits and greedy transcripts of the float32 model and of `other(model, processor)`."""
    fp32, processor = load_for_inference(model_dir)
    inputs = batch_inputs(processor, speech)
    spec = InputSpec.of(processor.feature_extractor)
    model_args = inputs if spec.use_mask else {spec.name: inputs[spec.name]}
    with torch.inference_mode():
        logits = [model(**model_args).logits for model in (fp32, other(copy.deepcopy(fp32), processor))]
    assert logits[0].shape == logits[1].shape
    texts = [greedy(fp32, processor, inputs, row) for row in logits]
    return own_frames(fp32, inputs, logits[0]), own_frames(fp32, inputs, logits[1]), texts


def test_the_onnx_graph_computes_the_float32_logits(model_dir: Path, speech: list[np.ndarray], tmp_path: Path):
    """Unquantised, the exported graph is the model: batch and length free, padding and mask handled."""

    def onnx_fp32(model, processor):
        spec = InputSpec.of(processor.feature_extractor)
        export_onnx(model, spec, tmp_path / "fp32.onnx")
        return with_onnx_forward(model, tmp_path / "fp32.onnx", spec)

    fp32, onnx, texts = run_both(model_dir, speech, onnx_fp32)
    assert (fp32 - onnx).abs().max() < 1e-3 * fp32.std()  # measured: 2e-5 on logits of std 4.6
    assert texts[0] == texts[1]


def test_int8_logits_and_transcripts_match_float32(model_dir: Path, speech: list[np.ndarray], int8_cache: Path):
    fp32, int8, texts = run_both(model_dir, speech, lambda model, processor: load_for_inference(model_dir, True)[0])
    assert len(list(int8_cache.glob("*.onnx"))) == 1
    # Measured on these random models (the worst case: no trained weights' structure): logits at most 0.5 standard
    # deviations apart, the best token the same on 95 % of frames; PyTorch's own int8 does as well (96 %).
    assert (fp32 - int8).abs().max() < 1.0 * fp32.std()
    assert (fp32.argmax(-1) == int8.argmax(-1)).float().mean() > 0.9
    assert all(texts[0]) and len(set(texts[0])) == len(SENTENCES), "the model must say something different per clip"
    assert jiwer.cer(texts[0], texts[1]) < 0.15


def test_the_graph_is_built_once_per_model(tmp_path: Path, int8_cache: Path) -> None:
    folder = save_model(tmp_path / "model", "layer")
    load_for_inference(folder, int8=True)
    (graph,) = int8_cache.glob("*.onnx")
    built = graph.stat().st_mtime_ns
    load_for_inference(folder, int8=True)
    assert [p.stat().st_mtime_ns for p in int8_cache.glob("*.onnx")] == [built], "a second load must reuse the graph"
    save_model(folder, "layer", seed=1)  # retrained in place: the old graph must not be used
    load_for_inference(folder, int8=True)
    assert len(list(int8_cache.glob("*.onnx"))) == 2


def test_transcribe_int8_end_to_end(model_dir: Path, speech: list[np.ndarray], tmp_path: Path) -> None:
    gap = np.zeros(TARGET_RATE // 2, dtype=np.float32)
    recording = tmp_path / "recordings/long.wav"
    recording.parent.mkdir()
    sf.write(recording, np.concatenate([c for clip in speech for c in (clip, gap)]), TARGET_RATE)
    texts = []
    for out, extra in ((tmp_path / "fp32", []), (tmp_path / "int8", ["--int8"])):
        args = ["transcribe", "--model", str(model_dir), str(recording), "--out", str(out), "--threads", "1"]
        assert cli.main([*args, "--chunk-seconds", "4", *extra]) == 0
        texts.append((out / "long.txt").read_text(encoding="utf-8"))
    assert texts[0].strip() and jiwer.cer(*texts) < 0.15


def test_without_onnxruntime_int8_falls_back_to_torch_and_says_so(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, int8_cache: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when it is not installed
    with caplog.at_level(logging.WARNING, logger="asrflow.inference"):
        model, _ = load_for_inference(model_dir, int8=True)
    assert MISSING_ORT in caplog.text and "pip install" in MISSING_ORT
    assert any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
    assert not int8_cache.exists()


def test_cache_dir_defaults_to_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert int8_cache_dir() == tmp_path / "asrflow/int8"
