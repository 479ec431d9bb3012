"""The `release` stage: after a real (tiny) cross-validation, the best method refitted on every speaker loads with
`pipeline()` and carries the cross-fold results in its model card."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import evaluate_argv, read_params, stage, train_argv, write_params
from huggingface_hub import ModelCard
from transformers import AutoProcessor, pipeline

from asrflow import config, methods
from asrflow.audio import read_wav
from asrflow.batching import Clip, load_clips
from asrflow.io import read_json
from asrflow.loop import LoopConfig, fit
from asrflow.manifest import read_manifest
from asrflow.model import transcribe_clips
from asrflow.release import ReleaseError, choose_method, selected_epochs

pytestmark = pytest.mark.slow  # trains or runs the engines: `make test`, not `make test-fast`

CV_METHODS = ["full", "frozen"]
FOLDS = [0, 1]


@pytest.fixture(scope="module")
def released(tiny_run: Path) -> Path:
    """tiny_run's corpus cross-validated (both folds of two methods), reported and released, as the engines run it."""
    cv = tiny_run / "cv"
    cv.mkdir()
    params = read_params(tiny_run)
    write_params(cv, {**params, "methods": CV_METHODS})
    for method in CV_METHODS:
        for fold in FOLDS:
            checkpoint = f"cv/checkpoints/{method}/fold{fold}"
            stage(cv, *train_argv(method, checkpoint, f"cv/curves/{method}-fold{fold}.csv", fold=fold))
            metrics, published = f"cv/metrics/{method}/fold{fold}", f"cv/models/{method}/fold{fold}"
            stage(cv, *evaluate_argv(method, checkpoint, metrics, published, fold=fold))
    stage(cv, "report", "--metrics", "cv/metrics", "--out", "cv/results")
    stage(
        cv,
        "release",
        "--summary",
        "cv/results/summary.csv",
        "--folds-table",
        "cv/results/folds.csv",
        "--utterances",
        "data/processed/utts.csv",
        "--speed",
        "data/processed/speed",
        "--base",
        "data/models/base",
        "--out",
        "cv/results/release",
    )
    return cv / "results/release"


def test_release_refits_the_best_method_on_every_speaker(tiny_run: Path, released: Path) -> None:
    summary = pd.read_csv(released.parent / "summary.csv")
    folds = pd.read_csv(released.parent / "folds.csv")
    info = read_json(released / "release.json")
    dev_cer = folds.groupby("method", sort=False)["dev_cer"].mean()
    assert info["method"] == dev_cer.idxmin(), "the dev speakers choose the method"
    assert set(info["cross_validation"]["methods"]) == set(summary["method"])
    utterances = read_manifest(tiny_run / "data/processed/utts.csv")
    assert info["speakers"] == sorted({u.speaker for u in utterances}) and info["utterances"] == len(utterances)
    assert info["epochs"] == selected_epochs(folds, info["method"])
    assert [f["cer"] for f in info["cross_validation"]["folds"]] == folds.loc[
        folds.method == info["method"], "cer"
    ].tolist()
    vocab = read_json(released / "vocab.json")
    assert {ch for u in utterances for ch in u.text if ch != " "} <= set(vocab), "every transcript's symbols"


def test_release_loads_with_pipeline_and_matches_asrflow(tiny_run: Path, released: Path) -> None:
    info = read_json(released / "release.json")
    test = read_manifest(tiny_run / "data/processed/folds/fold0/test.csv")[:4]
    asr = pipeline("automatic-speech-recognition", model=str(released), device="cpu")
    from_pipeline = [asr(read_wav(u.audio))["text"] for u in test]
    model = methods.get(info["method"]).load(released, info["language"])
    processor = AutoProcessor.from_pretrained(released)
    ours = transcribe_clips(model, load_clips(test, lambda text: [], processor.feature_extractor), processor, 60)
    assert from_pipeline == ours


