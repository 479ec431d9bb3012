"""Every checkpoint layout a user downloads, as a tiny random model saved the way the real one is laid out
(tests/checkpoint_layouts.py): each method it can take runs train → evaluate → report → release → transcribe through
the real stages; a method it cannot take stops before training, naming the base, the reason and what can run.
Also: the output layer's warm start from flat (case-folded) and nested MMS vocabularies, sharded weights, and feature
cache keys that follow exactly the weights the cached part uses."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from checkpoint_layouts import INFO, build
from conftest import ROOT, prepare_data, tiny_params
from safetensors.torch import load_file, save_file

from asrflow import cli, config, memory, methods
from asrflow.checkpoint import DESCRIPTION, BaseError, describe, open_base
from asrflow.features import CACHE_ENV, cache_dir, conv_encoder_tensor
from asrflow.io import read_json, write_json
from asrflow.methods.frozen import frozen_part
from asrflow.model import AudioTask, make_processor

K = 2
ALL = ["full", "adapter", "lora", "frozen", "scratch"]


def can_take(layout: str) -> list[str]:
    """The methods a layout takes: MMS adapters need adapter layers."""
    return [m for m in ALL if m != "adapter" or INFO[layout]["has_adapters"]]


def stage(project: Path, *args: str) -> None:
    assert cli.main([*args, "--params", str(project / "params.yaml"), "--threads", "1"]) == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo corpus prepared once (import … speed perturbation, folds): every layout trains on it."""
    project = tmp_path_factory.mktemp("corpus")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    tiny_params(project, methods=["full"], k=K)
    stage(project, "demo", "--target", f"{project}/data/raw/demo", "--source", f"{project}/data/raw/demo-source")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["corpus"]["path"] = f"{project}/data/raw/demo"
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    prepare_data(project / "params.yaml", project / "data")
    return project


