"""The stage table: every pipeline stage declared once, and both engines built from it.

A stage is one `asrflow <name>` command: its module (with `add_arguments(parser)` and `run_cli(args)`), the
command template, the files it reads (`deps`) and writes (`outs`), the params keys it reads, the grid axes it runs
over (`wildcards`), and how a job of it runs (threads, memory, minutes, GPUs). From this table:

- `asrflow <name>`'s sub-command (cli.py),
- the params keys a stage is handed (config.stage_keys) and may be overridden with `--set`,
- the Snakemake rules (workflow/rules/stages.smk loops over STAGES),
- dvc.yaml (`asrflow dvc-yaml` writes it; a test fails when the committed file differs),
- each stage's code dependencies: its module and every asrflow module it imports, found by reading the imports.

Templates use Snakemake's syntax, which both renderers understand: `{fold}`, `{method}` are grid axes (AXES: the
values come from params.yaml), `{input.NAME}` / `{output.NAME}` name a dep / out of the same stage. A dep naming an
axis the stage does not run over gathers every value of it (report reads every fold × method evaluation: Snakemake
expands it, DVC depends on the folder above). A dep `${key}` is the path params.yaml holds under that key, and a dep
`${key[*].name}` the `name` of each item of the list there (the import reads every folder of `corpus.sources`):
Snakemake reads them from the params of each run; DVC cannot expand a list inside a stage, so dvc.yaml lists those
paths as params.yaml held them when `asrflow dvc-yaml` wrote it (run it again after changing the list: a stage with
such a dep refuses to run while dvc.yaml lacks one of its paths, see stale_dvc_deps); in a
command or a params key, `${key}` is the value params.yaml holds there (the learning curve's one method: DVC fills it
in itself, Snakemake and `jobs` from the params). A stage whose axes or `${key}`s name a key params.yaml leaves out
(the optional `learning_curve` section) is not configured: Snakemake leaves it out (`configured`).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_DIR = "src/asrflow"  # where the project keeps this package's source: the engines hash the files there
SCHEMA_FILE = "params.schema.yaml"  # package data beside the modules (config.SCHEMA_PATH)

# The grid: axis name → the params key listing its values. Declared here once; params.yaml holds the values.
AXES = {"fold": "folds.ids", "method": "methods", "fraction": "learning_curve.fractions"}

# Every stage reads these train.* keys, and the method's own train.<method> section overrides them.
TRAIN_COMMON = (
    "train.seed",
    "train.max_epochs",
    "train.patience",
    "train.batch_seconds",
    "train.warmup_steps",
    "train.grad_clip",
    "train.processes",
    "train.precision",
    "train.gradient_checkpointing",
    "train.micro_batch_seconds",
    "train.optimizer",
)

# `threads` of a job: a number, or this params key (model jobs: torch threads per job, see params.yaml resources).
THREADS_PARAM = "resources.threads"
# The torch threads of the stages that pre-train the demo's own models (base, decoder): the count the demo's table
# was measured with on 2 cores, fixed so that the same base comes out of any machine and either engine.
DEMO_MODEL_THREADS = 2


@dataclass(frozen=True)
class Out:
    """One output. `directory`: a folder (Snakemake's directory()). DVC: `cache: false` for what git keeps,
    `kind` metrics/plots for `dvc metrics` / `dvc plots` (plot: the plot's x/y fields). Snakemake's HTML report
    (`snakemake --report`, docs/report.md): `report` is the output's category there ("": left out), `caption` an .rst
    file in workflow/report/ that describes it, `report_files` a folder's files to show (patterns inside it)."""

    path: str
    directory: bool = False
    cache: bool = True
    kind: str = "outs"
    plot: dict[str, str] = field(default_factory=dict)
    report: str = ""
    caption: str = ""
    report_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    cmd: str  # the command's arguments after `asrflow <name>`
    deps: dict[str, str] = field(default_factory=dict)
    outs: dict[str, Out] = field(default_factory=dict)
    params: tuple[str, ...] = ()  # params keys read; `{method}` stands for the job's method
    wildcards: tuple[str, ...] = ()  # grid axes (AXES) the stage runs over, one job per combination
    module: str = ""  # default: asrflow.<name>
    threads: int | str = 1
    mem_mb: int = 1000  # first attempt; a retry asks for attempt × this (SLURM profile)
    runtime: int = 10  # minutes
    gpu_processes: int | str | None = None  # model stages: processes, each with resources.gpus_per_process GPUs
    log: str = ""  # default: logs/<name>.log
    dvc: bool = True  # False: Snakemake only (its rules are written by hand)

    @property
    def module_name(self) -> str:
        return self.module or f"asrflow.{self.name}"

    @property
    def log_path(self) -> str:
        return self.log or f"logs/{self.name}.log"


def _train_params(*extra: str) -> tuple[str, ...]:
    return (*TRAIN_COMMON, "train.{method}", *extra)


STAGES: tuple[Stage, ...] = (
    Stage(
        "demo",
        "synthesise the demo corpus (target language) and its source-language corpus with espeak-ng",
        "--target {output.target} --source {output.source}",
        outs={"target": Out("data/raw/demo", directory=True), "source": Out("data/raw/demo-source", directory=True)},
        params=("corpus.demo",),
        module="asrflow.corpus.demo",
        mem_mb=2000,
        runtime=30,
    ),
    Stage(
        "import",
        "read corpus.path in corpus.format into a manifest",
        "--out {output.manifest} --rejects {output.rejects} --audio {output.audio}",
        deps={"corpus": "${corpus.path}", "sources": "${corpus.sources[*].path}"},
        outs={
            "manifest": Out("data/interim/corpus.csv"),
            "rejects": Out("data/interim/import_rejects.csv"),
            "audio": Out("data/interim/import_audio", directory=True),  # audio held in the corpus' tables (hf)
        },
        params=(
            "corpus.format",
            "corpus.path",
            "corpus.commonvoice",
            "corpus.elan",
            "corpus.textgrid",
            "corpus.hf",
            "corpus.sources",
            "audio.on_bad_audio",
        ),
        module="asrflow.import_",
    ),  # a keyword cannot name a module: PEP 8's trailing underscore
    Stage(
        "resample",
        "decode, downmix and resample every utterance to 16 kHz mono wav",
        "--in {input.manifest} --out {output.resampled}",
        deps={"manifest": "data/interim/corpus.csv", "audio": "data/interim/import_audio"},  # the manifest names both
        outs={"resampled": Out("data/interim/resampled", directory=True)},
        params=("audio",),
        threads=4,
        mem_mb=4000,
        runtime=60,
    ),
    Stage(
        "normalize",
        "normalise transcripts (Unicode, case, removed characters; IPA-safe)",
        "--in {input.resampled}/manifest.csv --out {output.manifest} --rejects {output.rejects}",
        deps={"resampled": "data/interim/resampled"},
        outs={"manifest": Out("data/processed/utterances.csv"), "rejects": Out("data/processed/normalize_rejects.csv")},
        params=("text", "audio.on_bad_audio"),
    ),
    Stage(
        "split",
        "speaker-independent k-fold split with dev speakers and per-fold vocabularies",
        "--in {input.manifest} --out {output.folds}",
        deps={"manifest": "data/processed/utterances.csv"},
        outs={"folds": Out("data/processed/folds", directory=True)},
        params=("folds", "text"),  # text.graphemes: one token each (normalised as the transcripts were)
    ),
    Stage(
        "augment",
        "speed-perturbed copies of utterances, used by training folds only",
        "--in {input.manifest} --out {output.speed}",
        deps={"manifest": "data/processed/utterances.csv"},
        outs={"speed": Out("data/processed/speed", directory=True)},
        params=("augment.speed",),
        threads=4,
        mem_mb=4000,
        runtime=60,
    ),
    Stage(
        "pretrain",
        "pre-train the demo base model, or validate a local checkpoint directory",
        "--source {input.source} --out {output.base}",
        deps={"source": "data/raw/demo-source"},
        outs={"base": Out("data/models/base", directory=True)},
        params=("model.base", "model.demo"),  # not model.decoder*: the speech base never depends on the decoder
        threads=DEMO_MODEL_THREADS,
        mem_mb=8000,
        runtime=240,
        gpu_processes=1,
    ),
    # Only the projector method reads the decoder, but DVC's matrix cannot give one method's jobs a dep the others
    # lack (and both engines plan the same jobs): every train/evaluate job lists it (docs/methods.md, Projector).
    Stage(
        "decoder",
        "pre-train the projector method's demo causal LM on the source transcripts, or validate a local one",
        "--source {input.source} --out {output.decoder}",
        deps={"source": "data/raw/demo-source"},
        outs={"decoder": Out("data/models/decoder", directory=True)},
        params=("model.decoder", "model.decoder_demo"),
        threads=DEMO_MODEL_THREADS,
        mem_mb=8000,
        runtime=60,
        gpu_processes=1,
    ),
    # The memory plan is a leaf: nothing waits for it, so resources.gpu_memory_gb (its budget) re-runs nothing else.
    Stage(
        "plan",
        "before training: can the method take the base, and its peak GPU memory (memory plan)",
        "--method {method} --base {input.base} --out {output.plan}",
        deps={"base": "data/models/base"},
        outs={"plan": Out("data/models/plan/{method}.json")},
        params=_train_params("audio.max_seconds", "resources.gpu_memory_gb"),
        wildcards=("method",),
        threads=THREADS_PARAM,
        mem_mb=4000,
        gpu_processes=1,
        log="logs/plan/{method}.log",
    ),
    Stage(
        "train",
        "fine-tune one method on one fold; saves the best checkpoint in Hugging Face format",
        "--fold {fold} --method {method} --folds {input.folds} --speed {input.speed} --base {input.base}"
        " --decoder {input.decoder} --out {output.model} --curve {output.curve}",
        deps={
            "folds": "data/processed/folds",
            "speed": "data/processed/speed",
            "base": "data/models/base",
            "decoder": "data/models/decoder",
        },
        outs={
            "model": Out("data/checkpoints/{method}/fold{fold}", directory=True),
            "curve": Out(
                "results/curves/{method}-fold{fold}.csv", cache=False, kind="plots", plot={"x": "epoch", "y": "dev_cer"}
            ),
        },
        params=_train_params(
            "augment.mask_time_prob", "augment.mask_time_length", "corpus.language", "model.base_language"
        ),
        wildcards=("fold", "method"),
        threads=THREADS_PARAM,
        mem_mb=8000,
        runtime=240,
        gpu_processes="train.processes",
        log="logs/train/{method}-fold{fold}.log",
    ),
    Stage(
        "lm",
        "word n-gram language model of one fold, from its training transcripts only (KenLM)",
        "--train {input.folds}/fold{fold}/train.csv --out {output.lm}",
        deps={"folds": "data/processed/folds"},
        outs={"lm": Out("data/processed/lm/fold{fold}", directory=True)},
        params=("decode.beam", "decode.lm_order"),
        wildcards=("fold",),
        log="logs/lm/fold{fold}.log",
    ),
    Stage(
        "evaluate",
        "decode a fold's test speakers; CER/WER overall and per speaker; publish the model",
        "--fold {fold} --method {method} --folds {input.folds} --model {input.model} --out {output.metrics}"
        " --publish {output.model} --lm {input.lm}",
        deps={
            "folds": "data/processed/folds",
            "model": "data/checkpoints/{method}/fold{fold}",
            "lm": "data/processed/lm/fold{fold}",
            # A projector model names the encoder and decoder folders it runs with (CTC models hold everything).
            "base": "data/models/base",
            "decoder": "data/models/decoder",
        },
        outs={
            "metrics": Out(
                "results/metrics/{method}/fold{fold}",
                directory=True,
                report="Per fold",
                caption="per_fold.rst",
                report_files=("{table,speakers|hypotheses}.csv",),
            ),
            "model": Out("results/models/{method}/fold{fold}", directory=True),
        },
        params=("evaluate", "decode.beam", "decode.alpha", "decode.beta", "decode.beam_width", "text"),
        wildcards=("fold", "method"),
        threads=THREADS_PARAM,
        mem_mb=4000,
        runtime=60,
        gpu_processes=1,
        log="logs/evaluate/{method}-fold{fold}.log",
    ),
    Stage(
        "report",
        "aggregate every fold and method into results/folds.csv, summary.csv/md/png",
        "--metrics results/metrics --out results",
        deps={"metrics": "results/metrics/{method}/fold{fold}"},
        outs={
            "folds": Out("results/folds.csv", cache=False),
            "summary": Out("results/summary.csv", cache=False, report="Summary", caption="summary.rst"),
            "markdown": Out("results/summary.md", cache=False, report="Summary", caption="summary.rst"),
            "metrics": Out("results/summary.json", cache=False, kind="metrics"),
            "plot": Out("results/summary.png", cache=False, kind="plots", report="Summary", caption="summary.rst"),
            "comparisons": Out("results/comparisons.csv", cache=False, report="Summary", caption="comparisons.rst"),
        },
        params=("methods", "folds.k", "report.bootstrap", "text"),
    ),
    # What a run teaches beyond the rates: which symbols are confused, and which transcripts look wrong (the
    # utterances whose cross-validated error lies far above their speaker's, and those training dropped).
    Stage(
        "analyze",
        "symbol confusions per method (results/errors/) and suspect transcripts (results/suspects.csv)",
        "--metrics results/metrics --checkpoints data/checkpoints --utterances {input.utterances}"
        " --speed {input.speed} --errors {output.errors} --suspects {output.suspects}",
        deps={
            "metrics": "results/metrics/{method}/fold{fold}",
            "checkpoints": "data/checkpoints/{method}/fold{fold}",
            "utterances": "data/processed/utterances.csv",
            "speed": "data/processed/speed",
        },
        outs={
            "errors": Out(
                "results/errors",
                directory=True,
                cache=False,
                report="Errors",
                caption="errors.rst",
                report_files=("{method}.png",),
            ),
            "suspects": Out("results/suspects.csv", cache=False, report="Suspects", caption="suspects.rst"),
        },
        params=("methods", "folds.k", "text"),
        mem_mb=2000,
    ),
    Stage(
        "listen",
        "the top suspect transcripts as one offline page with their audio: results/suspects.html",
        "--suspects {input.suspects} --out {output.page}",
        deps={"suspects": "results/suspects.csv", "audio": "data/interim/resampled"},  # the suspects' audio files
        outs={"page": Out("results/suspects.html", cache=False, report="Suspects", caption="suspects.rst")},
        params=("report.suspects_to_play",),
    ),
    Stage(
        "curves",
        "every fold's per-epoch training curve in one figure: results/training_curves.png",
        "--curves results/curves --out {output.plot}",
        deps={"curves": "results/curves/{method}-fold{fold}.csv"},
        outs={"plot": Out("results/training_curves.png", cache=False, report="Training", caption="curves.rst")},
        params=("methods", "folds.ids"),
    ),
    Stage(
        "data_report",
        "speakers, character inventory, what normalisation changed, every rejected item: data_report.md/csv",
        "--in {input.manifest} --imported {input.imported} --folds {input.folds} --rejects {input.import_rejects}"
        " {input.resampled}/rejects.csv {input.normalize_rejects} --out results",
        deps={
            "manifest": "data/processed/utterances.csv",
            "imported": "data/interim/corpus.csv",  # the raw transcripts: line breaks, invisible characters
            "folds": "data/processed/folds",
            "import_rejects": "data/interim/import_rejects.csv",
            "resampled": "data/interim/resampled",
            "normalize_rejects": "data/processed/normalize_rejects.csv",
        },
        outs={
            "markdown": Out("results/data_report.md", cache=False, report="Data", caption="data_report.rst"),
            "table": Out("results/data_report.csv", cache=False),
        },
        params=("folds.k", "text"),  # text.keep_format_characters; DVC wants a key params.yaml holds: the section
    ),
    # The released method is chosen at run time (`best`), so every method's train settings count.
    Stage(
        "release",
        "refit the chosen method on every speaker with the epochs cross-validation selected",
        "--summary {input.summary} --folds-table {input.folds_table} --utterances {input.utterances}"
        " --speed {input.speed} --base {input.base} --out {output.release}",
        deps={
            "summary": "results/summary.csv",
            "folds_table": "results/folds.csv",
            "utterances": "data/processed/utterances.csv",
            "speed": "data/processed/speed",
            "base": "data/models/base",
        },
        outs={"release": Out("results/release", directory=True)},
        params=(
            "release",
            "train",
            "augment.mask_time_prob",
            "augment.mask_time_length",
            "corpus.language",
            "corpus.name",
            "model.base_language",
            "text",
        ),
        threads=THREADS_PARAM,
        mem_mb=8000,
        runtime=240,
        gpu_processes=1,
    ),
    # Snakemake only (DVC searches with its experiment queue): every trial × fold's metrics into results/search.csv.
    # Its trials are variants of train and evaluate over one more axis: workflow/rules/search.smk writes its rules.
    Stage(
        "search",
        "gather a random search's trials into results/search.csv; select one by mean dev CER",
        "--metrics results/search --out {output.table}",
        outs={"table": Out("results/search.csv")},
        params=("search", "folds.k"),
        dvc=False,
    ),
)

# --- the learning curve (docs/learning_curve.md): how the CER falls with more recorded minutes ---------------------

CURVE_METHOD = "${learning_curve.method}"  # the one method the curve trains (params.yaml names it)


def _on_subsets(base: str, name: str, deps: dict[str, str], outs: dict[str, str]) -> Stage:
    """Stage `base` run on the learning curve's subsets: its module, command, params and resources, one job per
    fold × fraction for the method `learning_curve.method` names; `deps` and `outs` replace its paths by name."""
    stage_ = {s.name: s for s in STAGES}[base]
    if set(outs) != set(stage_.outs):  # an output left at the base's path would be written by both stages
        raise ValueError(f"stage {name!r}: give a path for every output of {base!r}: {sorted(stage_.outs)}")
    method_keys = ("learning_curve.method",) if "{method}" in stage_.cmd else ()
    return replace(
        stage_,
        name=name,
        help=f"{base} on one fold × fraction of the learning curve ({stage_.help})",
        cmd=stage_.cmd.replace("{method}", CURVE_METHOD),
        deps={**stage_.deps, **deps},
        # The base's kind of output at the curve's path (and in no category of Snakemake's HTML report).
        outs={key: Out(outs[key], out.directory, out.cache, out.kind, out.plot) for key, out in stage_.outs.items()},
        params=(*(key.replace("{method}", CURVE_METHOD) for key in stage_.params), *method_keys),
        wildcards=("fold", "fraction"),
        module=stage_.module_name,
        log=f"logs/learning_curve/{base}/{{fraction}}-fold{{fold}}.log",
    )


SUBSET = "data/learning_curve/subsets/{fraction}/fold{fold}"  # a folds folder holding one fold, its train.csv cut
CURVE_METRICS = "results/learning_curve/metrics/{fraction}/fold{fold}"

# Fraction 1.0 trains again rather than reuse the grid's training: the curve's method need not be in `methods`.
STAGES += (
    Stage(
        "subset",
        "cut one fold's training speakers to a fraction of their minutes (whole utterances, every speaker kept)",
        "--fold {fold} --fraction {fraction} --folds {input.folds} --out {output.folds}",
        deps={"folds": "data/processed/folds"},
        outs={"folds": Out(SUBSET, directory=True)},
        params=("learning_curve.seed",),
        wildcards=("fold", "fraction"),
        log="logs/learning_curve/subset/{fraction}-fold{fold}.log",
    ),
    _on_subsets("lm", "curve_lm", {"folds": SUBSET}, {"lm": "data/learning_curve/lm/{fraction}/fold{fold}"}),
    _on_subsets(
        "train",
        "curve_train",
        {"folds": SUBSET},
        {
            "model": "data/learning_curve/checkpoints/{fraction}/fold{fold}",
            "curve": "results/learning_curve/curves/{fraction}-fold{fold}.csv",
        },
    ),
    _on_subsets(
        "evaluate",
        "curve_evaluate",
        {
            "folds": SUBSET,
            "model": "data/learning_curve/checkpoints/{fraction}/fold{fold}",
            "lm": "data/learning_curve/lm/{fraction}/fold{fold}",
        },
        {"metrics": CURVE_METRICS, "model": "data/learning_curve/models/{fraction}/fold{fold}"},
    ),
    Stage(
        "learning_curve",
        "fit CER = a·minutes^-b + c over every fold × fraction; predict 2× and 4× the minutes (learning_curve.*)",
        "--metrics results/learning_curve/metrics --subsets data/learning_curve/subsets --table {output.table}"
        " --markdown {output.markdown} --plot {output.plot}",
        deps={"metrics": CURVE_METRICS, "subsets": SUBSET},
        outs={
            "table": Out("results/learning_curve.csv", cache=False),
            "markdown": Out("results/learning_curve.md", cache=False),
            "plot": Out("results/learning_curve.png", cache=False, kind="plots"),
        },
        params=("learning_curve", "folds.ids"),
    ),
)

BY_NAME = {stage.name: stage for stage in STAGES}

# Plumbing no stage's result depends on, left out of every stage's code deps: params arrive as params (config),
# atomic writes never change content (io), argument parsing and errors (cli, errors), this table (stages).
NOT_CODE = {"asrflow", "asrflow.config", "asrflow.io", "asrflow.cli", "asrflow.errors", "asrflow.stages"}


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(BY_NAME)}") from None


# --- code dependencies, from the imports ------------------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The source file of asrflow module `name` (None when `name` is no module, e.g. a class imported by name).
    Read from this package's folder, without importing anything."""
    if name.split(".")[0] != "asrflow":
        return None
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    return next((c for c in (path / "__init__.py", path.with_suffix(".py")) if c.is_file()), None)


@functools.cache
def imported_modules(name: str) -> set[str]:
    """asrflow modules that module `name` imports, anywhere in it (lazy imports in functions included)."""
    file = module_file(name)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] == "asrflow" and module_file(m)}