def test_model_card_carries_the_cross_fold_table(released: Path) -> None:
    card = (released / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---")[1])
    info = read_json(released / "release.json")
    cv = info["cross_validation"]
    [result] = header["model-index"][0]["results"]
    greedy = result["metrics"][0]
    assert greedy["type"] == "cer" and greedy["value"] == round(cv["mean"]["cer"], 5) and "CER" in greedy["name"]
    assert header["pipeline_tag"] == "automatic-speech-recognition" and f"`{info['base']}`" in card
    data = ModelCard.load(released / "README.md", ignore_metadata_errors=False).data
    assert data.language == [info["language"]] and data.to_dict()["model-index"] == header["model-index"]
    assert "base_model" not in header and "example.invalid" not in card
    for fold in cv["folds"]:
        assert f"| {fold['fold']} | {', '.join(fold['test_speakers'])} | {100 * fold['cer']:.1f} |" in card
    assert f"**{100 * cv['mean']['cer']:.1f} ± {100 * cv['std']['cer']:.1f}**" in card
    assert all(f"| {m}" in card for m in CV_METHODS)
    assert ", ".join(info["speakers"]) in card and "## Limitations" in card and f"Epochs: {info['epochs']}," in card


def test_choose_method_and_epochs() -> None:
    # adapter has the lowest test CER, full the lowest dev CER: the dev speakers choose; lora ties full, comes later.
    cv = pd.DataFrame(
        {
            "method": ["full", "full", "adapter", "adapter", "lora", "lora"],
            "dev_cer": [0.30, 0.10, 0.25, 0.25, 0.10, 0.30],
            "cer": [0.4, 0.4, 0.1, 0.1, 0.4, 0.4],
        }
    )
    assert choose_method(cv, "best") == "full"
    assert choose_method(cv, "lora") == "lora"
    with pytest.raises(ReleaseError, match="frozen"):
        choose_method(cv, "frozen")
    folds = pd.DataFrame({"method": ["full"] * 4 + ["lora"] * 3, "best_epoch": [2, 3, 6, 8, 4, 1, 9]})
    assert selected_epochs(folds, "full") == 5  # median 4.5, rounded up
    assert selected_epochs(folds, "lora") == 4


def test_release_method_must_be_cross_validated(tiny_run: Path) -> None:
    params = {**read_params(tiny_run), "methods": ["full"], "release": {"method": "lora"}}
    with pytest.raises(config.ParamsError, match="release.method"):
        config.validate(params)


class CountingTask:
    """A one-weight model trained by fit(): enough to see which epochs run and which are saved."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1)

    def prepare(self, clips: list[Clip]) -> list[Clip]:
        return clips

    def loss(self, clips: list[Clip]) -> torch.Tensor:
        return self.model(torch.ones(len(clips), 1)).pow(2).mean()

    def transcribe(self, clips: list[Clip], batch_seconds: float) -> list[str]:
        return [""] * len(clips)

    def train(self) -> None:
        self.model.train()


def test_fit_without_dev_trains_every_epoch_and_saves_the_last() -> None:
    clips = [Clip(f"u{i}", "s", "a", np.zeros(16000, dtype=np.float32), [3], 16000) for i in range(4)]
    saved: list[float] = []
    cfg = LoopConfig(lr=0.1, max_epochs=4, patience=1, batch_seconds=2, warmup_steps=0, grad_clip=1.0, seed=0)
    task = CountingTask()
    result = fit(task, clips, [], cfg, lambda model: saved.append(model.weight.item()), curve_path=None, label="test")
    assert result["epochs_run"] == 4 and result["best_epoch"] == 4
    assert saved == [task.model.weight.item()], "saved once, after the last epoch"
    with_dev = fit(
        CountingTask(),
        clips,
        clips[:1],
        dataclasses.replace(cfg, max_epochs=4),
        lambda model: None,
        curve_path=None,
        label="test",
    )
    assert with_dev["epochs_run"] == 2, "with dev clips, patience still stops it (dev CER never improves after 1)"
