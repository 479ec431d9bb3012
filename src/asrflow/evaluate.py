"""The `evaluate` stage: transcribe a fold's test speakers with the fold's trained model, score CER/WER overall, per
speaker and per utterance, and publish the model folder with a Hugging Face model card.

Greedy CTC decoding always; with `decode.beam`, also beam search with the fold's n-gram LM (`asrflow lm`, built from
the fold's training text), its alpha/beta chosen by CER on the fold's dev speakers: both are reported side by side.

Output folder (`--out`): metrics.json (`cer`, `wer`; with the LM also `cer_lm`, `wer_lm`, `lm_alpha`, `lm_beta`,
`dev_cer_lm`), hypotheses.csv (utt_id, speaker, reference, hypothesis, cer[, hypothesis_lm, cer_lm]), speakers.csv,
and with the LM lm_tuning.csv (dev CER/WER of every alpha/beta pair tried, best first). With declared graphemes
(`text.graphemes`) each of them also has the grapheme error rate beside the CER: `ger` (and `ger_lm`), each grapheme
one unit; the CER stays per character.
Published folder (`--publish`): the model files (hard links, no copy) + README.md with a `model-index` block.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from transformers import AutoProcessor, ProcessorMixin

from asrflow import cards, config, methods
from asrflow.batching import InputSpec, load_clips
from asrflow.decode import beam_decode, frame_logits, greedy_transcripts, lm_decoder, tune
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import Utterance, read_manifest
from asrflow.methods import projector
from asrflow.metrics import error_rates, grapheme_error_rate
from asrflow.model import autocast, compute_device, model_device
from asrflow.transcripts import grapheme_inventory

log = logging.getLogger(__name__)


# Hypothesis column → suffix of its scores: greedy (`cer`, `wer`) and, when decoded, LM beam search (`cer_lm`, …).
DECODINGS = {"hypothesis": "", "hypothesis_lm": "_lm"}


def score(rows: pd.DataFrame, graphemes: Sequence[str] = ()) -> dict:
    """CER/WER of every decoding the rows hold, and its GER when `graphemes` are declared."""
    scores = {}
    for column, suffix in DECODINGS.items():
        if column in rows:
            references, hypotheses = rows["reference"].tolist(), rows[column].tolist()
            cer, wer = error_rates(references, hypotheses)
            scores |= {f"cer{suffix}": round(cer, 5), f"wer{suffix}": round(wer, 5)}
            if graphemes:
                scores[f"ger{suffix}"] = round(grapheme_error_rate(references, hypotheses, graphemes), 5)
    return {**scores, "n_utts": len(rows)}


def utterance_cer(rows: pd.DataFrame, column: str) -> list[float]:
    return [round(error_rates([r], [h])[0], 5) for r, h in zip(rows["reference"], rows[column])]


def utterance_ger(rows: pd.DataFrame, column: str, graphemes: Sequence[str]) -> list[float]:
    return [round(grapheme_error_rate([r], [h], graphemes), 5) for r, h in zip(rows["reference"], rows[column])]


def score_utterances(rows: pd.DataFrame, column: str, graphemes: Sequence[str]) -> None:
    """Per-utterance CER of hypothesis `column` (`hypothesis` → `cer`, …), and its GER with declared graphemes."""
    suffix = DECODINGS[column]
    rows[f"cer{suffix}"] = utterance_cer(rows, column)
    if graphemes:
        rows[f"ger{suffix}"] = utterance_ger(rows, column, graphemes)


def per_speaker(rows: pd.DataFrame, graphemes: Sequence[str] = ()) -> pd.DataFrame:
    return pd.DataFrame([{"speaker": s, **score(group, graphemes)} for s, group in rows.groupby("speaker", sort=True)])


def score_rows(metrics: dict) -> str:
    """The card's test-score rows: greedy, and LM beam search if evaluation did it (the LM is not published)."""
    rows = [
        f"| test CER / WER (greedy) | {metrics['cer']:.4f} / {metrics['wer']:.4f} on {metrics['n_utts']} utterances |"
    ]
    if "cer_lm" in metrics:
        rows.append(
            f"| test CER / WER with the fold's word n-gram LM (beam search; LM not included here) | "
            f"{metrics['cer_lm']:.4f} / {metrics['wer_lm']:.4f} (alpha {metrics['lm_alpha']:g}, beta "
            f"{metrics['lm_beta']:g}, tuned on the dev speakers) |"
        )
    rows += [
        f"| test GER ({label}; each declared grapheme one unit) | {metrics[key]:.4f} |"
        for key, label in (("ger", "greedy"), ("ger_lm", "n-gram LM"))
        if key in metrics
    ]
    return "\n".join(rows)


