"""Every fine-tuning method on a tiny real corpus: what trains, what is saved, and that plain transformers/peft load
each artefact and reproduce asrflow's own outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ALL_METHODS
from safetensors.torch import load_file

from asrflow import config, methods
from asrflow.batching import load_clips
from asrflow.checkpoint import open_base
from asrflow.io import read_json
from asrflow.manifest import read_manifest
from asrflow.model import compute_device, make_processor, on_model_device

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name in before if name in after and not torch.equal(before[name], after[name])}


def test_trainable_parameter_sets(tiny_run: Path) -> None:
    base = open_base(tiny_run / "data/models/base")
    vocab = read_json(tiny_run / "data/processed/folds/fold0/vocab.json")
    expectations = {
        "full": lambda n: not n.startswith("wav2vec2.feature_extractor"),
        "adapter": lambda n: ".adapter_layer." in n or n.startswith("lm_head"),
        "lora": lambda n: "lora_" in n or "lm_head" in n,
        "frozen": lambda n: n.startswith("lm_head") or ".encoder.layers.0." in n or ".encoder.layer_norm." in n,
        "scratch": lambda n: True,
    }
    for name, expect in expectations.items():
        settings = config.defaults(f"train.{name}") | ({"train_top_layers": 1} if name == "frozen" else {})
        model = methods.get(name).prepare(base, vocab, {}, settings, "sw")
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(expect(n) for n in trainable), f"{name}: {sorted(trainable)[:5]}"
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert not any(expect(n) for n in frozen if name != "lora"), f"{name} froze a parameter it should train"


def test_adapter_training_changes_only_adapters_and_head(tiny_run: Path) -> None:
    before = weights(tiny_run / "data/models/base")
    after = weights(tiny_run / "models/adapter")
    moved = changed(before, after)
    assert moved and all(".adapter_layer." in n or n.startswith("lm_head") for n in moved), sorted(moved)[:5]
    assert any(".adapter_layer." in n for n in moved)
    adapter = load_file(str(tiny_run / "models/adapter/adapter.sw.safetensors"))
    assert set(adapter) == {n for n in after if ".adapter_layer." in n or n.startswith("lm_head")}


def test_frozen_encoder_is_bit_identical_after_training(tiny_run: Path) -> None:
    before = weights(tiny_run / "data/models/base")
    after = weights(tiny_run / "models/frozen")
    moved = changed(before, after)
    # train_top_layers: 1 in the tiny config → the one transformer layer and the final layer norm may move
    allowed = (".encoder.layers.0.", ".encoder.layer_norm.", "lm_head")
    assert all(any(a in n for a in allowed) for n in moved), sorted(moved)[:5]
    assert not any(n.startswith("wav2vec2.feature_extractor") or "pos_conv" in n for n in moved)
    cached = list((tiny_run / "cache").rglob("*.safetensors"))
    assert cached, "the frozen method caches encoder features"


def test_training_records_parameters_and_time(tiny_run: Path) -> None:
    for method in ALL_METHODS:
        info = read_json(tiny_run / f"metrics/{method}/metrics.json")
        assert 0 < info["trainable_params"] <= info["total_params"] and info["train_seconds"] > 0
    full = read_json(tiny_run / "metrics/full/metrics.json")
    assert read_json(tiny_run / "metrics/adapter/metrics.json")["trainable_params"] < full["trainable_params"]
    assert read_json(tiny_run / "metrics/lora/metrics.json")["trainable_params"] < full["trainable_params"]


LOADER = r"""
import json, sys
import numpy as np, soundfile as sf, torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor, pipeline
kind, model_dir, lang, audio = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
assert "asrflow" not in sys.modules
if kind == "pipeline":
    asr = pipeline("automatic-speech-recognition", model=model_dir, device="cpu")
    out = [asr(sf.read(a, dtype="float32")[0])["text"] for a in audio]
