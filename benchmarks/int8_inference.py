"""int8 versus float32 CPU inference, side by side in one run: model size, real-time factor and CER.

    python benchmarks/int8_inference.py                                   # a demo run's full model, fold 0
    python benchmarks/int8_inference.py --model DIR --manifest TEST.csv   # any model folder and test manifest
    python benchmarks/int8_inference.py --base --seconds 10 --seconds 30  # + a random wav2vec2-base (speed only)
    python benchmarks/int8_inference.py --shape 768x12                    # + a random MMS-shaped model (speed only)

Variants, each transcribing the same clips (greedy CTC, batches of `--batch-seconds`), alternating, `--repeats` times
after one warm-up pass each; times are medians. RTF = seconds of computing per second of audio (lower is faster).

- fp32: the float32 PyTorch model;
- torch-int8: asrflow.inference.quantize_int8, PyTorch's dynamic quantisation of every Linear layer (the fallback);
- onnx-fp32: the same model exported to ONNX and run by ONNX Runtime (its graph fusions, no quantisation);
- onnx-int8: asrflow's int8 path (asrflow.inference.QUANTISATION: ONNX Runtime dynamic quantisation of the MatMuls,
  int8 weights), what `asrflow transcribe --int8` runs;
- with `--candidates`: onnx-int8 with unsigned weights (u8), per-channel weights (pc), and the convolutions
  quantised too (conv).

PyTorch and ONNX Runtime both get `--threads` threads (torch.set_num_threads, intra_op_num_threads).

`--base` adds a random model of transformers' Wav2Vec2Config defaults (wav2vec2-base: hidden 768, 12 layers,
group-norm feature encoder, 95 M parameters), timed on one stretch of `--seconds` of the test clips' speech
(repeatable); `--shape HIDDENxLAYERS` the trained model's layout scaled to that size (attention heads of 64,
feed-forward 4 × hidden, 512-channel feature encoder, as MMS). Random weights: their CER means nothing, their speed is
a real checkpoint's, and "vs fp32" shows how far each variant moves the outputs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, InputSpec, load_clips
from asrflow.inference import (
    QUANTISATION,
    build_int8_onnx,
    export_onnx,
    load_for_inference,
    quantize_int8,
    serialized_bytes,
    with_onnx_forward,
)
from asrflow.manifest import read_manifest
from asrflow.metrics import error_rates
from asrflow.model import transcribe_clips

DEMO_MODEL = Path("results/models/full/fold0")
DEMO_MANIFEST = Path("data/processed/folds/fold0/test.csv")


def mms_shaped(config: Wav2Vec2Config, shape: str) -> Wav2Vec2ForCTC:
    """A randomly initialised model of `config`'s layout with `shape` ("768x12": hidden size × layers)."""
    hidden, layers = (int(n) for n in shape.lower().split("x"))
    scaled = Wav2Vec2Config.from_dict(
        {
            **config.to_dict(),
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden // 64,
            "intermediate_size": 4 * hidden,
            "conv_dim": [512] * len(config.conv_dim),
        }
    )
    torch.manual_seed(0)
    return Wav2Vec2ForCTC(scaled).eval()


def wav2vec2_base() -> Wav2Vec2ForCTC:
    """A random model of transformers' Wav2Vec2Config defaults: wav2vec2-base's architecture."""
    torch.manual_seed(0)
    return Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=40)).eval()


def stretch(clips: list[Clip], seconds: float, feature_extractor) -> list[Clip]:
    """One clip of the test clips' speech, end to end, cut to `seconds` (the test set repeated if too short)."""
    samples = np.concatenate([c.inputs for c in clips])
    samples = np.tile(samples, int(np.ceil(seconds * TARGET_RATE / len(samples))))[: int(seconds * TARGET_RATE)]
    inputs = feature_extractor(samples, sampling_rate=TARGET_RATE)["input_values"][0]
    return [Clip(f"{seconds:g}s", "-", "", np.asarray(inputs, dtype=np.float32), [], len(samples))]


def onnx_variant(model: torch.nn.Module, spec: InputSpec, folder: Path, name: str, quantisation: dict | None):
    """(model running the ONNX graph, graph bytes): `quantisation` None = float32, else quantize_dynamic's settings."""
    graph = folder / f"{name}.onnx"
    if quantisation is None:
        export_onnx(model, spec, graph)
    else:
        build_int8_onnx(model, spec, graph, quantisation)
    return with_onnx_forward(copy.deepcopy(model), graph, spec), graph.stat().st_size


CANDIDATES = {
    "onnx-int8-u8": {**QUANTISATION, "weight_type": "QUInt8"},
    "onnx-int8-pc": {**QUANTISATION, "per_channel": True},
    "onnx-int8-conv": {**QUANTISATION, "op_types_to_quantize": ["MatMul", "Conv"]},
}