def code_modules(name: str) -> list[str]:
    """The modules stage `name` runs: its own and every asrflow module it imports, transitively, minus NOT_CODE."""
    module = stage(name).module_name
    if module_file(module) is None:
        raise ValueError(f"stage {name!r}: its module {module} has no source file under {PACKAGE_DIR}")
    seen: set[str] = set()
    todo = [module]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imported_modules(module) - seen
    return sorted(seen - NOT_CODE)


def code_files(name: str) -> list[str]:
    """Stage `name`'s code deps as project paths (SOURCE_DIR/...), its own module first, then the params schema:
    it holds the default of every optional key, which a stage reads like any other param (DVC hashes only what
    params.yaml spells out)."""
    own = module_file(stage(name).module_name)
    files = sorted({module_file(m) for m in code_modules(name)} - {own})
    return [f"{SOURCE_DIR}/{path.relative_to(PACKAGE_DIR).as_posix()}" for path in [own, *files]] + [
        f"{SOURCE_DIR}/{SCHEMA_FILE}"
    ]


# --- templates ------------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def axes_in(path: str) -> set[str]:
    return {name for name in PLACEHOLDER.findall(path) if name in AXES}


def gathered(stage_: Stage, path: str) -> bool:
    """A dep over an axis the stage does not run over stands for every value of that axis."""
    return bool(axes_in(path) - set(stage_.wildcards))


def lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


# `${key}` in a template: the value params.yaml holds under the dotted key.
PARAM_REF = re.compile(r"\$\{([\w.]+)\}")
# A dep `${key[*].name}`: the `name` of each item of the list params.yaml holds under `key`.
LIST_DEP = re.compile(r"^\$\{([\w.]+)\[\*\]\.([\w.]+)\}$")


def dep_paths(params: dict[str, Any], dep: str) -> list[str]:
    """The paths a `${...}` dep stands for in `params` (validated: defaults filled in)."""
    if match := LIST_DEP.match(dep):
        return [str(lookup(item, match[2])) for item in lookup(params, match[1]) or []]
    return [str(lookup(params, dep[2:-1]))]


def stale_dvc_deps(stage_: Stage, params: dict[str, Any], dvc_file: Path = Path("dvc.yaml")) -> list[str]:
    """The paths of the stage's `${key[*].name}` deps that `dvc_file`'s stage lacks ([] without that file): dvc.yaml
    holds them as params.yaml listed them when `asrflow dvc-yaml` last wrote it."""
    if not dvc_file.is_file():
        return []
    listed = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage_.name)
    if not listed:  # a dvc.yaml without this stage: DVC does not run it
        return []
    wanted = [path for dep in stage_.deps.values() if LIST_DEP.match(dep) for path in dep_paths(params, dep)]
    return [path for path in wanted if path not in listed.get("deps", [])]


