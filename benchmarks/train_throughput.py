"""Training throughput: asrflow's loop versus a transformers `Trainer` set up as the transformers CTC example does it.

Same tiny MMS-shaped model (random init, the demo base's size), same synthetic data, same batch budget, same threads,
measured side by side in one run. Prints seconds of audio trained per second for each and their ratio, per method:

- full:   all transformer weights train, feature encoder frozen (the example's --freeze_feature_encoder). asrflow
          trains on cached feature-encoder outputs; the Trainer recomputes them every step.
- frozen: only the CTC head trains on cached encoder outputs; the Trainer baseline freezes the base model
          (`freeze_base_model()`) and runs the whole forward pass every step.

asrflow's first epoch also fills its feature cache; steady-state epochs are reported separately, and the first-epoch
ratio too. Run: `python benchmarks/train_throughput.py [--epochs 3] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments, Wav2Vec2ForCTC

from asrflow import config, methods
from asrflow.audio import load_mono
from asrflow.batching import bucket_batches, load_clips
from asrflow.checkpoint import DESCRIPTION, describe, open_base
from asrflow.corpus.audiofolder import import_audiofolder
from asrflow.corpus.demo import synthesise_demo
from asrflow.io import write_json
from asrflow.loop import LoopConfig, fit
from asrflow.model import make_processor
from asrflow.pretrain import demo_config
from asrflow.vocab import build_vocab

TINY = {
    "hidden_size": 192,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 768,
    "conv_dim": 96,
    "adapter_attn_dim": 16,
}
TRAINER_BATCH = 8


def make_data(root: Path) -> tuple[list, object, Path]:
    """A synthetic corpus (6 speakers × 15 utterances) and a randomly initialised base saved like the demo's."""
    cfg = {
        "seed": 3,
        "language": "sw",
        "speakers": 6,
        "utterances_per_speaker": 15,
        "source_languages": ["fi"],
        "source_speakers": 1,
        "source_utterances_per_speaker": 1,
        "keep_stress": False,
    }
    synthesise_demo(cfg, root / "target", root / "source")
    utterances = import_audiofolder(root / "target")
    vocab = build_vocab([u.text for u in utterances])
    processor = make_processor(vocab)
    base = root / "base"
    torch.manual_seed(0)
    Wav2Vec2ForCTC(demo_config(TINY, len(vocab))).save_pretrained(base)
    processor.save_pretrained(base)
    write_json(base / DESCRIPTION, {"path": None, **describe(base)})  # as the pretrain stage describes a base
    clips = load_clips(
        utterances, lambda t: processor.tokenizer(t).input_ids, processor.feature_extractor, reader=load_mono
    )
    return clips, processor, base


def batch_seconds_for(clips: list, per_batch: int) -> float:
    """An asrflow budget whose batches hold `per_batch` clips on average, like the Trainer's fixed batch size."""
    lengths = [c.n_samples for c in clips]
    for seconds in np.arange(2.0, 120.0, 0.5):
        batches = bucket_batches(lengths, float(seconds), random.Random(0))
        if len(clips) / len(batches) >= per_batch:
            return float(seconds)
    raise ValueError("clips too long for the batch size")


def audio_seconds(clips: list) -> float:
    return sum(c.n_samples for c in clips) / 16000