def model_card(info: dict, metrics: dict) -> str:
    """The published fold model's README.md: metadata (asrflow.cards) with the test scores, and what was trained on
    what."""
    name = f"asrflow-{info['method']}-fold{info['fold']}"
    model_type = info.get("base_model_type", "wav2vec2")
    dataset = f"{info['language']} corpus, fold {info['fold']} test speakers"
    speakers = {"speakers": metrics["test_speakers"]}
    results = [
        cards.score(kind, metrics[f"{kind}{suffix}"], f"Test {kind.upper()} ({label})", dataset, speakers)
        for suffix, label in (("", "greedy"), ("_lm", "n-gram LM"))
        for kind in ("cer", "wer")
        if f"{kind}{suffix}" in metrics
    ]
    settings = yaml.safe_dump(info["settings"], allow_unicode=True, sort_keys=True)
    body = f"""# {name}

A {info.get("architecture", f"{model_type} CTC model")} for `{info["language"]}`, trained with asrflow's
**{info["method"]}** method from the
base checkpoint `{info["base"]}` on cross-validation fold {info["fold"]}.

| | |
|---|---|
| test speakers (never seen in training) | {", ".join(metrics["test_speakers"])} |
| dev speakers (early stopping; LM weights) | {", ".join(metrics["dev_speakers"])} |
{score_rows(metrics)}
| dev CER at the best epoch | {info["dev_cer"]:.4f} (epoch {info["best_epoch"]} of {info["epochs_run"]}) |
| training audio | {info["train_audio_seconds"] / 60:.1f} min (speed-perturbed copies included) |
| trainable / total parameters | {info["trainable_params"]:,} / {info["total_params"]:,} |
| training time | {info["train_seconds"]:.0f} s |

## Training settings
```yaml
{settings}```

## Limitations
Scores are from one fold of a speaker-independent cross-validation on a small corpus: expect a large spread across
speakers (see the per-fold table in the project's results/summary.md). Transcripts follow the corpus' own
normalisation; characters never seen in this fold's training text cannot be produced.

## License
{cards.LICENSE_NOTE}
"""
    return cards.render(cards.card_data(name, info["language"], info["method"], model_type, results), body)


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
            # Hidden files are engine bookkeeping, not model files: a hard-linked .snakemake_timestamp would make
            # Snakemake's touch of this output move the checkpoint's (input's) mtime too.
            elif item.name != "README.md" and not item.name.startswith("."):
                _link_or_copy(item, target)
        (tmp / "README.md").write_text(card, encoding="utf-8")


def logits_of(
    model: torch.nn.Module, processor: ProcessorMixin, utterances: list[Utterance], eval_cfg: dict, precision: str
) -> list[np.ndarray]:
    """Frame logits of `utterances`, in the precision the model was trained in (train.precision)."""
    clips = load_clips(utterances, lambda text: [], processor.feature_extractor)
    with autocast(precision, model_device(model)):
        return frame_logits(model, clips, InputSpec.of(processor.feature_extractor), eval_cfg["batch_seconds"])


def tune_and_decode(
    model: torch.nn.Module,
    processor: ProcessorMixin,
    fold_dir: Path,
    lm_dir: Path,
    test_logits: list[np.ndarray],
    *,
    eval_cfg: dict,
    decode_cfg: dict,
    precision: str,
) -> tuple[pd.DataFrame, list[str]]:
    """The alpha/beta grid scored on the fold's dev speakers, and the test transcripts with the best pair."""
    decoder = lm_decoder(processor.tokenizer, lm_dir)
    dev = read_manifest(fold_dir / "dev.csv")
    grid = tune(decoder, logits_of(model, processor, dev, eval_cfg, precision), [u.text for u in dev], decode_cfg)
    return grid, beam_decode(decoder, test_logits, decode_cfg["beam_width"])


