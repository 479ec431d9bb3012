"""Defaults live in the schema (src/asrflow/params.schema.yaml) and are filled in on load (config.with_defaults): a
params file without an optional key means the schema's default, and params.yaml spells the same value out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, read_params

from asrflow import config

# Where params.yaml sets a value other than the schema's default on purpose: key → (default, params.yaml's value).
DELIBERATE = {"train.frozen.train_top_layers": (0, 1)}  # the demo trains the top layer; the method's default: none


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every non-section value in `tree`."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def sections(tree: dict[str, Any]) -> dict[str, Any]:
    """`tree` with only its sections (dicts) kept: where the schema's defaults go, and nothing else."""
    return {key: sections(value) for key, value in tree.items() if isinstance(value, dict)}


def test_a_params_file_without_optional_keys_loads_with_the_schema_defaults(tmp_path: Path) -> None:
    params = read_params(ROOT)
    for key in ("r", "alpha", "dropout", "target_modules"):
        del params["train"]["lora"][key]
    del params["train"]["full"]["freeze_feature_encoder"], params["train"]["scratch"]["freeze_feature_encoder"]
    del params["train"]["frozen"]["max_epochs"], params["train"]["frozen"]["train_top_layers"]
    del params["corpus"]["commonvoice"], params["corpus"]["elan"]["speakers"], params["resources"]
    for key in ("tier_index", "tier_pattern", "tier_type"):  # doubtful: params.yaml leaves it to the schema
        del params["corpus"]["elan"][key]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")

    loaded = config.load_all(tmp_path / "params.yaml")
    train = loaded["train"]
    assert train["lora"] == {"lr": 0.002, "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    assert train["full"]["freeze_feature_encoder"] is True and train["scratch"]["freeze_feature_encoder"] is False
    assert train["frozen"]["train_top_layers"] == 0
    assert loaded["corpus"]["commonvoice"] == {"tsv": "validated.tsv"}
    assert loaded["corpus"]["elan"] == {
        "tier": "transcription",
        "speakers": None,
        "tier_index": None,
        "tier_pattern": None,
        "tier_type": None,
        "doubtful": "??",
    }
    assert loaded["resources"] == {"threads": 1, "gpus_per_process": 0, "gpu_memory_gb": None, "gpu_model": None}
    # A loop setting a method leaves out has no default of its own: the train-wide value applies.
    assert "max_epochs" not in train["frozen"] and train["frozen"]["patience"] == 3
    assert config.select(loaded, ["train.frozen"]) == {
        "train": {"frozen": {"lr": 0.005, "patience": 3, "train_top_layers": 0}}
    }
    # An optional section the schema gives no default stays absent.
    del params["search"], params["corpus"]["demo"]
    filled = config.validate(params)
    assert "search" not in filled and "demo" not in filled["corpus"]


def test_params_yaml_spells_out_every_schema_default_and_agrees_with_it() -> None:
    """params.yaml documents each optional key with its value; where it is not the default, that is deliberate."""
    documented = leaves(read_params(ROOT))
    defaults = leaves(config.with_defaults(sections(read_params(ROOT))))
    defaults = {key: value for key, value in defaults.items() if value != {}}  # a section with nothing to fill in
    assert defaults.keys() <= documented.keys(), "params.yaml leaves out a key the schema has a default for"
    disagree = {key: (value, documented[key]) for key, value in defaults.items() if documented[key] != value}
    assert disagree == DELIBERATE


def test_the_value_omegaconf_reads_as_missing_is_refused_naming_the_key() -> None:
    """`dvc exp run -S` reads params.yaml with OmegaConf, where "???" means "missing": refused on load, in both
    engines, with the fix (the default doubtful marker is spelt "??", which "???" contains)."""
    params = read_params(ROOT)
    params["corpus"]["elan"]["doubtful"] = "???"
    with pytest.raises(config.ParamsError, match=r"corpus\.elan\.doubtful: '\?\?\?' is what OmegaConf .* write '\?\?'"):
        config.validate(params)
    assert config.defaults("corpus.elan")["doubtful"] == "??" == config.defaults("corpus.textgrid")["doubtful"]