def asrflow_epochs(method: str, clips: list, processor, base: Path, epochs: int, batch_seconds: float) -> list[float]:
    """Seconds of audio per second for each epoch of asrflow's loop (dev evaluation excluded)."""
    described = open_base(base)
    settings = config.defaults(f"train.{method}")  # frozen: the head alone (train_top_layers 0)
    model = methods.get(method).prepare(
        described, processor.tokenizer.get_vocab(), {"mask_time_prob": 0.0}, settings, "sw"
    )
    task = methods.get(method).task(model, processor, settings, described)
    durations: list[float] = []
    original = task.transcribe
    task.transcribe = lambda dev, seconds: []  # dev scoring is not training throughput
    loop = LoopConfig(
        lr=1e-4, max_epochs=epochs, patience=epochs, batch_seconds=batch_seconds, warmup_steps=10, grad_clip=1.0, seed=0
    )
    train_epoch = sys.modules["asrflow.loop"]._train_epoch

    def timed_epoch(*args, **kwargs):
        start = time.perf_counter()
        result = train_epoch(*args, **kwargs)
        durations.append(time.perf_counter() - start)
        return result

    sys.modules["asrflow.loop"]._train_epoch = timed_epoch
    prepare_start = time.perf_counter()
    try:
        fit(task, clips, [], loop, lambda m: None, curve_path=None, label=f"asrflow {method}")
    finally:
        sys.modules["asrflow.loop"]._train_epoch = train_epoch
        task.transcribe = original
    durations[0] = time.perf_counter() - prepare_start - sum(durations[1:])  # the first epoch pays for the cache
    return [audio_seconds(clips) / d for d in durations]


class EpochTimer:
    """Trainer callback: wall time of every epoch."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self.start)

    def __getattr__(self, name):  # every other TrainerCallback event: nothing to do
        return lambda *args, **kwargs: None


class CTCPaddingCollator:
    """The transformers CTC example's DataCollatorCTCWithPadding: pad inputs and labels, labels padded with -100."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        inputs = self.processor.feature_extractor.pad(
            [{"input_values": f["input_values"]} for f in features], padding=True, return_tensors="pt"
        )
        labels = self.processor.tokenizer.pad(
            {"input_ids": [f["labels"] for f in features]}, padding=True, return_tensors="pt"
        )
        inputs["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        return inputs


def trainer_epochs(method: str, clips: list, processor, base: Path, epochs: int, out: Path) -> list[float]:
    model = Wav2Vec2ForCTC.from_pretrained(base, mask_time_prob=0.0, ctc_loss_reduction="mean", pad_token_id=0)
    model.freeze_feature_encoder()
    if method == "frozen":
        model.freeze_base_model()
    dataset = Dataset.from_dict(
        {
            "input_values": [c.inputs.tolist() for c in clips],
            "labels": [c.labels for c in clips],
            "input_length": [c.n_samples for c in clips],
        }
    )
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=TRAINER_BATCH,
        train_sampling_strategy="group_by_length",  # the example's --group_by_length
        length_column_name="input_length",
        learning_rate=1e-4,
        num_train_epochs=epochs,
        warmup_steps=10,
        max_grad_norm=1.0,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
        remove_unused_columns=False,
    )  # keep input_length for the length-grouped sampler
    timer = EpochTimer()
    Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=CTCPaddingCollator(processor), callbacks=[timer]
    ).train()
    return [audio_seconds(clips) / d for d in timer.durations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ASRFLOW_CACHE"] = str(Path(tmp) / "cache")
        clips, processor, base = make_data(Path(tmp))
        batch_seconds = batch_seconds_for(clips, TRAINER_BATCH)
        print(
            f"data: {len(clips)} clips, {audio_seconds(clips) / 60:.1f} min; Trainer batch {TRAINER_BATCH} clips, "
            f"asrflow batch budget {batch_seconds} s; {args.threads} threads; {args.epochs} epochs each"
        )
        print(
            f"{'method':8} {'asrflow s/s (1st, later median)':>34} {'Trainer s/s (median)':>22} "
            f"{'ratio later':>12} {'ratio 1st':>10}"
        )
        for method in ("full", "frozen"):
            ours = asrflow_epochs(method, clips, processor, base, args.epochs, batch_seconds)
            theirs = trainer_epochs(method, clips, processor, base, args.epochs, Path(tmp) / f"trainer-{method}")
            later, baseline = statistics.median(ours[1:] or ours), statistics.median(theirs)
            print(
                f"{method:8} {ours[0]:16.1f} {later:17.1f} {baseline:22.1f} {later / baseline:11.2f}x "
                f"{ours[0] / baseline:9.2f}x"
            )


if __name__ == "__main__":
    main()
