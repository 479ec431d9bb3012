"""`asrflow <stage>`: one sub-command per pipeline stage and nothing else.

Each sub-command is a thin call of its stage module's `run(...)`; Snakemake rules and DVC stages call these.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asrflow.config import ParamsError
from asrflow.manifest import ManifestError

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

    p = _add(sub, "resample", "decode, downmix and resample every utterance to 16 kHz mono wav")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, rejects.csv, wav/")

    p = _add(sub, "normalize", "normalise transcripts (Unicode, case, removed characters; IPA-safe)")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)

    p = _add(sub, "split", "speaker-independent k-fold split with dev speakers and per-fold vocabularies")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: fold<k>/{train,dev,test}.csv, vocab.json")

    p = _add(sub, "augment", "speed-perturbed copies of utterances, used by training folds only")
    p.add_argument("--in", dest="manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: manifest.csv, wav/")

    p = _add(sub, "pretrain", "pre-train the demo base model, or validate a local checkpoint directory")
    p.add_argument("--source", required=True, type=Path, help="source-language corpus (audiofolder layout)")
    p.add_argument("--out", required=True, type=Path)

    p = _add(sub, "train", "fine-tune one method on one fold; saves the best checkpoint in Hugging Face format")
    p.add_argument("--fold", required=True, type=int)
    p.add_argument("--method", required=True)
    p.add_argument("--folds", required=True, type=Path)
    p.add_argument("--speed", required=True, type=Path)
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--curve", required=True, type=Path, help="per-epoch metrics CSV (for dvc plots)")

    p = _add(sub, "evaluate", "decode a fold's test speakers; CER/WER overall and per speaker; publish the model")
    p.add_argument("--fold", required=True, type=int)
    p.add_argument("--method", required=True)
    p.add_argument("--folds", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output folder: metrics.json, hypotheses.csv, speakers.csv")
    p.add_argument("--publish", required=True, type=Path, help="model folder with its model card")

    p = _add(sub, "report", "aggregate every fold and method into results/folds.csv, summary.csv/md/png")
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    return parser


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
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
    "train": "asrflow.train",
    "evaluate": "asrflow.evaluate",
    "report": "asrflow.report",
}


def resolve_threads(requested: int) -> int:
    """The engines run several jobs side by side, each with the threads it was given; 0 means every usable core."""
    return requested or len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    args.threads = resolve_threads(args.threads)
    import torch  # after argument parsing, so `asrflow --help` stays fast

    torch.set_num_threads(args.threads)
    stage_run: Callable[[argparse.Namespace], None] = importlib.import_module(STAGE_MODULES[args.stage]).run_cli
    try:
        stage_run(args)
    except (ParamsError, ManifestError) as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
