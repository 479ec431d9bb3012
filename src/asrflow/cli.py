"""`asrflow <stage>`: one sub-command per pipeline stage, plus `asrflow transcribe` for users.

Each stage's sub-command comes from the stage table (asrflow.stages): its module adds the arguments and runs it
(`add_arguments(parser)`, `run_cli(args)`). Snakemake rules and DVC stages call the stages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asrflow import stages
from asrflow.errors import AsrflowError
from asrflow.io import atomic_path

log = logging.getLogger("asrflow")


def _add(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--log", default=None, help="also write this stage's log to this file")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for this job (default 0: every core this process may use)"
    )
    return parser


# Sub-commands that are no pipeline stage: no engine runs them, so they have no params keys or code deps.
COMMANDS = {
    "transcribe": ("asrflow.transcribe", "transcribe recordings of any format and length: text, word times CSV, ELAN")
}
DVC_YAML = "dvc-yaml"


def module_of(command: str) -> str:
    return COMMANDS[command][0] if command in COMMANDS else stages.stage(command).module_name


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """One sub-command per stage of the table (asrflow.stages). Only `command`'s module is imported, to add its
    arguments: a stage's start-up stays its own module's imports (no torch for the data stages)."""
    parser = argparse.ArgumentParser(prog="asrflow", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, (_, help_text) in {**{s.name: (s.module_name, s.help) for s in stages.STAGES}, **COMMANDS}.items():
        command_parser = _add(sub, name, help_text)
        if name == command:
            importlib.import_module(module_of(name)).add_arguments(command_parser)
    dvc = sub.add_parser(
        DVC_YAML,
        help="write dvc.yaml from the stage table",
        description="write dvc.yaml from "
        "the stage table (src/asrflow/stages.py); --check: only say whether it is up to date",
    )
    dvc.add_argument("--out", default=Path("dvc.yaml"), type=Path)
    dvc.add_argument("--check", action="store_true", help="exit 1 if the file differs from the table's")
    dvc.add_argument(
        "--params", default=Path("params.yaml"), type=Path, help="its lists of dep paths (corpus.sources' folders)"
    )
    return parser


def write_dvc_yaml(out: Path, check: bool, params_file: Path) -> int:
    from asrflow import config

    try:  # a dep `${key[*].name}` is a list of paths params.yaml holds: DVC cannot expand it itself
        text = stages.dvc_yaml(config.load_all(params_file) if params_file.is_file() else None)
    except AsrflowError as error:
        log.error("%s", error)
        return 2
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != text:
            log.error("%s differs from the stage table: run `asrflow %s`", out, DVC_YAML)
            return 1
        return 0
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return 0


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and os.environ.get("RANK", "0") != "0":  # torchrun's other processes: one log each
        log_file = f"{log_file}.rank{os.environ['RANK']}"
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # Under torchrun, process 0 continues the log its launcher began (the same --log file).
        mode = "a" if os.environ.get("RANK") == "0" else "w"
        handlers.append(logging.FileHandler(log_file, mode=mode, encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


def resolve_threads(requested: int) -> int:
    """The engines run several jobs side by side, each with the threads it was given; 0 means every usable core."""
    return requested or len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if args.stage == DVC_YAML:
        return write_dvc_yaml(args.out, args.check, args.params)
    _setup_logging(args.log)
    args.threads = resolve_threads(args.threads)
    import torch  # after argument parsing, so `asrflow --help` stays fast

    torch.set_num_threads(args.threads)
    stage_run: Callable[[argparse.Namespace], None] = importlib.import_module(module_of(args.stage)).run_cli
    try:
        stage_run(args)
    except AsrflowError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
