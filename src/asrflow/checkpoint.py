"""What a base checkpoint folder is and what it can do, read through transformers' Auto classes.

A base is any local Hugging Face folder that `AutoConfig` / `AutoModelForCTC` / `AutoFeatureExtractor` load: wav2vec2
(MMS, XLS-R, wav2vec2-base/large), HuBERT, WavLM, data2vec-audio and Wav2Vec2-BERT; a CTC checkpoint or a
pre-training-only one; one `model.safetensors` or shards listed by `model.safetensors.index.json`. Methods ask a
`Base` for capabilities (MMS adapter layers? raw samples or log-mel input? a vocabulary to warm-start from?) instead
of naming a model class.

The `pretrain` stage describes the base once (`base.json` in data/models/base): family, input, vocabulary, and a
SHA-256 of every weight tensor. Feature caches are keyed on the digests of exactly the tensors the cached part
uses, so no job re-hashes a multi-GB checkpoint, and MMS' 1,162 `adapter.<lang>.safetensors` files are never read
except the one a language needs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import CONFIG_MAPPING, AutoConfig, AutoFeatureExtractor, Wav2Vec2FeatureExtractor
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING
from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE
from transformers.utils import CONFIG_NAME, FEATURE_EXTRACTOR_NAME, PROCESSOR_NAME

from asrflow.errors import AsrflowError
from asrflow.io import read_json

DESCRIPTION = "base.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ADAPTER_FILE = "adapter.{}.safetensors"  # transformers' WAV2VEC2_ADAPTER_SAFE_FILE
# Encoder families with a CTC head in transformers (AutoModelForCTC) that asrflow trains.
FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-bert")
# Names of the CTC head's tensors; a pre-training checkpoint has none.
HEAD_PREFIX = "lm_head."
# Where a folder keeps its feature extractor's settings: its own file, or (transformers 5's processor.save_pretrained)
# nested in the processor's.
FEATURE_EXTRACTOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Weights in these formats are pickles, whose loading can run code: transformers and torch still read them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# The files transformers' Auto classes read an `auto_map` from: classes to import from the folder's own Python files.
AUTO_MAP_FILES = (CONFIG_NAME, TOKENIZER_CONFIG_FILE, FEATURE_EXTRACTOR_NAME, PROCESSOR_NAME)


class BaseError(AsrflowError):
    """model.base is not a checkpoint asrflow can use; the message names the folder and the fix."""


class ModelFolderError(AsrflowError):
    """A model folder that loading could make run code of its own; the message names the folder and the fix."""


def refuse_own_code(path: Path, what: str) -> None:
    """Refuse the model folder `path` (`what`: where it was given, e.g. model.base, --model) if only its own code
    could load it: an `auto_map`, or a config.json model_type transformers does not know. Checked before transformers
    reads the folder: every call passes trust_remote_code=False, so it would never run that code either, but its
    refusal would be a traceback."""
    settings = {name: read_json(path / name) for name in AUTO_MAP_FILES if (path / name).is_file()}
    mapped = [name for name, values in settings.items() if "auto_map" in values]
    if mapped:
        raise ModelFolderError(
            f"{what}: {path / mapped[0]} has an auto_map (model classes from the folder's own Python files); asrflow "
            f"never runs a model's own code: give a model transformers {transformers.__version__} loads with its "
            f"own classes"
        )
    model_type = settings.get(CONFIG_NAME, {}).get("model_type")
    if CONFIG_NAME in settings and model_type not in CONFIG_MAPPING:
        raise ModelFolderError(
            f"{what}: {path / CONFIG_NAME} has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know (only the folder's own code could load it); asrflow never runs "
            f"a model's own code: give a model of a type transformers knows, or a transformers version that knows it"
        )


def check_model_folder(path: Path, what: str) -> None:
    """Refuse a model folder that loading could make run code of its own (see refuse_own_code), or whose weights
    are not safetensors (pickle runs code as it loads; transformers still falls back to it)."""
    refuse_own_code(path, what)
    if not any(path.glob("*.safetensors")):
        raise ModelFolderError(f"{what}: {path} has no *.safetensors weights{pickle_hint(path)}")


def pickle_hint(path: Path) -> str:
    """Said of a folder without the safetensors weights asked for: the pickled weights it holds instead, if any."""
    found = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not found:
        return ""
    return f" (it holds {found[:3]}: pickled weights, which asrflow never loads; convert them to safetensors)"


def weight_files(path: Path) -> list[Path]:
    """The model's safetensors files: `model.safetensors`, or every shard the index lists (never adapter files)."""
    if (path / INDEX_FILE).is_file():
        shards = sorted(set(read_json(path / INDEX_FILE)["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise BaseError(
                f"model.base: {path / INDEX_FILE} lists {missing}, which are not in the folder; download every shard"
            )
        return [path / s for s in shards]
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE]
    raise BaseError(f"model.base: {path} has no {SINGLE_FILE} and no {INDEX_FILE}{pickle_hint(path)}")


def read_tensors(files: list[Path], wanted: set[str]) -> dict[str, torch.Tensor]:
    """The named tensors, read from whichever file holds each (only those tensors are read)."""
    found: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in wanted & set(handle.keys()):
                found[name] = handle.get_tensor(name)
    return found


def tensor_digests(files: list[Path]) -> dict[str, str]:
    """SHA-256 of every tensor's bytes, by name: computed once per base (pretrain), used by every feature cache."""
    digests = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
                digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())  # its bytes, uncopied
                digests[name] = digest.hexdigest()
    return dict(sorted(digests.items()))


