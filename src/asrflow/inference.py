"""A trained model folder loaded for CPU inference, in float32 or as int8.

int8 (`load_for_inference(..., int8=True)`, `asrflow transcribe --int8`) runs the model in ONNX Runtime: the model is
exported to an ONNX graph (torch.onnx.export) and its MatMul weights quantised to int8 by ONNX Runtime's dynamic
quantisation (weights int8, activations quantised on the fly batch by batch: no calibration data), whose integer
kernels and graph fusions beat PyTorch's own dynamic quantisation of the Linear layers (`quantize_int8`, kept for
comparison and as the fallback when onnxruntime is not installed): at wav2vec2-base size 1.5–2.0× float32 PyTorch's
speed against PyTorch int8's 1.1–1.4× (short of the 2× aimed at). The convolutional feature encoder stays float32
and takes about 45 % of the int8 graph's time (int8 convolutions were slower); docs/measurements.md has the numbers
and the command.

The quantised graph is built once per model and kept in a content-addressed cache (`int8_cache_dir`), never in the
model folder, which is a pipeline output whose hash DVC checks: its name is a digest of the model folder's weights,
config and processor files and of the torch/onnxruntime versions and quantisation settings, so a retrained model or
an upgrade builds a new one and a stale graph cannot be used. Building takes seconds at wav2vec2-base size (export
and quantisation, once); every later load only opens the file.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCTC, AutoProcessor, PreTrainedModel, ProcessorMixin
from transformers.modeling_outputs import CausalLMOutput

from asrflow.batching import InputSpec
from asrflow.checkpoint import files_sha256
from asrflow.io import atomic_path

log = logging.getLogger(__name__)

CACHE_ENV = "ASRFLOW_CACHE"  # as asrflow.features: one variable moves every cache of this project
ONNX_OPSET = 17
# ONNX Runtime dynamic quantisation, as benchmarks/int8_inference.py measured best: only MatMul (the transformer's
# Linear layers; int8 convolutions (ConvInteger) were slower), signed int8 weights, one scale per tensor (per-channel
# scales were slower and no closer to float32).
QUANTISATION = {"op_types_to_quantize": ["MatMul"], "per_channel": False, "weight_type": "QInt8"}
MISSING_ORT = (
    "onnxruntime is not installed, so int8 falls back to PyTorch's dynamic quantisation (about 1.4× float32's speed "
    "at wav2vec2-base size instead of 2×); install it with `pip install 'onnxruntime>=1.20,<2' 'onnx>=1.17,<2'`"
)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of `model` by PyTorch's dynamic quantisation of its Linear layers (`model` itself stays float32).

    The fallback when onnxruntime is missing. The convolutional feature encoder and the positional convolution are
    not Linear layers and stay float32. PyTorch marks this API deprecated in favour of torchao's `quantize_`, whose
    int8 CPU path is no faster here; it still works in torch 2.13."""
    with warnings.catch_warnings():
        # The deprecation notices repeat on every call and say nothing the docstring does not.
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
    """The model and processor of a Hugging Face CTC folder (asrflow's published or released models, or any other).

    With `int8`, the model's forward runs its int8 ONNX graph in ONNX Runtime (CPU; see the module docstring): the
    object stays the transformers model, so the ASR pipeline and asrflow's batching use it unchanged."""
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCTC.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False).eval()
    if not int8:
        return model, processor
    try:
        import onnxruntime  # noqa: F401  (only to know whether the fast path is there)
    except ImportError:
        log.warning(MISSING_ORT)
        return quantize_int8(model), processor
    spec = InputSpec.of(processor.feature_extractor)
    graph = int8_cache_dir() / f"{int8_key(Path(model_dir))}.onnx"
    if not graph.is_file():
        log.info("building the int8 ONNX graph of %s (once) in %s", model_dir, graph)
        build_int8_onnx(model, spec, graph)
    return with_onnx_forward(model, graph, spec), processor


