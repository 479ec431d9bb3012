"""Model helpers shared by pre-training, training and evaluation: processor, device, precision, batched inference
(clip_logits: every task's and decoder's), greedy CTC decoding.

Everything here uses the transformers API as documented (Auto classes, Wav2Vec2CTCTokenizer, the base's own feature
extractor); nothing is loaded from pickle or with a model's own code (trust_remote_code=False).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from transformers import (
    FeatureExtractionMixin,
    ProcessorMixin,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertProcessor,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

from asrflow.batching import Clip, InputSpec, collate, for_model, sequential_batches
from asrflow.vocab import PAD, UNK, WORD_DELIMITER

# Autocast dtypes; weights stay float32 (the master copy the optimiser updates) and the CTC loss is computed in
# float32 by transformers' own heads (log_softmax(dtype=float32)).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# A clip as a task holds it: asrflow.batching.Clip, or asrflow.features.FeatureClip (cached features); both carry the
# audio length (`n_samples`) that batch budgets count.
AnyClip = TypeVar("AnyClip")


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """What the demo base is pre-trained with: normalised 16 kHz samples and an attention mask (layer-norm layout)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


def make_processor(vocab: dict[str, int], feature_extractor: FeatureExtractionMixin | None = None) -> ProcessorMixin:
    """A CTC processor whose token ids are exactly `vocab` (no bos/eos added behind our back), with the base's own
    feature extractor (default: the demo base's), so that AutoProcessor and pipeline() prepare audio as training
    did."""
    feature_extractor = feature_extractor or default_feature_extractor()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token=UNK,
            pad_token=PAD,
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,
            eos_token=None,
            do_lower_case=False,
        )
    # Wav2Vec2-BERT's processor pairs its log-mel extractor with the same CTC tokenizer.
    processor_class = (
        Wav2Vec2BertProcessor if isinstance(feature_extractor, SeamlessM4TFeatureExtractor) else Wav2Vec2Processor
    )
    return processor_class(feature_extractor=feature_extractor, tokenizer=tokenizer)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes (`train.precision`): autocast to bf16/fp16, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def compute_device() -> torch.device:
    """Where models train and infer: this process's GPU when CUDA is there (under torchrun, its LOCAL_RANK's),
    else the CPU. Not a param: it changes the speed, not what is computed (beyond floating-point order)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """Where `model`'s weights are (also for a peft-wrapped model)."""
    return next(model.parameters()).device


def on_model_device(tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A batch moved to wherever `model`'s weights are (a no-op on the CPU)."""
    device = model_device(model)
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def output_lengths(model: torch.nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """Frames the CTC head emits for each (unpadded) input."""
    return model._get_feat_extract_output_lengths(attention_mask.sum(-1)).long()


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, processor: ProcessorMixin) -> list[str]:
    """Best path per utterance, cut to its own frames (padding frames are not speech)."""
    ids = logits.argmax(-1)
    return processor.batch_decode([row[:n].tolist() for row, n in zip(ids, lengths.tolist())])


def clip_logits(
    model: torch.nn.Module,
    clips: Sequence[AnyClip],
    batch_seconds: float,
    batch_logits: Callable[[list[AnyClip]], tuple[torch.Tensor, torch.Tensor]],
) -> list[torch.Tensor]:
    """Per clip, in clip order, its logits over its own frames (padding frames cut off), computed batch by batch
    (asrflow.batching.sequential_batches) with the model in eval mode and no gradients. `batch_logits` runs the model
    on one batch's clips: (batch, frames, tokens) logits and the frames each clip's own output spans."""
    model.eval()
    logits: list[torch.Tensor] = [torch.empty(0)] * len(clips)
    with torch.inference_mode():
        for batch_ids in sequential_batches([c.n_samples for c in clips], batch_seconds):
            batch, frames = batch_logits([clips[i] for i in batch_ids])
            for index, row, n in zip(batch_ids, batch, frames.tolist()):
                logits[index] = row[:n]
    return logits


def audio_logits(model: torch.nn.Module, spec: InputSpec) -> Callable[[list[Clip]], tuple[torch.Tensor, torch.Tensor]]:
    """clip_logits' `batch_logits` of a model on its own inputs (the padded batch of asrflow.batching.collate)."""

    def run(clips: list[Clip]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = on_model_device(collate(clips, spec), model)
        return model(**for_model(batch, spec, labels=False)).logits, output_lengths(model, batch["attention_mask"])

    return run


def greedy_texts(logits: Sequence[torch.Tensor], processor: ProcessorMixin) -> list[str]:
    """Best-path transcripts of per-clip logits, each over its own frames (clip_logits')."""
    return [greedy_decode(row[None], torch.tensor([len(row)]), processor)[0] for row in logits]


def transcribe_clips(
    model: torch.nn.Module, clips: list[Clip], processor: ProcessorMixin, batch_seconds: float
) -> list[str]:
    """Greedy transcripts of `clips`, in their order."""
    spec = InputSpec.of(processor.feature_extractor)
    return greedy_texts(clip_logits(model, clips, batch_seconds, audio_logits(model, spec)), processor)


class AudioTask:
    """CTC on the base's own inputs through the whole model: how every method trains, except on cached features."""

    def __init__(self, model: torch.nn.Module, processor: ProcessorMixin) -> None:
        self.model, self.processor = model, processor
        self.spec = InputSpec.of(processor.feature_extractor)

    def prepare(self, clips: list[Clip]) -> list[Clip]:
        return clips

    def loss(self, clips: list[Clip]) -> torch.Tensor:
        return self.model(**for_model(on_model_device(collate(clips, self.spec), self.model), self.spec)).loss

    def transcribe(self, clips: list[Clip], batch_seconds: float) -> list[str]:
        return transcribe_clips(self.model, clips, self.processor, batch_seconds)

    def train(self) -> None:
        self.model.train()
