"""`asrflow <stage>`: one sub-command per pipeline stage, plus `asrflow transcribe` for users.

Each sub-command is a thin call of its module's `run_cli(...)`; Snakemake rules and DVC stages call the stages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asrflow.errors import AsrflowError

log = logging.getLogger("asrflow")


def _add(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--log", default=None, help="also write this stage's log to this file")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for this job (default 0: every core this process may use)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asrflow", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")

    p = _add(sub, "demo", "synthesise the demo corpus (target language) and its source-language corpus with espeak-ng")
    p.add_argument("--target", required=True, type=Path)
    p.add_argument("--source", required=True, type=Path)

    p = _add(sub, "import", "read corpus.path in corpus.format into a manifest")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rejects", required=True, type=Path, help="rows left out, with the reason (CSV)")

    p = _add(sub, "resample", "decode, downmix and resample every utterance to 16 kHz mono wav")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, rejects.csv, wav/")

    p = _add(sub, "normalize", "normalise transcripts (Unicode, case, removed characters; IPA-safe)")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rejects", required=True, type=Path, help="utterances left out, with the reason (CSV)")

    p = _add(sub, "split", "speaker-independent k-fold split with dev speakers and per-fold vocabularies")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: fold<k>/{train,dev,test}.csv, vocab.json")

    p = _add(sub, "augment", "speed-perturbed copies of utterances, used by training folds only")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, wav/")

    p = _add(sub, "pretrain", "pre-train the demo base model, or validate a local checkpoint directory")
    p.add_argument("--source", required=True, type=Path, help="source-language corpus (audiofolder layout)")
    p.add_argument("--out", required=True, type=Path)

    p = _add(sub, "plan", "before training: can the method take the base, and its peak GPU memory (memory plan)")
    p.add_argument("--method", required=True)
    p.add_argument("--base", required=True, type=Path, help="the pretrain stage's folder (data/models/base)")
    p.add_argument("--out", required=True, type=Path, help="the plan (JSON)")

    p = _add(sub, "train", "fine-tune one method on one fold; saves the best checkpoint in Hugging Face format")
    p.add_argument("--fold", required=True, type=int)
    p.add_argument("--method", required=True)
    p.add_argument("--folds", required=True, type=Path)
    p.add_argument("--speed", required=True, type=Path)
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--curve", required=True, type=Path, help="per-epoch metrics CSV (for dvc plots)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one params key this job reads, e.g. train.adapter.lr=0.001 (a search trial's)")

    p = _add(sub, "lm", "word n-gram language model of one fold, from its training transcripts only (KenLM)")
    p.add_argument("--train", required=True, type=Path, help="the fold's train.csv (never its dev or test manifest)")
    p.add_argument("--out", required=True, type=Path, help="output folder: lm.arpa, lm.bin, text.txt, lm.json")

    p = _add(sub, "evaluate", "decode a fold's test speakers; CER/WER overall and per speaker; publish the model")
    p.add_argument("--fold", required=True, type=int)
    p.add_argument("--method", required=True)
    p.add_argument("--folds", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: metrics.json, hypotheses.csv, speakers.csv")
    p.add_argument("--publish", required=True, type=Path, help="model folder with its model card")
    p.add_argument("--lm", required=True, type=Path, help="the fold's `asrflow lm` folder (used if decode.beam)")

    p = _add(sub, "report", "aggregate every fold and method into results/folds.csv, summary.csv/md/png")
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)

    p = _add(sub, "data_report", "speakers, character inventory and every rejected item: data_report.md/csv")
    p.add_argument("--in", dest="manifest", required=True, type=Path, help="the normalised utterances")
    p.add_argument("--folds", required=True, type=Path)
    p.add_argument("--rejects", required=True, type=Path, nargs="+", help="every stage's rejects file")
    p.add_argument("--out", required=True, type=Path, help="folder for data_report.md and data_report.csv")

    p = _add(sub, "release", "refit the chosen method on every speaker with the epochs cross-validation selected")
    p.add_argument("--summary", required=True, type=Path, help="results/summary.csv (chooses the best method)")
    p.add_argument("--folds-table", required=True, type=Path, help="results/folds.csv (per-fold results, epochs)")
    p.add_argument("--utterances", required=True, type=Path, help="every normalised utterance (all speakers)")
    p.add_argument("--speed", required=True, type=Path)
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="the released model folder, with its model card")

    p = _add(sub, "search", "gather a random search's trials into results/search.csv; select one by mean dev CER")
    p.add_argument("--metrics", required=True, type=Path, help="folder of trial<n>/metrics/<method>/fold<k>")
    p.add_argument("--out", required=True, type=Path, help="the search table (CSV)")

    p = _add(sub, "transcribe", "transcribe recordings of any format and length: text, word times CSV, ELAN")
    p.add_argument("--model", required=True, type=Path, help="a model folder (results/release, results/models/…)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--out", default=Path("."), type=Path, help="folder for <stem>.txt/.csv/.eaf (default: .)")
    p.add_argument("--eaf", action="store_true", help="also write an ELAN .eaf with a hypothesis tier")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the Linear layers (CPU)")
    # wav2vec2's attention is quadratic in length: 20 s chunks keep memory flat however long the recording.
    p.add_argument("--chunk-seconds", type=float, default=20.0, help="audio per model call (default 20)")
    p.add_argument("--stride-seconds", type=float, default=None,
                   help="overlap on each side of a chunk (default: chunk/6, as transformers' pipeline)")
    p.add_argument("--pause", type=float, default=0.5, help="a pause this long starts a new ELAN phrase (s)")
    p.add_argument("--lm", type=Path, default=None, help="an `asrflow lm` folder: beam search with its n-gram LM")
    p.add_argument("--alpha", type=float, default=None, help="LM weight (default: pyctcdecode's; evaluate's "
                                                             "metrics.json holds each fold's tuned lm_alpha)")
    p.add_argument("--beta", type=float, default=None, help="word insertion bonus (default: pyctcdecode's; "
                                                            "metrics.json: lm_beta)")
    return parser


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and os.environ.get("RANK", "0") != "0":  # torchrun's other processes: one log each
        log_file = f"{log_file}.rank{os.environ['RANK']}"
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)


STAGE_MODULES = {
    "demo": "asrflow.corpus.demo",
    "import": "asrflow.corpus",
    "resample": "asrflow.audio",
    "normalize": "asrflow.text",
    "split": "asrflow.folds",
    "augment": "asrflow.augment",
    "pretrain": "asrflow.pretrain",
    "plan": "asrflow.plan",
    "train": "asrflow.train",
    "lm": "asrflow.lm",
    "evaluate": "asrflow.evaluate",
    "report": "asrflow.report",
    "data_report": "asrflow.data_report",
    "release": "asrflow.release",
    "search": "asrflow.search",
}
# Sub-commands that are no pipeline stage: no engine runs them, so they have no params keys or code deps.
COMMAND_MODULES = {**STAGE_MODULES, "transcribe": "asrflow.transcribe"}


def resolve_threads(requested: int) -> int:
    """The engines run several jobs side by side, each with the threads it was given; 0 means every usable core."""
    return requested or len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    args.threads = resolve_threads(args.threads)
    import torch  # after argument parsing, so `asrflow --help` stays fast

    torch.set_num_threads(args.threads)
    stage_run: Callable[[argparse.Namespace], None] = importlib.import_module(COMMAND_MODULES[args.stage]).run_cli
    try:
        stage_run(args)
    except AsrflowError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
