"""`asrflow transcribe --model DIR FILE…`: transcribe new recordings with a trained model. A user command, not a
pipeline stage. A FILE may be a folder: every recording directly in it.

Any format libsndfile decodes (wav, flac, ogg, mp3), any rate, any number of channels, any length: each file is
decoded, downmixed and resampled to 16 kHz (asrflow.audio.load_mono), then run through transformers' own ASR pipeline,
which splits long audio into overlapping chunks (`chunk_length_s`, `stride_length_s`) and stitches the CTC outputs back
together, so the model never sees more than one chunk at a time. Decoding is greedy, or with `--lm` a beam search with
an `asrflow lm` n-gram model (pyctcdecode, passed to the pipeline as its `decoder`). For each FILE, in `--out`:

- `<stem>.txt`  the transcript
- `<stem>.csv`  one row per word: `start, end` (seconds from the start of the recording), `word`, `confidence`
- `<stem>.eaf`  with `--eaf`: an ELAN file linked to the recording, with a `hypothesis` tier of time-aligned phrases
  (words joined until a pause), ready for a linguist to correct in ELAN; under it a `confidence` tier (one value per
  phrase, symbolic association) and a `words` tier (each word time-aligned, included in its phrase)

and `review.csv`: every phrase of every file, least confident first, with the running total of minutes of audio, to
correct in that order. Confidences are the model's own frame posteriors (asrflow.confidence), for greedy and LM
decoding alike.
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
from asrflow.checkpoint import check_model_folder
from asrflow.confidence import aligned_word_confidences, greedy_word_confidences, phrase_confidence
from asrflow.corpus.elan import AUDIO_SUFFIXES
from asrflow.decode import lm_decoder
from asrflow.errors import AsrflowError
from asrflow.inference import load_for_inference
from asrflow.io import atomic_path, write_text
from asrflow.methods import projector
from asrflow.model import compute_device
from asrflow.vocab import encode_labels

log = logging.getLogger(__name__)

MIN_SECONDS = 0.1  # shorter than a few CTC frames: nothing a model can transcribe
MAX_PHRASE_SECONDS = 10.0  # longer phrases are split: an annotation a linguist can check by ear in one go
HYPOTHESIS_TIER = "hypothesis"
CONFIDENCE_TIER = "confidence"  # symbolic association: one value per hypothesis phrase
WORDS_TIER = "words"  # included in: each word time-aligned inside its phrase (pauses within a phrase stay uncovered)
REVIEW_FILE = "review.csv"
FRAME_LOGITS = "frame_logits"  # the key under which ProgressPipeline passes the CTC head's logits along


class TranscribeError(AsrflowError):
    """An input that cannot be transcribed as asked; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the recording
    end: float
    confidence: float  # asrflow.confidence: a word's, or for a phrase the character-weighted mean of its words'


class ProgressPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' ASR pipeline, unchanged, plus a progress bar advanced by the new audio in each chunk, and the
    CTC head's logits over the whole recording in the result's FRAME_LOGITS (for confidences)."""

    progress: tqdm | None = None

    def forward(self, model_inputs: dict, **forward_params):
        if self.progress is not None:
            self.progress.update(new_seconds(model_inputs))
        return super().forward(model_inputs, **forward_params)

    def _forward(self, model_inputs: dict, **forward_params) -> dict:
        # Greedy decoding keeps only each chunk's argmax: the logits are taken from the model's own output.
        captured = []
        hook = self.model.register_forward_hook(lambda module, args, output: captured.append(output.logits))
        try:
            outputs = super()._forward(model_inputs, **forward_params)
        finally:
            hook.remove()
        return {**outputs, FRAME_LOGITS: captured[0]}

    def postprocess(self, model_outputs: list[dict], **postprocess_params) -> dict:
        logits = stitched_logits(model_outputs)
        return {**super().postprocess(model_outputs, **postprocess_params), FRAME_LOGITS: logits}


def stitched_logits(model_outputs: list[dict]) -> np.ndarray:
    """The chunks' logits (removed from `model_outputs`) without their overlaps, end to end: the very frames the
    pipeline's postprocess decodes, cut the same way, so that its word offsets index them."""
    pieces = []
    for output in model_outputs:
        logits = output.pop(FRAME_LOGITS)[0].float().numpy()
        if "stride" in output:  # (frames, left overlap, right overlap), in frames
            total, left, right = output["stride"]
            logits = logits[left : total - right]
        pieces.append(logits)
    return np.concatenate(pieces)


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
        device="cpu" if int8 else compute_device(),  # int8 runs on the CPU (ONNX Runtime; asrflow.inference)
        **decoding,
    )


