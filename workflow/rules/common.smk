# Helpers that turn the stage table (src/asrflow/stages.py) into Snakemake rules: all of the workflow's Python logic
# lives here, so rules/stages.smk and rules/search.smk read as declarations.

import functools
import hashlib
import re
import unicodedata
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import contains_wildcard
from snakemake.utils import update_config

import asrflow.config as asrflow_config
import asrflow.search as asrflow_search
import asrflow.stages as asrflow_stages

# The software of every rule, for `--use-conda` (relative to the rule files; snakemake --lint asks for one).
CONDA_ENV = "../envs/asrflow.yaml"
# Relative to the working directory (the project root), like every path in params.yaml and in the rules.
PARAMS_FILE = "params.yaml"


def load_params():
    """Read and validate params.yaml with asrflow's own reader, validator and messages (asrflow.config.read: plain
    YAML only, no tag, no YTE template) into `config`, with the values given on the command line (--config and
    --configfile, all that `config` holds so far) on top of the file's, as `configfile:` would put them."""
    try:
        params = asrflow_config.read(PARAMS_FILE)
        update_config(params, config)
        config.update(asrflow_config.validate(params, source=PARAMS_FILE))
    except asrflow_config.ParamsError as error:
        raise WorkflowError(str(error)) from None
    workflow.configfiles.append(PARAMS_FILE)  # `snakemake --report` shows it, as it shows a `configfile:`


def axis_values(axes):
    """The values params.yaml gives each grid axis (stages.AXES: fold → folds.ids, method → methods)."""
    return {axis: asrflow_stages.lookup(config, asrflow_stages.AXES[axis]) for axis in axes}


def method_pattern():
    """The method wildcard matches only the methods declared in params.yaml: the grid's and the searched one."""
    searched = [config["search"]["method"]] if "search" in config else []
    return "|".join(re.escape(method) for method in dict.fromkeys([*config["methods"], *searched]))


def stage_outputs(stage):
    """Every output of the stage, over every value of its axes."""
    return [path for out in stage.outs.values() for path in expand(out.path, **axis_values(stage.wildcards))]


def engine_stages():
    """The stages both engines run that params.yaml configures: the learning curve's only where it declares
    `learning_curve` (DVC needs the section; see asrflow.stages.configured)."""
    return [stage for stage in asrflow_stages.STAGES if stage.dvc and asrflow_stages.configured(stage, config)]


def all_outputs():
    """The default target: every output of every stage both engines run (as `dvc repro` reproduces dvc.yaml)."""
    return [path for stage in engine_stages() for path in stage_outputs(stage)]


@functools.cache
def params_files(dep):
    """A `${key}` dep: the path params.yaml holds there (corpus.path); `${key[*].name}`: each listed item's
    (corpus.sources' folders). A folder of one's own (one no stage makes) is given as its files: a folder's mtime
    says nothing about its content (editing a transcript in place leaves it alone), whereas per file Snakemake sees
    an added or removed file (the input list changed) and an edited one (mtime, and checksum under
    --max-checksum-file-size) — as DVC sees them by hashing the folder.
    """
    files = []
    for path in map(Path, asrflow_stages.dep_paths(config, dep)):
        made_by_a_stage = any(out.path == str(path) for stage in asrflow_stages.STAGES for out in stage.outs.values())
        if made_by_a_stage or not path.is_dir():
            files.append(str(path))
        else:
            files += sorted(str(file) for file in path.rglob("*") if file.is_file())
    return tuple(files)


def plain_name(file):
    """Whether Snakemake can take `file` as an input file: not a name it would read as a pattern (`{name}` is a
    wildcard) nor one holding a line break or another control character (which the import refuses, naming it)."""
    return not contains_wildcard(file) and not any(unicodedata.category(c) == "Cc" for c in file)


def params_path(dep):
    """The dep's files Snakemake can take as inputs; the others enter the job through pattern_named_files."""
    return [file for file in params_files(dep) if plain_name(file)]


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def pattern_named_files(stage):
    """{"named_like_patterns": {file: sha256}} for the files of the stage's `${key}` deps that cannot be input files
    (plain_name: `take{1}.wav`), else {}: as a params value, a changed, added or removed one re-runs the job, as an
    input file would. Only those files are hashed (at every start of Snakemake), so only they cost anything."""
    named = {
        file: sha256(file)
        for dep in stage.deps.values()
        if dep.startswith("${")
        for file in params_files(dep)
        if not plain_name(file)
    }
    return {"named_like_patterns": named} if named else {}


def inputs(stage):
    """The stage's deps by name: a gathered dep (over an axis the stage does not run over) expanded over the grid."""
    named = {}
    for name, path in stage.deps.items():
        if path.startswith("${"):
            named[name] = params_path(path)
        elif asrflow_stages.gathered(stage, path):
            named[name] = expand(path, **axis_values(asrflow_stages.axes_in(path)))
        else:
            named[name] = path
    return named


