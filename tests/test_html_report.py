"""The one page to look at: Snakemake's HTML report of a real tiny run (`snakemake --report`), and the pages asrflow
adds to it (the suspects to listen to, the training curves), each opened in a real headless Chromium (tests/browser.py)
as a reader would: the summary table is there, every image decodes, every audio player holds its clip, and nothing is
fetched from the network.

Screenshots are kept as test artefacts in $ASRFLOW_TEST_ARTIFACTS (default: the test's tmp_path); their paths are
printed (pytest -s, or -rA).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from browser import Chromium
from conftest import BIN, ROOT, copy_project, read_params, run, tiny_params

from asrflow import curves, listen, stages
from asrflow.errors import AsrflowError

# Every audio player of the page, once the page has loaded: its clip's duration in seconds (NaN: it did not decode).
DURATIONS = """new Promise(done => document.readyState === 'complete' ? done() : addEventListener('load', done)).then(
    () => Promise.all([...document.querySelectorAll('audio')].map(a => a.readyState >= 1 ? a.duration :
        new Promise(done => { a.onloadedmetadata = a.onerror = () => done(a.duration); }))))"""
# Every image of the page, once loaded: its natural width (0: it did not decode).
IMAGE_WIDTHS = """Promise.all([...document.images].map(img => img.complete ? img.naturalWidth :
    new Promise(done => { img.onload = img.onerror = () => done(img.naturalWidth); })))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    """One Chromium for the module's tests (it takes seconds to start); each test opens its own page."""
    with Chromium() as chromium:
        yield chromium


def artefact(tmp_path: Path, name: str) -> Path:
    """Where a test keeps a screenshot for people to look at: $ASRFLOW_TEST_ARTIFACTS, else its tmp_path."""
    folder = Path(os.environ.get("ASRFLOW_TEST_ARTIFACTS") or tmp_path)
    path = folder / name
    print(f"screenshot: {path}")
    return path


