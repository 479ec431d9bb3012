"""Frozen encoder: the pre-trained encoder stays fixed; only the CTC head trains (optionally with the top
`train_top_layers` transformer layers and the final layer norm).

Everything below the trainable part is computed once per utterance and cached (asrflow.features), so an epoch costs
only the head. SpecAugment-style time masking is applied to the cached features while training. The artefact is
still a standard *ForCTC model of the base's family.

Training top layers re-runs them on cached hidden states, which works where a layer needs nothing but the hidden
states and the attention mask (wav2vec2, HuBERT, data2vec-audio). WavLM's layers also take a relative position bias
that only its first layer computes, and Wav2Vec2-BERT's conformer layers relative position embeddings: on those the
method caches the whole encoder and trains the head (`train_top_layers: 0`).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, ProcessorMixin
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from asrflow.batching import Clip, InputSpec, pad_labels
from asrflow.checkpoint import Base
from asrflow.features import FeatureClip, cache_dir, cached_features, encoder_of, pad_features
from asrflow.methods.base import AudioMethod, load_with_new_head
from asrflow.model import clip_logits, greedy_texts, model_device

# Families whose encoder layers take (hidden_states, attention_mask) only: their top layers can run on cached input.
TOP_LAYER_FAMILIES = ("wav2vec2", "hubert", "data2vec-audio")


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the cut point is reached."""


def top_layers(model: PreTrainedModel, n_top: int) -> list[torch.nn.Module]:
    layers = list(encoder_of(model).encoder.layers)
    return layers[len(layers) - n_top :] if n_top else []


def stable_layer_norm(config) -> bool:
    """Whether the encoder's final layer norm comes after its layers (MMS/XLS-R/large) rather than before them."""
    return bool(getattr(config, "do_stable_layer_norm", False))


def frozen_part(n_top: int, n_layers: int, stable: bool):
    """Which base tensors the cached part reads: all but the head, the top `n_top` layers and (stable layer norm)
    the final layer norm. Pre-training heads are counted too: the key may change more often, never too seldom."""
    trained = tuple(f"encoder.layers.{i}." for i in range(n_layers - n_top, n_layers))
    trained += ("encoder.layer_norm.",) if n_top and stable else ()

    def uses(name: str) -> bool:
        return not name.startswith(("lm_head.", *trained))

    return uses


class FrozenEncoder(AudioMethod):
    name = "frozen"

    def unavailable(self, base: Base, cfg: dict) -> str:
        n_top = cfg["train_top_layers"]
        if n_top and base.model_type not in TOP_LAYER_FAMILIES:
            return (
                f"train.frozen.train_top_layers is {n_top}, but a {base.model_type} encoder's "
                f"layers cannot run on cached hidden states alone (they take position terms only the first layer "
                f"or the encoder computes); set train.frozen.train_top_layers: 0 to train the head on the "
                f"cached encoder output"
            )
        if n_top > base.info["num_hidden_layers"]:
            return f"train.frozen.train_top_layers is {n_top}, but the base has {base.info['num_hidden_layers']} layers"
        return ""

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
        # What transformers' freeze_base_model does, for every family (data2vec-audio and Wav2Vec2-BERT lack it).
        encoder_of(model).requires_grad_(False)
        n_top = cfg["train_top_layers"]
        trainable = top_layers(model, n_top) + (
            [encoder_of(model).encoder.layer_norm] if n_top and stable_layer_norm(model.config) else []
        )
        for module in trainable:
            module.requires_grad_(True)
        return model

    def task(self, model: torch.nn.Module, processor: ProcessorMixin, cfg: dict, base: Base) -> TopLayersTask:
        return TopLayersTask(model, processor, cfg["train_top_layers"], base)


class TopLayersTask:
    """Trains the top of a *ForCTC model on cached outputs of its frozen part."""

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, n_top: int, base: Base) -> None:
        self.model, self.processor, self.n_top = model, processor, n_top
        self.spec = InputSpec.of(processor.feature_extractor)
        self.directory = cache_dir(
            base, f"top{n_top}", frozen_part(n_top, model.config.num_hidden_layers, stable_layer_norm(model.config))
        )

    def _compute(self, clip: Clip) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        cut = top_layers(self.model, self.n_top)[0] if self.n_top else None

        def capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured["features"] = args[0] if args else kwargs["hidden_states"]
            raise _Captured

        hook = cut.register_forward_pre_hook(capture, with_kwargs=True) if cut is not None else None
        self.model.eval()
        try:
            with torch.inference_mode():
                inputs = torch.from_numpy(clip.inputs)[None].to(model_device(self.model))
                captured["features"] = encoder_of(self.model)(**{self.spec.name: inputs}).last_hidden_state
        except _Captured:
            pass
        finally:
            if hook is not None:
                hook.remove()
        return captured["features"][0].float().cpu().clone()

    def prepare(self, clips: list[Clip]) -> list[FeatureClip]:
        return cached_features(clips, self.directory, self._compute)

    def _mask_time(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        if not config.mask_time_prob:
            return features
        masked = _compute_mask_indices(
            tuple(features.shape[:2]),
            mask_prob=config.mask_time_prob,
            mask_length=config.mask_time_length,
            attention_mask=mask,
            min_masks=config.mask_time_min_masks,
        )
        return features.masked_fill(torch.from_numpy(masked).to(features.device)[..., None], 0.0)

    def _logits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = features
        if self.n_top:
            attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
            for layer in top_layers(self.model, self.n_top):
                hidden = layer(hidden, attention_mask=attention)
            if stable_layer_norm(self.model.config):
                hidden = encoder_of(self.model).encoder.layer_norm(hidden)
        return self.model.lm_head(self.model.dropout(hidden))

    def _padded(self, clips: list[FeatureClip]) -> tuple[torch.Tensor, torch.Tensor]:
        """pad_features on the model's device."""
        device = model_device(self.model)
        features, mask = pad_features(clips)
        return features.to(device), mask.to(device)

    def loss(self, clips: list[FeatureClip]) -> torch.Tensor:
        features, mask = self._padded(clips)
        logits = self._logits(self._mask_time(features, mask), mask)
        config = self.model.config
        return self.model.loss_function(
            logits=logits,
            labels=pad_labels([c.labels for c in clips]).to(mask.device),
            logit_lengths=mask.sum(-1),
            blank_token_id=config.pad_token_id,
            reduction=config.ctc_loss_reduction,
            zero_infinity=config.ctc_zero_infinity,
        )

    def _batch_logits(self, clips: list[FeatureClip]) -> tuple[torch.Tensor, torch.Tensor]:
        features, mask = self._padded(clips)
        return self._logits(features, mask), mask.sum(-1)

    def transcribe(self, clips: list[FeatureClip], batch_seconds: float) -> list[str]:
        return greedy_texts(clip_logits(self.model, clips, batch_seconds, self._batch_logits), self.processor)

    def train(self) -> None:
        self.model.train()
