"""Load params.yaml, validate it against the schema, and hand each stage only the keys it declares.

STAGE_PARAMS is the single list of which params keys each stage reads. dvc.yaml's `params:` lists and the Snakemake
rules' `params:` are checked against it by the tests, so both engines re-run a stage exactly when one of its keys
changes. A stage that reaches for an undeclared key gets a KeyError instead of a silent stale cache.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asrflow.errors import AsrflowError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"
METHOD_PLACEHOLDER = "{method}"

TRAIN_COMMON = ["train.seed", "train.max_epochs", "train.patience", "train.batch_seconds", "train.warmup_steps",
                "train.grad_clip", "train.processes", "train.precision", "train.gradient_checkpointing",
                "train.micro_batch_seconds", "train.optimizer"]

STAGE_PARAMS: dict[str, list[str]] = {
    "demo": ["corpus.demo"],
    "import": ["corpus.format", "corpus.path", "corpus.commonvoice", "corpus.elan", "audio.on_bad_audio"],
    "resample": ["audio"],
    "normalize": ["text", "audio.on_bad_audio"],
    "split": ["folds"],
    "augment": ["augment.speed"],
    "pretrain": ["model"],
    # The memory plan is a leaf: nothing waits for it, so resources.gpu_memory_gb (its budget) re-runs nothing else.
    "plan": [*TRAIN_COMMON, f"train.{METHOD_PLACEHOLDER}", "audio.max_seconds", "resources.gpu_memory_gb"],
    "train": [*TRAIN_COMMON, f"train.{METHOD_PLACEHOLDER}", "augment.mask_time_prob", "augment.mask_time_length",
              "corpus.language", "model.base_language"],
    "lm": ["decode.beam", "decode.lm_order"],
    "evaluate": ["evaluate", "decode.beam", "decode.alpha", "decode.beta", "decode.beam_width"],
    "report": ["methods", "folds.k"],
    # The released method is chosen at run time (`best`), so every method's train settings count.
    "release": ["release", "train", "augment.mask_time_prob", "augment.mask_time_length", "corpus.language",
                "corpus.name", "model.base_language"],
    "data_report": ["folds.k"],
    # Snakemake only (DVC searches with its experiment queue): every trial × fold's metrics into results/search.csv.
    "search": ["search", "folds.k"],
}


class ParamsError(AsrflowError):
    """params.yaml is invalid; the message names the key, what is wrong and what is allowed."""


@functools.cache
def _schema() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = {**error.schema.get("properties", {}), **_referenced(error.schema).get("properties", {})}
        allowed = ", ".join(sorted(known))
        unknown = sorted(set(error.instance) - set(known))
        where = f"{key}." if error.absolute_path else ""
        return f"unknown key {', '.join(where + u for u in unknown)}; allowed keys here: {allowed}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not allowed; allowed values: {error.validator_value}"
    if error.validator == "required":
        return f"{key}: {error.message}"
    return f"{key}: {error.message}"


def _referenced(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a `$ref: "#/$defs/<name>"` points to ({} without one)."""
    ref = schema.get("$ref", "")
    return _schema()["$defs"][ref.rsplit("/", 1)[-1]] if ref.startswith("#/$defs/") else {}


def validate(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Raise ParamsError listing every problem in `params`, each naming its key."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not errors:
        problems += [f"train.{m}: missing; every method in `methods` needs its settings (at least lr)"
                     for m in params["methods"] if m not in params["train"]]
    if not errors and params["folds"]["ids"] != list(range(params["folds"]["k"])):
        problems.append(f"folds.ids: must be {list(range(params['folds']['k']))} for folds.k="
                        f"{params['folds']['k']} (dvc.yaml's matrix iterates it), got {params['folds']['ids']}")
    if not errors and params["release"]["method"] not in ["best", *params["methods"]]:
        problems.append(f"release.method: {params['release']['method']!r} is not in methods {params['methods']}; the "
                        f"release refits a method cross-validation scored: one of those, or `best`")
    if not errors and "search" in params:
        problems += _search_problems(params["search"], params["train"])
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ParamsError(f"{source} is invalid:\n{lines}")
    return params


def reads(stage: str, method: str | None, key: str) -> bool:
    """Whether `stage` (for `method`) reads the dotted `key`: one of its declared keys, or a key inside one."""
    return any(key == k or key.startswith(f"{k}.") for k in stage_keys(stage, method))


def _search_problems(search: dict[str, Any], train: dict[str, Any]) -> list[str]:
    """A search trains a configured method (train.<method>) with settings its training reads, drawn from ranges."""
    if search["method"] not in train:
        return [f"search.method: train.{search['method']} is missing; the searched method needs its settings"]
    problems = [f"search.space.{key}: the {search['method']} training does not read it; it reads "
                f"{', '.join(stage_keys('train', search['method']))} (and the keys inside them)"
                for key in search["space"] if not reads("train", search["method"], key)]
    problems += [f"search.space.{key}: {kind} needs low < high, got {bounds}"
                 for key, distribution in search["space"].items() for kind, bounds in distribution.items()
                 if kind != "choice" and not bounds[0] < bounds[1]]
    return problems


def load_all(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the project root or pass --params")
    try:
        # safe_load: a params file builds plain data only, never Python objects (no `!!python/...` tags).
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path}: not readable YAML ({error})") from None
    return validate(params, str(path))


def stage_keys(stage: str, method: str | None = None) -> list[str]:
    keys = STAGE_PARAMS[stage]
    if any(METHOD_PLACEHOLDER in k for k in keys):
        if method is None:
            raise ValueError(f"stage {stage!r} reads per-method keys: give a method")
        keys = [k.replace(METHOD_PLACEHOLDER, method) for k in keys]
    return keys


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def _insert(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _schema_node(dotted: str) -> dict[str, Any]:
    """The schema of the dotted key ({} if the schema does not describe it)."""
    node = _schema()
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part, {})
    return node


def select(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The sub-tree of `params` holding exactly `keys`; a missing optional key takes its schema `default` (what a
    params file without it means), a missing optional section without one becomes an empty dict."""
    view: dict[str, Any] = {}
    for key in keys:
        try:
            value = _lookup(params, key)
        except KeyError:
            value = _schema_node(key).get("default", {})
        _insert(view, key, value)
    return view


def parse_value(text: str) -> Any:
    """A `--set` value: JSON (so 1e-05 is a number, as `json.dumps` writes it), else YAML (`q_proj`, `[q_proj]`)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def with_overrides(params: dict[str, Any], stage: str, method: str | None, overrides: list[str],
                   source: str) -> dict[str, Any]:
    """`params` with `KEY=VALUE` settings (a search trial's) put in, each KEY one that `stage` reads, re-validated."""
    params = copy.deepcopy(params)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. train.full.lr=0.001")
        if not reads(stage, method, key):
            raise ParamsError(f"--set {key}: the {stage} stage does not read it; it reads "
                              f"{', '.join(stage_keys(stage, method))} (and the keys inside them)")
        _insert(params, key, parse_value(value))
    return validate(params, f"{source} with --set {' '.join(overrides)}")


def load_stage(path: str | Path, stage: str, method: str | None = None,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate the whole file (with `overrides`, see with_overrides), then return only what `stage` reads."""
    params = load_all(path)
    if overrides:
        params = with_overrides(params, stage, method, overrides, str(path))
    return select(params, stage_keys(stage, method))
