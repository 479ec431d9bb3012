"""LoRA through peft: low-rank updates on the chosen attention/feed-forward projections, plus a fully trained CTC
head (`modules_to_save`). Saved twice: the peft adapter in `peft/` (load with `PeftModel.from_pretrained` on the base
with this vocabulary size) and, at the top level, the merged model (`merge_and_unload`) that plain transformers and
`pipeline()` load."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import SAFETENSORS_WEIGHTS_NAME

from asrflow.checkpoint import Base
from asrflow.io import read_json
from asrflow.methods.base import ConvFrozenMethod, load_with_new_head, require_safetensors

PEFT_DIR = "peft"
# `target_modules` are named as in wav2vec2/HuBERT/WavLM/data2vec-audio; Wav2Vec2-BERT's conformer names its
# attention projections differently (its feed-forward layers share the names).
MODULE_NAMES = {
    "wav2vec2-bert": {"q_proj": "linear_q", "k_proj": "linear_k", "v_proj": "linear_v", "out_proj": "linear_out"}
}


def target_modules(cfg: dict, model_type: str) -> list[str]:
    names = MODULE_NAMES.get(model_type, {})
    return [names.get(m, m) for m in cfg["target_modules"]]


class LoRA(ConvFrozenMethod):
    name = "lora"

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
        lora = LoraConfig(
            r=cfg["r"],
            lora_alpha=cfg["alpha"],
            lora_dropout=cfg["dropout"],
            target_modules=target_modules(cfg, base.model_type),
            modules_to_save=["lm_head"],
        )
        return get_peft_model(model, lora)

    def save(self, model: torch.nn.Module, out_dir: Path, language: str) -> None:
        out_dir = Path(out_dir)
        # A CTC model has no input embeddings; peft's "auto" check would look for them (peft#1569).
        model.save_pretrained(out_dir / PEFT_DIR, safe_serialization=True, save_embedding_layers=False)
        # Merge a copy: the live model keeps training with its adapters separate.
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(out_dir, safe_serialization=True)


def load_peft(base: Base, model_dir: Path, language: str) -> PeftModel:
    """The unmerged peft model: the base with this fold's vocabulary size, then the saved adapter."""
    model = load_with_new_head(base, read_json(Path(model_dir) / "vocab.json"), {}, language)
    require_safetensors(Path(model_dir) / PEFT_DIR / SAFETENSORS_WEIGHTS_NAME)  # peft would unpickle a .bin instead
    return PeftModel.from_pretrained(model, Path(model_dir) / PEFT_DIR)
