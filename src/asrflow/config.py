"""Load params.yaml, validate it against the schema, and hand each stage only the keys it declares.

The stage table (asrflow.stages) declares which params keys each stage reads; dvc.yaml's `params:` lists and the
Snakemake rules' `params:` come from it, so both engines re-run a stage exactly when one of its keys changes. A stage
that reaches for an undeclared key gets a KeyError instead of a silent stale cache.

The schema (params.schema.yaml, package data) holds each optional key's default; `validate` fills them in
(`with_defaults`), so a stage reads `params["a"]["b"]` and no module keeps a copy of a default.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asrflow import stages
from asrflow.errors import AsrflowError

# Package data (pyproject.toml: tool.setuptools.package-data), so an installed wheel validates without the checkout.
SCHEMA_PATH = resources.files("asrflow") / stages.SCHEMA_FILE
# A YAML file whose top level sets this key is a template to Snakemake's config loader (YTE): its `?` expressions run
# as Python.
YTE_SWITCH = "__use_yte__"
# How the parser spells a `!!name` tag: the YAML core schema's prefix.
YAML_TAG_PREFIX = "tag:yaml.org,2002:"


class ParamsError(AsrflowError):
    """params.yaml is invalid; the message names the key, what is wrong and what is allowed."""


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


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
    return f"{key}: {error.message}"


def _referenced(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a `$ref: "#/$defs/<name>"` points to ({} without one)."""
    ref = schema.get("$ref", "")
    return _schema()["$defs"][ref.rsplit("/", 1)[-1]] if ref.startswith("#/$defs/") else {}