def resolve(text: str, params: dict[str, Any]) -> str:
    """`text` with every `${key}` replaced by the value `params` holds there."""
    return PARAM_REF.sub(lambda m: str(lookup(params, m[1])), text)


def stage_params(stage_: Stage, method: str | None = None, params: dict[str, Any] | None = None) -> list[str]:
    """The params keys a job of the stage reads (`{method}` filled in for per-method stages, `${key}` from
    `params` for a stage whose method params.yaml names)."""
    keys = list(stage_.params)
    if any("{method}" in key for key in keys):
        if method is None:
            raise ValueError(f"stage {stage_.name!r} reads per-method keys: give a method")
        keys = [key.replace("{method}", method) for key in keys]
    if any(PARAM_REF.search(key) for key in keys):
        if params is None:
            raise ValueError(f"stage {stage_.name!r} reads keys that params.yaml names (${{...}}): give the params")
        keys = [resolve(key, params) for key in keys]
    return keys


def needed_keys(stage_: Stage) -> set[str]:
    """The params keys the stage's templates need a value of: its axes' (gathered ones too) and every `${key}` in
    its command and params (a `${key}` dep is a path the params must hold anyway)."""
    axes = set(stage_.wildcards) | {axis for path in stage_.deps.values() for axis in axes_in(path)}
    refs = {key for text in (stage_.cmd, *stage_.params) for key in PARAM_REF.findall(text)}
    return {AXES[axis] for axis in axes} | refs


