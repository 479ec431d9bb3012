"""The `listen` stage: results/suspects.html, the transcripts most likely to be wrong (results/suspects.csv, written
by analyze) as one page to listen to: each suspect's audio in a player beside its reference transcript, every
method's hypothesis, its score and the reason it is suspect.

The page is one self-contained file: the audio is embedded as data: URIs and there is no script, stylesheet or font
from anywhere else, so it opens offline, from an e-mail attachment, or inside Snakemake's report. It holds the
highest-ranked suspects (params report.suspects_to_play); the CSV lists every one. The clips are embedded as Ogg
Opus (16 kHz mono, about 3.5 kB per second, a ninth of the wav): Snakemake's report shows the page in a frame whose
address is the whole page as a data: URI, and Chromium loads no address over 2 MB, which 20 clips of 16-bit wav
already exceed.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
from pathlib import Path

import pandas as pd
import soundfile as sf

from asrflow.audio import TARGET_RATE, load_mono
from asrflow.config import load_stage
from asrflow.errors import AsrflowError
from asrflow.io import write_text

log = logging.getLogger(__name__)

REQUIRED = ["rank", "utt_id", "speaker", "audio", "reference", "score", "reason"]
HYPOTHESIS = "hypothesis_"  # one column per method: hypothesis_<method>

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1e293b; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #cbd5e1; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f1f5f9; }
td.text { font-size: 1.1em; }
audio { width: 16em; }
"""


def read_suspects(path: Path) -> pd.DataFrame:
    """suspects.csv with its required columns, in rank order."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise AsrflowError(f"{path}: missing column(s) {', '.join(missing)}; re-run `asrflow analyze` to rewrite it")
    try:
        order = pd.to_numeric(table["rank"])
    except ValueError as error:
        raise AsrflowError(f"{path}: column rank must hold numbers ({error})") from None
    return table.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")


def audio_uri(path: Path, row: str) -> str:
    """The clip (any format libsndfile reads) as a data: URI of Ogg Opus at 16 kHz, which every browser plays."""
    if not path.is_file():
        raise AsrflowError(f"{row}: audio {path} does not exist; run from the project folder, or re-run the pipeline")
    encoded = io.BytesIO()
    sf.write(encoded, load_mono(path), TARGET_RATE, format="OGG", subtype="OPUS")
    return f"data:audio/ogg;base64,{base64.b64encode(encoded.getvalue()).decode('ascii')}"


def page(suspects: pd.DataFrame, source: str, top: int) -> str:
    """The HTML page of the first `top` rows of `suspects` (relative audio paths: from the working directory)."""
    methods = [c.removeprefix(HYPOTHESIS) for c in suspects.columns if c.startswith(HYPOTHESIS)]
    header = ["#", "utterance", "speaker", "listen", "reference", *(f"hypothesis: {m}" for m in methods)]
    header += ["score", "why suspect"]
    rows = []
    for values in suspects.head(top).to_dict("records"):
        uri = audio_uri(Path(values["audio"]), f"{source}, utterance {values['utt_id']}")
        cells = [
            html.escape(values["rank"]),
            html.escape(values["utt_id"]),
            html.escape(values["speaker"]),
            f'<audio controls preload="metadata" src="{uri}"></audio>',
            f'<span class="text">{html.escape(values["reference"])}</span>',
            *(f'<span class="text">{html.escape(values[HYPOTHESIS + m])}</span>' for m in methods),
            html.escape(values["score"]),
            html.escape(values["reason"]),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    shown = min(top, len(suspects))
    intro = (
        f"The {shown} highest-ranked of {len(suspects)} suspect transcripts in {html.escape(source)}: listen, and "
        "correct the transcript in the corpus where it is wrong."
        if len(suspects)
        else f"{html.escape(source)} lists no suspect transcripts."
    )
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8"><title>Suspect transcripts</title>',
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Suspect transcripts</h1><p>{intro}</p>",
            "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>",
            "<tbody>",
            *rows,
            "</tbody></table></body></html>",
            "",
        ]
    )


def listen(suspects_csv: str | Path, out: str | Path, top: int) -> int:
    """Write the page of `suspects_csv`'s first `top` suspects to `out`; return how many it holds."""
    suspects = read_suspects(Path(suspects_csv))
    write_text(out, page(suspects, str(suspects_csv), top))
    return min(top, len(suspects))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow listen`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--suspects", required=True, type=Path, help="analyze's suspects.csv")
    parser.add_argument("--out", required=True, type=Path, help="the page (HTML)")


def run_cli(args: argparse.Namespace) -> None:
    top = load_stage(args.params, "listen")["report"]["suspects_to_play"]
    shown = listen(args.suspects, args.out, top)
    log.info("suspects page: %d suspects with their audio → %s", shown, args.out)
