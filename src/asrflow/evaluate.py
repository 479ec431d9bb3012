"""The `evaluate` stage: transcribe a fold's test speakers with the fold's trained model, score CER/WER overall, per
speaker and per utterance, and publish the model folder with a Hugging Face model card.

Output folder (`--out`): metrics.json, hypotheses.csv (utt_id, speaker, reference, hypothesis, cer), speakers.csv.
Published folder (`--publish`): the model files (hard links, no copy) + README.md with a `model-index` block.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import torch
import yaml
from transformers import Wav2Vec2Processor

from asrflow import config, methods
from asrflow.batching import load_clips
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import read_manifest
from asrflow.model import transcribe_clips
from asrflow.train import error_rates

log = logging.getLogger(__name__)


def score(rows: pd.DataFrame) -> dict:
    cer, wer = error_rates(rows["reference"].tolist(), rows["hypothesis"].tolist())
    return {"cer": round(cer, 5), "wer": round(wer, 5), "n_utts": len(rows)}


def per_speaker(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"speaker": s, **score(group)} for s, group in rows.groupby("speaker", sort=True)])


def model_card(info: dict, metrics: dict) -> str:
    name = f"asrflow-{info['method']}-fold{info['fold']}"
    index = [{"name": name, "results": [{
        "task": {"type": "automatic-speech-recognition", "name": "Speech Recognition"},
        "dataset": {"type": "asrflow-corpus", "name": f"{info['language']} corpus, fold {info['fold']} test speakers",
                    "split": "test", "args": {"speakers": metrics["test_speakers"]}},
        "metrics": [{"type": "cer", "value": metrics["cer"], "name": "Test CER (greedy)"},
                    {"type": "wer", "value": metrics["wer"], "name": "Test WER (greedy)"}]}]}]
    header = {"language": [info["language"]], "tags": ["automatic-speech-recognition", "wav2vec2", "asrflow",
                                                        info["method"]],
              "base_model": info["base"], "library_name": "transformers", "pipeline_tag":
              "automatic-speech-recognition", "model-index": index}
    settings = yaml.safe_dump(info["settings"], allow_unicode=True, sort_keys=True)
    return f"""---
{yaml.safe_dump(header, allow_unicode=True, sort_keys=False)}---

# {name}

A wav2vec2 CTC model for `{info['language']}` made by [asrflow](https://example.invalid/asrflow) with the
**{info['method']}** method from `{info['base']}`, on cross-validation fold {info['fold']}.

| | |
|---|---|
| test speakers (never seen in training) | {', '.join(metrics['test_speakers'])} |
| dev speakers (early stopping) | {', '.join(metrics['dev_speakers'])} |
| test CER / WER (greedy) | {metrics['cer']:.4f} / {metrics['wer']:.4f} on {metrics['n_utts']} utterances |
| dev CER at the best epoch | {info['dev_cer']:.4f} (epoch {info['best_epoch']} of {info['epochs_run']}) |
| training audio | {info['train_audio_seconds'] / 60:.1f} min (speed-perturbed copies included) |
| trainable / total parameters | {info['trainable_params']:,} / {info['total_params']:,} |
| training time | {info['train_seconds']:.0f} s |

## Training settings
```yaml
{settings}```

## Limitations
Scores are from one fold of a speaker-independent cross-validation on a small corpus: expect a large spread across
speakers (see the per-fold table in the project's results/summary.md). Transcripts follow the corpus' own
normalisation; characters never seen in this fold's training text cannot be produced.
"""


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def publish(model_dir: Path, publish_dir: Path, card: str) -> None:
    with atomic_path(publish_dir) as tmp:
        tmp.mkdir()
        for item in sorted(model_dir.rglob("*")):
            target = tmp / item.relative_to(model_dir)
            if item.is_dir():
                target.mkdir()
            elif item.name != "README.md":
                _link_or_copy(item, target)
        (tmp / "README.md").write_text(card, encoding="utf-8")


def evaluate(fold_dir: Path, model_dir: Path, method_name: str, eval_cfg: dict, out_dir: Path,
             publish_dir: Path) -> dict:
    info = read_json(model_dir / "training.json")
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    model = methods.get(method_name).load(model_dir, info["language"])
    utterances = read_manifest(fold_dir / "test.csv")
    clips = load_clips(utterances, lambda text: [])
    hypotheses = transcribe_clips(model, clips, processor, eval_cfg["batch_seconds"])
    rows = pd.DataFrame({"utt_id": [u.utt_id for u in utterances], "speaker": [u.speaker for u in utterances],
                         "reference": [u.text for u in utterances], "hypothesis": hypotheses})
    rows["cer"] = [round(error_rates([r], [h])[0], 5) for r, h in zip(rows["reference"], rows["hypothesis"])]
    speakers = read_json(fold_dir.parent / "folds.json")[fold_dir.name]["speakers"]
    metrics = {**{k: info[k] for k in ("method", "fold", "trainable_params", "total_params", "train_seconds",
                                       "train_audio_seconds", "best_epoch", "dev_cer")},
               **score(rows), "test_speakers": speakers["test"], "dev_speakers": speakers["dev"]}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        rows.to_csv(tmp / "hypotheses.csv", index=False)
        per_speaker(rows).to_csv(tmp / "speakers.csv", index=False)
        write_json(tmp / "metrics.json", metrics)
    publish(model_dir, publish_dir, model_card(info, metrics))
    log.info("%s fold %d: test CER %.4f, WER %.4f on %d utterances of %s", method_name, info["fold"], metrics["cer"],
             metrics["wer"], metrics["n_utts"], ", ".join(speakers["test"]))
    return metrics


def run_cli(args: argparse.Namespace) -> None:
    eval_cfg = config.load_stage(args.params, "evaluate")["evaluate"]
    evaluate(args.folds / f"fold{args.fold}", args.model, args.method, eval_cfg, args.out, args.publish)
