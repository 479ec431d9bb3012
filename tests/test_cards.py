"""Model cards (asrflow.cards, evaluate.model_card, release.model_card): metadata huggingface_hub reads back as
written, no made-up links. Built from hand-made stage results, no engine runs (the published cards of real runs are
checked in test_methods, test_decode and test_release)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from asrflow import evaluate, release

TRAINING = {
    "method": "lora",
    "fold": 1,
    "language": "itl",
    "base": "data/models/base",
    "base_model_type": "hubert",
    "dev_cer": 0.31,
    "best_epoch": 3,
    "epochs_run": 5,
    "train_audio_seconds": 1260.0,
    "trainable_params": 24029,
    "total_params": 1527501,
    "train_seconds": 54.2,
    "settings": {"seed": 0, "lora": {"lr": 0.001, "r": 8}, "augment": {"speed": [0.9, 1.1]}},
}
METRICS = {
    "cer": 0.28212,
    "wer": 0.8061,
    "cer_lm": 0.14801,
    "wer_lm": 0.419,
    "lm_alpha": 0.3,
    "lm_beta": 2.0,
    "n_utts": 120,
    "test_speakers": ["spk02", "spk05", "spk06"],
    "dev_speakers": ["spk04"],
}
RELEASED = {
    "method": "full",
    "language": "itl",
    "base": "data/models/base",
    "base_model_type": "wav2vec2",
    "epochs": 4,
    "speakers": ["spk01", "spk02", "ʔana"],
    "utterances": 360,
    "audio_seconds": 1830.5,
    "train_audio_seconds": 5490.0,
    "dropped_utterances": [],
    "trainable_params": 1527501,
    "total_params": 1527501,
    "train_seconds": 120.0,
    "vocab_size": 31,
    "settings": {"seed": 0, "epochs": 4, "full": {"lr": 0.0005}},
}
CV = {
    "k": 3,
    "folds": [
        {
            "fold": f,
            "test_speakers": [f"spk0{f}"],
            "best_epoch": 4,
            "cer": c,
            "wer": 0.7,
            "cer_lm": c / 2,
            "wer_lm": 0.35,
        }
        for f, c in enumerate([0.189, 0.355, 0.234])
    ],
    "mean": {"cer": 0.25933, "wer": 0.701, "cer_lm": 0.166, "wer_lm": 0.354},
    "std": {"cer": 0.086, "wer": 0.104, "cer_lm": 0.102, "wer_lm": 0.141},
    "methods": {
        "full": {"dev_cer_mean": 0.2, "cer_mean": 0.259, "cer_std": 0.086},
        "adapter": {"dev_cer_mean": 0.3, "cer_mean": 0.336, "cer_std": 0.076},
    },
}

# ISO 639-1/2/3 codes, the form the Hub's `language` metadata takes; a Hub model id is `owner/name`.
LANGUAGE = re.compile(r"^[a-z]{2,3}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def written(tmp_path: Path, text: str) -> ModelCard:
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    return ModelCard.load(tmp_path / "README.md", ignore_metadata_errors=False)


def assert_valid_metadata(card: ModelCard, text: str) -> None:
    """What the Hub checks that can be checked offline, and no link to a site that does not exist."""
    data = card.data
    assert all(LANGUAGE.match(code) for code in data.language)
    assert data.library_name == "transformers" and data.pipeline_tag == "automatic-speech-recognition"
    assert data.base_model is None or HUB_ID.match(data.base_model), "a local folder is not a Hub base_model"
    assert data.eval_results and {r.metric_type for r in data.eval_results} <= {"cer", "wer"}
    assert all(r.task_type == "automatic-speech-recognition" and r.dataset_split == "test" for r in data.eval_results)
    assert "example.invalid" not in text and "http" not in text.split("---")[2]
    assert yaml.safe_load(text.split("---")[1]) == data.to_dict(), "the header is exactly the card data"


def test_evaluate_card_round_trips_through_huggingface_hub(tmp_path: Path) -> None:
    text = evaluate.model_card(TRAINING, METRICS)
    card = written(tmp_path, text)
    assert_valid_metadata(card, text)
    assert card.data.language == ["itl"] and card.data.model_name == "asrflow-lora-fold1"
    assert "hubert" in card.data.tags and "lora" in card.data.tags
    assert [(r.metric_type, r.metric_value, r.metric_name) for r in card.data.eval_results] == [
        ("cer", 0.28212, "Test CER (greedy)"),
        ("wer", 0.8061, "Test WER (greedy)"),
        ("cer", 0.14801, "Test CER (n-gram LM)"),
        ("wer", 0.419, "Test WER (n-gram LM)"),
    ]
    assert card.data.eval_results[0].dataset_args == {"speakers": METRICS["test_speakers"]}
    [entry] = card.data.to_dict()["model-index"]
    assert entry["name"] == "asrflow-lora-fold1" and len(entry["results"]) == 1
    assert "spk02, spk05, spk06" in card.text and "`data/models/base`" in card.text and "## License" in card.text


def test_evaluate_card_without_lm_has_greedy_scores_only(tmp_path: Path) -> None:
    greedy = {k: v for k, v in METRICS.items() if not k.endswith("_lm") and not k.startswith("lm_")}
    text = evaluate.model_card(TRAINING, greedy)
    card = written(tmp_path, text)
    assert_valid_metadata(card, text)
    assert [r.metric_type for r in card.data.eval_results] == ["cer", "wer"]


def test_release_card_round_trips_through_huggingface_hub(tmp_path: Path) -> None:
    text = release.model_card(RELEASED, CV, "itelmen")
    card = written(tmp_path, text)
    assert_valid_metadata(card, text)
    assert card.data.language == ["itl"] and card.data.model_name == "asrflow-itelmen-full"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("cer", 0.25933),
        ("wer", 0.701),
        ("cer", 0.166),
        ("wer", 0.354),
    ]
    assert card.data.eval_results[0].metric_name == "cross-validated CER (mean of 3 folds)"
    assert "| 1 | spk01 | 35.5 |" in card.text and "**25.9 ± 8.6**" in card.text and "ʔana" in card.text


def test_the_checks_refuse_a_card_as_asrflow_wrote_them_before(tmp_path: Path) -> None:
    """The former hand-written header: a local folder as base_model, and a link to a site that does not exist."""
    header = {
        "language": ["sw"],
        "tags": ["automatic-speech-recognition", "asrflow"],
        "base_model": "data/models/base",
        "library_name": "transformers",
        "pipeline_tag": "automatic-speech-recognition",
        "model-index": [
            {
                "name": "m",
                "results": [
                    {
                        "task": {"type": "automatic-speech-recognition"},
                        "dataset": {"type": "asrflow-corpus", "name": "sw", "split": "test"},
                        "metrics": [{"type": "cer", "value": 0.2}],
                    }
                ],
            }
        ],
    }
    body = "# m\n\nmade by [asrflow](https://example.invalid/asrflow)\n"
    for bad_header, bad_body in ((header, "# m\n"), ({**header, "base_model": None}, body)):
        text = f"---\n{yaml.safe_dump({k: v for k, v in bad_header.items() if v is not None})}---\n\n{bad_body}"
        with pytest.raises(AssertionError):
            assert_valid_metadata(written(tmp_path, text), text)
