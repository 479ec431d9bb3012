"""Corpora named as documentation projects name them: file names in Cyrillic and IPA that differ in one letter, names
with shell and pattern metacharacters, names as macOS and Windows write them, and corpora tracked by DVC. Every file
imports with an id of its own, stable from run to run, in both engines; a name nothing can carry is refused naming it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from conftest import BIN, copy_project, run
from corpus_fixtures import WRITERS, Row, tone

from asrflow.corpus.entries import MAX_ID_BYTES
from asrflow.import_ import import_corpus
from asrflow.manifest import BadItemError, ManifestError, Rejects, Utterance, read_manifest

# Five speakers; in each folder, names that differ in one letter only (Cyrillic, or IPA), as field recordings are named.
SPEAKERS = {
    "Айгуль": ["сказка_а", "сказка_б", "сказка_в"],
    "Ботагөз": ["ырым_1", "ырым_2"],
    "ŋaːti": ["ʃɛta", "ʃeta", "ʃɛtə"],
    "ɬana": ["ʔuka", "ʕuka"],
    "Дәмир": ["жыр", "жър"],
}
# Names with the characters shells, globs, printf and Snakemake patterns give meaning to: each is a file like any other.
METACHARACTERS = ["take{1}", "take{2}", "[draft]", "a*b", "why?", "50%", "it's", 'say "hi"', "$HOME", "`date`", "a b"]


def write_corpus(root: Path, names: dict[str, list[str]], *, delimiter: str = ",") -> list[tuple[str, str]]:
    """An audiofolder corpus: `<speaker>/<name>.wav` for every name, a tone of its own length each (distinct audio)."""
    rows = []
    for speaker, files in names.items():
        for name in files:
            relative = f"{speaker}/{name}.wav"
            (root / speaker).mkdir(parents=True, exist_ok=True)
            sf.write(root / relative, tone(0.5 + 0.05 * len(rows)), 16000)
            rows.append((relative, speaker))
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["file_name", "transcription", "speaker_id"])
        writer.writerows([relative, f"ta ka {n}", speaker] for n, (relative, speaker) in enumerate(rows))
    return rows


def imported(root: Path, on_bad: str = "error") -> tuple[list[Utterance], Rejects]:
    rejects = Rejects("import", on_bad)
    return import_corpus({"format": "audiofolder", "path": str(root)}, rejects), rejects


def test_names_in_any_script_each_get_their_own_readable_stable_id(tmp_path: Path) -> None:
    rows = write_corpus(tmp_path / "corpus", SPEAKERS)
    utts, rejects = imported(tmp_path / "corpus")
    assert not rejects.items and len(utts) == len(rows) == 12
    ids = [u.utt_id for u in utts]
    assert len(set(ids)) == len(ids)
    assert "Айгуль_сказка_а" in ids and "ŋaːti_ʃɛtə" in ids, "readable: the names' own letters"
    assert ids == [u.utt_id for u in imported(tmp_path / "corpus")[0]], "stable from run to run"
    assert all(len(i.encode()) <= MAX_ID_BYTES and "/" not in i for i in ids), "usable as file names"


def test_names_an_id_would_merge_are_kept_apart_by_a_digest(tmp_path: Path) -> None:
    names = {"s1": [*METACHARACTERS, "take_1"], "s2": ["a_b", "a b", "x" * 200, "x" * 199 + "y"]}
    write_corpus(tmp_path / "corpus", names)
    shutil.copy(tmp_path / "corpus/s2/a_b.wav", tmp_path / "corpus/s2/a_b.flac")  # a second recording named alike
    with (tmp_path / "corpus/metadata.csv").open("a", encoding="utf-8") as handle:
        handle.write("s2/a_b.flac,ta,s2\n")
    utts, rejects = imported(tmp_path / "corpus")
    assert not rejects.items and len(utts) == len(METACHARACTERS) + 6
    ids = {Path(u.audio).relative_to(tmp_path / "corpus").as_posix(): u.utt_id for u in utts}
    assert len(set(ids.values())) == len(ids)
    assert ids["s1/why?.wav"] == "s1_why" and ids["s1/50%.wav"] == "s1_50", "a name no other shares stays readable"
    assert ids["s1/take{2}.wav"] == "s1_take_2" and ids["s1/it's.wav"] == "s1_it_s"
    for merged in (
        "s1/take{1}.wav",
        "s1/take_1.wav",
        "s1/a b.wav",
        "s1/a*b.wav",
        "s2/a b.wav",
        "s2/a_b.wav",
        "s2/a_b.flac",
    ):
        assert re.fullmatch(r"s[12]_(take_1|a_b)~[0-9a-f]{10}", ids[merged]), (merged, ids[merged])
    long_ids = [ids[f"s2/{'x' * 200}.wav"], ids[f"s2/{'x' * 199}y.wav"]]
    assert all(len(i.encode()) <= MAX_ID_BYTES and "~" in i for i in long_ids) and long_ids[0] != long_ids[1]


def test_a_name_with_a_line_break_is_refused_naming_it(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", {"s1": ["good", "two\nlines"]})
    with pytest.raises(ManifestError, match=r"the file name 's1/two\\nlines.wav' holds the control character"):
        imported(tmp_path / "corpus", "skip")


def test_names_as_macos_and_windows_write_them_are_found(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_corpus(root, {"spk1": ["café", "naïve"], "spk2": ["clip"]})
    nfd = unicodedata.normalize("NFD", "café.wav")
    (root / "spk1/café.wav").rename(root / "spk1" / nfd)  # copied from macOS: decomposed on disk, composed in the csv
    text = (root / "metadata.csv").read_text(encoding="utf-8").replace("spk2/clip.wav", "spk2\\clip.wav")  # Windows
    text = text.replace("spk1/naïve.wav", unicodedata.normalize("NFD", "spk1/naïve.wav"))  # and the other way round
    (root / "metadata.csv").write_text(text, encoding="utf-8")
    utts, rejects = imported(root)
    assert not rejects.items
    assert sorted(Path(u.audio).name for u in utts) == sorted([nfd, "naïve.wav", "clip.wav"]), "as spelt on disk"
    assert {u.utt_id for u in utts} == {"spk1_café", "spk1_naïve", "spk2_clip"}, "ids in NFC, whatever the disk says"


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("spk1/Clip.WAV", r"did you mean 'clip\.wav'\? the names differ in case only"),
        ("spk1/clipp.wav", r"did you mean 'clip\.wav'\?"),
        ("Spk1/clip.wav", r"did you mean 'spk1'\? the names differ in case only"),
    ],
)
def test_a_near_miss_names_the_candidate(tmp_path: Path, written: str, hint: str) -> None:
    root = tmp_path / "corpus"
    write_corpus(root, {"spk1": ["clip"]})
    text = (root / "metadata.csv").read_text(encoding="utf-8").replace("spk1/clip.wav", written)
    (root / "metadata.csv").write_text(text, encoding="utf-8")
    with pytest.raises(BadItemError, match=rf"audio file {re.escape(written)} not found in .*{hint}"):
        imported(root)


def test_a_backslash_path_cannot_leave_the_corpus_folder(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_corpus(root, {"spk1": ["clip"]})
    shutil.copy(root / "spk1/clip.wav", tmp_path / "secret.wav")
    text = (root / "metadata.csv").read_text(encoding="utf-8").replace("spk1/clip.wav", "..\\secret.wav")
    (root / "metadata.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"leaves the corpus folder"):
        imported(root, "skip")


def test_a_speakers_mapping_names_files_as_other_systems_write_them(tmp_path: Path) -> None:
    """An ELAN corpus copied from macOS (eaf names decomposed on disk) whose speakers mapping was typed on Windows
    (composed, `\\` separators): every tier finds its speaker."""
    rows = [Row("a", "Айгуль", "ta"), Row("b", "Ботагөз", "ka")]
    root = tmp_path / "corpus"
    root.mkdir()
    settings = WRITERS["elan"](root, rows, mapped=("Айгуль", "Ботагөз"))
    (root / "sessions").mkdir()
    for speaker in ("Айгуль", "Ботагөз"):
        decomposed = unicodedata.normalize("NFD", f"сессия_й_{speaker}")
        (root / f"{speaker}.eaf").rename(root / "sessions" / f"{decomposed}.eaf")
        (root / f"{speaker}.wav").rename(root / "sessions" / f"{decomposed}.wav")
    mapping = "eaf_file,tier,speaker\n" + "".join(
        f"sessions\\сессия_й_{s}.eaf,transcription,{s}\n" for s in ("Айгуль", "Ботагөз")
    )
    (root / "speakers.csv").write_text(mapping, encoding="utf-8")
    rejects = Rejects("import", "error")
    utts = import_corpus({**settings, "path": str(root)}, rejects)
    assert sorted(u.speaker for u in utts) == ["Айгуль", "Ботагөз"] and not rejects.items


# --- corpora tracked by DVC -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_type", ["symlink", "hardlink", "copy"])
def test_a_dvc_tracked_corpus_imports_under_every_cache_type(tmp_path: Path, cache_type: str) -> None:
    run(["git", "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "config", "cache.type", cache_type], tmp_path)
    write_corpus(tmp_path / "corpus", SPEAKERS)
    run([str(BIN / "dvc"), "add", "-q", "corpus"], tmp_path)
    if cache_type == "symlink":
        assert (tmp_path / "corpus/metadata.csv").is_symlink(), "DVC linked the corpus into its cache"
    utts, rejects = imported(tmp_path / "corpus")
    assert not rejects.items and len(utts) == 12


def test_a_symlink_out_of_the_corpus_is_still_refused_in_a_dvc_project(tmp_path: Path) -> None:
    run(["git", "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    write_corpus(tmp_path / "corpus", {"spk1": ["clip"]})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "corpus/spk1/clip.wav").rename(tmp_path / "elsewhere/clip.wav")
    os.symlink(tmp_path / "elsewhere/clip.wav", tmp_path / "corpus/spk1/clip.wav")
    with pytest.raises(ManifestError, match=r"resolves outside the corpus folder .*: to .*elsewhere/clip\.wav"):
        imported(tmp_path / "corpus", "skip")


# --- both engines -----------------------------------------------------------------------------------------------------


def engine_project(tmp_path: Path, name: str) -> Path:
    project = copy_project(tmp_path / name)
    corpus = project / "data/raw/field"
    write_corpus(corpus, {**SPEAKERS, "s6": METACHARACTERS})
    (corpus / "notes\nold.txt").write_text("a file no row names; its name holds a line break", encoding="utf-8")
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["corpus"].update(format="audiofolder", path="data/raw/field", name="field")
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return project


@pytest.mark.slow
def test_both_engines_import_every_file_of_a_corpus_named_in_any_script(tmp_path: Path) -> None:
    """Cyrillic, IPA and metacharacter names (braces included, which Snakemake would read as wildcards; a stray
    file whose name holds a line break) in both engines: every file imported, ids unique and the same in both; a
    changed braced file re-runs the import."""
    by_snakemake = engine_project(tmp_path, "snakemake")
    run([str(BIN / "snakemake"), "--cores", "1", "data/interim/corpus.csv"], by_snakemake)
    by_dvc = engine_project(tmp_path, "dvc")
    run([str(BIN / "dvc"), "repro", "-s", "import"], by_dvc)
    manifests = [read_manifest(project / "data/interim/corpus.csv") for project in (by_snakemake, by_dvc)]
    for utts in manifests:
        assert len(utts) == 12 + len(METACHARACTERS) and len({u.utt_id for u in utts}) == len(utts)
    assert [u.utt_id for u in manifests[0]] == [u.utt_id for u in manifests[1]]
    dry_run = [str(BIN / "snakemake"), "-n", "data/interim/corpus.csv"]
    assert "Nothing to be done" in run(dry_run, by_snakemake).stdout
    sf.write(by_snakemake / "data/raw/field/s6/take{1}.wav", tone(0.9), 16000)
    assert "rule import:" in run(dry_run, by_snakemake).stdout, "a braced name is data: editing it re-runs the import"