def recognise(
    asr: ProgressPipeline, samples: np.ndarray, chunk_seconds: float, stride_seconds: float | None, label: str
) -> tuple[str, list[Word]]:
    """The transcript of 16 kHz `samples` and its words with times and confidences, chunked as the pipeline does
    it."""
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
    confidences = word_confidences(asr, result["chunks"], result[FRAME_LOGITS])
    words = [
        Word(c["text"], round(float(c["timestamp"][0]), 3), round(float(c["timestamp"][1]), 3), confidence)
        for c, confidence in zip(result["chunks"], confidences)
    ]
    return result["text"], words


def projector_words(
    loaded: projector.LoadedProjector, samples: np.ndarray, chunk_seconds: float
) -> tuple[str, list[Word]]:
    """A projector model's transcript in chunks; its words share their chunk's span in proportion to their length
    (it has no frame alignment) and its confidence (the mean token probability of the chunk's transcript)."""
    words = []
    for text, start, end, confidence in projector.recognise(loaded, samples, chunk_seconds):
        tokens = text.split()
        edges = np.cumsum([0, *(len(t) for t in tokens)]) / max(1, sum(len(t) for t in tokens))
        times = start + edges * (end - start)
        words += [Word(t, round(a, 3), round(b, 3), confidence) for t, a, b in zip(tokens, times, times[1:])]
    return " ".join(w.text for w in words), words


def word_confidences(asr: ProgressPipeline, chunks: list[dict], logits: np.ndarray) -> list[float]:
    """Each word's confidence (asrflow.confidence): on the best path for greedy decoding, on the forced alignment of
    its tokens (split into units as training labels are) within its frames for beam search."""
    # The pipeline turned frame offsets into seconds (offset × samples per frame / rate): turn them back.
    seconds_per_frame = getattr(asr.model.config, "inputs_to_logits_ratio", 1) / asr.feature_extractor.sampling_rate
    spans = [
        (round(start / seconds_per_frame), round(end / seconds_per_frame))
        for start, end in (c["timestamp"] for c in chunks)
    ]
    blank = asr.tokenizer.pad_token_id
    if asr.type == "ctc_with_lm":
        vocab = asr.tokenizer.get_vocab()
        units = [encode_labels(c["text"], vocab) for c in chunks]
        return aligned_word_confidences(logits, [(u, s, e) for u, (s, e) in zip(units, spans)], blank)
    return greedy_word_confidences(logits, spans, blank)


def phrases(words: list[Word], pause: float, longest: float = MAX_PHRASE_SECONDS) -> list[Word]:
    """Words joined into phrases: a new phrase starts after a pause of at least `pause` seconds, or where adding
    the next word would make the phrase longer than `longest` seconds."""
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < pause and word.end - groups[-1][0].start <= longest:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        Word(
            " ".join(w.text for w in group),
            group[0].start,
            group[-1].end,
            phrase_confidence([(w.text, w.confidence) for w in group]),
        )
        for group in groups
    ]


def write_words_csv(path: Path, words: list[Word]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["start", "end", "word", "confidence"])
            writer.writerows([f"{w.start:.3f}", f"{w.end:.3f}", w.text, f"{w.confidence:.3f}"] for w in words)


def write_review(path: Path, annotations: dict[Path, list[Word]]) -> None:
    """Every phrase of every file, least confident first (ties in file and time order), with the minutes of audio
    of it and all the phrases above it: correct from the top for as many minutes as there is time for."""
    queue = sorted(
        ((file, phrase) for file, file_phrases in annotations.items() for phrase in file_phrases),
        key=lambda item: item[1].confidence,
    )
    minutes = np.cumsum([phrase.end - phrase.start for _, phrase in queue]) / 60
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "start", "end", "hypothesis", "confidence", "minutes"])
            writer.writerows(
                [str(file), f"{p.start:.3f}", f"{p.end:.3f}", p.text, f"{p.confidence:.3f}", f"{total:.2f}"]
                for (file, p), total in zip(queue, minutes)
            )


def media_link(media: Path, eaf_dir: Path) -> tuple[str, str]:
    """(absolute file URI, relative path) of the recording, as ELAN writes them: ELAN tries both when opening."""
    relative = Path(os.path.relpath(media.resolve(), eaf_dir.resolve())).as_posix()
    return media.resolve().as_uri(), relative if relative.startswith(".") else f"./{relative}"


