"""Frozen encoder: the pre-trained encoder stays fixed; only the CTC head trains (optionally with the top
`train_top_layers` transformer layers and the final layer norm).

Everything below the trainable part is computed once per utterance and cached (asrflow.features), so an epoch costs
only the head. SpecAugment-style time masking is applied to the cached features while training. The artefact is
still a standard Wav2Vec2ForCTC.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from asrflow.batching import Clip, sequential_batches
from asrflow.features import FeatureClip, cache_dir, cached_features, pad_features, pad_labels
from asrflow.methods.full import AudioMethod, load_with_new_head
from asrflow.model import greedy_decode, model_device


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the cut point is reached."""


def top_layers(model: Wav2Vec2ForCTC, n_top: int) -> list[torch.nn.Module]:
    layers = list(model.wav2vec2.encoder.layers)
    return layers[len(layers) - n_top:] if n_top else []


class FrozenEncoder(AudioMethod):
    name = "frozen"

    def prepare(self, base: str, vocab: dict[str, int], overrides: dict, cfg: dict, language: str) -> torch.nn.Module:
        model = load_with_new_head(base, vocab, overrides)
        model.freeze_base_model()
        n_top = cfg.get("train_top_layers", 0)
        trainable = top_layers(model, n_top) + ([model.wav2vec2.encoder.layer_norm] if n_top else [])
        for module in trainable:
            module.requires_grad_(True)
        return model

    def task(self, model: torch.nn.Module, processor: Wav2Vec2Processor, cfg: dict) -> "TopLayersTask":
        return TopLayersTask(model, processor, cfg.get("train_top_layers", 0))


class TopLayersTask:
    """Trains the top of a Wav2Vec2ForCTC on cached outputs of its frozen part."""

    def __init__(self, model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, n_top: int) -> None:
        self.model, self.processor, self.n_top = model, processor, n_top
        self.directory = cache_dir(Path(model.config._name_or_path), f"top{n_top}")

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
                audio = torch.from_numpy(clip.samples)[None].to(model_device(self.model))
                captured["features"] = self.model.wav2vec2(audio).last_hidden_state
        except _Captured:
            pass
        finally:
            if hook is not None:
                hook.remove()
        return captured["features"][0].cpu().clone()

    def prepare(self, clips: list[Clip]) -> list[FeatureClip]:
        return cached_features(clips, self.directory, self._compute)

    def _mask_time(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        if not config.mask_time_prob:
            return features
        masked = _compute_mask_indices(tuple(features.shape[:2]), mask_prob=config.mask_time_prob,
                                       mask_length=config.mask_time_length, attention_mask=mask,
                                       min_masks=config.mask_time_min_masks)
        return features.masked_fill(torch.from_numpy(masked).to(features.device)[..., None], 0.0)

    def _logits(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = features
        if self.n_top:
            attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
            for layer in top_layers(self.model, self.n_top):
                hidden = layer(hidden, attention_mask=attention)
            if self.model.config.do_stable_layer_norm:
                hidden = self.model.wav2vec2.encoder.layer_norm(hidden)
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
        return self.model.loss_function(logits=logits, labels=pad_labels(clips).to(mask.device),
                                        logit_lengths=mask.sum(-1),
                                        blank_token_id=config.pad_token_id, reduction=config.ctc_loss_reduction,
                                        zero_infinity=config.ctc_zero_infinity)

    def transcribe(self, clips: list[FeatureClip], batch_seconds: float) -> list[str]:
        self.model.eval()
        hypotheses = [""] * len(clips)
        with torch.inference_mode():
            for batch_ids in sequential_batches([c.n_samples for c in clips], batch_seconds):
                features, mask = self._padded([clips[i] for i in batch_ids])
                for index, text in zip(batch_ids, greedy_decode(self._logits(features, mask), mask.sum(-1),
                                                                self.processor)):
                    hypotheses[index] = text
        return hypotheses

    def train(self) -> None:
        self.model.train()