def with_defaults(params: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill into `params` (in place; returned too) every `default` of `schema` (the params schema) whose key it lacks,
    recursively: `properties`, and a `$ref`'s (train.<method> → $defs/method). A section with a default (`{}`) is
    added and filled in; one without (corpus.demo, search) stays absent. jsonschema itself never fills defaults."""
    schema = _schema() if schema is None else schema
    properties = {**_referenced(schema).get("properties", {}), **schema.get("properties", {})}
    for key, node in properties.items():
        if key not in params and "default" in node:
            params[key] = copy.deepcopy(node["default"])
        if isinstance(params.get(key), dict):
            with_defaults(params[key], node)
    return params


def defaults(dotted: str) -> dict[str, Any]:
    """The schema defaults of the section at the dotted key (train.lora: r, alpha, dropout, target_modules): what
    that section means when it sets none of its optional keys."""
    node = _schema()
    for part in dotted.split("."):
        node = {**_referenced(node).get("properties", {}), **node.get("properties", {})}[part]
    return with_defaults({}, node)


# OmegaConf, which `dvc exp run -S` reads params.yaml with, takes this value for "missing" and stops there.
OMEGACONF_MISSING = "???"


def _missing_markers(node: Any, key: str = "") -> list[str]:
    """A problem for every value spelt OMEGACONF_MISSING: valid YAML, but no experiment of DVC's could run."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _missing_markers(v, f"{key}.{k}" if key else str(k))]
    if isinstance(node, list):
        return [p for n, v in enumerate(node) for p in _missing_markers(v, f"{key}[{n}]")]
    if node == OMEGACONF_MISSING:
        return [
            f"{key}: {OMEGACONF_MISSING!r} is what OmegaConf (`dvc exp run -S` reads params.yaml with it) takes for a "
            f"missing value; for a doubtful marker write '??', which annotations holding '???' contain too"
        ]
    return []


def validate(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Raise ParamsError listing every problem in `params`, each naming its key; else fill in every schema default
    (with_defaults: in place, so Snakemake's `config` gets them too) and return `params`."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors] + _missing_markers(params)
    if not errors:
        with_defaults(params)
        problems += [
            f"train.{m}: missing; every method in `methods` needs its settings (at least lr)"
            for m in params["methods"]
            if m not in params["train"]
        ]
    if not errors and params["folds"]["ids"] != list(range(params["folds"]["k"])):
        problems.append(
            f"folds.ids: must be {list(range(params['folds']['k']))} for folds.k="
            f"{params['folds']['k']} (dvc.yaml's matrix iterates it), got {params['folds']['ids']}"
        )
    if not errors and params["release"]["method"] not in ["best", *params["methods"]]:
        problems.append(
            f"release.method: {params['release']['method']!r} is not in methods {params['methods']}; the "
            f"release refits a method cross-validation scored: one of those, or `best`"
        )
    if not errors and "search" in params:
        problems += _search_problems(params["search"], params["train"])
    projector_methods = {*params.get("methods", []), params.get("learning_curve", {}).get("method")}
    if not errors and "projector" in projector_methods and params["model"]["decoder"] is None:
        problems.append(
            "model.decoder: null, but the projector method writes transcripts with a causal LM: set it to `demo` (a"
            " tiny LM pre-trained on the demo's source-language transcripts) or to a local directory holding one"
        )
    if not errors and "learning_curve" in params and params["learning_curve"]["method"] not in params["train"]:
        problems.append(
            f"learning_curve.method: train.{params['learning_curve']['method']} is missing; the learning curve's "
            f"method needs its settings (at least lr)"
        )
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
    problems = [
        f"search.space.{key}: the {search['method']} training does not read it; it reads "
        f"{', '.join(stage_keys('train', search['method']))} (and the keys inside them)"
        for key in search["space"]
        if not reads("train", search["method"], key)
    ]
    problems += [
        f"search.space.{key}: {kind} needs low < high, got {bounds}"
        for key, distribution in search["space"].items()
        for kind, bounds in distribution.items()
        if kind != "choice" and not bounds[0] < bounds[1]
    ]
    return problems


def read(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The params file as plain data, not yet validated: what both engines read it with (the Snakefile loads it
    through this instead of Snakemake's `configfile:`, which would run YTE templates; DVC runs stages, which call
    load_stage). A YAML tag or Snakemake's YTE switch is refused before anything is built from the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the project root or pass --params")
    try:
        text = path.read_text(encoding="utf-8")
        problems = [*_tags(text), *_templating(text)]
        if problems:
            raise ParamsError("\n".join(f"{path}:{problem}" for problem in problems))
        # safe_load: a params file builds plain data only, never Python objects.
        return yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path}: not readable YAML ({error})") from None


def _tags(text: str) -> list[str]:
    """A problem for every tag written in `text` (`!!python/object/apply:os.system`, `!!binary`, `!custom`): a tag
    asks a loader to build something other than plain data, and an unsafe one (Snakemake's YTE loader among them)
    builds Python objects. Read from the parser's events: no node is built, no alias expanded."""
    return [
        f"{event.start_mark.line + 1}: the YAML tag {event.tag.replace(YAML_TAG_PREFIX, '!!', 1)}; a tag builds "
        f"something other than plain data, and asrflow reads params as plain YAML only (mappings, lists, strings, "
        f"numbers, true/false, null): remove the tag and write the value itself"
        for event in yaml.parse(text, Loader=yaml.SafeLoader)
        if getattr(event, "tag", None)
    ]


def _templating(text: str) -> list[str]:
    """A problem where the top level of `text` sets YTE_SWITCH (there alone it switches templating on)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: nothing is constructed
    keys = root.value if isinstance(root, yaml.MappingNode) else []
    return [
        f"{key.start_mark.line + 1}: {YTE_SWITCH} switches on YTE templating, whose expressions Snakemake's config "
        f"loader runs as Python; asrflow reads params as plain YAML in both engines and evaluates nothing: remove "
        f"{YTE_SWITCH} and write each value itself"
        for key, _ in keys
        if key.value == YTE_SWITCH
    ]


def load_all(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The params file read (see read) and validated (see validate)."""
    return validate(read(path), str(path))


def stage_keys(stage: str, method: str | None = None, params: dict[str, Any] | None = None) -> list[str]:
    """The params keys `stage` reads (for `method`, where the stage reads per-method keys; with `params`, where it
    reads keys params.yaml names, as the learning curve's stages read train.<learning_curve.method>)."""
    return stages.stage_params(stages.stage(stage), method, params)


def _insert(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def select(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The sub-tree of validated `params` (defaults filled in) holding exactly `keys`; an optional section the file
    leaves out and the schema gives no default (corpus.demo, search: what no stage of this params file runs on) is
    an empty dict."""
    view: dict[str, Any] = {}
    for key in keys:
        try:
            value = stages.lookup(params, key)
        except KeyError:
            value = {}
        _insert(view, key, value)
    return view


def parse_value(text: str) -> Any:
    """A `--set` value: JSON (so 1e-05 is a number, as `json.dumps` writes it), else YAML (`q_proj`, `[q_proj]`)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def with_overrides(
    params: dict[str, Any], stage: str, method: str | None, overrides: list[str], source: str
) -> dict[str, Any]:
    """`params` with `KEY=VALUE` settings (a search trial's) put in, each KEY one that `stage` reads, re-validated."""
    params = copy.deepcopy(params)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. train.full.lr=0.001")
        if not reads(stage, method, key):
            raise ParamsError(
                f"--set {key}: the {stage} stage does not read it; it reads "
                f"{', '.join(stage_keys(stage, method))} (and the keys inside them)"
            )
        _insert(params, key, parse_value(value))
    return validate(params, f"{source} with --set {' '.join(overrides)}")


def load_stage(
    path: str | Path, stage: str, method: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Validate the whole file (with `overrides`, see with_overrides), then return only what `stage` reads."""
    params = load_all(path)
    if overrides:
        params = with_overrides(params, stage, method, overrides, str(path))
    return select(params, stage_keys(stage, method))