def configured(stage_: Stage, params: dict[str, Any]) -> bool:
    """Whether `params` holds every key the stage needs: the learning curve's stages exist only where params.yaml
    declares `learning_curve` (DVC, which cannot leave a stage out, needs the section: params.yaml has it)."""
    try:
        for key in needed_keys(stage_):
            lookup(params, key)
    except (KeyError, TypeError):
        return False
    return True


# --- dvc.yaml --------------------------------------------------------------------------------------------------------

DVC_HEADER = """\
# asrflow as a DVC pipeline. Written by `asrflow dvc-yaml` from the stage table (src/asrflow/stages.py): do not
# edit by hand. The same stages, commands and files as the Snakemake workflow (workflow/), read from the same
# params.yaml.
#
#   dvc repro            # run what changed          dvc dag / dvc status     # the graph / what changed
#   dvc exp run -S train.full.lr=0.001               dvc plots show           # per-epoch curves of every fold
#
# Each stage lists exactly the params keys it reads and, as deps, its code: its own module and every asrflow module
# it imports. The fold × method grid comes from params.yaml: `folds.ids` (0 … k-1; DVC templates cannot count) and
# `methods`. Every command has the threads Snakemake's has (`resources.threads` for the model jobs), so that both
# engines give the same numbers.

"""


