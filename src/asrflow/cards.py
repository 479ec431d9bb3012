"""Hugging Face model cards (`README.md`) of the models asrflow publishes: each fold's model (`evaluate`) and the
released one (`release`).

The YAML header is built with huggingface_hub's `ModelCardData` and `EvalResult`, so it is the metadata the Hub
reads (language, tags, pipeline, library, model-index with the test scores) and loads back with
`ModelCard.load(path).data`. The stage writes the card's markdown body; this module joins the two.

What the header leaves out, on purpose: `base_model` (asrflow trains from a local folder, never a Hub id, and the Hub
rejects a `base_model` that is not one; the body names the folder) and `license` (a fine-tuned model inherits the
terms of its base checkpoint and of its corpus, which asrflow does not know; the body says so).
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TASK = "automatic-speech-recognition"
TASK_NAME = "Speech Recognition"
DATASET_TYPE = "asrflow-corpus"  # a corpus of the user's, not a Hub dataset
LICENSE_NOTE = (
    "No license is set in this card's metadata: the model inherits the terms of its base checkpoint "
    "and of its training corpus. Add a `license:` that honours both before sharing it."
)


def score(metric: str, value: float, name: str, dataset_name: str, dataset_args: dict | None = None) -> EvalResult:
    """One test score (`metric`: cer or wer) of the model on `dataset_name`, for the card's model-index."""
    return EvalResult(
        task_type=TASK,
        task_name=TASK_NAME,
        dataset_type=DATASET_TYPE,
        dataset_name=dataset_name,
        dataset_split="test",
        dataset_args=dataset_args,
        metric_type=metric,
        metric_value=value,
        metric_name=name,
    )


def card_data(name: str, language: str, method: str, model_type: str, results: list[EvalResult]) -> ModelCardData:
    """The card's metadata: `name` is the model-index name, `model_type` the base's family (wav2vec2, hubert, …)."""
    return ModelCardData(
        model_name=name,
        language=[language],
        library_name="transformers",
        pipeline_tag=TASK,
        tags=[TASK, model_type, "asrflow", method],
        eval_results=results,
    )


def render(data: ModelCardData, body: str) -> str:
    """The README.md text: the metadata as YAML between `---` lines, then `body` (markdown).

    Parsed back through `ModelCard` before it is returned, so a header the Hub's parser cannot read (a model-index
    without its fields, say) stops the stage instead of being published."""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}", ignore_metadata_errors=False)
    return str(card)
