"""Self-check of checkpoint_layouts: each tiny checkpoint holds the files the real one holds and loads, offline, through
the Auto classes asrflow uses, into a CTC model that runs on a second of audio; MMS's nested vocabulary and
per-language adapters load as the real MMS's do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_layouts import INFO, LAYOUTS, LIBRISPEECH_LETTERS, MMS_LETTERS, SAMPLING_RATE, build, letter_vocab
from safetensors.torch import load_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoProcessor, Wav2Vec2ForCTC

TOKENIZER_FILES = {"vocab.json", "tokenizer_config.json", "special_tokens_map.json"}
# What a pre-training checkpoint holds that a CTC model has no place for (loading reports them "unexpected").
PRETRAINING_ONLY_PREFIXES = ("quantizer.", "project_hid.", "project_q.")
HEAD_KEYS = {"lm_head.weight", "lm_head.bias"}
# Families whose positional convolution is weight-normed (data2vec's and the conformer's are not).
WEIGHT_NORM_FAMILIES = {"wav2vec2", "hubert", "wavlm"}
OFFLINE = {"local_files_only": True}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Each layout built once per module (building and loading all of them takes seconds)."""
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def mms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("mms-1b-all", tmp_path_factory.mktemp("mms"))


def one_second(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SAMPLING_RATE).astype(np.float32)


def safetensors_keys(model_dir: Path) -> set[str]:
    return {key for path in model_dir.glob("model*.safetensors") for key in load_file(path)}


def test_files_on_disk(layout: tuple[str, Path]) -> None:
    name, model_dir = layout
    info = INFO[name]
    files = {path.name for path in model_dir.iterdir()}
    assert {"config.json", "preprocessor_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))], "pickle written"
    assert TOKENIZER_FILES & files == (TOKENIZER_FILES if info["vocab"] != "none" else set())
    adapters = {f for f in files if f.startswith("adapter.")}
    assert adapters == ({f"adapter.{lang}.safetensors" for lang in MMS_LETTERS} if info["has_adapters"] else set())
    if info["sharded"]:
        index = json.loads((model_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
        shards = set(index["weight_map"].values())
        assert "model.safetensors" not in files and len(shards) > 1 and shards <= files
    else:
        assert "model.safetensors" in files
    keys = safetensors_keys(model_dir)
    assert not [k for k in keys if "parametrizations" in k]
    if info["family"] in WEIGHT_NORM_FAMILIES:
        assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in keys)
    architectures = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["architectures"]
    assert architectures[0].endswith("ForCTC") != info["pretraining_only"]


def test_loads_offline_into_ctc_and_runs(layout: tuple[str, Path]) -> None:
    name, model_dir = layout
    info = INFO[name]
    assert AutoConfig.from_pretrained(model_dir, **OFFLINE).model_type == info["family"]
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, **OFFLINE)
    model, loading = AutoModelForCTC.from_pretrained(
        model_dir,
        vocab_size=10,
        ignore_mismatched_sizes=True,
        use_safetensors=True,
        output_loading_info=True,
        **OFFLINE,
    )
    # Only the head is new: everything else, legacy weight-norm names and unprefixed bare encoders included, loads.
    assert loading["missing_keys"] == (HEAD_KEYS if info["pretraining_only"] else set())
    assert all(key.startswith(PRETRAINING_ONLY_PREFIXES) for key in loading["unexpected_keys"])
    inputs = extractor(one_second(), sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert ("input_features" if info["input"] == "log-mel" else "input_values") in inputs
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[0] == 1 and logits.shape[1] > 10 and logits.shape[2] == 10
    assert torch.isfinite(logits).all()


def test_mms_target_lang_loads_that_languages_adapter_and_head(mms: Path) -> None:
    model = Wav2Vec2ForCTC.from_pretrained(mms, target_lang="swh", use_safetensors=True, **OFFLINE)
    n_swh = len(letter_vocab(MMS_LETTERS["swh"]))
    assert model.lm_head.out_features == model.config.vocab_size == n_swh
    on_disk = load_file(mms / "adapter.swh.safetensors")
    assert on_disk.keys() == model._get_adapters().keys()
    assert all(torch.equal(on_disk[k], p) for k, p in model._get_adapters().items())


def test_mms_default_is_english_and_languages_differ(mms: Path) -> None:
    model = Wav2Vec2ForCTC.from_pretrained(mms, use_safetensors=True, **OFFLINE)
    english = load_file(mms / "adapter.eng.safetensors")
    assert model.config.vocab_size == len(letter_vocab(MMS_LETTERS["eng"]))
    assert all(torch.equal(english[k], p) for k, p in model._get_adapters().items())
    french = load_file(mms / "adapter.fra.safetensors")
    assert not torch.equal(
        english["wav2vec2.encoder.layers.0.adapter_layer.linear_1.weight"],
        french["wav2vec2.encoder.layers.0.adapter_layer.linear_1.weight"],
    )


def test_mms_processor_reads_the_nested_vocabulary(mms: Path) -> None:
    tokenizer = AutoProcessor.from_pretrained(mms, **OFFLINE).tokenizer
    assert tokenizer.get_vocab() == letter_vocab(MMS_LETTERS["eng"])
    tokenizer.set_target_lang("fra")
    assert tokenizer.get_vocab() == letter_vocab(MMS_LETTERS["fra"])
    assert tokenizer.convert_ids_to_tokens(tokenizer("é").input_ids) == ["é"]


def test_librispeech_processor_from_model_type_alone(tmp_path: Path) -> None:
    """The 2021 files name neither tokenizer class nor feature extractor: both come from config.json's model_type."""
    processor = AutoProcessor.from_pretrained(build("wav2vec2-base-960h", tmp_path), **OFFLINE)
    assert processor.tokenizer.get_vocab() == letter_vocab(LIBRISPEECH_LETTERS)
    assert processor.tokenizer.decode([11, 5, 15, 15, 0, 15, 8]) == "HELLO"  # CTC: repeats merge unless <pad> splits
    assert processor.feature_extractor.return_attention_mask is False


def test_same_seed_same_weights(tmp_path: Path) -> None:
    first, again, other = (build("wav2vec2-base-960h", tmp_path / str(i), seed=s) for i, s in enumerate((0, 0, 1)))
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
