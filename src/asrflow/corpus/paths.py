"""Corpus paths are confined to the corpus folder: a row may never point outside it (`../`, absolute paths)."""

from __future__ import annotations

from pathlib import Path

from asrflow.manifest import ManifestError


def confined(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, or a ManifestError naming `where` if it would leave `root`."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ManifestError(f"{where}: path {relative!r} leaves the corpus folder; paths must be relative to {root}")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ManifestError(f"{where}: path {relative!r} resolves outside the corpus folder {root}")
    return root / candidate
