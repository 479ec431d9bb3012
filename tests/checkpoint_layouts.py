"""Tiny random checkpoints written to disk the way the real hub checkpoints are laid out.

No weights can be downloaded here, yet asrflow must cope with what a user actually points `model.base` at: MMS with
its nested vocabulary and per-language `adapter.<lang>.safetensors`, pre-training-only encoders with no tokenizer and
no CTC head, old LibriSpeech CTC models whose tokenizer_config.json names no tokenizer class and whose
preprocessor_config.json names no feature extractor, a conformer fed log-mel features, sharded weights. Each layout
here builds a model from a transformers config (hidden size 32, two layers: milliseconds to build, kilobytes on disk)
and writes the same files under the same names with the same keys as the real repository, so a test fails for the
reason a real checkpoint would make the code fail.

Only safetensors are written (never pickle), and the positional-convolution weight norm is stored under the legacy
`weight_g`/`weight_v` names every real wav2vec2/HuBERT/WavLM checkpoint uses, not the `parametrizations.weight.*`
names transformers 5 itself saves.

    from checkpoint_layouts import INFO, LAYOUTS, build
    model_dir = build("mms-1b-all", tmp_path / "mms")
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertForCTC,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    WavLMConfig,
    WavLMModel,
)
from transformers.models.wav2vec2.modeling_wav2vec2 import WAV2VEC2_ADAPTER_SAFE_FILE, Wav2Vec2AttnAdapterLayer

Builder = Callable[[Path], None]

SAMPLING_RATE = 16000
# Small enough that a ~200 KB tiny model splits into several shards, as a multi-GB one does at the default 5 GB.
SHARD_SIZE = "64KB"

# --- sizes ------------------------------------------------------------------------------------------------------------

TRANSFORMER_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# The real convolutional feature encoder's kernels and strides (20 ms frames, 400-sample receptive field), only narrow.
CONV_SIZES = {
    "conv_dim": (32,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
# The two wav2vec2-family layouts: "large"/MMS/XLS-R checkpoints normalise before each block and layer-norm every conv
# layer; "base" ones normalise after each block and group-norm only the first conv layer.
STABLE_LAYER_NORM = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
POST_LAYER_NORM = {"feat_extract_norm": "group", "do_stable_layer_norm": False}
QUANTIZER_SIZES = {
    "num_codevector_groups": 2,
    "num_codevectors_per_group": 8,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
}


def tiny_sizes(conv: bool = True, **overrides: Any) -> dict[str, Any]:
    """The shared tiny config sizes: the transformer's, plus the waveform conv encoder's unless `conv` is False (the
    conformer has no conv encoder, and an unknown config key would only clutter its config.json)."""
    return {**TRANSFORMER_SIZES, **(CONV_SIZES if conv else {}), **overrides}


# --- vocabularies and tokenizer files ---------------------------------------------------------------------------------

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
HEAD = ["<pad>", "<s>", "</s>", "<unk>", "|"]  # ids 0-4 in every real wav2vec2 CTC vocabulary; "|" separates words
# facebook/wav2vec2-base-960h's vocab.json verbatim: upper case, LibriSpeech letter-frequency order, "'" at 27.
LIBRISPEECH_LETTERS = [*"ETAONIHSRDLUMWCFGYPBVK", "'", *"XJQZ"]
# Three MMS languages with different alphabets, so each language's head has its own size (Swahili writes no q or x).
MMS_LETTERS = {
    "eng": [*"abcdefghijklmnopqrstuvwxyz", "'"],
    "swh": [*"abcdefghijklmnoprstuvwyz"],
    "fra": [*"abcdefghijklmnopqrstuvwxyz", *"àâæçéèêëîïôœùûüÿ", "'"],
}
MMS_DEFAULT_LANGUAGE = "eng"  # the language MMS's model.safetensors, config.vocab_size and tokenizer_config hold


def letter_vocab(letters: list[str]) -> dict[str, int]:
    """A CTC vocabulary as the real ones number it: the four special tokens, the word delimiter, then the letters."""
    return {token: index for index, token in enumerate([*HEAD, *letters])}


def write_json(path: Path, content: dict[str, Any], sort_keys: bool = True) -> None:
    """Pretty-printed UTF-8 JSON with sorted keys, as `save_pretrained` writes it (ensure_ascii off: vocabularies hold
    é, œ; a vocabulary keeps its id order, as the real vocab.json files do)."""
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n", encoding="utf-8")


def write_tokenizer(out_dir: Path, vocab: dict[str, Any], **config: Any) -> None:
    """vocab.json, special_tokens_map.json and tokenizer_config.json (the special tokens, do_lower_case false, "|" as
    word delimiter, plus `config`; no tokenizer_class unless `config` names one, as in the 2021 checkpoints).
    Written by hand: what matters is what the real repositories hold, not what today's
    `Wav2Vec2CTCTokenizer.save_pretrained` would write."""
    write_json(out_dir / "vocab.json", vocab, sort_keys=False)
    write_json(out_dir / "special_tokens_map.json", SPECIAL_TOKENS)
    write_json(
        out_dir / "tokenizer_config.json",
        {**SPECIAL_TOKENS, "do_lower_case": False, "word_delimiter_token": "|", **config},
    )


def write_waveform_preprocessor(out_dir: Path, do_normalize: bool, return_attention_mask: bool, **fields: Any) -> None:
    """preprocessor_config.json of a raw-waveform model (Wav2Vec2FeatureExtractor). `fields` adds or, given None,
    drops a key: the 2021 LibriSpeech checkpoints have no feature_extractor_type (transformers then falls back to
    config.json's model_type), MMS names its processor_class."""
    content = {
        "do_normalize": do_normalize,
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": return_attention_mask,
        "sampling_rate": SAMPLING_RATE,
        **fields,
    }
    write_json(out_dir / "preprocessor_config.json", {k: v for k, v in content.items() if v is not None})


# Old (2021) checkpoints name no feature extractor (nor, in tokenizer_config.json, a tokenizer class): transformers
# picks both from config.json's model_type.
LEGACY_PREPROCESSOR = {"feature_extractor_type": None}


# --- weights ----------------------------------------------------------------------------------------------------------

# transformers 5 saves torch's weight-norm parametrisation; every real checkpoint has the pre-parametrisation names.
LEGACY_WEIGHT_NORM = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


def legacy_key(key: str) -> str:
    """`key` under the weight-norm names real checkpoints use (other keys unchanged)."""
    for new, old in LEGACY_WEIGHT_NORM.items():
        key = key.replace(new, old)
    return key


def use_legacy_weight_norm_keys(out_dir: Path) -> None:
    """Rename the positional conv's weight-norm tensors in every model*.safetensors (and the shard index) to
    `weight_g`/`weight_v`, so loading goes through transformers' legacy-key conversion as it does for a real one."""
    for path in sorted(out_dir.glob("model*.safetensors")):
        weights = load_file(path)
        if any(legacy_key(k) != k for k in weights):
            save_file({legacy_key(k): v for k, v in weights.items()}, path, metadata={"format": "pt"})
    index_path = out_dir / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["weight_map"] = {legacy_key(k): shard for k, shard in index["weight_map"].items()}
        write_json(index_path, index)


def save_model(model: PreTrainedModel, out_dir: Path, max_shard_size: str | None = None) -> None:
    """config.json and safetensors weights (sharded with an index when `max_shard_size` is given); save_pretrained
    also records the class in config.architectures, as the real config.json files do."""
    model.save_pretrained(out_dir, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    use_legacy_weight_norm_keys(out_dir)


def fresh_adapter(model: Wav2Vec2ForCTC, vocab_size: int) -> dict[str, torch.Tensor]:
    """One language's adapter file content: newly initialised attention adapters plus a head of `vocab_size` outputs,
    under the names `model._get_adapters()` gives (what `load_adapter` checks keys against).

    `init_adapter_layers()` re-initialises the head only: it hands each adapter *layer* to `_init_weights`, which
    initialises Linear/LayerNorm modules, not their parents. So the adapter layers' children get `_init_weights`
    here, or every language would share the same adapter weights."""
    model.lm_head = torch.nn.Linear(model.config.hidden_size, vocab_size)
    model.config.vocab_size = vocab_size
    model.init_adapter_layers()
    for module in model.modules():
        if isinstance(module, Wav2Vec2AttnAdapterLayer):
            module.apply(model._init_weights)
    return {name: param.detach().clone().contiguous() for name, param in model._get_adapters().items()}


def install_adapter(model: Wav2Vec2ForCTC, weights: dict[str, torch.Tensor]) -> None:
    """Put one language's adapter and head into the model, as `load_adapter` does from a file."""
    model.lm_head = torch.nn.Linear(model.config.hidden_size, weights["lm_head.weight"].shape[0])
    model.config.vocab_size = model.lm_head.out_features
    result = model.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys


# --- layouts ----------------------------------------------------------------------------------------------------------


def mms_1b_all(out_dir: Path) -> None:
    """facebook/mms-1b-all: a CTC model with attention adapters; model.safetensors and config.vocab_size hold English,
    adapter.<lang>.safetensors hold each language's adapters and head, vocab.json nests one vocabulary per language and
    tokenizer_config.json's target_lang picks English."""
    vocabs = {lang: letter_vocab(letters) for lang, letters in MMS_LETTERS.items()}
    config = Wav2Vec2Config(
        **tiny_sizes(), **STABLE_LAYER_NORM, adapter_attn_dim=8, vocab_size=len(vocabs[MMS_DEFAULT_LANGUAGE])
    )
    model = Wav2Vec2ForCTC(config)
    adapters = {lang: fresh_adapter(model, len(vocab)) for lang, vocab in vocabs.items()}
    for lang, weights in adapters.items():
        save_file(weights, out_dir / WAV2VEC2_ADAPTER_SAFE_FILE.format(lang), metadata={"format": "pt"})
    install_adapter(model, adapters[MMS_DEFAULT_LANGUAGE])
    save_model(model, out_dir)
    write_tokenizer(
        out_dir,
        vocabs,
        target_lang=MMS_DEFAULT_LANGUAGE,
        tokenizer_class="Wav2Vec2CTCTokenizer",
        replace_word_delimiter_char=" ",
        processor_class="Wav2Vec2Processor",
        clean_up_tokenization_spaces=True,
        model_max_length=1000000000000000019884624838656,
    )
    write_waveform_preprocessor(
        out_dir, do_normalize=True, return_attention_mask=True, processor_class="Wav2Vec2Processor"
    )


def wav2vec2_pretraining(out_dir: Path, max_shard_size: str | None = None) -> None:
    """facebook/mms-300m, facebook/wav2vec2-xls-r-300m: the self-supervised model with its quantizer and projections,
    no CTC head, no tokenizer."""
    config = Wav2Vec2Config(**tiny_sizes(), **STABLE_LAYER_NORM, **QUANTIZER_SIZES)
    save_model(Wav2Vec2ForPreTraining(config), out_dir, max_shard_size)
    write_waveform_preprocessor(out_dir, do_normalize=True, return_attention_mask=True)


def librispeech_ctc(
    out_dir: Path,
    config_class: type[PretrainedConfig],
    model_class: type[PreTrainedModel],
    norm: dict[str, Any],
    return_attention_mask: bool,
    max_shard_size: str | None = None,
) -> None:
    """facebook/wav2vec2-base-960h, wav2vec2-large-960h-lv60-self, hubert-large-ls960-ft: English CTC over the 32
    upper-case LibriSpeech tokens, 2021-style files (no tokenizer or feature extractor class named)."""
    vocab = letter_vocab(LIBRISPEECH_LETTERS)
    config = config_class(**tiny_sizes(), **norm, vocab_size=len(vocab))
    save_model(model_class(config), out_dir, max_shard_size)
    write_tokenizer(out_dir, vocab)
    write_waveform_preprocessor(
        out_dir, do_normalize=True, return_attention_mask=return_attention_mask, **LEGACY_PREPROCESSOR
    )


def bare_encoder(
    out_dir: Path,
    config_class: type[PretrainedConfig],
    model_class: type[PreTrainedModel],
    config: dict[str, Any],
    preprocessor: dict[str, Any],
) -> None:
    """hubert-base-ls960, wavlm-base-plus, data2vec-audio-base: only the encoder (`*Model`, its keys unprefixed), no
    head, no tokenizer."""
    save_model(model_class(config_class(**tiny_sizes(**config))), out_dir)
    write_waveform_preprocessor(out_dir, **preprocessor)


def w2v_bert_2(out_dir: Path) -> None:
    """facebook/w2v-bert-2.0: a conformer over 80-bin log-mel filterbanks stacked in pairs (160 inputs per frame),
    no tokenizer. Its preprocessor_config.json names processor_class Wav2Vec2BertProcessor although the repository has
    no tokenizer (AutoProcessor fails on it, as on the other tokenizer-less checkpoints; AutoFeatureExtractor works)."""
    config = Wav2Vec2BertConfig(
        **tiny_sizes(conv=False), feature_projection_input_dim=160, conv_depthwise_kernel_size=3
    )
    save_model(Wav2Vec2BertModel(config), out_dir)
    extractor = SeamlessM4TFeatureExtractor(
        feature_size=80, num_mel_bins=80, padding_value=1, sampling_rate=SAMPLING_RATE, stride=2
    )
    extractor.save_pretrained(out_dir)
    path = out_dir / "preprocessor_config.json"
    write_json(path, {**json.loads(path.read_text(encoding="utf-8")), "processor_class": "Wav2Vec2BertProcessor"})


LAYOUTS: dict[str, Builder] = {}
INFO: dict[str, dict[str, Any]] = {}


def register(
    name: str,
    builder: Builder,
    *,
    family: str,
    pretraining_only: bool,
    vocab: str,
    has_adapters: bool = False,
    input_kind: str = "waveform",
    sharded: bool = False,
) -> None:
    """Add a layout and what tests need to know about it: the model_type, whether it has a CTC head to reuse, the
    vocabulary kind ("nested" | "flat-upper" | "none"), adapters, the input ("waveform" | "log-mel"), sharding."""
    LAYOUTS[name] = builder
    INFO[name] = {
        "family": family,
        "pretraining_only": pretraining_only,
        "vocab": vocab,
        "has_adapters": has_adapters,
        "input": input_kind,
        "sharded": sharded,
    }


register("mms-1b-all", mms_1b_all, family="wav2vec2", pretraining_only=False, vocab="nested", has_adapters=True)
register("mms-300m", wav2vec2_pretraining, family="wav2vec2", pretraining_only=True, vocab="none")
register("xls-r-300m", wav2vec2_pretraining, family="wav2vec2", pretraining_only=True, vocab="none")
register(
    "xls-r-300m-sharded",
    functools.partial(wav2vec2_pretraining, max_shard_size=SHARD_SIZE),
    family="wav2vec2",
    pretraining_only=True,
    vocab="none",
    sharded=True,
)
register(
    "wav2vec2-base-960h",
    functools.partial(
        librispeech_ctc,
        config_class=Wav2Vec2Config,
        model_class=Wav2Vec2ForCTC,
        norm=POST_LAYER_NORM,
        return_attention_mask=False,
    ),
    family="wav2vec2",
    pretraining_only=False,
    vocab="flat-upper",
)
register(
    "wav2vec2-base-960h-sharded",
    functools.partial(
        librispeech_ctc,
        config_class=Wav2Vec2Config,
        model_class=Wav2Vec2ForCTC,
        norm=POST_LAYER_NORM,
        return_attention_mask=False,
        max_shard_size=SHARD_SIZE,
    ),
    family="wav2vec2",
    pretraining_only=False,
    vocab="flat-upper",
    sharded=True,
)
register(
    "wav2vec2-large-960h-lv60-self",
    functools.partial(
        librispeech_ctc,
        config_class=Wav2Vec2Config,
        model_class=Wav2Vec2ForCTC,
        norm=STABLE_LAYER_NORM,
        return_attention_mask=True,
    ),
    family="wav2vec2",
    pretraining_only=False,
    vocab="flat-upper",
)
register(
    "hubert-large-ls960-ft",
    functools.partial(
        librispeech_ctc,
        config_class=HubertConfig,
        model_class=HubertForCTC,
        norm=STABLE_LAYER_NORM,
        return_attention_mask=True,
    ),
    family="hubert",
    pretraining_only=False,
    vocab="flat-upper",
)
register(
    "hubert-base-ls960",
    functools.partial(
        bare_encoder,
        config_class=HubertConfig,
        model_class=HubertModel,
        config=POST_LAYER_NORM,
        preprocessor={"do_normalize": False, "return_attention_mask": False, **LEGACY_PREPROCESSOR},
    ),
    family="hubert",
    pretraining_only=True,
    vocab="none",
)
register(
    "wavlm-base-plus",
    functools.partial(
        bare_encoder,
        config_class=WavLMConfig,
        model_class=WavLMModel,
        config={**POST_LAYER_NORM, "num_buckets": 16, "max_bucket_distance": 80},
        preprocessor={"do_normalize": False, "return_attention_mask": True},
    ),
    family="wavlm",
    pretraining_only=True,
    vocab="none",
)
register(
    "data2vec-audio-base",
    # data2vec's positional embedding is a stack of `num_conv_pos_embeddings` convs (5 in the real one) of
    # kernel `conv_pos_kernel_size`, not one conv of that kernel as in wav2vec2.
    functools.partial(
        bare_encoder,
        config_class=Data2VecAudioConfig,
        model_class=Data2VecAudioModel,
        config={"num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 5},
        preprocessor={"do_normalize": True, "return_attention_mask": True},
    ),
    family="data2vec-audio",
    pretraining_only=True,
    vocab="none",
)
register("w2v-bert-2.0", w2v_bert_2, family="wav2vec2-bert", pretraining_only=True, vocab="none", input_kind="log-mel")


def build(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Write layout `name` into `out_dir` (created if missing) with weights drawn from `seed`; return `out_dir`."""
    if name not in LAYOUTS:
        raise KeyError(f"unknown checkpoint layout {name!r}; known: {', '.join(LAYOUTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    LAYOUTS[name](out_dir)
    return out_dir