def files_sha256(paths: list[Path]) -> str:
    """One digest of the files that exist among `paths`, by name and content."""
    digest = hashlib.sha256()
    for path in paths:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def describe(path: Path) -> dict:
    """Check that `path` is a checkpoint asrflow can train and describe it (what base.json records)."""
    if not (path / "config.json").is_file():
        raise BaseError(
            f"model.base: {path} has no config.json; give 'demo' or a local Hugging Face checkpoint "
            f"directory (downloaded beforehand: nothing is fetched)"
        )
    raw = read_json(path / "config.json")
    if raw.get("model_type") not in FAMILIES:
        raise BaseError(
            f"model.base: {path} is model_type {raw.get('model_type')!r}; asrflow trains CTC heads on "
            f"{', '.join(FAMILIES)} encoders"
        )
    refuse_own_code(path, "model.base")
    files = weight_files(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)  # a local folder: never fetched
    vocab = read_json(path / "vocab.json") if (path / "vocab.json").is_file() else None
    nested = isinstance(vocab, dict) and bool(vocab) and all(isinstance(v, dict) for v in vocab.values())
    return {
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "adapter_attn_dim": getattr(config, "adapter_attn_dim", None),
        "vocabulary": "nested" if nested else "flat" if vocab else "none",
        "languages": sorted(vocab) if nested else [],
        "weights": {f.name: f.stat().st_size for f in files},
        "config_sha256": files_sha256([path / "config.json"]),
        "preprocessor_sha256": files_sha256([path / name for name in FEATURE_EXTRACTOR_FILES]),
        "tensors": tensor_digests(files),
    }