def outputs(stage):
    return {name: reported(stage, out) for name, out in stage.outs.items()}


def reported(stage, out):
    """The output, marked for Snakemake's HTML report (`snakemake --report`) when the table gives it a category:
    its caption from workflow/report/, a folder's files by their patterns (each needs a wildcard: Snakemake finds
    the files with glob_wildcards), and the files labelled by the grid axes and the patterns' wildcards (the
    report's table then has a column for each instead of one file name)."""
    path = directory(out.path) if out.directory else out.path
    if not out.report:
        return path
    named = [*stage.wildcards, *(name for pattern in out.report_files for name in re.findall(r"\{(\w+)", pattern))]
    return report(
        path,
        category=out.report,
        caption=f"../report/{out.caption}" if out.caption else None,
        labels={name: f"{{{name}}}" for name in dict.fromkeys(named)} or None,
        patterns=list(out.report_files),
    )


def code(stage):
    """The source files the stage runs (its module and every asrflow module it imports): editing one re-runs it."""
    return asrflow_stages.code_files(stage.name)


def stage_params(stage):
    """Exactly the params keys the stage reads (for a per-method stage, this job's method's): Snakemake re-runs a job
    when one of them changes."""
    if "method" in stage.wildcards:
        return lambda wildcards: asrflow_config.select(config, asrflow_stages.stage_params(stage, wildcards.method))
    return asrflow_config.select(config, asrflow_stages.stage_params(stage, params=config))


def command(stage):
    """The job's `asrflow <stage> …` line, its deps, outs and axes filled in: a params function, so that each rule
    binds its own stage (Snakemake evaluates a shell expression again when the job runs, and in the loop of
    stages.smk it would then see the loop variable's last value). Its `--threads` is the table's, as in dvc.yaml
    (asrflow.stages.threads_text), whatever the scheduler grants; the log follows in the shell directive."""

    def fill(wildcards, input, output):
        # `${key}` first: the value params.yaml holds there (the learning curve's method)
        arguments = asrflow_stages.resolve(stage.cmd, config).format(input=input, output=output, **wildcards)
        return f"asrflow {stage.name} {arguments} --threads {asrflow_stages.thread_count(stage, config)}"

    return fill


# The shell directive of every rule: the command (params.command, its threads included), then this job's log.
SHELL = "{params.command} --log {log}"


# The cores Snakemake reserves for a job (the table's threads: a number or `resources.threads`), capped by --cores on
# a local run; --set-threads or a profile changes the reservation only, never the threads a command runs with (that
# is resources.threads, a param: it moves a model job's numbers).
def threads(stage):
    return asrflow_stages.thread_count(stage, config)


def mem_mb(stage):
    """Megabytes: the table's value on the first attempt, twice that on the first retry, and so on (the SLURM profile
    sets `retries`), so a job the scheduler killed for memory comes back with room to finish.
    """
    return lambda wildcards, attempt: stage.mem_mb * attempt


def gpus(stage):
    """GPUs for one job of a stage that runs the model: `resources.gpus_per_process` for each of its processes (the
    table's gpu_processes: a number or `train.processes`), and `resources.gpu_model`. The SLURM executor turns `gpu`
    and `gpu_model` into `sbatch --gpus=[model:]N`; 0 asks for none. A local run only counts them against
    `--resources gpu=N`."""
    if stage.gpu_processes is None:
        return {}
    processes = stage.gpu_processes
    if isinstance(processes, str):
        processes = asrflow_stages.lookup(config, processes)
    settings = config["resources"]
    gpus = {"gpu": int(settings["gpus_per_process"]) * int(processes)}
    if settings["gpu_model"]:
        gpus["gpu_model"] = settings["gpu_model"]
    return gpus


def search_metrics():
    """Every trial × fold evaluation of the random search (results/search/trial<n>/metrics/<method>/fold<k>)."""
    search = config.get("search")
    if not search:  # `asrflow search` then says how to declare one
        return []
    return expand(
        "results/search/trial{trial}/metrics/{method}/fold{fold}",
        trial=range(search["trials"]),
        method=search["method"],
        fold=config["folds"]["ids"],
    )


def trial_settings(wildcards):
    """`--set KEY=VALUE ...` of this trial: drawn from search.seed, the trial number and search.space, so a changed
    space re-runs the trials whose settings it changes (Snakemake's params trigger) and adding trials keeps the rest.
    """
    search = config["search"]
    return asrflow_search.set_arguments(
        asrflow_search.draw_trial(search["space"], search["seed"], int(wildcards.trial))
    )
