# Helpers for the rules: all of the workflow's Python logic lives here, so each rule reads as a declaration.
#
# dvc.yaml declares the same stages by hand; tests/test_engines.py checks that both engines agree on jobs, outputs,
# params keys and code dependencies.

import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

import asrflow.config as asrflow_config
import asrflow.search as asrflow_search

# Code each stage runs: its own module plus every asrflow module it imports, directly or not (a folder stands for
# every .py file in it). Left out on purpose: config.py (what a stage reads from params.yaml is tracked as params), errors.py,
# io.py (atomic writes never change content) and cli.py (argument plumbing). dvc.yaml's `deps:` list the same paths;
# tests/test_engines.py checks both against the modules each stage really imports.
CODE = {
    "demo": ["src/asrflow/corpus/demo.py"],
    "import": ["src/asrflow/corpus/__init__.py", "src/asrflow/corpus/audiofolder.py",
               "src/asrflow/corpus/commonvoice.py", "src/asrflow/corpus/kaldi.py", "src/asrflow/corpus/elan.py",
               "src/asrflow/corpus/entries.py", "src/asrflow/corpus/paths.py", "src/asrflow/manifest.py"],
    "resample": ["src/asrflow/audio.py", "src/asrflow/manifest.py"],
    "normalize": ["src/asrflow/text.py", "src/asrflow/manifest.py"],
    "split": ["src/asrflow/folds.py", "src/asrflow/manifest.py"],
    "augment": ["src/asrflow/augment.py", "src/asrflow/audio.py", "src/asrflow/manifest.py"],
    "pretrain": ["src/asrflow/pretrain.py", "src/asrflow/methods", "src/asrflow/audio.py", "src/asrflow/batching.py",
                 "src/asrflow/checkpoint.py", "src/asrflow/corpus/audiofolder.py", "src/asrflow/corpus/entries.py",
                 "src/asrflow/corpus/paths.py", "src/asrflow/distributed.py", "src/asrflow/features.py",
                 "src/asrflow/folds.py", "src/asrflow/loop.py", "src/asrflow/manifest.py", "src/asrflow/metrics.py",
                 "src/asrflow/model.py", "src/asrflow/resume.py", "src/asrflow/text.py"],
    "train": ["src/asrflow/train.py", "src/asrflow/methods", "src/asrflow/audio.py", "src/asrflow/batching.py",
              "src/asrflow/checkpoint.py", "src/asrflow/distributed.py", "src/asrflow/features.py",
              "src/asrflow/folds.py", "src/asrflow/loop.py", "src/asrflow/manifest.py", "src/asrflow/memory.py",
              "src/asrflow/metrics.py", "src/asrflow/model.py", "src/asrflow/plan.py", "src/asrflow/resume.py"],
    "plan": ["src/asrflow/plan.py", "src/asrflow/methods", "src/asrflow/audio.py", "src/asrflow/batching.py",
             "src/asrflow/checkpoint.py", "src/asrflow/distributed.py", "src/asrflow/features.py",
             "src/asrflow/folds.py", "src/asrflow/loop.py", "src/asrflow/manifest.py", "src/asrflow/memory.py",
             "src/asrflow/metrics.py", "src/asrflow/model.py", "src/asrflow/resume.py"],
    "lm": ["src/asrflow/lm.py", "src/asrflow/manifest.py"],
    "evaluate": ["src/asrflow/evaluate.py", "src/asrflow/methods", "src/asrflow/audio.py", "src/asrflow/batching.py",
                 "src/asrflow/checkpoint.py", "src/asrflow/decode.py", "src/asrflow/features.py",
                 "src/asrflow/folds.py", "src/asrflow/lm.py", "src/asrflow/manifest.py", "src/asrflow/metrics.py",
                 "src/asrflow/model.py"],
    "report": ["src/asrflow/report.py"],
    "data_report": ["src/asrflow/data_report.py", "src/asrflow/manifest.py"],
    "release": ["src/asrflow/release.py", "src/asrflow/methods", "src/asrflow/audio.py", "src/asrflow/batching.py",
                "src/asrflow/checkpoint.py", "src/asrflow/distributed.py", "src/asrflow/features.py",
                "src/asrflow/folds.py", "src/asrflow/loop.py", "src/asrflow/manifest.py", "src/asrflow/memory.py",
                "src/asrflow/metrics.py", "src/asrflow/model.py", "src/asrflow/plan.py", "src/asrflow/report.py",
                "src/asrflow/resume.py"],
    "search": ["src/asrflow/search.py", "src/asrflow/report.py"],
}

# How jobs run; never part of a result. threads for fine-tuning and evaluation come from params.yaml
# `resources.threads`; the others get `threads` workers or torch threads (capped by --cores on a local run). Override per
# rule with --set-threads / --set-resources, or in a profile.
RESOURCES = {
    "demo": {"threads": 1, "mem_mb": 2000, "runtime": 30},
    "import": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "resample": {"threads": 4, "mem_mb": 4000, "runtime": 60},
    "normalize": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "split": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "augment": {"threads": 4, "mem_mb": 4000, "runtime": 60},
    "pretrain": {"threads": 4, "mem_mb": 8000, "runtime": 240},
    "plan": {"threads": "resources.threads", "mem_mb": 4000, "runtime": 10},
    "train": {"threads": "resources.threads", "mem_mb": 8000, "runtime": 240},
    "lm": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "evaluate": {"threads": "resources.threads", "mem_mb": 4000, "runtime": 60},
    "report": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "data_report": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "release": {"threads": "resources.threads", "mem_mb": 8000, "runtime": 240},
    "search": {"threads": 1, "mem_mb": 1000, "runtime": 10},
}