else:
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    if kind == "adapter":
        model = Wav2Vec2ForCTC.from_pretrained(model_dir, target_lang=lang)
    elif kind == "adapter-load":
        model = Wav2Vec2ForCTC.from_pretrained(model_dir, ignore_mismatched_sizes=True)
        model.load_adapter(lang)
    else:
        from peft import PeftModel
        base = Wav2Vec2ForCTC.from_pretrained(kind.split("=", 1)[1], vocab_size=len(processor.tokenizer),
                                              ignore_mismatched_sizes=True)
        model = PeftModel.from_pretrained(base, model_dir + "/peft")
    model.eval()
    out = []
    for a in audio:
        inputs = processor(sf.read(a, dtype="float32")[0], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            ids = model(**inputs).logits.argmax(-1)[0]
        out.append(processor.decode(ids))
print(json.dumps(out))
"""


def plain_transformers(kind: str, model_dir: Path, audio: list[str]) -> list[str]:
    """Transcripts from a fresh interpreter that imports only transformers (and peft for LoRA)."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, kind, str(model_dir), "sw", *audio],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "method,kind",
    [
        ("full", "pipeline"),
        ("frozen", "pipeline"),
        ("scratch", "pipeline"),
        ("lora", "pipeline"),
        ("adapter", "adapter"),
        ("adapter", "adapter-load"),
        ("lora", "peft"),
    ],
)
def test_artefacts_load_without_asrflow_and_agree_with_its_evaluation(tiny_run: Path, method: str, kind: str) -> None:
    hyps = pd.read_csv(tiny_run / f"metrics/{method}/hypotheses.csv", keep_default_na=False)
    test = {u.utt_id: u.audio for u in read_manifest(tiny_run / "data/processed/folds/fold0/test.csv")}
    audio = [str(tiny_run / test[u]) for u in hyps["utt_id"]]
    if kind == "peft":
        kind = f"peft={open_base(tiny_run / 'data/models/base').directory}"
    assert plain_transformers(kind, tiny_run / f"published/{method}", audio) == hyps["hypothesis"].tolist()


def test_lora_merged_export_matches_peft_logits(tiny_run: Path) -> None:
    from asrflow.methods.lora import load_peft

    base = open_base(tiny_run / "data/models/base")
    peft_model = load_peft(base, tiny_run / "models/lora", "sw").eval()
    merged = methods.get("lora").load(tiny_run / "models/lora", "sw").eval()
    utt = read_manifest(tiny_run / "data/processed/folds/fold0/test.csv")[0]
    [clip] = load_clips([utt], lambda text: [], make_processor({}).feature_extractor)
    values = torch.from_numpy(clip.inputs)[None]
    with torch.inference_mode():
        assert torch.allclose(peft_model(input_values=values).logits, merged(input_values=values).logits, atol=1e-5)


def test_model_card_has_model_index(tiny_run: Path) -> None:
    import yaml

    card = (tiny_run / "published/full/README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---")[1])
    metrics = header["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"cer", "wer"}
    assert metrics[0]["value"] == read_json(tiny_run / "metrics/full/metrics.json")["cer"]
    training = read_json(tiny_run / "models/full/training.json")
    assert "fold 0" in card and f"`{training['base']}`" in card
    # huggingface_hub reads back what was written; no made-up link (test_cards checks the rest offline).
    from huggingface_hub import ModelCard

    data = ModelCard.load(tiny_run / "published/full/README.md", ignore_metadata_errors=False).data
    assert data.language == [training["language"]] and data.to_dict()["model-index"] == header["model-index"]
    assert [(r.metric_type, r.metric_value) for r in data.eval_results][:2] == [
        (m["type"], m["value"]) for m in metrics[:2]
    ]
    assert "base_model" not in header and "example.invalid" not in card


@pytest.mark.parametrize("method", ["full", "lora", "adapter"])
def test_cached_conv_features_give_the_models_own_outputs(tiny_run: Path, method: str) -> None:
    """Training on cached feature-encoder outputs is exact: same loss and logits as the model on raw audio."""
    from asrflow.features import ConvCachedTask
    from asrflow.model import AudioTask

    base = open_base(tiny_run / "data/models/base")
    vocab = read_json(tiny_run / "data/processed/folds/fold0/vocab.json")
    processor = make_processor(vocab, base.feature_extractor())
    model = (
        methods.get(method)
        .prepare(base, vocab, {"mask_time_prob": 0.0}, config.defaults(f"train.{method}"), "sw")
        .eval()
    )
    utts = read_manifest(tiny_run / "data/processed/folds/fold0/train.csv")[:3]
    clips = load_clips(utts, lambda text: processor.tokenizer(text).input_ids, processor.feature_extractor)
    cached = ConvCachedTask(model, processor, base)
    features = cached.prepare(clips)
    with torch.inference_mode():
        assert torch.allclose(cached.loss(features), AudioTask(model, processor).loss(clips), atol=1e-5)
    assert cached.transcribe(features, 30) == AudioTask(model, processor).transcribe(clips, 30)
    assert any(p.requires_grad for p in model.parameters())
    assert "_Lookup" not in repr(model), "the feature encoder is restored after each call"


def test_batches_follow_the_model_to_its_device() -> None:
    """On a GPU machine the model sits on CUDA and every batch must follow it; `meta` stands in for a second device."""
    model = torch.nn.Linear(2, 2, device="meta")
    batch = on_model_device({"input_values": torch.zeros(1, 2), "labels": torch.ones(1, 3, dtype=torch.long)}, model)
    assert {t.device.type for t in batch.values()} == {"meta"}
    assert batch["labels"].dtype == torch.long
    assert compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
