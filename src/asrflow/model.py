"""Model helpers shared by pre-training, training and evaluation: processor, base resolution, greedy CTC decoding.

Everything here uses the transformers API as documented (Wav2Vec2ForCTC, Wav2Vec2Processor); nothing is loaded from
pickle or with trust_remote_code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

from asrflow.batching import Clip, collate, sequential_batches
from asrflow.folds import PAD, UNK, WORD_DELIMITER
from asrflow.io import read_json

POINTER = "pointer.json"


def make_processor(vocab: dict[str, int]) -> Wav2Vec2Processor:
    """A CTC processor whose token ids are exactly `vocab` (no bos/eos added behind our back)."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token=UNK, pad_token=PAD,
                                         word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None,
                                         do_lower_case=False)
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer)


def resolve_base(base_dir: str | Path) -> str:
    """The directory holding the base checkpoint: the demo base itself, or the local dir its pointer names."""
    base_dir = Path(base_dir)
    pointer = base_dir / POINTER
    if pointer.is_file():
        return str(read_json(pointer)["path"])
    return str(base_dir)


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


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, processor: Wav2Vec2Processor) -> list[str]:
    """Best path per utterance, cut to its own frames (padding frames are not speech)."""
    ids = logits.argmax(-1)
    return processor.batch_decode([row[:n].tolist() for row, n in zip(ids, lengths.tolist())])


def transcribe_clips(model: torch.nn.Module, clips: list[Clip], processor: Wav2Vec2Processor,
                     batch_seconds: float) -> list[str]:
    """Greedy transcripts of `clips`, in their order."""
    model.eval()
    hypotheses: list[str] = [""] * len(clips)
    with torch.inference_mode():
        for batch_ids in sequential_batches([len(c.samples) for c in clips], batch_seconds):
            batch = on_model_device(collate([clips[i] for i in batch_ids]), model)
            logits = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
            texts = greedy_decode(logits, output_lengths(model, batch["attention_mask"]), processor)
            for index, text in zip(batch_ids, texts):
                hypotheses[index] = text
    return hypotheses


class AudioTask:
    """CTC on raw audio through the whole model: how every method trains, except `frozen` (cached features)."""

    def __init__(self, model: torch.nn.Module, processor: Wav2Vec2Processor) -> None:
        self.model, self.processor = model, processor

    def prepare(self, clips: list[Clip]) -> list[Clip]:
        return clips

    def loss(self, clips: list[Clip]) -> torch.Tensor:
        return self.model(**on_model_device(collate(clips), self.model)).loss

    def transcribe(self, clips: list[Clip], batch_seconds: float) -> list[str]:
        return transcribe_clips(self.model, clips, self.processor, batch_seconds)

    def train(self) -> None:
        self.model.train()