@dataclasses.dataclass(frozen=True)
class Base:
    """A described base checkpoint: `directory` holds its files, `info` is its base.json."""

    directory: Path
    info: dict

    @property
    def name(self) -> str:
        return str(self.directory)

    @functools.cached_property
    def config(self) -> transformers.PretrainedConfig:
        return AutoConfig.from_pretrained(self.directory, trust_remote_code=False)

    @property
    def model_type(self) -> str:
        return self.info["model_type"]

    @property
    def has_mms_adapters(self) -> bool:
        """MMS attention adapters (`adapter_attn_dim`) exist only in wav2vec2's stable-layer-norm layers."""
        return self.model_type == "wav2vec2" and self.info.get("adapter_attn_dim") is not None

    @property
    def has_conv_encoder(self) -> bool:
        """Raw-waveform encoders start with a convolutional feature encoder; Wav2Vec2-BERT reads log-mel frames."""
        return self.model_type != "wav2vec2-bert"

    def feature_extractor(self) -> transformers.FeatureExtractionMixin:
        """The base's own feature extractor (normalisation, attention-mask use, log-mel settings); a checkpoint
        without preprocessor_config.json gets the wav2vec2 default its layout implies."""
        if any((self.directory / name).is_file() for name in FEATURE_EXTRACTOR_FILES):
            return AutoFeatureExtractor.from_pretrained(self.directory, trust_remote_code=False)
        if not self.has_conv_encoder:
            raise BaseError(
                f"model.base: {self.directory} has no preprocessor_config.json; a {self.model_type} "
                f"model needs its own log-mel feature extractor settings: copy that file from the "
                f"checkpoint's original folder"
            )
        # transformers' convention: layer-normed conv encoders (large/XLS-R/MMS) take a mask, group-normed do not.
        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=getattr(self.config, "feat_extract_norm", "layer") == "layer",
        )

    def weight_files(self) -> list[Path]:
        return weight_files(self.directory)

    def part_key(self, cut: str, uses: Callable[[str], bool]) -> str:
        """A key for features computed by the part of the model whose tensors satisfy `uses(name)` (names without
        the encoder prefix): config, feature extractor, those tensors' digests and the transformers version."""
        prefix = f"{MODEL_FOR_CTC_MAPPING[type(self.config)].base_model_prefix}."
        digest = hashlib.sha256(
            json.dumps(
                {
                    "cut": cut,
                    "transformers": transformers.__version__,
                    "config": self.info["config_sha256"],
                    "preprocessor": self.info["preprocessor_sha256"],
                    "tensors": {
                        name: value for name, value in self.info["tensors"].items() if uses(strip_prefix(name, prefix))
                    },
                },
                sort_keys=True,
            ).encode()
        )
        return digest.hexdigest()[:20]

    def head_vocabulary(self, language: str | None) -> tuple[dict[str, int], dict[str, torch.Tensor]] | None:
        """(token → row, {"weight", "bias"}) of the base's CTC output layer for `language`, or None.

        A flat vocab.json goes with the lm_head in the weights; a nested (MMS) one with the lm_head in
        `adapter.<language>.safetensors`, when the base knows `language`.
        """
        vocab = read_json(self.directory / "vocab.json") if self.info["vocabulary"] != "none" else {}
        if self.info["vocabulary"] == "nested":
            adapter = self.directory / ADAPTER_FILE.format(language)
            if language not in vocab or not adapter.is_file():
                return None
            vocab, files = vocab[language], [adapter]
        else:
            files = self.weight_files()
        head = read_tensors(files, {f"{HEAD_PREFIX}weight", f"{HEAD_PREFIX}bias"})
        if not vocab or len(head) != 2 or head[f"{HEAD_PREFIX}weight"].shape[0] != len(vocab):
            return None
        return vocab, {"weight": head[f"{HEAD_PREFIX}weight"], "bias": head[f"{HEAD_PREFIX}bias"]}

    def special_tokens(self) -> dict[str, str]:
        """The base tokenizer's blank (pad), word delimiter and unknown token, as its tokenizer_config.json says."""
        settings = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (self.directory / name).is_file():
                settings |= {k: v for k, v in read_json(self.directory / name).items() if isinstance(v, str)}
        return {
            "pad": settings.get("pad_token", "<pad>"),
            "word_delimiter": settings.get("word_delimiter_token", "|"),
            "unk": settings.get("unk_token", "<unk>"),
        }


def strip_prefix(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def open_base(base_dir: str | Path) -> Base:
    """The base the pretrain stage described in `base_dir`: the demo base itself, or the local folder it names."""
    base_dir = Path(base_dir)
    if not (base_dir / DESCRIPTION).is_file():
        raise BaseError(f"{base_dir}: no {DESCRIPTION}; run `asrflow pretrain` (it describes the base) first")
    info = read_json(base_dir / DESCRIPTION)
    directory = Path(info["path"]) if info.get("path") else base_dir
    check_model_folder(directory, "model.base")  # a local base may have changed since pretrain described it
    return Base(directory, info)
