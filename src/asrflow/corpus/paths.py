"""Corpus paths: confined to the corpus folder, and found the way people and other systems write them.

A row may never point outside its corpus folder (`../`, absolute paths, a symlink out of it), with one exception: a
file of a DVC-tracked corpus (`dvc add` with `cache.type` symlink) resolves into the project's own DVC cache, which is
where DVC keeps the corpus' content. Names are matched as written first; a name that is not on disk as written is
looked for with `\\` read as `/` (metadata written on Windows) and Unicode-equivalent spellings (NFC/NFD: a copy from
macOS), and a miss names the nearest file there is ("did you mean …").
"""

from __future__ import annotations

import difflib
import functools
import unicodedata
from pathlib import Path, PurePosixPath

from asrflow.manifest import ManifestError


@functools.cache
def dvc_caches(root: Path) -> tuple[Path, ...]:
    """The cache folders of the DVC project holding `root` (resolved), none outside a DVC project. Through DVC's own
    API: the cache's place is its config's business (`dvc cache dir` may put it anywhere)."""
    from dvc.exceptions import NotDvcRepoError  # imported here: only DVC-tracked corpora need DVC's start-up cost
    from dvc.repo import Repo

    try:
        repo = Repo(Repo.find_root(str(root)))
    except NotDvcRepoError:
        return ()
    with repo:
        odbs = (repo.cache.local, repo.cache.legacy)
        return tuple(dict.fromkeys(Path(odb.path).resolve() for odb in odbs if odb is not None))


def confined(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, or a ManifestError naming `where` if it would leave `root`."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ManifestError(f"{where}: path {relative!r} leaves the corpus folder; paths must be relative to {root}")
    resolved = (root / candidate).resolve()
    if resolved.is_relative_to(root.resolve()):
        return root / candidate
    if any(resolved.is_relative_to(cache) for cache in dvc_caches(root.resolve())):
        return root / candidate  # a DVC-tracked corpus: its files link into the project's DVC cache
    hint = ""
    if ".dvc" in resolved.parts:
        hint = " (into a DVC cache, but not that of the DVC project holding the corpus folder)"
    raise ManifestError(f"{where}: path {relative!r} resolves outside the corpus folder {root}{hint}: to {resolved}")


class CorpusFiles:
    """Finds the files rows name in one corpus folder, listing each folder once however many rows name it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[Path, dict[str, tuple[str, ...]]] = {}

    def _listing(self, folder: Path) -> dict[str, tuple[str, ...]]:
        """The folder's entries by their NFC spelling."""
        if folder not in self._listings:
            names: dict[str, list[str]] = {}
            for entry in folder.iterdir() if folder.is_dir() else ():
                names.setdefault(unicodedata.normalize("NFC", entry.name), []).append(entry.name)
            self._listings[folder] = {nfc: tuple(sorted(spellings)) for nfc, spellings in names.items()}
        return self._listings[folder]

    def _suggestion(self, folder: Path, wanted: str) -> str:
        """' (did you mean …?)' naming the entry of `folder` nearest to `wanted`: a case-only difference first."""
        listing = self._listing(folder)
        folded = unicodedata.normalize("NFC", wanted).casefold()
        same_letters = [name for nfc, names in listing.items() for name in names if nfc.casefold() == folded]
        if same_letters:
            return f" (did you mean {same_letters[0]!r}? the names differ in case only)"
        near = difflib.get_close_matches(unicodedata.normalize("NFC", wanted), list(listing), n=1, cutoff=0.75)
        return f" (did you mean {listing[near[0]][0]!r}?)" if near else ""

    def locate(self, relative: str) -> tuple[str, str]:
        """(the path as it is on disk, relative to the root; '') for a file a row names, or ('', why not): the name
        as written, else with `\\` as `/`, else component by component in any Unicode-equivalent spelling."""
        if (self.root / relative).is_file():
            return relative, ""
        found = self.root
        parts = PurePosixPath(relative.replace("\\", "/")).parts
        for depth, part in enumerate(parts):
            nfc = unicodedata.normalize("NFC", part)
            spellings = (part,) if (found / part).exists() else self._listing(found).get(nfc, ())
            if len(spellings) > 1:
                shown = "/".join(parts[: depth + 1])
                return "", f"{shown!r} is on disk in {len(spellings)} Unicode-equivalent spellings: rename all but one"
            if not spellings:
                return "", f"audio file {relative} not found in {self.root}{self._suggestion(found, part)}"
            found = found / spellings[0]
        if not found.is_file():
            return "", f"audio file {relative} not found in {self.root}: {found.relative_to(self.root)} is a folder"
        return found.relative_to(self.root).as_posix(), ""
