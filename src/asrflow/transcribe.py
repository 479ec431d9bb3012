"""`asrflow transcribe --model DIR FILE…`: transcribe new recordings with a trained model. A user command, not a
pipeline stage.

Any format libsndfile decodes (wav, flac, ogg, mp3), any rate, any number of channels, any length: each file is
decoded, downmixed and resampled to 16 kHz (asrflow.audio.load_mono), then run through transformers' own ASR pipeline,
which splits long audio into overlapping chunks (`chunk_length_s`, `stride_length_s`) and stitches the CTC outputs back
together, so the model never sees more than one chunk at a time. Decoding is greedy, or with `--lm` a beam search with
an `asrflow lm` n-gram model (pyctcdecode, passed to the pipeline as its `decoder`). For each FILE, in `--out`:

- `<stem>.txt`  the transcript
- `<stem>.csv`  one row per word: `start, end` (seconds from the start of the recording), `word`
- `<stem>.eaf`  with `--eaf`: an ELAN file linked to the recording, with a `hypothesis` tier of time-aligned phrases
  (words joined until a pause), ready for a linguist to correct in ELAN.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import mimetypes
import os
from pathlib import Path

import numpy as np
import pympi
from tqdm import tqdm
from transformers import AutomaticSpeechRecognitionPipeline, pipeline

from asrflow.audio import TARGET_RATE, load_mono
from asrflow.decode import lm_decoder
from asrflow.errors import AsrflowError
from asrflow.inference import load_for_inference
from asrflow.io import atomic_path, write_text
from asrflow.model import compute_device

log = logging.getLogger(__name__)

MIN_SECONDS = 0.1  # shorter than a few CTC frames: nothing a model can transcribe
MAX_PHRASE_SECONDS = 10.0  # longer phrases are split: an annotation a linguist can check by ear in one go
HYPOTHESIS_TIER = "hypothesis"


class TranscribeError(AsrflowError):
    """An input that cannot be transcribed as asked; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the recording
    end: float


class ProgressPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' ASR pipeline, unchanged, plus a progress bar advanced by the new audio in each chunk."""

    progress: tqdm | None = None

    def forward(self, model_inputs: dict, **forward_params):
        if self.progress is not None:
            self.progress.update(new_seconds(model_inputs))
        return super().forward(model_inputs, **forward_params)


def new_seconds(model_inputs: dict) -> float:
    """Audio a chunk adds beyond its overlap with its neighbours; over all chunks this sums to the recording's
    length."""
    if "stride" in model_inputs:
        length, left, right = model_inputs["stride"]
        return (length - left - right) / TARGET_RATE
    return model_inputs["input_values"].shape[-1] / TARGET_RATE


def make_pipeline(
    model_dir: Path, int8: bool, lm_dir: Path | None, alpha: float | None, beta: float | None
) -> ProgressPipeline:
    """The ASR pipeline of `model_dir`; with `lm_dir` it decodes by beam search with that LM (alpha/beta: None keeps
    pyctcdecode's defaults)."""
    model, processor = load_for_inference(model_dir, int8)
    decoding = {}
    if lm_dir is not None:
        decoder = lm_decoder(processor.tokenizer, lm_dir)
        decoder.reset_params(alpha=alpha, beta=beta)
        decoding["decoder"] = decoder
    return pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
        pipeline_class=ProgressPipeline,
        device="cpu" if int8 else compute_device(),  # int8 (dynamic quantisation) is CPU-only
        **decoding,
    )


def recognise(
    asr: ProgressPipeline, samples: np.ndarray, chunk_seconds: float, stride_seconds: float | None, label: str
) -> tuple[str, list[Word]]:
    """The transcript of 16 kHz `samples` and its words with times, chunked as the pipeline does it."""
    with tqdm(
        total=round(len(samples) / TARGET_RATE, 1),
        desc=label,
        unit="s",
        mininterval=1.0,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]",
    ) as progress:
        asr.progress = progress
        try:
            result = asr(
                samples, chunk_length_s=chunk_seconds, stride_length_s=stride_seconds, return_timestamps="word"
            )
        finally:
            asr.progress = None
    words = [
        Word(c["text"], round(float(c["timestamp"][0]), 3), round(float(c["timestamp"][1]), 3))
        for c in result["chunks"]
    ]
    return result["text"], words


def phrases(words: list[Word], pause: float, longest: float = MAX_PHRASE_SECONDS) -> list[Word]:
    """Words joined into phrases: a new phrase starts after a pause of at least `pause` seconds, or where adding
    the next word would make the phrase longer than `longest` seconds."""
    result: list[Word] = []
    for word in words:
        last = result[-1] if result else None
        if last is not None and word.start - last.end < pause and word.end - last.start <= longest:
            result[-1] = Word(f"{last.text} {word.text}", last.start, word.end)
        else:
            result.append(word)
    return result


def write_words_csv(path: Path, words: list[Word]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["start", "end", "word"])
            writer.writerows([f"{w.start:.3f}", f"{w.end:.3f}", w.text] for w in words)


def media_link(media: Path, eaf_dir: Path) -> tuple[str, str]:
    """(absolute file URI, relative path) of the recording, as ELAN writes them: ELAN tries both when opening."""
    relative = Path(os.path.relpath(media.resolve(), eaf_dir.resolve())).as_posix()
    return media.resolve().as_uri(), relative if relative.startswith(".") else f"./{relative}"


