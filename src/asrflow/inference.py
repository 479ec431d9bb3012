"""A trained model folder loaded for CPU inference, in float32 or as int8.

int8 is PyTorch's dynamic quantisation of the Linear layers (`torch.ao.quantization.quantize_dynamic`): their weights
are stored as int8 and activations are quantised on the fly, batch by batch, so it needs no calibration data. The
convolutional feature encoder and the positional convolution are not Linear layers and stay float32. Quantised Linear
layers run on CPU only. PyTorch marks this API deprecated in favour of torchao's `quantize_`, which this project does
not install; it still works in torch 2.13.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCTC, AutoProcessor, PreTrainedModel, ProcessorMixin


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of `model` (Linear layers dynamically quantised); `model` itself stays float32."""
    with warnings.catch_warnings():
        # The deprecation notices repeat on every call and say nothing the module docstring does not.
        warnings.filterwarnings(
            "ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*are deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def serialized_bytes(model: torch.nn.Module) -> int:
    """Size of the model's weights as torch.save writes them (int8 Linear weights are packed, so this is what a
    quantised model occupies on disk and, roughly, in memory)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def load_for_inference(model_dir: str | Path, int8: bool = False) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model and processor of a Hugging Face CTC folder (asrflow's published or released models, or any other)."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForCTC.from_pretrained(model_dir, use_safetensors=True).eval()
    return (quantize_int8(model) if int8 else model), processor
