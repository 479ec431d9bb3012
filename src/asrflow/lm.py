"""The `lm` stage: a word n-gram language model per fold, built from that fold's training transcripts only.

The fold's train.csv holds neither its test speakers nor its dev speakers (those tune the decoder's alpha/beta), so
no word only they say can get an LM probability above `<unk>`'s. KenLM's own tools build the model: `lmplz`
(modified Kneser-Ney) writes the ARPA file, `build_binary` turns it into the binary KenLM and pyctcdecode load fast.
Both are compiled by scripts/install_kenlm.sh (run by `make setup`) into the virtual environment's bin.

Output folder (`--out`): `text.txt` (the training sentences, one a line: exactly what the LM saw), `lm.arpa`, `lm.bin`,
`lm.json` (order, sentence/word counts). With `decode.beam: false` only `lm.json` is written and no KenLM tool runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from asrflow import config
from asrflow.io import atomic_path, write_json
from asrflow.manifest import read_manifest
from asrflow.ngram import ARPA_FILE, BINARY_FILE, INFO_FILE, TEXT_FILE, LMError

log = logging.getLogger(__name__)

# lmplz sizes its sort buffers up front (default: 80 % of RAM); a fold's transcripts need a few MB. 256M leaves room
# for its vocabulary hash (~25 MB at the default estimate) and for jobs running side by side.
SORT_MEMORY = "256M"


def kenlm_tool(name: str) -> str:
    """Path of a KenLM program: the running Python's bin first (where install_kenlm.sh puts it), then PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise LMError(
            f"KenLM's {name} is not installed; run `bash scripts/install_kenlm.sh .venv` (part of "
            f"`make setup`), or set decode.beam: false in params.yaml to decode greedily only"
        )
    return found


def run_tool(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LMError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def training_sentences(train_csv: Path) -> list[str]:
    """Transcripts of the training manifest, whitespace-normalised, empty ones left out."""
    sentences = [" ".join(u.text.split()) for u in read_manifest(train_csv)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise LMError(
            f"{train_csv}: no training transcript to build a language model from; check the corpus, or "
            f"set decode.beam: false"
        )
    return sentences


def build_lm(train_csv: Path, decode_cfg: dict, out_dir: Path) -> dict:
    """Write `out_dir` with the fold's n-gram LM (or only its info when decode.beam is false); return the info."""
    sentences = training_sentences(train_csv)
    info = {
        "built": decode_cfg["beam"],
        "order": decode_cfg["lm_order"],
        "source": str(train_csv),
        "sentences": len(sentences),
        "words": sum(len(s.split()) for s in sentences),
        "vocabulary": len({w for s in sentences for w in s.split()}),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if decode_cfg["beam"]:
            (tmp / TEXT_FILE).write_text("\n".join(sentences) + "\n", encoding="utf-8")
            # --discount_fallback: tiny corpora lack the count-of-counts Kneser-Ney discounts are estimated from.
            run_tool(
                [
                    kenlm_tool("lmplz"),
                    "-o",
                    str(decode_cfg["lm_order"]),
                    "--discount_fallback",
                    "-S",
                    SORT_MEMORY,
                    "-T",
                    str(tmp),
                    "--text",
                    str(tmp / TEXT_FILE),
                    "--arpa",
                    str(tmp / ARPA_FILE),
                ]
            )
            run_tool([kenlm_tool("build_binary"), str(tmp / ARPA_FILE), str(tmp / BINARY_FILE)])
        write_json(tmp / INFO_FILE, info)
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow lm`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument(
        "--train", required=True, type=Path, help="the fold's train.csv (never its dev or test manifest)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder: lm.arpa, lm.bin, text.txt, lm.json")


def run_cli(args: argparse.Namespace) -> None:
    decode_cfg = config.load_stage(args.params, "lm")["decode"]
    info = build_lm(args.train, decode_cfg, args.out)
    if info["built"]:
        log.info(
            "%d-gram LM from %s: %d sentences, %d words, %d distinct",
            info["order"],
            args.train,
            info["sentences"],
            info["words"],
            info["vocabulary"],
        )
    else:
        log.info("decode.beam is false: no language model built")