def evaluate(
    fold_dir: Path,
    model_dir: Path,
    method_name: str,
    *,
    eval_cfg: dict,
    decode_cfg: dict,
    lm_dir: Path,
    out_dir: Path,
    publish_dir: Path,
    graphemes: Sequence[str] = (),
) -> dict:
    """Score the fold's test speakers (`graphemes`: the declared ones, normalised; the GER counts each as one
    unit)."""
    info = read_json(model_dir / "training.json")
    precision = info.get("loop", {}).get("precision", "fp32")
    utterances = read_manifest(fold_dir / "test.csv")
    if getattr(methods.get(method_name), "own_training", False):  # projector: its causal LM decodes (no n-gram pass)
        hypotheses, decode_cfg = projector.transcribe_utterances(model_dir, utterances), {**decode_cfg, "beam": False}
    else:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False)
        model = methods.get(method_name).load(model_dir, info["language"]).to(compute_device())
        logits = logits_of(model, processor, utterances, eval_cfg, precision)  # once, for greedy and LM decoding
        hypotheses = greedy_transcripts(logits, processor)
    rows = pd.DataFrame(
        {
            "utt_id": [u.utt_id for u in utterances],
            "speaker": [u.speaker for u in utterances],
            "reference": [u.text for u in utterances],
            "hypothesis": hypotheses,
        }
    )
    score_utterances(rows, "hypothesis", graphemes)
    if decode_cfg["beam"]:
        grid, rows["hypothesis_lm"] = tune_and_decode(
            model, processor, fold_dir, lm_dir, logits, eval_cfg=eval_cfg, decode_cfg=decode_cfg, precision=precision
        )
        score_utterances(rows, "hypothesis_lm", graphemes)
    speakers = read_json(fold_dir.parent / "folds.json")[fold_dir.name]["speakers"]
    metrics = {
        **{
            k: info[k]
            for k in (
                "method",
                "fold",
                "trainable_params",
                "total_params",
                "train_seconds",
                "train_audio_seconds",
                "best_epoch",
                "dev_cer",
            )
        },
        **score(rows, graphemes),
        "test_speakers": speakers["test"],
        "dev_speakers": speakers["dev"],
    }
    if decode_cfg["beam"]:
        metrics |= {
            "lm_alpha": float(grid.at[0, "alpha"]),
            "lm_beta": float(grid.at[0, "beta"]),
            "dev_cer_lm": float(grid.at[0, "dev_cer"]),
        }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        rows.to_csv(tmp / "hypotheses.csv", index=False)
        per_speaker(rows, graphemes).to_csv(tmp / "speakers.csv", index=False)
        if decode_cfg["beam"]:
            grid.to_csv(tmp / "lm_tuning.csv", index=False)
        write_json(tmp / "metrics.json", metrics)
    publish(model_dir, publish_dir, model_card(info, metrics))
    log.info(
        "%s fold %d: test CER %.4f, WER %.4f on %d utterances of %s",
        method_name,
        info["fold"],
        metrics["cer"],
        metrics["wer"],
        metrics["n_utts"],
        ", ".join(speakers["test"]),
    )
    if decode_cfg["beam"]:
        log.info(
            "with the fold's n-gram LM (alpha %g, beta %g, dev CER %.4f): test CER %.4f, WER %.4f",
            metrics["lm_alpha"],
            metrics["lm_beta"],
            metrics["dev_cer_lm"],
            metrics["cer_lm"],
            metrics["wer_lm"],
        )
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow evaluate`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--fold", required=True, type=int)
    parser.add_argument("--method", required=True)
    parser.add_argument("--folds", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder: metrics.json, hypotheses.csv, speakers.csv"
    )
    parser.add_argument("--publish", required=True, type=Path, help="model folder with its model card")
    parser.add_argument("--lm", required=True, type=Path, help="the fold's `asrflow lm` folder (used if decode.beam)")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "evaluate")
    evaluate(
        args.folds / f"fold{args.fold}",
        args.model,
        args.method,
        eval_cfg=params["evaluate"],
        decode_cfg=params["decode"],
        lm_dir=args.lm,
        out_dir=args.out,
        publish_dir=args.publish,
        graphemes=grapheme_inventory(params["text"]),
    )
