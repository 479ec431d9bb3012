"""The `release` stage: after cross-validation, the model people use.

The chosen method (`release.method`; `best` = the lowest mean *dev* CER across the folds in results/folds.csv, ties
to the earlier method: the test speakers score the choice but never make it, so the cross-validated CER quoted for the
release is not biased by picking the luckiest method on them) is refitted on every speaker with the settings
cross-validation scored. No speaker is held out, so there is no early stopping: it trains for the number of epochs
cross-validation selected, the median of the folds' best epochs (rounded up: the refit sees more data, not less).
The vocabulary covers every transcript (each declared grapheme, `text.graphemes`, one token).

Output folder (`--out`, results/release): the Hugging Face model and processor as the method saves them (loads with
`pipeline("automatic-speech-recognition", model=...)`), `release.json` (what was trained on what, and its
cross-validated scores) and a `README.md` model card with the cross-fold table, data size, speakers, training
settings and limitations.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from pathlib import Path

import pandas as pd
import torch
import yaml

from asrflow import cards, config, methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import load_clips
from asrflow.checkpoint import open_base
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path, write_json
from asrflow.loop import fit, loop_config, prepare_model, split_alignable, training_set
from asrflow.manifest import Utterance, read_manifest, total_seconds
from asrflow.memory import check_device_fits
from asrflow.model import make_processor
from asrflow.results import mean_dev_cer
from asrflow.transcripts import grapheme_inventory
from asrflow.vocab import build_vocab, encode_labels

log = logging.getLogger(__name__)

SCORES = ["cer", "wer", "cer_lm", "wer_lm"]  # the LM columns exist only when evaluation decoded with an LM


class ReleaseError(AsrflowError):
    """The cross-validation results cannot say what to release; the message names the file and the fix."""


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ReleaseError(f"{path}: not found; it is written by `asrflow report` (run cross-validation first)")
    table = pd.read_csv(path)
    missing = [c for c in columns if c not in table]
    if missing:
        raise ReleaseError(f"{path}: missing column(s) {missing}; re-run `asrflow report` to rewrite it")
    return table


def choose_method(folds: pd.DataFrame, wanted: str) -> str:
    """`wanted`, or with `best` the method of the lowest mean dev CER across folds (the first of equals, in the
    table's order). Dev speakers, not test speakers, choose: the test CER stays an unbiased estimate."""
    dev_cer = mean_dev_cer(folds)
    # The refit trains CTC models: a method with its own training (projector) is cross-validated, not released yet.
    own = [m for m in dev_cer.index if getattr(methods.get(m), "own_training", False)]
    if wanted in own or (wanted == "best" and len(own) == len(dev_cer)):
        raise ReleaseError(
            f"release.method is {wanted!r}: the release refit cannot train {', '.join(own)} yet; set release.method "
            f"to a CTC method and add it to `methods`"
        )
    if wanted == "best":
        return str(dev_cer.drop(own).idxmin())
    if wanted not in dev_cer:
        raise ReleaseError(
            f"release.method is {wanted!r}, but cross-validation has results for {list(dev_cer.index)} "
            f"only; add it to `methods` so cross-validation scores it, or choose one of those"
        )
    return wanted


def selected_epochs(folds: pd.DataFrame, method: str) -> int:
    """The median of the folds' best epochs, rounded up."""
    return max(1, math.ceil(folds.loc[folds["method"] == method, "best_epoch"].median()))


def refit(
    method_name: str,
    utterances: list[Utterance],
    speed_copies: list[Utterance],
    base_dir: Path,
    params: dict,
    *,
    epochs: int,
    out_dir: Path,
) -> dict:
    """Train `method_name` on every utterance (and its speed copies) for `epochs` epochs; save the last epoch into
    `out_dir` (a fresh folder); return what was trained on what."""
    train_cfg, language = params["train"], params["corpus"]["language"]
    method = methods.get(method_name)
    base = open_base(base_dir)
    vocab = build_vocab([u.text for u in utterances], grapheme_inventory(params["text"]))
    processor = make_processor(vocab, base.feature_extractor())
    trained_on = training_set(utterances, speed_copies)
    methods.check_available(base, method_name, train_cfg)
    check_device_fits(base, method_name, train_cfg, trained_on)
    model = prepare_model(base, method_name, vocab, params)
    clips, dropped = split_alignable(
        model, load_clips(trained_on, lambda text: encode_labels(text, vocab), processor.feature_extractor)
    )
    trainable, total = methods.count_parameters(model)
    log.info(
        "release: %s on %d speakers, %d clips (%.1f min with speed copies), %d epochs",
        method_name,
        len({u.speaker for u in utterances}),
        len(clips),
        sum(c.n_samples for c in clips) / TARGET_RATE / 60,
        epochs,
    )

    def save(trained: torch.nn.Module) -> None:
        method.save(trained, out_dir, language)
        processor.save_pretrained(out_dir)

    # patience = epochs too, so that no setting can stop it early (fit never stops early without dev clips anyway).
    cfg = dataclasses.replace(loop_config(train_cfg, method_name), max_epochs=epochs, patience=epochs)
    result = fit(
        method.task(model, processor, train_cfg[method_name], base),
        clips,
        [],
        cfg,
        save,
        curve_path=None,
        label=f"release/{method_name}",
    )
    return {
        "method": method_name,
        "language": language,
        "base": base.name,
        "base_model_type": base.model_type,
        "epochs": epochs,
        "speakers": sorted({u.speaker for u in utterances}),
        "utterances": len(utterances),
        "audio_seconds": round(total_seconds(utterances), 2),
        "train_audio_seconds": round(sum(c.n_samples for c in clips) / TARGET_RATE, 2),
        "dropped_utterances": [{"utt_id": c.utt_id, "reason": r} for c, r in dropped],
        "trainable_params": trainable,
        "total_params": total,
        "train_seconds": result["train_seconds"],
        "vocab_size": len(vocab),
        "settings": {k: train_cfg[k] for k in ("seed", "batch_seconds", "warmup_steps", "grad_clip")}
        | {"epochs": epochs, method_name: train_cfg[method_name], "augment": params["augment"]},
    }


def cross_validation(summary: pd.DataFrame, folds: pd.DataFrame, method: str) -> dict:
    """The released method's cross-validated scores: per fold, and mean ± std across folds (from the report)."""
    rows = folds[folds["method"] == method]
    scores = [c for c in SCORES if c in rows and rows[c].notna().all()]
    dev_cer = mean_dev_cer(folds)
    overall = summary.set_index("method").loc[method]
    return {
        "k": len(rows),
        "folds": [
            {
                "fold": int(r["fold"]),
                "test_speakers": str(r["test_speakers"]).split(),
                "best_epoch": int(r["best_epoch"]),
                **{c: float(r[c]) for c in scores},
            }
            for _, r in rows.iterrows()
        ],
        "mean": {c: float(overall[f"{c}_mean"]) for c in scores},
        "std": {c: float(overall[f"{c}_std"]) for c in scores},
        "methods": {
            str(m): {
                "dev_cer_mean": float(dev_cer[m]),
                "cer_mean": float(r["cer_mean"]),
                "cer_std": float(r["cer_std"]),
            }
            for m, r in summary.set_index("method").iterrows()
        },
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def model_card(info: dict, cv: dict, corpus_name: str) -> str:
    """The released model's README.md: metadata (asrflow.cards) with the cross-validated scores, the cross-fold
    table, the training data and settings, and the limitations."""
    scores = list(cv["mean"])
    name = f"asrflow-{corpus_name}-{info['method']}"
    model_type = info.get("base_model_type", "wav2vec2")
    dataset = f"{corpus_name} ({info['language']}), speaker-independent {cv['k']}-fold cross-validation"
    results = [
        cards.score(
            s.split("_")[0],
            round(cv["mean"][s], 5),
            f"cross-validated {s.upper().replace('_', ' + ')} (mean of {cv['k']} folds)",
            dataset,
        )
        for s in scores
    ]
    labels = [s.upper().replace("_", " + ") + " %" for s in scores]
    fold_rows = [
        f"| {f['fold']} | {', '.join(f['test_speakers'])} | "
        + " | ".join(_pct(f[s]) for s in scores)
        + f" | {f['best_epoch']} |"
        for f in cv["folds"]
    ]
    mean_row = (
        "| **mean ± std** | | "
        + " | ".join(f"**{_pct(cv['mean'][s])} ± {_pct(cv['std'][s])}**" for s in scores)
        + " | |"
    )
    method_rows = [
        f"| {m}{' (released)' if m == info['method'] else ''} | {_pct(r['dev_cer_mean'])} | "
        f"{_pct(r['cer_mean'])} ± {_pct(r['cer_std'])} |"
        for m, r in cv["methods"].items()
    ]
    settings = yaml.safe_dump(info["settings"], allow_unicode=True, sort_keys=True)
    trained_on = (
        f"{info['train_audio_seconds'] / 60:.1f} min (speed-perturbed copies included; "
        f"{len(info['dropped_utterances'])} clips too short for their transcript dropped)"
    )
    body = f"""# {name}

A {model_type} CTC speech recogniser for `{info["language"]}` ({corpus_name}), trained with asrflow's
**{info["method"]}** method from the base checkpoint `{info["base"]}` on **every** speaker of the corpus after a
speaker-independent {cv["k"]}-fold cross-validation chose the method and the number of epochs.

```python
from transformers import pipeline
asr = pipeline("automatic-speech-recognition", model="path/to/this/folder")
asr("recording.wav", chunk_length_s=20, return_timestamps="word")
```
or `asrflow transcribe --model path/to/this/folder recording.wav --eaf` (text, word times, ELAN tier).

## How well it works: cross-validation
Each fold trained on the other speakers and was tested on speakers it never heard, so these numbers estimate the
error rate on a **new speaker** of this language (greedy CTC decoding unless marked + LM). This model, trained on
all speakers, has no held-out speakers left to score it on.

| fold | test speakers | {" | ".join(labels)} | best epoch |
|---|---|{"---|" * len(scores)}---|
{chr(10).join(fold_rows)}
{mean_row}

Every method cross-validated (mean over folds; `release.method: best` chooses by the dev speakers' CER, so the
test speakers above never took part in choosing):

| method | dev CER % | test CER % (± std) |
|---|---|---|
{chr(10).join(method_rows)}

## Training data
| | |
|---|---|
| speakers | {len(info["speakers"])}: {", ".join(info["speakers"])} |
| utterances | {info["utterances"]} ({info["audio_seconds"] / 60:.1f} min of audio) |
| trained on | {trained_on} |
| vocabulary | {info["vocab_size"]} tokens, from every transcript |
| trainable / total parameters | {info["trainable_params"]:,} / {info["total_params"]:,} |
| training time | {info["train_seconds"]:.0f} s |

## Training settings
Epochs: {info["epochs"]}, the median of the folds' best epochs (early stopping on dev speakers), rounded up; no
early stopping here, since no speaker is held out.
```yaml
{settings}```

## Limitations
- Estimated on {len(info["speakers"])} speakers and {info["audio_seconds"] / 60:.0f} minutes of speech: expect a large
  spread across new speakers (see the per-fold rows), more on other recording conditions, topics or dialects.
- Transcripts follow the corpus' own normalisation; it cannot produce a character absent from every transcript.
- The released model itself is untested: its scores are those of the same recipe on fewer speakers.

## License
{cards.LICENSE_NOTE}
"""
    return cards.render(cards.card_data(name, info["language"], info["method"], model_type, results), body)


def release(
    summary_path: Path,
    folds_path: Path,
    utterances_path: Path,
    speed_manifest: Path,
    base_dir: Path,
    *,
    params: dict,
    out_dir: Path,
) -> dict:
    summary = read_table(summary_path, ["method", "cer_mean", "cer_std"])
    folds = read_table(folds_path, ["method", "fold", "test_speakers", "cer", "wer", "best_epoch", "dev_cer"])
    method = choose_method(folds, params["release"]["method"])
    epochs = selected_epochs(folds, method)
    cv = cross_validation(summary, folds, method)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        info = refit(
            method,
            read_manifest(utterances_path),
            read_manifest(speed_manifest),
            base_dir,
            params,
            epochs=epochs,
            out_dir=tmp,
        )
        write_json(tmp / "release.json", {**info, "cross_validation": cv})
        (tmp / "README.md").write_text(model_card(info, cv, params["corpus"]["name"]), encoding="utf-8")
    log.info(
        "release: %s (cross-validated CER %.4f ± %.4f) refitted on %d speakers for %d epochs → %s",
        method,
        cv["mean"]["cer"],
        cv["std"]["cer"],
        len(info["speakers"]),
        epochs,
        out_dir,
    )
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow release`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--summary", required=True, type=Path, help="results/summary.csv (chooses the best method)")
    parser.add_argument("--folds-table", required=True, type=Path, help="results/folds.csv (per-fold results, epochs)")
    parser.add_argument("--utterances", required=True, type=Path, help="every normalised utterance (all speakers)")
    parser.add_argument("--speed", required=True, type=Path)
    parser.add_argument("--base", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="the released model folder, with its model card")


def run_cli(args: argparse.Namespace) -> None:
    params = config.load_stage(args.params, "release")
    release(
        args.summary,
        args.folds_table,
        args.utterances,
        args.speed / "manifest.csv",
        args.base,
        params=params,
        out_dir=args.out,
    )
