"""MMS language adapters (transformers' own mechanism): only the small attention adapters in every layer and the
language's output layer train. The artefact is a model folder holding `adapter.<lang>.safetensors`, so
`Wav2Vec2ForCTC.from_pretrained(dir, target_lang=lang)` and `model.load_adapter(lang)` work as for MMS itself."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import WAV2VEC2_ADAPTER_SAFE_FILE

from asrflow.checkpoint import ADAPTER_FILE, HEAD_PREFIX, Base, read_tensors
from asrflow.methods.base import ConvFrozenMethod, load_with_new_head, require_safetensors, warm_start_head


def warm_start_adapters(model: Wav2Vec2ForCTC, base: Base, language: str) -> int:
    """Start the adapter layers from the base's adapter for `language` (an MMS base ships one per language it
    knows): a related language's adapter is a better start than noise. Returns how many tensors were copied."""
    path = base.directory / ADAPTER_FILE.format(language)
    if not path.is_file():
        return 0
    wanted = {name for name in model._get_adapters() if not name.startswith(HEAD_PREFIX)}
    found = read_tensors([path], wanted)
    model.load_state_dict(found, strict=False)
    return len(found)


class LanguageAdapter(ConvFrozenMethod):
    name = "adapter"

    def unavailable(self, base: Base, cfg: dict) -> str:
        if base.has_mms_adapters:
            return ""
        why = (
            "config.adapter_attn_dim is unset: it is a checkpoint without MMS adapter layers (MMS-1b-all, -l1107 "
            "and -fl102 have them)"
            if base.model_type == "wav2vec2"
            else f"MMS attention adapters exist only in wav2vec2 models, and this is {base.model_type}"
        )
        return f"no language adapter layers to train ({why})"

    def prepare(
        self,
        base: Base,
        vocab: dict[str, int],
        overrides: dict,
        cfg: dict,
        language: str,
        *,
        warm_language: str | None = None,
    ) -> torch.nn.Module:
        model = load_with_new_head(base, vocab, overrides, warm_language or language)
        # transformers 5 re-initialises only the head here and leaves the adapter layers as loaded: the base's own
        # (MMS: its default language's), unless the base has an adapter file for the warm-start language.
        model.init_adapter_layers()
        warm_start_adapters(model, base, warm_language or language)
        warm_start_head(model, base, vocab, warm_language or language)
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
        return Wav2Vec2ForCTC.from_pretrained(
            model_dir, target_lang=language, use_safetensors=True, trust_remote_code=False
        )