def _fill_path(stage_: Stage, path: str, axis: Callable[[str], str]) -> str:
    """A path template with each axis replaced by `axis(name)`; a gathered dep becomes the folder above it."""
    if gathered(stage_, path):
        return path[: path.index("{")].rstrip("/")
    return PLACEHOLDER.sub(lambda m: axis(m[1]) if m[1] in AXES else m[0], path)


def _fill_command(stage_: Stage, axis: Callable[[str], str]) -> str:
    """`asrflow <stage> …` with its deps' and outs' paths and axes filled in by `axis`, and its log."""
    paths = {
        "input": {k: _fill_path(stage_, v, axis) for k, v in stage_.deps.items()},
        "output": {k: _fill_path(stage_, o.path, axis) for k, o in stage_.outs.items()},
    }

    def fill(match: re.Match) -> str:
        kind, _, name = match[1].partition(".")
        return paths[kind][name] if name else _fill_path(stage_, match[0], axis)

    command = re.sub(r"\{((?:input|output)\.\w+|\w+)\}", fill, stage_.cmd)
    log = _fill_path(stage_, stage_.log_path, axis)
    return f"asrflow {stage_.name} {command} --threads {threads_text(stage_)} --log {log}"


def threads_text(stage_: Stage) -> str:
    """The job's `--threads`: the table's number, or `${resources.threads}` (filled in from params.yaml). Both
    engines give every command this same count, never the cores a scheduler happens to grant: torch's reductions
    split by thread count, so a model job trained with other threads is another run of a chaotic computation."""
    return f"${{{THREADS_PARAM}}}" if stage_.threads == THREADS_PARAM else str(stage_.threads)