def variants(model: torch.nn.Module, spec: InputSpec, folder: Path, candidates: bool) -> dict[str, tuple]:
    """name: (model, bytes) of every variant compared."""
    found = {"fp32": (model, serialized_bytes(model))}
    int8 = quantize_int8(model)
    found["torch-int8"] = (int8, serialized_bytes(int8))
    found["onnx-fp32"] = onnx_variant(model, spec, folder, "onnx-fp32", None)
    found["onnx-int8"] = onnx_variant(model, spec, folder, "onnx-int8", QUANTISATION)
    for name, quantisation in CANDIDATES.items() if candidates else ():
        found[name] = onnx_variant(model, spec, folder, name, quantisation)
    return found


def timed(run: Callable[[], list[str]]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    hypotheses = run()
    return time.perf_counter() - started, hypotheses


def compare(found: dict[str, tuple], processor, clips: list[Clip], repeats: int, batch_seconds: float) -> dict:
    """Size, median time and transcripts of every variant, measured alternately on the same clips."""
    runs = {
        name: (lambda m=model: transcribe_clips(m, clips, processor, batch_seconds))
        for name, (model, _) in found.items()
    }
    hypotheses = {name: timed(run)[1] for name, run in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run)[0])
    return {
        name: {"bytes": size, "seconds": statistics.median(times[name]), "hypotheses": hypotheses[name]}
        for name, (_, size) in found.items()
    }


def report(title: str, result: dict, clips: list[Clip], with_cer: bool) -> None:
    audio = sum(c.n_samples for c in clips) / TARGET_RATE
    references = [c.text for c in clips]
    fp32 = result["fp32"]
    print(f"\n{title}: {len(clips)} clip(s), {audio:.1f} s of audio")
    print(f"{'':16}{'size MB':>10}{'RTF':>10}{'vs fp32':>10}{'CER %':>10}{'Δ CER':>10}{'≠ fp32 %':>10}")
    for name, row in result.items():
        cer = error_rates(references, row["hypotheses"])[0] if with_cer else None
        delta = cer - error_rates(references, fp32["hypotheses"])[0] if with_cer else None
        moved = 100 * error_rates(fp32["hypotheses"], row["hypotheses"])[0] if any(fp32["hypotheses"]) else 0.0
        print(
            f"{name:16}{row['bytes'] / 1e6:>10.2f}{row['seconds'] / audio:>10.4f}"
            f"{fp32['seconds'] / row['seconds']:>9.2f}×"
            f"{(f'{100 * cer:.2f}' if with_cer else '–'):>10}{(f'{100 * delta:+.2f}' if with_cer else '–'):>10}"
            f"{moved:>10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help=f"model folder (default {DEMO_MODEL})")
    parser.add_argument("--manifest", type=Path, default=DEMO_MANIFEST, help=f"test clips (default {DEMO_MANIFEST})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--candidates", action="store_true", help="also time the other ONNX quantisation settings")
    parser.add_argument(
        "--base", action="store_true", help="also time a random wav2vec2-base (Wav2Vec2Config defaults)"
    )
    parser.add_argument(
        "--seconds", type=float, action="append", default=[], help="--base's audio length (repeatable; default 10)"
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="HIDDENxLAYERS",
        help="also time a random model of this size, e.g. 768x12 (repeatable)",
    )
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        parser.error(f"{args.model}: no model there; run `make demo` first, or pass --model and --manifest")
    torch.set_num_threads(args.threads)  # ONNX Runtime sessions take the same count (asrflow.inference)
    model, processor = load_for_inference(args.model)
    spec = InputSpec.of(processor.feature_extractor)
    clips = load_clips(read_manifest(args.manifest), lambda text: [], processor.feature_extractor)
    print(
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, {args.threads} thread(s), "
        f"median of {args.repeats}, alternating"
    )
    with tempfile.TemporaryDirectory(prefix="int8-benchmark-") as tmp:
        found = variants(model, spec, Path(tmp), args.candidates)
        report(f"{args.model}", compare(found, processor, clips, args.repeats, args.batch_seconds), clips, True)
        if args.base:
            base = wav2vec2_base()
            # wav2vec2-base takes no attention mask (group-norm feature encoder): its own convention.
            base_spec = InputSpec(spec.name, spec.padding_value, use_mask=False)
            found = variants(base, base_spec, Path(tmp), args.candidates)
            for seconds in args.seconds or [10.0]:
                audio = stretch(clips, seconds, processor.feature_extractor)
                report(
                    f"random wav2vec2-base (Wav2Vec2Config defaults, {count(base)} M parameters)",
                    compare(found, processor, audio, args.repeats, args.batch_seconds),
                    audio,
                    False,
                )
        for shape in args.shape:
            shaped = mms_shaped(model.config, shape)
            report(
                f"random {shape} model ({count(shaped)} M parameters)",
                compare(
                    variants(shaped, spec, Path(tmp), args.candidates),
                    processor,
                    clips,
                    args.repeats,
                    args.batch_seconds,
                ),
                clips,
                False,
            )


def count(model: torch.nn.Module) -> int:
    return round(sum(p.numel() for p in model.parameters()) / 1e6)


if __name__ == "__main__":
    main()
