"""Nothing asrflow reads can run code: weights come from safetensors only (never pickle), every transformers loader
passes trust_remote_code=False and a model folder with code of its own is refused, params.yaml is plain YAML (no tag,
no YTE template) in both engines, no corpus path leaves the corpus folder, and no command in a corpus is executed."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from conftest import BIN, ROOT, engine_env, read_params, run, write_params
from corpus_fixtures import WRITERS, Row, tone
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Wav2Vec2Config, Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import WAV2VEC2_ADAPTER_PT_FILE, WAV2VEC2_ADAPTER_SAFE_FILE

from asrflow import causal_lm, config, methods
from asrflow.checkpoint import DESCRIPTION, Base, BaseError, ModelFolderError, check_model_folder, describe, open_base
from asrflow.errors import AsrflowError
from asrflow.import_ import import_corpus
from asrflow.io import write_json
from asrflow.manifest import ManifestError, Rejects
from asrflow.methods.lora import PEFT_DIR, load_peft
from asrflow.model import make_processor

SOURCES = sorted((ROOT / "src" / "asrflow").rglob("*.py"))
# What reads a user's corpus never starts a process (a Kaldi `wav.scp` command is refused, not run).
CORPUS_READERS = [
    *sorted((ROOT / "src/asrflow/corpus").glob("*.py")),
    ROOT / "src/asrflow/audio.py",
    ROOT / "src/asrflow/resample.py",
]
UNPICKLERS = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}
# Loaders of JSON/text files only: a config, a processor's tokenizer and feature extractor.
NOT_WEIGHTS = ("Config", "Processor", "Tokenizer", "FeatureExtractor")


def _name(node: ast.AST) -> str:
    """`torch.load` → 'torch.load', `Wav2Vec2ForCTC.from_pretrained` → 'Wav2Vec2ForCTC.from_pretrained'."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _calls(path: Path) -> list[tuple[str, ast.Call, ast.AST | None]]:
    """(dotted name, call, the innermost function holding it, None at module level) for every call in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    owner: dict[ast.AST, ast.AST] = {}
    for function in ast.walk(tree):  # outer functions come first, so inner ones overwrite them
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            owner |= {node: function for node in ast.walk(function)}
    return [(_name(n.func), n, owner.get(n)) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_sources_never_unpickle_or_load_unsafe_yaml() -> None:
    problems = []
    for path in SOURCES:
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                runners = {"subprocess"} if path in CORPUS_READERS else set()
                problems += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNPICKLERS | runners]
            if isinstance(node, ast.Call):
                name = _name(node.func)
                if name in {"torch.load", "eval", "exec", "os.system", "os.popen"} or name in {
                    f"yaml.{f}" for f in UNSAFE_YAML
                }:
                    problems.append(f"{where}:{node.lineno}: {name}")
    assert not problems, problems


def test_every_weights_loader_asks_for_safetensors() -> None:
    """Each `X.from_pretrained` of a model passes use_safetensors=True; peft's, which has no such switch, is guarded."""
    checked, problems = 0, []
    for path in SOURCES:
        calls = _calls(path)
        for name, call, scope in calls:
            if not name.endswith(".from_pretrained") or name.split(".")[-2].endswith(NOT_WEIGHTS):
                continue
            checked += 1
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            if name.startswith("PeftModel"):
                if not any(n == "require_safetensors" for n, _, s in calls if s is scope):
                    problems.append(f"{where}: not preceded by require_safetensors")
            elif not any(k.arg == "use_safetensors" and getattr(k.value, "value", None) is True for k in call.keywords):
                problems.append(f"{where}: without use_safetensors=True")
    assert checked >= 4 and not problems, problems


def _loads_a_model(name: str) -> bool:
    """A transformers call that loads from a folder or config: any class's from_pretrained (but peft's: it loads
    adapter weights, guarded by require_safetensors, and runs no model code), any Auto class's from_config."""
    receiver, _, method = name.rpartition(".")
    if receiver.startswith("PeftModel"):
        return False
    return method == "from_pretrained" or (method == "from_config" and receiver.split(".")[-1].startswith("Auto"))


