"""The causal language model the `projector` method writes transcripts with: the `decoder` stage's folder, its
tokenizer, and the check that this tokenizer can write the corpus.

The `decoder` stage's folder (data/models/decoder) holds `decoder.json` (what was built or validated) and, for
`model.decoder: demo`, the tiny model itself; for a local directory it names that directory (`path`), as the
pretrain stage does for a local speech base: no copy of a multi-GB model is made. Everything loads with
AutoModelForCausalLM / AutoTokenizer from safetensors, never with remote code (asrflow.checkpoint.check_model_folder).

The demo's tokenizer is character-level (tokenizers' WordLevel model over single characters, wrapped in
PreTrainedTokenizerFast so that AutoTokenizer loads it): its inventory is the source corpus' characters plus the
Latin, IPA, spacing-modifier, combining-diacritic and Greek blocks, so that it can write a target corpus whose
characters the source never used without ever reading the target corpus (whose sentences are test data).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from asrflow.checkpoint import check_model_folder, files_sha256
from asrflow.errors import AsrflowError
from asrflow.io import read_json

DESCRIPTION = "decoder.json"
DECODER_KEY = "model.decoder"  # where the folder is given, as messages name it
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# Unicode blocks every demo tokenizer covers: printable ASCII, Latin-1 to Latin Extended-B, IPA extensions, spacing
# modifier letters (ː ˈ ʲ), combining diacritics (◌̃ ◌͡◌), Greek (θ β χ), phonetic extensions, general punctuation (‿).
CHARACTER_BLOCKS = (
    (0x20, 0x7E),
    (0xA0, 0x24F),
    (0x250, 0x2FF),
    (0x300, 0x36F),
    (0x370, 0x3FF),
    (0x1D00, 0x1DBF),
    (0x2000, 0x206F),
)


class DecoderError(AsrflowError):
    """The decoder cannot be used as configured; the message names the folder or text and the fix."""


def block_characters() -> list[str]:
    return [chr(code) for start, end in CHARACTER_BLOCKS for code in range(start, end + 1) if chr(code).isprintable()]


def char_tokenizer(characters: Iterable[str]) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over `characters` plus the CHARACTER_BLOCKS, specials first: every character is
    one token, decoding joins them with nothing in between, so a covered text round-trips exactly."""
    inventory = sorted(set(characters) | set(block_characters()))
    vocab = {token: i for i, token in enumerate([PAD, UNK, BOS, EOS, *inventory])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
    )


def decoder_directory(stage_dir: str | Path) -> Path:
    """Where the decoder's files are: the folder `decoder.json` names, or the stage's folder itself (demo)."""
    stage_dir = Path(stage_dir)
    description = stage_dir / DESCRIPTION
    if not description.is_file():
        raise DecoderError(f"{description}: not found; it is written by `asrflow decoder` (run the decoder stage)")
    recorded = read_json(description)
    if recorded.get("configured") is False:
        raise DecoderError(
            f"{description}: no decoder was configured (model.decoder: null); the projector method needs one: set "
            f"model.decoder to `demo` or a local causal LM directory and re-run the decoder stage"
        )
    return Path(recorded["path"]) if recorded.get("path") else stage_dir


def describe(path: Path) -> dict:
    """Check that `path` is a causal LM asrflow can use and describe it (what decoder.json records)."""
    if not (path / "config.json").is_file():
        raise DecoderError(
            f"model.decoder: {path} has no config.json; give 'demo' or a local directory holding a Hugging Face "
            f"causal language model (AutoModelForCausalLM, safetensors; downloaded beforehand: nothing is fetched)"
        )
    check_model_folder(path, DECODER_KEY)
    weights = sorted(path.glob("*.safetensors"))
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise DecoderError(
            f"model.decoder: {path} is model_type {config.model_type!r}, which AutoModelForCausalLM does not load; "
            f"give a causal (decoder-only) language model"
        )
    tokenizer = load_tokenizer(path)
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "vocab_size": len(tokenizer),
        "weights_sha256": files_sha256(weights),
        "config_sha256": files_sha256([path / "config.json"]),
        "tokenizer_sha256": files_sha256(sorted(path.glob("tokenizer*")) + sorted(path.glob("*.model"))),
    }


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    check_model_folder(path, DECODER_KEY)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise DecoderError(f"{path}: its tokenizer has no eos token; the decoder could never end a transcript")
    return tokenizer


def load_decoder(path: Path) -> PreTrainedModel:
    check_model_folder(path, DECODER_KEY)
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """`text`'s token ids without any special token (the method adds bos/eos where they belong)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def round_trips(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    return decode(tokenizer, encode(tokenizer, text)) == text


def check_round_trip(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], where: str) -> None:
    """Refuse a tokenizer that cannot write every one of `texts` back exactly (an unknown IPA symbol, a character
    normalised away), naming the offending characters and the first transcript they spoil."""
    texts = list(texts)
    bad_texts = [t for t in texts if not round_trips(tokenizer, t)]
    if not bad_texts:
        return
    characters = sorted({c for t in bad_texts for c in t if not round_trips(tokenizer, c)})
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in characters) or "none alone (their sequence does not)"
    raise DecoderError(
        f"{where}: the decoder's tokenizer cannot write {len(bad_texts)} of {len(texts)} transcripts back "
        f"exactly; offending characters: {shown}; first one: {bad_texts[0]!r} → "
        f"{decode(tokenizer, encode(tokenizer, bad_texts[0]))!r}. Use a decoder whose tokenizer covers them "
        f"(model.decoder: demo builds a character-level one), or map them in text.remove / the corpus"
    )
