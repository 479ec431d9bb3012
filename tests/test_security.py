"""Nothing asrflow reads can run code: weights come from safetensors only (never pickle), nothing is loaded with
trust_remote_code, YAML is read with safe_load, no corpus path leaves the corpus folder, and no command in a corpus
is executed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import ROOT
from corpus_fixtures import WRITERS, Row, tone
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import WAV2VEC2_ADAPTER_PT_FILE, WAV2VEC2_ADAPTER_SAFE_FILE

from asrflow import config, methods
from asrflow.checkpoint import Base, describe
from asrflow.errors import AsrflowError
from asrflow.import_ import import_corpus
from asrflow.io import write_json
from asrflow.manifest import ManifestError, Rejects
from asrflow.methods.lora import PEFT_DIR, load_peft

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


def test_sources_never_unpickle_run_remote_code_or_load_unsafe_yaml() -> None:
    problems = []
    for path in SOURCES:
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                runners = {"subprocess"} if path in CORPUS_READERS else set()
                problems += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNPICKLERS | runners]
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                problems.append(f"{where}:{node.value.lineno}: trust_remote_code")
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


def test_params_yaml_cannot_build_python_objects(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text + "\nexploit: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(config.ParamsError, match=r"params\.yaml: not readable YAML .*python/object/apply:os\.system"):
        config.load_all(tmp_path / "params.yaml")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


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