def validate_params():
    """Check params.yaml (plus any --config overrides) with asrflow's own validator and its friendly messages."""
    try:
        asrflow_config.validate(config, source="params.yaml")
    except asrflow_config.ParamsError as error:
        raise WorkflowError(str(error)) from None


def method_pattern():
    """The method wildcard matches only the methods declared in params.yaml: the grid's and the searched one."""
    searched = [config["search"]["method"]] if "search" in config else []
    return "|".join(re.escape(method) for method in dict.fromkeys([*config["methods"], *searched]))


def get_final_output():
    return ["results/summary.csv", "results/data_report.md", "results/release", *all_plans()]


def all_plans():
    """The memory plan of every method of the grid (a leaf: training does not wait for it; each train job checks
    its own GPU)."""
    return expand("data/models/plan/{method}.json", method=config["methods"])


def code(stage):
    """The source files of `stage` (folders expanded to their .py files), so editing one re-runs the stage."""
    files = []
    for path in map(Path, CODE[stage]):
        files += sorted(map(str, path.rglob("*.py"))) if path.is_dir() else [str(path)]
    return files


def stage_params(stage):
    """Exactly the params keys `stage` reads (asrflow.config.STAGE_PARAMS): Snakemake re-runs it when one changes."""
    return asrflow_config.select(config, asrflow_config.stage_keys(stage))


def method_params(stage):
    """The keys `stage` reads for this job's method: the shared ones plus train.<method>."""
    return lambda wildcards: asrflow_config.select(config, asrflow_config.stage_keys(stage, wildcards.method))


def threads(stage):
    value = RESOURCES[stage]["threads"]
    if value == "resources.threads":
        return int(config.get("resources", {}).get("threads", 1))
    return value


def mem_mb(stage):
    """Megabytes: the table's value on the first attempt, twice that on the first retry, and so on (the SLURM profile
    sets `retries`), so a job the scheduler killed for memory comes back with room to finish."""
    first_attempt = RESOURCES[stage]["mem_mb"]
    return lambda wildcards, attempt: first_attempt * attempt


def runtime(stage):
    """Minutes."""
    return RESOURCES[stage]["runtime"]


# Stages that run the model, and their processes: a training job one per `train.processes`, the others one.
MODEL_STAGES = {"pretrain": 1, "plan": 1, "train": "train.processes", "evaluate": 1, "release": 1}


def gpus(stage):
    """GPUs for one job of a stage that runs the model: `resources.gpus_per_process` for each of its processes (and
    `resources.gpu_model`). The SLURM executor turns `gpu` and `gpu_model` into `sbatch --gpus=[model:]N`; 0 asks for
    none. A local run only counts them against `--resources gpu=N`. The release refits a whole model and the
    evaluation runs it on every test and dev clip: on a cluster they need a GPU node as much as training does."""
    settings = config.get("resources", {})
    processes = MODEL_STAGES[stage]
    if processes == "train.processes":
        processes = int(config["train"]["processes"])
    gpus = {"gpu": int(settings.get("gpus_per_process", 0)) * processes}
    if settings.get("gpu_model"):
        gpus["gpu_model"] = settings["gpu_model"]
    return gpus


def corpus_folder():
    """The corpus to import (corpus.path): data/raw/demo is made by the demo rule, any other folder must exist.

    A folder of your own is given as its files: a folder's mtime says nothing about its content (editing a transcript
    in place leaves it alone), whereas per file Snakemake sees an added or removed file (the input list changed) and
    an edited one (mtime, and checksum under --max-checksum-file-size) — as DVC sees them by hashing the folder."""
    folder = Path(config["corpus"]["path"])
    if config["corpus"]["format"] == "demo" or not folder.is_dir():
        return str(folder)
    return sorted(str(path) for path in folder.rglob("*") if path.is_file())


def search_metrics():
    """Every trial × fold evaluation of the random search (results/search/trial<n>/metrics/<method>/fold<k>)."""
    search = config.get("search")
    if not search:  # `asrflow search` then says how to declare one
        return []
    return expand("results/search/trial{trial}/metrics/{method}/fold{fold}", trial=range(search["trials"]),
                  method=search["method"], fold=config["folds"]["ids"])


def trial_settings(wildcards):
    """`--set KEY=VALUE ...` of this trial: drawn from search.seed, the trial number and search.space, so a changed
    space re-runs the trials whose settings it changes (Snakemake's params trigger) and adding trials keeps the rest."""
    search = config["search"]
    return asrflow_search.set_arguments(asrflow_search.draw_trial(search["space"], search["seed"],
                                                                  int(wildcards.trial)))


def all_metrics():
    """Every fold × method evaluation: the grid is declared once, in params.yaml (methods, folds.ids)."""
    return expand("results/metrics/{method}/fold{fold}", method=config["methods"], fold=config["folds"]["ids"])