def write_eaf(path: Path, media: Path, annotations: list[Word]) -> None:
    """An ELAN document linked to `media` with one time-aligned annotation per phrase on the hypothesis tier."""
    eaf = pympi.Elan.Eaf(author="asrflow")
    url, relative = media_link(media, path.parent)
    eaf.add_linked_file(url, relpath=relative, mimetype=mimetypes.guess_type(media.name)[0] or "audio/x-wav")
    eaf.add_tier(HYPOTHESIS_TIER)
    eaf.remove_tier("default")  # pympi starts every document with an empty tier of that name
    for phrase in annotations:
        # ELAN stores milliseconds; a CTC word spans at least one 20 ms frame, so no annotation is empty.
        eaf.add_annotation(HYPOTHESIS_TIER, round(phrase.start * 1000), round(phrase.end * 1000), phrase.text)
    with atomic_path(path) as tmp:
        eaf.to_file(str(tmp))


def check_inputs(model_dir: Path, files: list[Path]) -> None:
    """The model folder is one, every file exists and no two share a stem (their outputs would overwrite each other)."""
    if not (model_dir / "config.json").is_file():
        raise TranscribeError(
            f"{model_dir}: not a model folder (no config.json); pass results/release or results/models/<method>/fold<k>"
        )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TranscribeError(f"no such file: {', '.join(missing)}")
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise TranscribeError(
                f"{stems[file.stem]} and {file} would both write {file.stem}.txt/.csv; "
                f"transcribe them in separate runs with different --out folders"
            )
        stems[file.stem] = file


def check_chunking(chunk_seconds: float, stride_seconds: float | None) -> None:
    """The pipeline needs each chunk to hold new audio beyond the overlaps on both its sides."""
    stride = chunk_seconds / 6 if stride_seconds is None else stride_seconds
    if chunk_seconds <= 0 or stride < 0 or 2 * stride >= chunk_seconds:
        raise TranscribeError(
            f"--chunk-seconds {chunk_seconds:g} with --stride-seconds {stride:g}: a chunk must be "
            f"longer than twice its overlap (e.g. --chunk-seconds 20 --stride-seconds 3)"
        )


def load_recording(path: Path) -> np.ndarray:
    samples = load_mono(path, TARGET_RATE)
    if len(samples) < MIN_SECONDS * TARGET_RATE:
        raise TranscribeError(
            f"{path}: {len(samples) / TARGET_RATE:.3f} s of audio; at least {MIN_SECONDS} s is "
            f"needed to transcribe anything"
        )
    return samples


def transcribe(
    model_dir: Path,
    files: list[Path],
    out_dir: Path,
    *,
    chunk_seconds: float,
    stride_seconds: float | None,
    int8: bool,
    eaf: bool,
    pause: float,
    lm_dir: Path | None,
    alpha: float | None,
    beta: float | None,
) -> dict[Path, list[Word]]:
    """Transcribe `files` into `out_dir` (see the module docstring; the arguments are `asrflow transcribe`'s
    options); returns each file's words."""
    check_inputs(model_dir, files)
    check_chunking(chunk_seconds, stride_seconds)
    asr = make_pipeline(model_dir, int8, lm_dir, alpha, beta)
    results = {}
    for file in files:
        samples = load_recording(file)
        text, words = recognise(asr, samples, chunk_seconds, stride_seconds, file.name)
        write_text(out_dir / f"{file.stem}.txt", text + "\n")
        write_words_csv(out_dir / f"{file.stem}.csv", words)
        if eaf:
            write_eaf(out_dir / f"{file.stem}.eaf", file, phrases(words, pause))
        if not words:
            log.warning("%s: the model emitted no words (only blanks); is it trained enough?", file)
        log.info(
            "%s: %.1f s of audio, %d words → %s",
            file,
            len(samples) / TARGET_RATE,
            len(words),
            out_dir / f"{file.stem}.txt",
        )
        results[file] = words
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow transcribe`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--model", required=True, type=Path, help="a model folder (results/release, results/models/…)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--out", default=Path("."), type=Path, help="folder for <stem>.txt/.csv/.eaf (default: .)")
    parser.add_argument("--eaf", action="store_true", help="also write an ELAN .eaf with a hypothesis tier")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the Linear layers (CPU)")
    # wav2vec2's attention is quadratic in length: 20 s chunks keep memory flat however long the recording.
    parser.add_argument("--chunk-seconds", type=float, default=20.0, help="audio per model call (default 20)")
    parser.add_argument(
        "--stride-seconds",
        type=float,
        default=None,
        help="overlap on each side of a chunk (default: chunk/6, as transformers' pipeline)",
    )
    parser.add_argument("--pause", type=float, default=0.5, help="a pause this long starts a new ELAN phrase (s)")
    parser.add_argument("--lm", type=Path, default=None, help="an `asrflow lm` folder: beam search with its n-gram LM")
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="LM weight (default: pyctcdecode's; evaluate's metrics.json holds each fold's tuned lm_alpha)",
    )
    parser.add_argument(
        "--beta", type=float, default=None, help="word insertion bonus (default: pyctcdecode's; metrics.json: lm_beta)"
    )


def run_cli(args: argparse.Namespace) -> None:
    transcribe(
        args.model,
        args.files,
        args.out,
        chunk_seconds=args.chunk_seconds,
        stride_seconds=args.stride_seconds,
        int8=args.int8,
        eaf=args.eaf,
        pause=args.pause,
        lm_dir=args.lm,
        alpha=args.alpha,
        beta=args.beta,
    )