def test_every_transformers_loader_passes_trust_remote_code_false() -> None:
    """Without it, a folder naming code of its own makes transformers ask on the terminal whether to run it."""
    checked, problems = 0, []
    for path in SOURCES:
        for name, call, _ in _calls(path):
            keywords = {k.arg: k.value for k in call.keywords}
            explicit = getattr(keywords.get("trust_remote_code"), "value", None) is False
            if "trust_remote_code" in keywords and not explicit:
                problems.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}: trust_remote_code is not False")
            elif _loads_a_model(name):
                checked += 1
                problems += [] if explicit else [f"{path.relative_to(ROOT)}:{call.lineno} {name}: no trust_remote_code"]
    assert checked >= 15 and not problems, problems


# --- params.yaml is plain data in both engines ------------------------------------------------------------------------


def test_params_yaml_cannot_build_python_objects(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text + "\nexploit: !!python/object/apply:os.system ['touch pwned']\n")
    line = text.count("\n") + 2
    with pytest.raises(
        config.ParamsError, match=rf"params\.yaml:{line}: the YAML tag !!python/object/apply:os\.system; "
    ):
        config.load_all(tmp_path / "params.yaml")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def refused(args: list[str], cwd: Path, *, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """stdout and stderr of a command that must fail, `stdin` typed into it (a "y" to any question it asks), with
    `env` added to the engines' environment."""
    environment = {**engine_env(), **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=environment, input=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, f"{' '.join(args)} succeeded:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


# What each hostile params.yaml puts before and after the project's own, and the message asrflow refuses it with
# (`{line}`: the line of what is appended). Each would create `{marker}` if anything evaluated it.
HOSTILE_PARAMS = {
    "yte": (
        "__use_yte__: true\n",
        'marker: ?__import__("pathlib").Path("{marker}").touch()\n',
        r"params\.yaml:1: __use_yte__ switches on YTE templating, .* evaluates nothing: remove __use_yte__",
    ),
    "python_object": (
        "",
        'exploit: !!python/object/apply:os.system ["touch {marker}"]\n',
        r"params\.yaml:{line}: the YAML tag !!python/object/apply:os\.system; .*: remove the tag",
    ),
    "python_name": (
        "",
        "exploit: !!python/name:os.system\n",
        r"params\.yaml:{line}: the YAML tag !!python/name:os\.system; .*: remove the tag",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_PARAMS))
def test_params_yaml_runs_no_code_in_either_engine(project: Path, kind: str) -> None:
    """Snakemake (a dry run) and the first stage DVC runs both stop with asrflow's message, and nothing ran."""
    before, after, message = HOSTILE_PARAMS[kind]
    marker = project / "MARKER"
    text = (project / "params.yaml").read_text(encoding="utf-8")
    (project / "params.yaml").write_text(before + text + after.format(marker=marker), encoding="utf-8")
    expected = message.format(line=(before + text).count("\n") + 1)
    first_stage = next(iter(yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"].values()))
    for args in ([str(BIN / "snakemake"), "-n"], shlex.split(first_stage["cmd"])):
        assert re.search(expected, refused(args, project)), args
    assert not marker.exists()


def test_snakemake_config_overrides_go_on_top_of_params_yaml(project: Path) -> None:
    """Reading params.yaml without `configfile:` keeps `--config` working: its values replace the file's."""
    out = run([str(BIN / "snakemake"), "-n", "--config", "methods=[full]"], project).stdout
    folds = len(read_params(project)["folds"]["ids"])
    assert re.search(rf"^train\s+{folds}$", out, re.M), out


# --- pickled weights are refused, not loaded -----------------------------------------------------------------------


def tiny_model(adapters: bool = False) -> Wav2Vec2ForCTC:
    config_ = Wav2Vec2Config(
        vocab_size=6,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        adapter_attn_dim=4 if adapters else None,
    )
    return Wav2Vec2ForCTC(config_)


def describe_tiny(path: Path) -> Base:
    return Base(path, {"path": None, **describe(path)})


def test_a_checkpoint_in_pickle_format_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the pickle format transformers still reads
    with pytest.raises(OSError, match=r"model\.safetensors"):
        methods.get("full").load(tmp_path, "xx")


def test_a_pickled_mms_adapter_is_refused_and_a_safetensors_one_loads(tmp_path: Path) -> None:
    model = tiny_model(adapters=True)
    methods.get("adapter").save(model, tmp_path, "xx")
    assert methods.get("adapter").load(tmp_path, "xx").target_lang == "xx"
    adapter = tmp_path / WAV2VEC2_ADAPTER_SAFE_FILE.format("xx")
    torch.save(dict(model._get_adapters().items()), tmp_path / WAV2VEC2_ADAPTER_PT_FILE.format("xx"))
    adapter.unlink()
    with pytest.raises(AsrflowError, match=rf"{adapter.name}: not found; asrflow loads weights from safetensors only"):
        methods.get("adapter").load(tmp_path, "xx")


def test_a_pickled_lora_adapter_is_refused(tmp_path: Path) -> None:
    tiny_model().save_pretrained(tmp_path / "base", safe_serialization=True)
    write_json(tmp_path / "model/vocab.json", {c: i for i, c in enumerate(["<pad>", "<unk>", "|", "a", "b", "c"])})
    (tmp_path / "model" / PEFT_DIR).mkdir()
    torch.save({}, tmp_path / "model" / PEFT_DIR / "adapter_model.bin")
    with pytest.raises(AsrflowError, match=r"adapter_model\.safetensors: not found; .*safetensors only"):
        load_peft(describe_tiny(tmp_path / "base"), tmp_path / "model", "xx")


def recording(tmp_path: Path) -> Path:
    sf.write(tmp_path / "recording.wav", tone(1.0), 16000)
    return tmp_path / "recording.wav"


def pickled_speech_model(path: Path) -> Path:
    """A CTC model folder as transcribe takes one (config, processor), its weights only in pickle."""
    model = tiny_model()
    model.config.save_pretrained(path)
    make_processor({c: i for i, c in enumerate(["<pad>", "<unk>", "|", "a", "b", "c"])}).save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def test_transcribe_refuses_pickled_weights_without_a_traceback(tmp_path: Path) -> None:
    model = pickled_speech_model(tmp_path / "model")
    output = refused([str(BIN / "asrflow"), "transcribe", "--model", str(model), str(recording(tmp_path))], tmp_path)
    weights = r"\(it holds \['pytorch_model\.bin'\]: pickled weights, which asrflow never loads"
    assert re.search(rf"--model: {re.escape(str(model))} has no \*\.safetensors weights {weights}", output), output
    assert "Traceback" not in output


def pickled_decoder(path: Path) -> Path:
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def open_pickled_base(path: Path) -> Base:
    """What the release (and train) stages load: the base the pretrain stage described, here since gone pickle."""
    write_json(path / "described" / DESCRIPTION, {"path": str(pickled_speech_model(path / "base"))})
    return open_base(path / "described")


PICKLED_LOADS: dict[str, tuple[Callable[[Path], object], type[AsrflowError], str]] = {
    "release": (open_pickled_base, ModelFolderError, r"model\.base: .*base has no \*\.safetensors weights"),
    "pretrain": (lambda p: describe(pickled_speech_model(p)), BaseError, r"model\.base: .* has no model\.safetensors"),
    "decoder": (lambda p: causal_lm.describe(pickled_decoder(p)), ModelFolderError, r"model\.decoder: "),
    "projector": (lambda p: causal_lm.load_decoder(pickled_decoder(p)), ModelFolderError, r"model\.decoder: "),
}


@pytest.mark.parametrize("stage", list(PICKLED_LOADS))
def test_every_stage_refuses_a_model_folder_of_pickled_weights(tmp_path: Path, stage: str) -> None:
    load, error, message = PICKLED_LOADS[stage]
    with pytest.raises(error, match=rf"{message}.*pytorch_model\.bin'\]: pickled weights, which asrflow never loads"):
        load(tmp_path / "model")


# --- corpus paths stay inside the corpus folder --------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A real audio file next to (not inside) the corpus folder, so a refusal is never just a missing file."""
    sf.write(tmp_path / "outside.wav", tone(1.0), 16000)
    return tmp_path / "outside.wav"


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("kind", ["parent", "absolute"])
def test_every_importer_refuses_a_path_out_of_the_corpus_even_when_skipping(
    tmp_path: Path, outside: Path, fmt: str, kind: str
) -> None:
    root = tmp_path / "corpus"
    # Common Voice paths are inside clips/, ELAN's relative to the eaf: each needs one more ../ to get out.
    up = "../" * (1 + (fmt == "commonvoice"))
    escape = f"{up}outside.wav" if kind == "parent" else str(outside)
    rows = [Row("a", "s1", "ta"), Row("b", "s2", "ka", path=escape)]
    root.mkdir()
    writer = WRITERS[fmt]
    settings = writer(root, rows, segmented=False) if fmt == "kaldi" else writer(root, rows)
    with pytest.raises(ManifestError, match=r"leaves the corpus folder|resolves outside the corpus folder"):
        import_corpus({**settings, "path": str(root)}, Rejects("import", "skip"))


def test_a_symlink_out_of_the_corpus_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "corpus"
    WRITERS["audiofolder"](root, [Row("a", "s1", "ta"), Row("b", "s2", "ka", path="wav/b.wav")])
    (root / "wav/b.wav").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"metadata\.csv:3: path 'wav/b\.wav' resolves outside the corpus folder"):
        import_corpus({"format": "audiofolder", "path": str(root)}, Rejects("import", "skip"))


# --- a model folder's own code is never run ------------------------------------------------------------------------


def own_code_model(path: Path, marker: Path) -> Path:
    """A model folder whose config.json names a model_type transformers does not know and, in its auto_map, classes
    of its own Python file, which creates `marker` when imported; its weights are safetensors: only the code is
    wrong with it."""
    path.mkdir()
    classes = ("AutoConfig", "AutoProcessor", "AutoTokenizer", "AutoModelForCTC", "AutoModelForCausalLM")
    write_json(path / "config.json", {"model_type": "own-code", "auto_map": {c: "own_code.Model" for c in classes}})
    (path / "own_code.py").write_text(f"import pathlib\n\npathlib.Path({str(marker)!r}).touch()\n", encoding="utf-8")
    save_file({"weight": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


def test_transcribe_and_the_decoder_never_run_a_models_own_code(tmp_path: Path) -> None:
    """Both refuse the folder with asrflow's message, even with "y" typed to any question of transformers'."""
    marker = tmp_path / "MARKER"
    model = own_code_model(tmp_path / "model", marker).resolve()
    params = read_params(ROOT)
    params["model"]["decoder"] = str(model)
    write_params(tmp_path, params)
    env_cache = {"HF_MODULES_CACHE": str(tmp_path / "modules")}  # where transformers would copy the code to run it
    transcribe = [str(BIN / "asrflow"), "transcribe", "--model", str(model), str(recording(tmp_path))]
    decoder = [str(BIN / "asrflow"), "decoder", "--params", str(tmp_path / "params.yaml"), "--source", "unused"]
    for args, where in ((transcribe, "--model"), ([*decoder, "--out", "decoder"], "model.decoder")):
        output = refused(args, tmp_path, stdin="y\n" * 3, env=env_cache)
        assert re.search(rf"{where}: {re.escape(str(model / 'config.json'))} has an auto_map", output), output
        assert "asrflow never runs a model's own code" in output and "Traceback" not in output
    assert not marker.exists()


def test_a_model_type_transformers_does_not_know_is_refused(tmp_path: Path) -> None:
    model = own_code_model(tmp_path / "model", tmp_path / "MARKER")
    write_json(model / "config.json", {"model_type": "own-code"})  # no auto_map: transformers could not load it
    message = r"--model: .*config\.json has model_type 'own-code', which transformers \S+ does not know"
    with pytest.raises(ModelFolderError, match=message):
        check_model_folder(model, "--model")
