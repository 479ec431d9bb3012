"""Atomic writes: a stage's outputs appear complete or not at all, so neither engine ever accepts a half-written
file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `target` (a file or a directory)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_json_folder(target: str | Path, name: str, data: Any) -> None:
    """A new folder `target` holding only `name`, the JSON of `data`, written atomically: the output of a stage that
    describes what it was given (or that nothing was) instead of copying it."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        write_json(tmp / name, data)


def describe_local(
    model_dir: str | Path, describe: Callable[[Path], dict[str, Any]], out: str | Path, name: str
) -> dict[str, Any]:
    """Validate a local model folder by describing it (`describe` refuses one the pipeline cannot use) and write the
    description, with the folder's resolved path, as `out`/`name`: the model is referenced, never copied (pretrain's
    base, the decoder stage's causal LM). Returns the description."""
    path = Path(model_dir).resolve()
    description = {"path": str(path), **describe(path)}
    write_json_folder(out, name, description)
    return description


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