def thread_count(stage_: Stage, params: dict[str, Any]) -> int:
    """The job's `--threads` as a number (threads_text, filled in from `params`)."""
    return int(resolve(threads_text(stage_), params))


def _dvc_axis(name: str) -> str:
    return f"${{item.{name}}}"


def _dvc_path(stage_: Stage, path: str) -> str:
    return _fill_path(stage_, path, _dvc_axis)


def _dvc_out(stage_: Stage, out: Out) -> str | dict[str, dict[str, Any]]:
    options: dict[str, Any] = {} if out.cache else {"cache": False}
    options.update(out.plot)
    path = _dvc_path(stage_, out.path)
    return {path: options} if options else path


def _dvc_deps(stage_: Stage, params: dict[str, Any] | None) -> list[str]:
    """The stage's deps as dvc.yaml states them: a `${key[*].name}` dep as the paths `params` lists (none without)."""
    deps = []
    for path in stage_.deps.values():
        if LIST_DEP.match(path):
            deps += dep_paths(params, path) if params is not None else []
        else:
            deps.append(_dvc_path(stage_, path))
    return deps


def dvc_stage(stage_: Stage, params: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if stage_.wildcards:
        entry["matrix"] = {axis: f"${{{AXES[axis]}}}" for axis in stage_.wildcards}
    entry["cmd"] = _fill_command(stage_, _dvc_axis)
    entry["deps"] = [*_dvc_deps(stage_, params), *code_files(stage_.name)]
    entry["params"] = [_dvc_path(stage_, key) for key in stage_.params]
    for kind in ("outs", "metrics", "plots"):
        outs = [_dvc_out(stage_, o) for o in stage_.outs.values() if o.kind == kind]
        if outs:
            entry[kind] = outs
    return entry


def dvc_yaml(params: dict[str, Any] | None = None) -> str:
    """dvc.yaml's text: every stage DVC runs, in table order (each one's deps come before it); `params` (validated
    params.yaml) gives the paths of `${key[*].name}` deps."""
    stages = {s.name: dvc_stage(s, params) for s in STAGES if s.dvc}
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, allow_unicode=True, width=120)
    return DVC_HEADER + re.sub(r"\n(  \w+:\n)", r"\n\n\1", body)  # a blank line between stages


# --- a plain sequential run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    name: str
    wildcards: dict[str, Any]
    argv: list[str]  # `asrflow <stage> …`, with its threads and log, as both engines run it


def jobs(params: dict[str, Any]) -> list[Job]:
    """Every job both engines run for `params`, each after the jobs it reads from (table order, then the grid):
    what a plain sequential run of the pipeline executes, as `dvc repro` would."""
    found = []
    for stage_ in (s for s in STAGES if s.dvc and configured(s, params)):
        combinations: list[dict[str, Any]] = [{}]
        for axis in stage_.wildcards:
            combinations = [{**c, axis: value} for c in combinations for value in lookup(params, AXES[axis])]
        for values in combinations:
            command = _fill_command(stage_, lambda name, values=values: str(values[name]))
            command = resolve(command, params)
            found.append(Job(stage_.name, values, shlex.split(command)))
    return found