def write_clip(path: Path, seconds: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")


def suspects_csv(folder: Path, n: int) -> Path:
    """A suspects.csv as analyze writes it, over n real wav clips of 1.0, 1.5, 2.0 … seconds (ranked in reverse)."""
    rows = []
    for i in range(n):
        audio = folder / f"wav/utt{i}.wav"
        write_clip(audio, 1.0 + 0.5 * i)
        rows.append(
            {
                "rank": n - i,
                "utt_id": f"utt{i}",
                "speaker": f"spk{i % 2}",
                "audio": str(audio),
                "reference": f"ʃe <b>zara</b> {i}",  # IPA, and markup that must stay text
                "score": 3.5 - i,
                "reason": "CER far above the speaker's",
                "hypothesis_full": f"se zara {i}",
                "hypothesis_lora": "",
            }
        )
    path = folder / "suspects.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_suspects_page_plays_each_clip_offline_in_rank_order(tmp_path: Path, browser: Chromium) -> None:
    csv = suspects_csv(tmp_path, 4)
    page = tmp_path / "out/suspects.html"
    assert listen.listen(csv, page, top=3) == 3
    browser.open(page)
    durations = browser.evaluate(DURATIONS)
    cells = browser.evaluate("[...document.querySelectorAll('tbody tr')].map(r => r.cells[1].textContent)")
    reference = browser.evaluate("document.querySelector('tbody tr').cells[4].textContent")
    browser.screenshot(artefact(tmp_path, "suspects.png"))
    assert browser.remote_requests() == []
    # Rank 1 is the last row written (utt3, 2.5 s); the page keeps the top 3: utt3, utt2, utt1.
    assert cells == ["utt3", "utt2", "utt1"]
    assert durations == pytest.approx([2.5, 2.0, 1.5], abs=0.03)  # Ogg Opus: whole 20 ms frames
    assert reference == "ʃe <b>zara</b> 3"


def test_suspects_page_names_missing_columns_and_audio(tmp_path: Path) -> None:
    csv = suspects_csv(tmp_path, 2)
    table = pd.read_csv(csv)
    table.drop(columns="reason").to_csv(tmp_path / "no_reason.csv", index=False)
    with pytest.raises(AsrflowError, match="missing column.*reason"):
        listen.listen(tmp_path / "no_reason.csv", tmp_path / "page.html", top=20)
    table.assign(audio="nowhere/utt.wav").to_csv(tmp_path / "no_audio.csv", index=False)
    with pytest.raises(AsrflowError, match="utterance utt1: audio nowhere/utt.wav does not exist"):
        listen.listen(tmp_path / "no_audio.csv", tmp_path / "page.html", top=20)
    assert not (tmp_path / "page.html").exists()


def test_training_curves_draw_every_fold_and_name_a_missing_one(tmp_path: Path, browser: Chromium) -> None:
    for method, fold in [("full", 0), ("full", 1), ("lora", 0)]:
        epochs = np.arange(1, 4 + fold)
        pd.DataFrame({"epoch": epochs, "train_loss": 3.0 / epochs, "dev_cer": 0.9 / epochs, "dev_wer": 1.0}).to_csv(
            curves.curve_path(tmp_path, method, fold), index=False
        )
    table = curves.curves(tmp_path, tmp_path / "plot.png", ["full", "lora"], [0])
    assert table.groupby(["method", "fold"]).size().to_dict() == {("full", 0): 3, ("lora", 0): 3}
    browser.open(tmp_path / "plot.png")  # the PNG decodes, at the size it was drawn (12 × 4.5 inches at 150 dpi)
    assert browser.evaluate(IMAGE_WIDTHS) == [1800]
    with pytest.raises(AsrflowError, match=r"lora-fold1.csv: no training curve for method 'lora', fold 1"):
        curves.curves(tmp_path, tmp_path / "plot.png", ["full", "lora"], [0, 1])


def test_every_reported_output_has_its_caption_and_findable_files() -> None:
    """The stage table's report fields as Snakemake needs them: a caption names a file in workflow/report/, and a
    folder's files are named by patterns with a wildcard (glob_wildcards finds nothing without one)."""
    reported = [(s.name, o) for s in stages.STAGES for o in s.outs.values() if o.report]
    assert {"Summary", "Data", "Per fold", "Training", "Suspects"} <= {o.report for _, o in reported}
    for name, out in reported:
        assert not out.caption or (ROOT / "workflow/report" / out.caption).is_file(), (name, out)
        assert out.directory == bool(out.report_files), (name, out)
        assert all(re.search(r"\{\w+", pattern) for pattern in out.report_files), (name, out)


# --- the report of a real run -------------------------------------------------------------------------------------

# What the tiny run builds, and the report then shows: the summary, the data report, the per-fold tables, the
# training curves, the suspects to listen to (`snakemake --report` reports the targets it is given and what they are
# made from; every one must exist). The same targets as `make report`.
TARGETS = ["results/summary.csv", "results/data_report.md", "results/training_curves.png", "results/suspects.html"]
# Every image result of the report, shown as its viewer shows it on a click (the data: URI of results[path]).
SHOW_IMAGE = "app.setView({content: 'img', contentPath: results[%r].data_uri, resultPath: %r}); true"
SHOW_PAGE = "app.setView({content: 'html', contentPath: results[%r].data_uri, resultPath: %r}); true"
SHOWN_WIDTH = """(img => img && img.complete ? img.naturalWidth : 0)(
    [...document.images].find(img => img.src === results[%r].data_uri))"""


@pytest.mark.slow
def test_snakemake_report_opens_offline_with_the_summary_and_every_image(tmp_path: Path, browser: Chromium) -> None:
    project = copy_project(tmp_path / "project")
    tiny_params(project, methods=["full"])
    run([str(BIN / "snakemake"), "--cores", "2", *TARGETS], project, timeout=1200)
    run([str(BIN / "snakemake"), "--report", "results/report.html", *TARGETS], project)
    summary = pd.read_csv(project / "results/summary.csv")
    browser.open(project / "results/report.html")
    # React renders the first page after the load event: the workflow description, with the summary table and plot.
    rows = browser.wait_for(
        "[...document.querySelectorAll('table tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    first_page = browser.evaluate(IMAGE_WIDTHS)  # Snakemake's logo and the summary plot
    browser.screenshot(artefact(tmp_path, "report.png"))
    categories = browser.evaluate("Object.keys(categories)")
    images = browser.evaluate("Object.keys(results).filter(path => /\\.(png|svg|jpe?g)$/.test(path))")
    shown = {}
    for path in images:
        browser.evaluate(SHOW_IMAGE % (path, path))
        shown[path] = browser.wait_for(SHOWN_WIDTH % path)
        browser.screenshot(artefact(tmp_path, f"report-{Path(path).stem}.png"))
    pages = browser.evaluate("Object.keys(results).filter(path => path.endsWith('.html'))")
    # The suspects page, in the report's frame: every player holds its clip.
    browser.evaluate(SHOW_PAGE % ("results/suspects.html", "results/suspects.html"))
    players = browser.frame_evaluate("data:text/html", DURATIONS)
    browser.screenshot(artefact(tmp_path, "report-suspects.png"))
    browser.evaluate("app.setView({content: 'stats'}); true")  # Snakemake's run-time charts (Vega)
    browser.wait_for("document.querySelectorAll('canvas, svg.marks').length")
    remote = browser.remote_requests()
    full = next(row for row in rows if row[:1] == ["full"])
    assert f"{summary.loc[0, 'cer_mean']:g}" in [f"{float(cell):g}" for cell in full[1:] if _number(cell)], full
    assert len(first_page) == 2 and all(first_page), first_page
    assert {"results/summary.png", "results/training_curves.png"} <= set(shown) and all(shown.values()), shown
    assert {"Summary", "Data", "Per fold", "Training", "Suspects"} <= set(categories), categories
    assert pages == ["results/suspects.html"], pages
    suspects = pd.read_csv(project / "results/suspects.csv")
    played = read_params(project)["report"]["suspects_to_play"]
    assert len(players) == min(played, len(suspects)) > 0 and all(d > 0 for d in players), players
    assert remote == [], f"the report fetched from the network: {remote}"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