def int8_cache_dir() -> Path:
    """Where int8 graphs are kept: $ASRFLOW_CACHE/int8, else the user's cache ($XDG_CACHE_HOME or ~/.cache)/asrflow/
    int8 (transcribe runs anywhere, not only in a project)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "int8"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asrflow" / "int8"


def int8_key(model_dir: Path) -> str:
    """Digest of everything the int8 graph depends on: the folder's weights, config and processor files (every
    .json and .safetensors file), the exporter's and runtime's versions and the quantisation settings."""
    import onnxruntime

    files = sorted(p for p in model_dir.iterdir() if p.suffix in {".json", ".safetensors"})
    versions = f"torch {torch.__version__} transformers {transformers.__version__} ort {onnxruntime.__version__}"
    settings = f"{versions} opset {ONNX_OPSET} {sorted(QUANTISATION.items())}"
    return hashlib.sha256((files_sha256(files) + settings).encode()).hexdigest()[:32]


def build_int8_onnx(
    model: PreTrainedModel, spec: InputSpec, target: Path, quantisation: dict[str, Any] = QUANTISATION
) -> None:
    """Export `model` (float32) to ONNX and write its int8 quantisation (`quantize_dynamic`'s arguments) to `target`,
    atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {**quantisation, "weight_type": QuantType[quantisation["weight_type"]]}
    with tempfile.TemporaryDirectory(prefix="asrflow-int8-") as tmp, atomic_path(target) as out:
        float_graph = Path(tmp) / "float32.onnx"
        export_onnx(model, spec, float_graph)
        quantize_dynamic(float_graph, out, **settings)


def export_onnx(model: PreTrainedModel, spec: InputSpec, target: Path) -> None:
    """`model`'s forward as an ONNX graph: inputs `spec.name` (+ `attention_mask` where the model takes one),
    output `logits`, batch size and length free.

    The TorchScript-based exporter (dynamo=False): it needs no onnxscript and exports wav2vec2-base in seconds where
    the torch.export-based one took minutes; torch 2.13 marks it deprecated, and this project pins torch < 2.14."""
    names = [spec.name, *(["attention_mask"] if spec.use_mask else [])]
    example = torch.zeros(1, 16000)  # one second of 16 kHz audio: the length is a free axis of the graph
    inputs = (example, torch.ones(1, 16000, dtype=torch.long)) if spec.use_mask else (example,)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        torch.onnx.export(
            OnnxLogits(model, names).eval(),  # the exporter restores the wrapper's mode onto `model` after
            inputs,
            str(target),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{name: {0: "batch", 1: "samples"} for name in names}, "logits": {0: "batch", 1: "frames"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


class OnnxLogits(torch.nn.Module):
    """The model's forward by position, returning only its logits: what the exporter traces."""

    def __init__(self, model: PreTrainedModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def with_onnx_forward(model: PreTrainedModel, graph: Path, spec: InputSpec) -> PreTrainedModel:
    """`model` whose forward runs `graph` in ONNX Runtime on the CPU, with as many threads as torch uses (--threads).
    Its float32 weights are dropped: it keeps its config, output-length arithmetic and every other attribute."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    for parameter in model.parameters():
        parameter.data = torch.empty(0)  # the graph holds the weights; keep the tensors' device for callers
    model.forward = OnnxForward(session, spec)
    return model


class OnnxForward:
    """A transformers CTC model's forward (inputs by keyword, `.logits` out) computed by an ONNX Runtime session."""

    def __init__(self, session: Any, spec: InputSpec) -> None:
        self.session, self.spec = session, spec

    def __call__(
        self, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, **inputs: torch.Tensor
    ) -> CausalLMOutput:
        if labels is not None:
            raise ValueError("the int8 model is for inference: it computes logits, not a loss (drop `labels`)")
        values = inputs.pop(self.spec.name)
        if inputs:
            raise TypeError(f"the int8 model takes {self.spec.name} and attention_mask, not {sorted(inputs)}")
        feeds = {self.spec.name: values.detach().cpu().float().numpy()}
        if self.spec.use_mask:
            mask = torch.ones(values.shape[:2], dtype=torch.long) if attention_mask is None else attention_mask
            feeds["attention_mask"] = mask.detach().cpu().long().numpy()
        return CausalLMOutput(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))
