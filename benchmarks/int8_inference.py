"""int8 versus float32 CPU inference, side by side in one run: model size, real-time factor and CER.

    python benchmarks/int8_inference.py                                   # a demo run's full model, fold 0
    python benchmarks/int8_inference.py --model DIR --manifest TEST.csv   # any model folder and test manifest
    python benchmarks/int8_inference.py --shape 768x12                    # + a random MMS-shaped model (speed only)

Both variants transcribe the same clips (greedy CTC, batches of `--batch-seconds`), alternating, `--repeats` times
after one warm-up pass each; times are medians. RTF = seconds of computing per second of audio (lower is faster).
int8 is asrflow.inference.quantize_int8: PyTorch's dynamic quantisation of every Linear layer.

`--shape HIDDENxLAYERS` adds the trained model's architecture scaled to that size with random weights (attention heads
of 64, feed-forward 4 × hidden, 512-channel feature encoder, as wav2vec2-base/MMS): its CER means nothing, but its
speed is that of a real checkpoint of the size, and "int8 vs fp32" shows how far quantisation moves its outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, load_clips
from asrflow.inference import load_for_inference, quantize_int8, serialized_bytes
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


def timed_transcription(
    model: torch.nn.Module, clips: list[Clip], processor, batch_seconds: float
) -> tuple[float, list[str]]:
    started = time.perf_counter()
    hypotheses = transcribe_clips(model, clips, processor, batch_seconds)
    return time.perf_counter() - started, hypotheses


def compare(fp32: torch.nn.Module, processor, clips: list[Clip], repeats: int, batch_seconds: float) -> dict:
    """Size, median time and transcripts of `fp32` and of its int8 copy, measured alternately on the same clips."""
    variants = {"fp32": fp32, "int8": quantize_int8(fp32)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    hypotheses = {
        name: timed_transcription(model, clips, processor, batch_seconds)[1]  # warm-up
        for name, model in variants.items()
    }
    for _ in range(repeats):
        for name, model in variants.items():
            times[name].append(timed_transcription(model, clips, processor, batch_seconds)[0])
    return {
        name: {
            "bytes": serialized_bytes(model),
            "seconds": statistics.median(times[name]),
            "hypotheses": hypotheses[name],
        }
        for name, model in variants.items()
    }


def report(title: str, result: dict, clips: list[Clip], with_cer: bool) -> None:
    audio = sum(c.n_samples for c in clips) / TARGET_RATE
    references = [c.text for c in clips]
    print(f"\n{title}: {len(clips)} clips, {audio:.1f} s of audio")
    print(f"{'':6}{'size MB':>10}{'RTF':>10}{'CER %':>10}")
    for name, row in result.items():
        cer = f"{100 * error_rates(references, row['hypotheses'])[0]:.2f}" if with_cer else "–"
        print(f"{name:6}{row['bytes'] / 1e6:>10.2f}{row['seconds'] / audio:>10.4f}{cer:>10}")
    fp32, int8 = result["fp32"], result["int8"]
    line = (
        f"int8 vs fp32: {fp32['seconds'] / int8['seconds']:.2f}× faster, {int8['bytes'] / fp32['bytes']:.2f}× the "
        f"size, transcripts differ by CER {100 * error_rates(fp32['hypotheses'], int8['hypotheses'])[0]:.2f} %"
    )
    if with_cer:
        delta = error_rates(references, int8["hypotheses"])[0] - error_rates(references, fp32["hypotheses"])[0]
        line += f", CER {100 * delta:+.2f} points"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help=f"model folder (default {DEMO_MODEL})")
    parser.add_argument("--manifest", type=Path, default=DEMO_MANIFEST, help=f"test clips (default {DEMO_MANIFEST})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-seconds", type=float, default=60.0)
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
    torch.set_num_threads(args.threads)
    model, processor = load_for_inference(args.model)
    clips = load_clips(read_manifest(args.manifest), lambda text: [], processor.feature_extractor)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), quantized engine {torch.backends.quantized.engine}, "
        f"median of {args.repeats}"
    )
    report(f"{args.model}", compare(model, processor, clips, args.repeats, args.batch_seconds), clips, True)
    for shape in args.shape:
        random_model = mms_shaped(model.config, shape)
        report(
            f"random {shape} model ({sum(p.numel() for p in random_model.parameters()) / 1e6:.0f} M parameters)",
            compare(random_model, processor, clips, args.repeats, args.batch_seconds),
            clips,
            False,
        )


if __name__ == "__main__":
    main()