def layout_project(corpus: Path, tmp_path: Path, layout: str, **model: str) -> Path:
    """A project on the shared corpus whose model.base is a fresh tiny checkpoint in `layout`'s real layout."""
    base = build(layout, tmp_path / "checkpoint" / layout)
    params = yaml.safe_load((corpus / "params.yaml").read_text())
    params["model"].update(base=str(base), **model)
    params["methods"] = can_take(layout)
    params["decode"]["beam"] = False  # LM decoding is the same code for every layout (tests/test_decode.py)
    # WavLM's and Wav2Vec2-BERT's layers cannot run on cached hidden states: the head trains on the encoder output.
    params["train"]["frozen"]["train_top_layers"] = (
        1 if INFO[layout]["family"] in ("wav2vec2", "hubert", "data2vec-audio") else 0
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    (tmp_path / "data").symlink_to(corpus / "data")
    return tmp_path


def run_grid(project: Path, method_names: list[str]) -> None:
    data, results = project / "data", project / "results"
    stage(project, "pretrain", "--source", f"{data}/raw/demo-source", "--out", f"{project}/base")
    for fold in map(str, range(K)):
        stage(project, "lm", "--train", f"{data}/folds/fold{fold}/train.csv", "--out", f"{project}/lm/fold{fold}")
        for method in method_names:
            model = f"{project}/checkpoints/{method}/fold{fold}"
            stage(
                project,
                "train",
                "--fold",
                fold,
                "--method",
                method,
                "--folds",
                f"{data}/folds",
                "--speed",
                f"{data}/speed",
                "--base",
                f"{project}/base",
                "--out",
                model,
                "--curve",
                f"{results}/curves/{method}-fold{fold}.csv",
            )
            stage(
                project,
                "evaluate",
                "--fold",
                fold,
                "--method",
                method,
                "--folds",
                f"{data}/folds",
                "--model",
                model,
                "--out",
                f"{results}/metrics/{method}/fold{fold}",
                "--publish",
                f"{results}/models/{method}/fold{fold}",
                "--lm",
                f"{project}/lm/fold{fold}",
            )
    stage(project, "report", "--metrics", f"{results}/metrics", "--out", str(results))


def release_and_transcribe(project: Path, method: str) -> list[str]:
    """Refit `method` on every speaker, then transcribe two recordings with the released folder."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["release"]["method"] = method
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    data, results, out = project / "data", project / "results", project / f"release-{method}"
    stage(
        project,
        "release",
        "--summary",
        f"{results}/summary.csv",
        "--folds-table",
        f"{results}/folds.csv",
        "--utterances",
        f"{data}/utterances.csv",
        "--speed",
        f"{data}/speed",
        "--base",
        f"{project}/base",
        "--out",
        str(out),
    )
    recordings = sorted((data / "resampled").rglob("*.wav"))[:2]
    stage(project, "transcribe", "--model", str(out), *map(str, recordings), "--out", f"{project}/tx-{method}", "--eaf")
    return [(project / f"tx-{method}" / f"{r.stem}.txt").read_text(encoding="utf-8") for r in recordings]


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(INFO))
def test_every_method_a_layout_takes_runs_to_a_summary_release_and_transcript(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    project = layout_project(corpus, tmp_path, layout)
    method_names = can_take(layout)
    run_grid(project, method_names)

    summary = pd.read_csv(project / "results/summary.csv")
    assert summary["method"].tolist() == method_names and (summary["n_folds"] == K).all()
    assert summary["cer_mean"].between(0, 10).all()
    info = read_json(project / "checkpoints/full/fold0/training.json")
    assert info["base_model_type"] == INFO[layout]["family"]
    for method in method_names:
        transcripts = release_and_transcribe(project, method)
        assert len(transcripts) == 2 and all(t.endswith("\n") for t in transcripts)
        released = read_json(project / f"release-{method}/release.json")
        assert released["method"] == method
    # The fold's processor is the base's own feature extractor: normalisation, mask use and log-mel settings follow it.
    saved = read_json(project / "checkpoints/full/fold0/processor_config.json")["feature_extractor"]
    base_fe = read_json(Path(read_json(project / "base" / DESCRIPTION)["path"]) / "preprocessor_config.json")
    for key in ("do_normalize", "return_attention_mask", "feature_size", "padding_value"):
        if key in base_fe:
            assert saved[key] == base_fe[key], key


def test_a_method_a_base_cannot_take_stops_before_training(corpus: Path, tmp_path: Path) -> None:
    project = layout_project(corpus, tmp_path, "xls-r-300m")
    stage(project, "pretrain", "--source", "unused", "--out", f"{project}/base")
    base = open_base(project / "base")
    with pytest.raises(methods.MethodUnavailable) as refused:
        methods.check_available(base, "adapter", yaml.safe_load((project / "params.yaml").read_text())["train"])
    message = str(refused.value)
    assert str(base.directory) in message and "adapter_attn_dim is unset" in message
    assert "Methods that can: full, lora, frozen, scratch" in message
    # and the train stage says so before loading anything
    assert (
        cli.main(
            [
                "train",
                "--fold",
                "0",
                "--method",
                "adapter",
                "--folds",
                f"{project}/data/folds",
                "--speed",
                f"{project}/data/speed",
                "--base",
                f"{project}/base",
                "--out",
                f"{project}/m",
                "--curve",
                f"{project}/c.csv",
                "--params",
                str(project / "params.yaml"),
            ]
        )
        != 0
    )
    assert not (project / "m").exists()


@pytest.mark.parametrize("layout", ["wavlm-base-plus", "w2v-bert-2.0"])
def test_frozen_top_layers_are_refused_where_layers_need_position_terms(
    corpus: Path, tmp_path: Path, layout: str
) -> None:
    project = layout_project(corpus, tmp_path, layout)
    stage(project, "pretrain", "--source", "unused", "--out", f"{project}/base")
    with pytest.raises(methods.MethodUnavailable, match=r"train_top_layers: 0"):
        methods.check_available(open_base(project / "base"), "frozen", {"frozen": {"lr": 1e-3, "train_top_layers": 1}})
    methods.check_available(open_base(project / "base"), "frozen", {"frozen": {"lr": 1e-3, "train_top_layers": 0}})


def test_unsupported_and_pickled_checkpoints_are_refused(tmp_path: Path) -> None:
    whisper = tmp_path / "whisper"
    whisper.mkdir()
    write_json(whisper / "config.json", {"model_type": "whisper"})
    with pytest.raises(BaseError, match=r"model_type 'whisper'; asrflow trains CTC heads on wav2vec2, hubert"):
        describe(whisper)
    pickled = build("wav2vec2-base-960h", tmp_path / "pickled")
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(BaseError, match=r"pytorch_model\.bin.*pickled weights, which asrflow never loads"):
        describe(pickled)
    sharded = build("xls-r-300m-sharded", tmp_path / "sharded")
    next(sharded.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(BaseError, match=r"download every shard"):
        describe(sharded)


# --- the output layer's warm start ---------------------------------------------------------------------------------

VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "k": 4, "ŋ": 5, "t": 6}


def prepared_head(base_dir: Path, language: str, warm_language: str | None = None) -> torch.Tensor:
    write_json(base_dir / DESCRIPTION, {"path": None, **describe(base_dir)})
    model = methods.get("full").prepare(
        open_base(base_dir), VOCAB, {}, config.defaults("train.full"), language, warm_language=warm_language
    )
    return model.lm_head.weight.detach()


@pytest.mark.parametrize("layout", ["wav2vec2-base-960h", "wav2vec2-base-960h-sharded"])
def test_head_warm_start_from_an_upper_case_flat_vocabulary_case_folds(tmp_path: Path, layout: str) -> None:
    base = build(layout, tmp_path / "base")
    head = prepared_head(base, "xx")
    weights = {}
    for file in [*base.glob("model*.safetensors")]:
        weights |= load_file(str(file))
    base_vocab = read_json(base / "vocab.json")
    for token, row in {"<pad>": "<pad>", "|": "|", "<unk>": "<unk>", "a": "A", "k": "K", "t": "T"}.items():
        assert torch.equal(head[VOCAB[token]], weights["lm_head.weight"][base_vocab[row]]), token
    assert not any(torch.equal(head[VOCAB["ŋ"]], row) for row in weights["lm_head.weight"]), "ŋ is new: fresh row"


def test_head_warm_start_from_a_nested_mms_vocabulary_uses_the_languages_adapter_head(tmp_path: Path) -> None:
    base = build("mms-1b-all", tmp_path / "base")
    swh = load_file(str(base / "adapter.swh.safetensors"))
    swh_vocab = read_json(base / "vocab.json")["swh"]
    head = prepared_head(base, "swh")
    assert torch.equal(head[VOCAB["k"]], swh["lm_head.weight"][swh_vocab["k"]])
    assert torch.equal(prepared_head(base, "xx", "swh")[VOCAB["t"]], swh["lm_head.weight"][swh_vocab["t"]]), (
        "model.base_language names the entry when the corpus language is not one of the base's"
    )
    fresh = prepared_head(base, "xx")
    assert not any(torch.equal(fresh[VOCAB["k"]], row) for row in swh["lm_head.weight"])


def test_adapter_method_starts_from_the_warm_languages_adapter(tmp_path: Path) -> None:
    base = build("mms-1b-all", tmp_path / "base")
    write_json(base / DESCRIPTION, {"path": None, **describe(base)})
    swh = load_file(str(base / "adapter.swh.safetensors"))
    model = methods.get("adapter").prepare(open_base(base), VOCAB, {}, {}, "xx", warm_language="swh")
    adapters = {n: p for n, p in model._get_adapters().items() if not n.startswith("lm_head")}
    assert adapters and all(torch.equal(p, swh[n]) for n, p in adapters.items())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(model._get_adapters())


# --- feature caches follow the weights the cached part uses --------------------------------------------------------


def test_cache_keys_follow_only_the_tensors_each_cut_reads(tmp_path: Path) -> None:
    base_dir = build("mms-1b-all", tmp_path / "base")
    for adapter in base_dir.glob("adapter.*.safetensors"):
        adapter.write_bytes(b"not read")  # 1,162 of them in the real folder: describing the base never opens them
    layers = read_json(base_dir / "config.json")["num_hidden_layers"]

    def keys() -> tuple[str, str, str]:
        write_json(base_dir / DESCRIPTION, {"path": None, **describe(base_dir)})
        described = open_base(base_dir)
        return (
            cache_dir(described, "conv", conv_encoder_tensor).name,
            cache_dir(described, "top1", frozen_part(1, layers, True)).name,
            cache_dir(described, "top0", frozen_part(0, layers, True)).name,
        )

    def change(name: str) -> None:
        weights = load_file(str(base_dir / "model.safetensors"))
        weights[name] = weights[name] + 1
        save_file(weights, str(base_dir / "model.safetensors"), metadata={"format": "pt"})

    before = keys()
    change("lm_head.weight")
    assert keys() == before, "no cached part reads the head"
    change(f"wav2vec2.encoder.layers.{layers - 1}.feed_forward.output_dense.bias")
    after_top = keys()
    assert after_top[0] == before[0] and after_top[1] == before[1] and after_top[2] != before[2]
    change("wav2vec2.feature_extractor.conv_layers.0.conv.weight")
    assert all(a != b for a, b in zip(keys(), after_top)), "every cut reads the conv encoder"


def test_a_local_base_is_described_once_and_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = build("xls-r-300m-sharded", tmp_path / "base")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["base"] = str(base)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    stage(tmp_path, "pretrain", "--source", "unused", "--out", f"{tmp_path}/described")
    assert sorted(p.name for p in (tmp_path / "described").iterdir()) == [DESCRIPTION]
    info = json.loads((tmp_path / "described" / DESCRIPTION).read_text())
    assert info["path"] == str(base.resolve()) and len(info["weights"]) == 3 and info["vocabulary"] == "none"
    assert {n.split(".")[0] for n in info["tensors"]} >= {"wav2vec2", "quantizer", "project_q"}


# --- the memory plan stage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget_gb,fits", [(80, True), (0.01, False)])
def test_the_plan_stage_judges_the_budget_and_stops_saying_what_to_change(
    tmp_path: Path, budget_gb: float, fits: bool
) -> None:
    base = build("mms-1b-all", tmp_path / "checkpoint")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["base"] = str(base)
    params["resources"]["gpu_memory_gb"] = budget_gb
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    stage(tmp_path, "pretrain", "--source", "unused", "--out", f"{tmp_path}/base")
    rc = cli.main(
        [
            "plan",
            "--method",
            "full",
            "--base",
            f"{tmp_path}/base",
            "--out",
            f"{tmp_path}/plan.json",
            "--params",
            str(tmp_path / "params.yaml"),
            "--threads",
            "1",
        ]
    )
    plan = read_json(tmp_path / "plan.json")
    assert (
        (rc == 0) is fits and plan["fits"] is fits and plan["budget_bytes"] == int(budget_gb * 1024**3 * memory.USABLE)
    )
    assert plan["peak_bytes"] >= plan["weights"] + plan["optimizer"] > 0
    if not fits:
        assert "train.precision: bf16" in plan["message"] and "train.gradient_checkpointing: true" in plan["message"]


def test_scratch_with_only_its_learning_rate_trains_its_conv_encoder_on_audio(tmp_path: Path) -> None:
    """`train.scratch: {lr: …}` alone means what the schema says (freeze_feature_encoder: false): the random conv
    encoder trains, on audio, never through a feature cache keyed on a base it does not use. (Scratch once inherited
    the full method's task, which read a missing key as "frozen": the conv encoder never trained.)"""
    base_dir = build("xls-r-300m", tmp_path / "base")
    write_json(base_dir / DESCRIPTION, {"path": None, **describe(base_dir)})
    base = open_base(base_dir)
    cfg = {**config.defaults("train.scratch"), "lr": 1e-3}
    scratch = methods.get("scratch")
    model = scratch.prepare(base, VOCAB, {}, cfg, "xx")
    task = scratch.task(model, make_processor(VOCAB, base.feature_extractor()), cfg, base)
    assert type(task) is AudioTask
    conv = [p for n, p in model.named_parameters() if ".feature_extractor.conv_layers." in n]
    assert conv and all(p.requires_grad for p in conv)
