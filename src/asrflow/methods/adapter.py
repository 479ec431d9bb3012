"""MMS language adapters (transformers' own mechanism): only the small attention adapters in every layer and the
language's output layer train. The artefact is a model folder holding `adapter.<lang>.safetensors`, so
`Wav2Vec2ForCTC.from_pretrained(dir, target_lang=lang)` and `model.load_adapter(lang)` work as for MMS itself."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import WAV2VEC2_ADAPTER_SAFE_FILE

from asrflow.errors import AsrflowError
from asrflow.methods.full import ConvFrozenMethod, load_with_new_head, require_safetensors, warm_start_head


class AdapterMethodError(AsrflowError):
    """The base checkpoint cannot take language adapters."""


class LanguageAdapter(ConvFrozenMethod):
    name = "adapter"

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        model = load_with_new_head(base, vocab, overrides)
        if getattr(model.config, "adapter_attn_dim", None) is None:
            raise AdapterMethodError(f"model.base {base} has no adapter layers (config.adapter_attn_dim is unset); "
                                     f"use an MMS checkpoint, or another method")
        model.init_adapter_layers()  # fresh adapters for a new language; this also re-initialises the head
        warm_start_head(model, Path(base), vocab)
        # freeze_base_model() also freezes the adapters (they live inside the base): re-enable exactly those.
        model.freeze_base_model()
        for param in model._get_adapters().values():
            param.requires_grad = True
        model.target_lang = language
        return model

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
        weights = {name: param.detach().contiguous() for name, param in model._get_adapters().items()}
        save_file(weights, str(Path(out_dir) / WAV2VEC2_ADAPTER_SAFE_FILE.format(language)))

    def load(self, model_dir: Path, language: str) -> Wav2Vec2ForCTC:
        # use_safetensors does not reach load_adapter, which would fall back to a pickled adapter.<lang>.bin.
        require_safetensors(Path(model_dir) / WAV2VEC2_ADAPTER_SAFE_FILE.format(language))
        return Wav2Vec2ForCTC.from_pretrained(model_dir, target_lang=language, use_safetensors=True)
