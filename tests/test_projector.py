"""The `projector` method (frozen encoder → trained MLP projector → frozen causal LM) on a tiny real corpus: it learns,
its decoder may be any local causal LM, its tokenizer must write the corpus, its artefact loads with transformers
alone and reproduces the evaluation, and both engines run it beside a CTC method."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import (
    BIN,
    ROOT,
    copy_project,
    copy_tiny_data,
    evaluate_argv,
    read_params,
    run,
    tiny_params,
    train_argv,
    write_params,
)
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from asrflow import cli
from asrflow.causal_lm import DecoderError, char_tokenizer, check_round_trip, encode, load_decoder
from asrflow.decoder import lm_loss
from asrflow.features import CACHE_ENV, FeatureClip, pad_features
from asrflow.io import read_json
from asrflow.methods.projector import Generation, Projector, ProjectorModel, with_lora
from asrflow.metrics import error_rates

PROJECTOR = ["projector"]


def tiny_decoder(params: dict) -> dict:
    """A seconds-scale projector on top of tests' tiny params (tiny.shrink also shrinks the demo decoder)."""
    params["model"]["decoder"] = "demo"
    params["train"]["projector"].update(
        hidden_size=64, beam_width=2, max_new_tokens_per_second=15, max_new_tokens_extra=4
    )
    return params


def one_layer_lm(tokenizer: PreTrainedTokenizerBase, hidden_size: int = 32, **config: Any) -> dict[str, Any]:
    """Keyword arguments of a one-layer causal LM config (LlamaConfig, Qwen2Config) over `tokenizer`'s vocabulary:
    feed-forward twice the hidden size, two attention heads sharing one key/value head; `config` adds the rest."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        **config,
    }


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """The bos, eos and pad token ids of `tokenizer`, as a causal LM config takes them."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


# --- the tokenizer must write the corpus (fast) -----------------------------------------------------------------------