def write_eaf(path: Path, media: Path, annotations: list[Word], words: list[Word]) -> None:
    """An ELAN document linked to `media`: one time-aligned annotation per phrase on the hypothesis tier, its
    confidence on a symbolically associated tier, and its words time-aligned on an included-in tier below it."""
    eaf = pympi.Elan.Eaf(author="asrflow")
    url, relative = media_link(media, path.parent)
    eaf.add_linked_file(url, relpath=relative, mimetype=mimetypes.guess_type(media.name)[0] or "audio/x-wav")
    eaf.add_tier(HYPOTHESIS_TIER)
    eaf.add_linguistic_type(CONFIDENCE_TIER, "Symbolic_Association", timealignable=False)
    eaf.add_tier(CONFIDENCE_TIER, ling=CONFIDENCE_TIER, parent=HYPOTHESIS_TIER)
    eaf.add_linguistic_type(WORDS_TIER, "Included_In")
    eaf.add_tier(WORDS_TIER, ling=WORDS_TIER, parent=HYPOTHESIS_TIER)
    eaf.remove_tier("default")  # pympi starts every document with an empty tier of that name
    for phrase in annotations:
        # ELAN stores milliseconds; a CTC word spans at least one 20 ms frame, so no annotation is empty.
        start, end = round(phrase.start * 1000), round(phrase.end * 1000)
        eaf.add_annotation(HYPOTHESIS_TIER, start, end, phrase.text)
        # pympi finds the parent by a time inside it; the midpoint is inside no other phrase.
        eaf.add_ref_annotation(CONFIDENCE_TIER, HYPOTHESIS_TIER, (start + end) // 2, f"{phrase.confidence:.2f}")
    for word in words:
        eaf.add_annotation(WORDS_TIER, round(word.start * 1000), round(word.end * 1000), word.text)
    with atomic_path(path) as tmp:
        eaf.to_file(str(tmp))


def recordings(paths: list[Path]) -> list[Path]:
    """`paths` with each folder replaced by the audio files directly in it, in name order."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise TranscribeError(f"{path}: a folder without recordings ({', '.join(AUDIO_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    return files


def check_inputs(model_dir: Path, files: list[Path]) -> None:
    """The model folder is one asrflow loads (check_model_folder), every file exists and no two share a stem (their
    outputs would overwrite each other)."""
    if not (model_dir / "config.json").is_file() and not projector.is_projector_model(model_dir):
        raise TranscribeError(
            f"{model_dir}: not a model folder (no config.json); pass results/release or results/models/<method>/fold<k>"
        )
    check_model_folder(model_dir, "--model")
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
    """Transcribe `files` (recordings or folders of them) into `out_dir` (see the module docstring; the arguments
    are `asrflow transcribe`'s options); returns each file's words."""
    files = recordings(files)
    check_inputs(model_dir, files)
    check_chunking(chunk_seconds, stride_seconds)
    own = projector.is_projector_model(model_dir)  # a projector model: its causal LM writes the text
    if own and (int8 or lm_dir is not None):
        raise TranscribeError(f"{model_dir}: a projector model decodes with its own causal LM; drop --int8 and --lm")
    asr = projector.load(model_dir) if own else make_pipeline(model_dir, int8, lm_dir, alpha, beta)
    results, annotations = {}, {}
    for file in files:
        samples = load_recording(file)
        if own:
            text, words = projector_words(asr, samples, chunk_seconds)
        else:
            text, words = recognise(asr, samples, chunk_seconds, stride_seconds, file.name)
        annotations[file] = phrases(words, pause)
        write_text(out_dir / f"{file.stem}.txt", text + "\n")
        write_words_csv(out_dir / f"{file.stem}.csv", words)
        if eaf:
            write_eaf(out_dir / f"{file.stem}.eaf", file, annotations[file], words)
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
    write_review(out_dir / REVIEW_FILE, annotations)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow transcribe`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--model", required=True, type=Path, help="a model folder (results/release, results/models/…)")
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="a recording, or a folder: every recording in it"
    )
    parser.add_argument(
        "--out", default=Path("."), type=Path, help="folder for <stem>.txt/.csv/.eaf and review.csv (default: .)"
    )
    parser.add_argument(
        "--eaf", action="store_true", help="also write an ELAN .eaf: hypothesis, confidence and words tiers"
    )
    parser.add_argument("--int8", action="store_true", help="int8 in ONNX Runtime on the CPU (docs/release.md)")
    # wav2vec2's attention is quadratic in length: 20 s chunks keep memory flat however long the recording.
    parser.add_argument("--chunk-seconds", type=float, default=20.0, help="audio per model call (default 20)")
    parser.add_argument(
        "--stride-seconds",
        type=float,
        default=None,
        help="overlap on each side of a chunk (default: chunk/6, as transformers' pipeline)",
    )
    parser.add_argument(
        "--pause", type=float, default=0.5, help="a pause this long starts a new phrase (ELAN, review.csv) (s)"
    )
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