def ascii_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer of lower-case ASCII letters and space only: no IPA."""
    vocab = {c: i for i, c in enumerate(["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz "])}
    backend = Tokenizer(models.WordLevel(vocab, "<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")


def test_a_tokenizer_that_cannot_write_the_corpus_is_refused_naming_the_characters() -> None:
    tokenizer = ascii_tokenizer()
    check_round_trip(tokenizer, ["tabu ya"], "ascii")
    with pytest.raises(DecoderError, match=r"'ŋ' \(U\+014B\), 'ː' \(U\+02D0\); first one: 'ŋoːma'"):
        check_round_trip(tokenizer, ["tabu", "ŋoːma", "ŋa"], "fold0")


def test_the_demo_tokenizer_round_trips_ipa_it_never_saw() -> None:
    tokenizer = char_tokenizer("abc")
    check_round_trip(tokenizer, ["mtʃaˈna ŋoːmbe t͡ʃ ɓ̃", "θ β χ ‿"], "IPA")
    with pytest.raises(DecoderError, match="U\\+65E5"):
        check_round_trip(tokenizer, ["日本"], "CJK")


# --- the projector learns to carry what the audio says (fast) ---------------------------------------------------------


def test_the_projector_learns_which_sentence_the_audio_holds() -> None:
    """A causal LM that knows three sentences, frozen; three utterances of distinct (synthetic) encoder features. An
    untrained projector tells the LM nothing, so beam search writes the same sentence for all three; training only
    the projector (teacher forcing, the method's own loss) lowers the loss and makes the LM write each utterance's own
    sentence, by the same `generate` as evaluation: training and decoding lay out [bos, audio, prompt] alike."""
    torch.manual_seed(0)
    tokenizer = char_tokenizer("")
    decoder = LlamaForCausalLM(LlamaConfig(**one_layer_lm(tokenizer, **special_tokens(tokenizer))))
    texts = ["ŋoma", "tabu ya", "ʃida"]
    sentences = [[tokenizer.bos_token_id, *encode(tokenizer, t), tokenizer.eos_token_id] for t in texts]
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-2)
    for _ in range(60):  # the "language model" of this tiny language
        lm_loss(decoder, sentences, tokenizer.pad_token_id).backward()
        optimizer.step()
        optimizer.zero_grad()
    model = ProjectorModel(Projector(16, 32, 5, 64, "gelu"), with_lora(decoder, None), tokenizer, "say:")
    clips = [
        FeatureClip(str(i), "s", t, torch.randn(n, 16), [], 16000) for i, (t, n) in enumerate(zip(texts, (40, 55, 33)))
    ]
    targets = [[*encode(tokenizer, t), tokenizer.eos_token_id] for t in texts]
    generation = Generation(beam_width=2, length_penalty=1.0, max_new_tokens_per_second=10, max_new_tokens_extra=2)

    def cer() -> float:
        model.eval()
        return error_rates(texts, [model.generate(c.features, 1.0, generation) for c in clips])[0]

    untrained = cer()
    assert [p for p in model.parameters() if p.requires_grad] == list(model.projector.parameters())
    optimizer = torch.optim.AdamW(model.projector.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        model.train()
        loss = model.loss(*pad_features(clips), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
    assert cer() < untrained / 2, untrained


# --- a tiny project made by the real stages --------------------------------------------------------------------------


def stage(*args: str) -> None:
    assert cli.main([*args, "--params", "params.yaml", "--threads", "1"]) == 0


def train(method: str, out: str, decoder: str = "data/models/decoder") -> None:
    stage(*train_argv(method, f"models/{out}", f"curves/{out}.csv", "--decoder", decoder))


def evaluate(method: str, out: str) -> None:
    stage(*evaluate_argv(method, f"models/{out}", f"metrics/{out}", f"published/{out}"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """Corpus, data stages and base of the tiny configuration (conftest.tiny_data's, made once per worker by the real
    stages: the projector's params differ from it in methods, decoder and training only) and the demo decoder."""
    project = tmp_path_factory.mktemp("projector")
    (project / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    params = tiny_decoder(tiny_params(project, methods=["frozen", "projector"]))
    params["train"]["projector"].update(max_epochs=3, patience=3)
    params["decode"]["beam"] = False
    write_params(project, params)
    copy_tiny_data(tiny_data, project)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv(CACHE_ENV, str(project / "cache"))
        stage("decoder", "--source", "data/raw/demo-source", "--out", "data/models/decoder")
        train("projector", "projector")
        evaluate("projector", "projector")
    return project


@pytest.fixture
def in_project(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(prepared)
    monkeypatch.setenv(CACHE_ENV, str(prepared / "cache"))
    return prepared


@pytest.mark.slow
def test_the_demo_decoder_never_reads_the_target_corpus(in_project: Path) -> None:
    described = read_json(in_project / "data/models/decoder/decoder.json")
    source = pd.read_csv(in_project / "data/raw/demo-source/metadata.csv")
    assert described["path"] is None and described["model_type"] == "llama"
    assert described["pretraining"]["train_sentences"] + described["pretraining"]["dev_sentences"] == len(source)
    assert (in_project / "data/models/decoder/model.safetensors").is_file()


@pytest.mark.slow
def test_projector_trains_and_evaluates_in_the_pipeline(in_project: Path) -> None:
    curve = pd.read_csv(in_project / "curves/projector.csv")
    assert len(curve) >= 2 and curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    info = read_json(in_project / "models/projector/training.json")
    assert info["trainable_params"] == sum(
        t.numel() for t in load_file(str(in_project / "models/projector/projector.safetensors")).values()
    )
    assert info["loop"]["schedule"] == "cosine" and info["decoder_model_type"] == "llama"
    metrics = read_json(in_project / "metrics/projector/metrics.json")
    assert metrics["cer"] >= 0 and metrics["method"] == "projector" and "cer_lm" not in metrics
    assert "causal LM decoder" in (in_project / "published/projector/README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_projector_shares_the_frozen_methods_feature_cache(in_project: Path) -> None:
    """One cache for every method: the frozen method with train_top_layers 0 hits the projector's entries."""
    before = sorted(p.name for p in (in_project / "cache").rglob("*.safetensors"))
    params = read_params(in_project)
    params["train"]["frozen"].update(train_top_layers=0, max_epochs=1)
    write_params(in_project, params)
    train("frozen", "frozen0")
    assert sorted(p.name for p in (in_project / "cache").rglob("*.safetensors")) == before


SNIPPET = re.compile(r"<!-- projector-snippet -->\n```python\n(.*?)```", re.S)
HARNESS = """
import sys, json, soundfile
{snippet}
rows = json.loads(sys.argv[2])
print("HYPOTHESES " + json.dumps([transcribe(soundfile.read(path, dtype="float32")[0]) for path in rows]))
"""


def snippet_hypotheses(project: Path, model_dir: str, paths: list[str]) -> list[str]:
    """What docs/methods.md's loading snippet (transformers, peft and safetensors only) transcribes of `paths` with
    the model folder `model_dir`, run in a fresh process in `project`."""
    snippet = SNIPPET.search((ROOT / "docs/methods.md").read_text(encoding="utf-8"))[1]
    documented = 'model_dir = Path("results/models/projector/fold0")\n'
    assert documented in snippet
    snippet = snippet.replace(documented, "model_dir = Path(sys.argv[1])\n")
    assert "asrflow" not in snippet
    proc = run([sys.executable, "-c", HARNESS.format(snippet=snippet), model_dir, json.dumps(paths)], project)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HYPOTHESES "))
    return json.loads(line.removeprefix("HYPOTHESES "))


@pytest.mark.slow
def test_the_documented_snippet_reproduces_the_evaluation_in_a_fresh_process(in_project: Path) -> None:
    hypotheses = pd.read_csv(in_project / "metrics/projector/hypotheses.csv", keep_default_na=False)
    audio = dict(pd.read_csv(in_project / "data/processed/folds/fold0/test.csv")[["utt_id", "audio"]].values)
    paths = [audio[u] for u in hypotheses["utt_id"]]
    assert snippet_hypotheses(in_project, "published/projector", paths) == hypotheses["hypothesis"].tolist()


@pytest.mark.slow
def test_asrflow_transcribe_takes_a_projector_model(in_project: Path) -> None:
    """One chunk per recording: `asrflow transcribe` writes what the evaluation wrote for that utterance."""
    hypotheses = pd.read_csv(in_project / "metrics/projector/hypotheses.csv", keep_default_na=False)
    test = pd.read_csv(in_project / "data/processed/folds/fold0/test.csv").set_index("utt_id")
    utt_id, expected = hypotheses[["utt_id", "hypothesis"]].values[0]
    recording = Path(test.at[utt_id, "audio"])
    stage("transcribe", "--model", "published/projector", str(recording), "--out", "transcribed", "--eaf")
    assert (in_project / f"transcribed/{recording.stem}.txt").read_text(encoding="utf-8") == " ".join(
        expected.split()
    ) + "\n"
    words = pd.read_csv(in_project / f"transcribed/{recording.stem}.csv", keep_default_na=False)
    assert words["word"].tolist() == expected.split() and (words["confidence"].between(0, 1)).all()
    assert (in_project / f"transcribed/{recording.stem}.eaf").is_file()


def local_decoder(
    project: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    local: Path,
    out: str,
    **projector: Any,
) -> None:
    """`model` and `tokenizer` saved in `local` and made the project's `model.decoder`, with `projector` updating
    train.projector, then validated by the decoder stage into `out`."""
    model.save_pretrained(local, safe_serialization=True)
    tokenizer.save_pretrained(local)
    params = read_params(project)
    params["model"]["decoder"] = str(local)
    params["train"]["projector"].update(projector)
    write_params(project, params)
    stage("decoder", "--source", "data/raw/demo-source", "--out", out)


@pytest.mark.slow
def test_a_local_decoder_directory_with_lora_runs_the_same_way(in_project: Path, tmp_path: Path) -> None:
    """`model.decoder: <dir>`: a random Qwen2 causal LM saved here, validated by the decoder stage (not copied), with
    LoRA on its attention; the projector trains on it and evaluates."""
    local = tmp_path / "qwen"
    torch.manual_seed(0)
    tokenizer = char_tokenizer("")
    config = Qwen2Config(**one_layer_lm(tokenizer, max_position_embeddings=1024, **special_tokens(tokenizer)))
    lora = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    local_decoder(
        in_project, Qwen2ForCausalLM(config), tokenizer, local, "decoders/local", max_epochs=1, decoder_lora=lora
    )
    assert read_json(in_project / "decoders/local/decoder.json")["path"] == str(local)
    assert not (in_project / "decoders/local/model.safetensors").exists()
    train("projector", "local", decoder="decoders/local")
    evaluate("projector", "local")
    assert (in_project / "models/local/decoder_lora/adapter_model.safetensors").is_file()
    info = read_json(in_project / "models/local/training.json")
    assert info["decoder_model_type"] == "qwen2" and info["trainable_params"] > 0
    assert "cer" in read_json(in_project / "metrics/local/metrics.json")


@pytest.mark.slow
def test_training_refuses_a_decoder_whose_tokenizer_cannot_write_the_corpus(in_project: Path, tmp_path: Path) -> None:
    local = tmp_path / "ascii"
    tokenizer = ascii_tokenizer()
    config = Qwen2Config(**one_layer_lm(tokenizer, hidden_size=16))
    local_decoder(in_project, Qwen2ForCausalLM(config), tokenizer, local, "decoders/ascii")
    from asrflow import config
    from asrflow.methods import projector

    with pytest.raises(DecoderError, match=r"offending characters: .*U\+"):
        projector.train_fold(
            Path("data/processed/folds/fold0"),
            Path("data/processed/speed/manifest.csv"),
            Path("data/models/base"),
            Path("decoders/ascii"),
            config.load_all("params.yaml"),
            out_dir=Path("models/never"),
            curve_path=Path("curves/never.csv"),
        )
    assert not Path("models/never").exists()


# Causal LMs as they ship (SmolLM3, Llama, Qwen): weights saved in bf16, which transformers loads as bf16.
SHIPPED_IN_BF16 = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("architecture", "precision", "checkpointing"),
    [("llama", "fp32", True), ("llama", "bf16", False), ("qwen2", "fp32", False), ("qwen2", "bf16", True)],
)
def test_a_decoder_saved_in_bf16_trains_evaluates_transcribes_and_loads_elsewhere(
    in_project: Path, tmp_path: Path, architecture: str, precision: str, checkpointing: bool
) -> None:
    """The float32 projector feeds a bf16 decoder under either train.precision, with and without gradient
    checkpointing through the decoder; the evaluation, `asrflow transcribe` and the documented snippet in a fresh
    process write the same transcripts."""
    written = (in_project / "params.yaml").read_text(encoding="utf-8")
    config_class, model_class = SHIPPED_IN_BF16[architecture]
    torch.manual_seed(0)
    tokenizer = char_tokenizer("")
    config = config_class(**one_layer_lm(tokenizer, max_position_embeddings=1024, **special_tokens(tokenizer)))
    name = f"{architecture}-{precision}-{'checkpointed' if checkpointing else 'plain'}"
    try:
        local_decoder(
            in_project,
            model_class(config).to(torch.bfloat16),
            tokenizer,
            tmp_path / architecture,
            f"decoders/{name}",
            max_epochs=1,
            precision=precision,
            gradient_checkpointing=checkpointing,
        )
        assert load_decoder(tmp_path / architecture).dtype == torch.bfloat16, "loaded as shipped"
        train("projector", name, decoder=f"decoders/{name}")
        evaluate("projector", name)
    finally:
        (in_project / "params.yaml").write_text(written, encoding="utf-8")
    assert read_json(in_project / f"models/{name}/training.json")["loop"]["gradient_checkpointing"] is checkpointing
    hypotheses = pd.read_csv(in_project / f"metrics/{name}/hypotheses.csv", keep_default_na=False)
    audio = dict(pd.read_csv(in_project / "data/processed/folds/fold0/test.csv")[["utt_id", "audio"]].values)
    assert snippet_hypotheses(in_project, f"published/{name}", [audio[u] for u in hypotheses["utt_id"]]) == list(
        hypotheses["hypothesis"]
    )
    utt_id, expected = hypotheses[["utt_id", "hypothesis"]].values[0]
    stage("transcribe", "--model", f"published/{name}", audio[utt_id], "--out", f"transcribed/{name}")
    written_text = (in_project / f"transcribed/{name}/{Path(audio[utt_id]).stem}.txt").read_text(encoding="utf-8")
    assert written_text == " ".join(expected.split()) + "\n"


# --- both engines ----------------------------------------------------------------------------------------------------

ENGINE_METHODS = ["frozen", "projector"]


def engine_project(dest: Path) -> Path:
    project = copy_project(dest)
    write_params(project, tiny_decoder(tiny_params(project, methods=ENGINE_METHODS)))
    return project


def check_projector_row(project: Path) -> None:
    summary = pd.read_csv(project / "results/summary.csv")
    assert summary["method"].tolist() == ENGINE_METHODS
    row = summary.set_index("method").loc["projector"]
    assert row["n_folds"] == 2 and row["cer_mean"] >= 0
    folds = pd.read_csv(project / "results/folds.csv")
    assert sorted(folds.loc[folds.method == "projector", "fold"]) == [0, 1]
    assert (project / "results/models/projector/fold1/projector_config.json").is_file()


@pytest.mark.slow
def test_snakemake_runs_the_projector_beside_a_ctc_method(tmp_path: Path) -> None:
    project = engine_project(tmp_path / "smk")
    run([str(BIN / "snakemake"), "--cores", "2", "results/summary.csv"], project, timeout=1500)
    check_projector_row(project)


@pytest.mark.slow
def test_dvc_runs_the_projector_beside_a_ctc_method(tmp_path: Path) -> None:
    project = engine_project(tmp_path / "dvc")
    run([str(BIN / "dvc"), "repro", "report"], project, timeout=1500)
    check_projector_row(project)


def test_params_reference_the_projector_and_keep_it_out_of_the_default_grid() -> None:
    from asrflow import config

    params = config.load_all(ROOT / "params.yaml")
    assert "projector" not in params["methods"] and params["model"]["decoder"] is None
    assert params["train"]["projector"]["stack"] == 5


def test_decoder_stage_is_its_own_and_pretrain_ignores_it() -> None:
    from asrflow import stages

    assert not any(key.startswith("model.decoder") or key == "model" for key in stages.stage("pretrain").params)
    assert stages.stage("train").deps["decoder"] == stages.stage("decoder").outs["decoder"].path


def test_release_refits_the_best_ctc_method_and_refuses_the_projector() -> None:
    from asrflow.release import ReleaseError, choose_method

    folds = pd.DataFrame({"method": ["frozen", "projector", "frozen", "projector"], "dev_cer": [0.5, 0.2, 0.5, 0.2]})
    assert choose_method(folds, "best") == "frozen"
    with pytest.raises(ReleaseError, match="cannot train projector"):
        choose_method(folds, "projector")
    with pytest.raises(ReleaseError, match="cannot train projector"):
        choose_method(folds[folds.method == "projector"], "best")


def test_without_a_decoder_the_stage_writes_a_note_and_the_projector_is_refused(tmp_path: Path) -> None:
    """`model.decoder: null` (the default): the decoder stage pre-trains nothing, the projector's training refuses
    its folder, and params naming the projector without a decoder are refused before any job runs."""
    from asrflow import config
    from asrflow.causal_lm import decoder_directory

    params_file = tmp_path / "params.yaml"
    params_file.write_bytes((ROOT / "params.yaml").read_bytes())
    assert cli.main(["decoder", "--source", str(tmp_path / "unused"), "--out", str(tmp_path / "decoder"),
                     "--params", str(params_file)]) == 0  # fmt: skip
    assert read_json(tmp_path / "decoder" / "decoder.json") == {"path": None, "configured": False}
    with pytest.raises(DecoderError, match="no decoder was configured"):
        decoder_directory(tmp_path / "decoder")
    params = read_params(tmp_path)
    params["methods"] = ["frozen", "projector"]
    with pytest.raises(config.ParamsError, match="model.decoder: null"):
        config.validate(params)
