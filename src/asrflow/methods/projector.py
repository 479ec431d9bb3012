"""Projector: a frozen speech encoder, a small trained projector and a frozen causal language model that writes the
transcript (the "tiny-audio" design: HuBERT → 2-layer MLP → SmolLM, only the projector trains).

- Encoder: the fold's base speech model, frozen; its output (the whole encoder: the `frozen` method's cut with
  `train_top_layers: 0`) is cached per utterance in the very same feature cache (asrflow.features), shared with every
  fold and method.
- Projector: every `stack` consecutive encoder frames (50 Hz → 10 Hz for 5) are concatenated, then Linear →
  activation → Linear into the decoder's embedding space.
- Decoder: a causal LM (the `decoder` stage's folder: asrflow.causal_lm), frozen, optionally with peft LoRA. It reads
  [bos, projected audio, prompt] and writes the transcript with its own tokenizer, which must round-trip the corpus'
  transcripts exactly (else the method refuses, naming the characters).
- Training: teacher-forced cross-entropy on the transcript tokens (and eos) after that prefix; warm-up then cosine
  (or linear) decay; early stopping on dev CER like every method (asrflow.loop).
- Decoding: `generate` with beam search, one utterance at a time, at most `max_new_tokens_per_second` × its seconds +
  `max_new_tokens_extra` tokens, scores normalised by length^`length_penalty`.

The artefact (a model folder): `projector.safetensors`, `projector_config.json` (architecture, prompt, generation
settings and the encoder and decoder folders it needs), the encoder's `preprocessor_config.json` and, with LoRA, the
peft adapter in `decoder_lora/`. It loads with transformers and torch alone (docs/methods.md has the snippet) or with
`load` here; `asrflow transcribe --model` takes it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoFeatureExtractor, AutoModel, PreTrainedTokenizerBase
from transformers.activations import ACT2FN

# The module, not its names: asrflow.loop imports the method registry, which imports this module.
from asrflow import loop
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, InputSpec, load_clips, model_inputs
from asrflow.causal_lm import (
    DESCRIPTION as DECODER_DESCRIPTION,
)
from asrflow.causal_lm import (
    check_round_trip,
    decode,
    decoder_directory,
    encode,
    load_decoder,
    load_tokenizer,
)
from asrflow.checkpoint import DESCRIPTION, Base, check_model_folder, open_base
from asrflow.errors import AsrflowError
from asrflow.features import FeatureClip, cache_dir, cached_features, pad_features
from asrflow.io import atomic_path, read_json, write_json
from asrflow.manifest import Utterance, read_manifest
from asrflow.methods.base import require_safetensors
from asrflow.methods.frozen import frozen_part, stable_layer_norm
from asrflow.model import compute_device, model_device

log = logging.getLogger(__name__)

NAME = "projector"
CONFIG_FILE = "projector_config.json"
WEIGHTS_FILE = "projector.safetensors"
LORA_DIR = "decoder_lora"
ARCHITECTURE = "asrflow-projector"


class ProjectorError(AsrflowError):
    """A projector model folder cannot be used as asked; the message names the file and the fix."""


class Projector(torch.nn.Module):
    """`stack` consecutive frames concatenated → Linear → activation → Linear to the decoder's width."""

    def __init__(self, input_size: int, output_size: int, stack: int, hidden_size: int, activation: str) -> None:
        super().__init__()
        self.stack = stack
        self.up = torch.nn.Linear(input_size * stack, hidden_size)
        self.activation = ACT2FN[activation]
        self.down = torch.nn.Linear(hidden_size, output_size)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, channels) features and their mask → (batch, ceil(frames/stack), output) embeddings and
        their mask (a stacked frame is real if any of its frames is; the last one is zero-padded)."""
        batch, frames, channels = features.shape
        padded = math.ceil(frames / self.stack) * self.stack
        features = torch.nn.functional.pad(features, (0, 0, 0, padded - frames))
        mask = torch.nn.functional.pad(mask, (0, padded - frames))
        stacked = features.reshape(batch, padded // self.stack, channels * self.stack)
        return self.down(self.activation(self.up(stacked))), mask.reshape(batch, -1, self.stack).amax(-1)


@dataclasses.dataclass(frozen=True)
class Generation:
    beam_width: int
    length_penalty: float
    max_new_tokens_per_second: float
    max_new_tokens_extra: int

    def max_new_tokens(self, seconds: float) -> int:
        return math.ceil(seconds * self.max_new_tokens_per_second) + self.max_new_tokens_extra


class ProjectorModel(torch.nn.Module):
    """The trained projector and the frozen decoder (with LoRA, if any) that reads its output."""

    def __init__(
        self, projector: Projector, decoder: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str
    ) -> None:
        super().__init__()
        self.projector, self.decoder, self.tokenizer = projector, decoder, tokenizer
        self.register_buffer("prompt_ids", torch.tensor(encode(tokenizer, prompt), dtype=torch.long), persistent=False)
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def _embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.prompt_ids.device)
        return self.decoder.get_input_embeddings()(ids)

    def prefixes(self, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Each utterance's decoder input before its transcript: [bos, projected audio (its own frames), prompt], in
        the dtype of the decoder's embeddings. A causal LM arrives in the dtype it was saved in (transformers loads
        bf16 weights as bf16: SmolLM, Llama, Qwen ship so) while the projector trains in float32; the cast is where
        its gradient passes back to float32, under every train.precision."""
        audio, audio_mask = self.projector(features, mask)
        head, prompt = self._embed(self.bos), self._embed(self.prompt_ids)
        audio = audio.to(head.dtype)
        return [torch.cat([head, row[: int(n)], prompt]) for row, n in zip(audio, audio_mask.sum(-1))]

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict) -> None:
        """Per-layer checkpointing through the decoder (what asrflow.loop asks of a model under
        train.gradient_checkpointing): the frozen decoder's activations are what a long transcript costs, and its
        gradient still reaches the projector through the checkpointed layers (non-reentrant: no frozen-input
        workaround needed, the projected audio requires grad)."""
        decoder = self.decoder.get_base_model() if isinstance(self.decoder, PeftModel) else self.decoder
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs)

    def loss(self, features: torch.Tensor, mask: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """Teacher-forced cross-entropy of each transcript's tokens and eos after its prefix (right-padded batch)."""
        prefixes = self.prefixes(features, mask)
        rows = [torch.cat([p, self._embed(t)]) for p, t in zip(prefixes, targets)]
        longest = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), longest, rows[0].shape[-1], dtype=rows[0].dtype, device=rows[0].device)
        labels = torch.full((len(rows), longest), -100, dtype=torch.long, device=embeds.device)
        attention = torch.zeros((len(rows), longest), dtype=torch.long, device=embeds.device)
        for i, (row, prefix, target) in enumerate(zip(rows, prefixes, targets)):
            embeds[i, : len(row)] = row
            attention[i, : len(row)] = 1
            # labels[t] is what the logits at t-1 predict (transformers shifts): the transcript after the prefix.
            labels[i, len(prefix) : len(row)] = torch.tensor(target, device=embeds.device)
        return self.decoder(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss

    @torch.inference_mode()
    def generate(self, features: torch.Tensor, seconds: float, generation: Generation) -> str:
        """One utterance's (frames, channels) features → its transcript (beam search)."""
        return self.generate_scored(features, seconds, generation)[0]

    @torch.inference_mode()
    def generate_scored(self, features: torch.Tensor, seconds: float, generation: Generation) -> tuple[str, float]:
        """The transcript and its confidence: the geometric mean of its tokens' probabilities (eos included)."""
        prefix = self.prefixes(features[None], torch.ones(1, len(features), dtype=torch.long, device=features.device))
        out = self.decoder.generate(
            inputs_embeds=prefix[0][None],
            attention_mask=torch.ones(1, len(prefix[0]), dtype=torch.long, device=features.device),
            num_beams=generation.beam_width,
            length_penalty=generation.length_penalty,
            max_new_tokens=generation.max_new_tokens(seconds),
            do_sample=False,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            return_dict_in_generate=True,
            output_scores=True,
        )
        beams = getattr(out, "beam_indices", None)
        scores = self.decoder.compute_transition_scores(
            out.sequences, out.scores, beams, normalize_logits=beams is None
        )
        chosen = scores[0][scores[0] > -math.inf] if beams is None else scores[0][beams[0] >= 0]
        confidence = float(chosen.mean().exp()) if len(chosen) else 0.0
        return decode(self.tokenizer, out.sequences[0].tolist()), confidence


def generation_of(cfg: dict) -> Generation:
    return Generation(
        cfg["beam_width"], cfg["length_penalty"], cfg["max_new_tokens_per_second"], cfg["max_new_tokens_extra"]
    )


def with_lora(decoder: torch.nn.Module, lora: dict | None) -> torch.nn.Module:
    """The frozen decoder, wrapped with trainable peft LoRA adapters when `lora` asks for them."""
    decoder.requires_grad_(False)
    if not lora:
        return decoder
    return get_peft_model(
        decoder,
        LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"], lora_dropout=0.0),
    )


def build(base: Base, decoder_path: Path, tokenizer: PreTrainedTokenizerBase, cfg: dict) -> ProjectorModel:
    """A fresh projector between `base`'s encoder output and the decoder's embeddings (seeded by the caller)."""
    decoder = load_decoder(decoder_path)
    projector = Projector(
        base.info["hidden_size"],
        decoder.get_input_embeddings().embedding_dim,
        cfg["stack"],
        cfg["hidden_size"],
        cfg["activation"],
    )
    return ProjectorModel(projector, with_lora(decoder, cfg["decoder_lora"]), tokenizer, cfg["prompt"])


class ProjectorTask:
    """What asrflow.loop trains: the projector (and LoRA) on cached encoder outputs; dev transcripts by beam search."""

    def __init__(self, model: ProjectorModel, base: Base, cfg: dict) -> None:
        self.model, self.base, self.generation = model, base, generation_of(cfg)
        # The `frozen` method's cut with no trained top layer: one cache for both methods and every fold.
        n_layers = base.info["num_hidden_layers"]
        self.directory = cache_dir(base, "top0", frozen_part(0, n_layers, stable_layer_norm(base.config)))
        self.spec = InputSpec.of(base.feature_extractor())
        self._encoder: torch.nn.Module | None = None

    def _compute(self, clip: Clip) -> torch.Tensor:
        if self._encoder is None:  # loaded only when some clip is not cached yet
            self._encoder = AutoModel.from_pretrained(
                self.base.directory, use_safetensors=True, trust_remote_code=False
            ).eval()
            self._encoder.to(model_device(self.model))
        return encoder_features(self._encoder, clip.inputs, self.spec).cpu().clone()

    def prepare(self, clips: list[Clip]) -> list[FeatureClip]:
        """Cached features, with labels in the decoder's tokens: the transcript's, then eos."""
        tokenizer = self.model.tokenizer
        return [
            dataclasses.replace(c, labels=[*encode(tokenizer, c.text), self.model.eos])
            for c in cached_features(clips, self.directory, self._compute)
        ]

    def loss(self, clips: list[FeatureClip]) -> torch.Tensor:
        features, mask = pad_features(clips)
        device = model_device(self.model)
        return self.model.loss(features.to(device), mask.to(device), [c.labels for c in clips])

    def transcribe(self, clips: list[FeatureClip], batch_seconds: float) -> list[str]:
        self.model.eval()
        device = model_device(self.model)
        return [self.model.generate(c.features.to(device), c.n_samples / TARGET_RATE, self.generation) for c in clips]

    def train(self) -> None:
        self.model.train()


def encoder_parameters(base: Base) -> int:
    """The encoder's parameter count, read from its safetensors headers (the encoder is not loaded for this)."""
    total = 0
    for file in base.weight_files():
        with safe_open(str(file), "pt") as handle:
            total += sum(
                math.prod(handle.get_slice(k).get_shape()) for k in handle.keys() if not k.startswith("lm_head.")
            )
    return total


def encoder_features(encoder: torch.nn.Module, inputs: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """One utterance's (frames, channels) encoder output in float32, as the feature cache stores it."""
    with torch.inference_mode():
        batch = torch.from_numpy(inputs)[None].to(next(encoder.parameters()).device)
        return encoder(**{spec.name: batch}).last_hidden_state[0].float()


# --- the artefact ----------------------------------------------------------------------------------------------------


def save(model: ProjectorModel, out_dir: Path, *, encoder: Path, decoder: Path, cfg: dict, feature_extractor) -> None:
    """The model folder (see the module docstring); `encoder`/`decoder` are the folders it needs, as given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.projector.state_dict().items()}, str(out_dir / WEIGHTS_FILE)
    )
    if isinstance(model.decoder, PeftModel):
        model.decoder.save_pretrained(out_dir / LORA_DIR, safe_serialization=True)
    feature_extractor.save_pretrained(out_dir)
    projector = model.projector
    write_json(
        out_dir / CONFIG_FILE,
        {
            "architecture": ARCHITECTURE,
            "encoder": str(encoder),
            "decoder": str(decoder),
            "input_size": projector.up.in_features // projector.stack,
            "output_size": projector.down.out_features,
            "stack": projector.stack,
            "hidden_size": projector.up.out_features,
            "activation": cfg["activation"],
            "prompt": cfg["prompt"],
            "decoder_lora": LORA_DIR if isinstance(model.decoder, PeftModel) else None,
            "generation": dataclasses.asdict(generation_of(cfg)),
        },
    )


def recognise(
    loaded: LoadedProjector, samples: np.ndarray, chunk_seconds: float
) -> list[tuple[str, float, float, float]]:
    """A recording of any length as consecutive chunks of at most `chunk_seconds`: (text, start, end, confidence)
    of each (the decoder writes text, not frame-aligned tokens: a chunk is the finest time it knows)."""
    step = round(chunk_seconds * TARGET_RATE)
    spec = InputSpec.of(loaded.feature_extractor)
    device = model_device(loaded.model)
    chunks = []
    for start in range(0, len(samples), step):
        piece = samples[start : start + step]
        features = encoder_features(loaded.encoder, model_inputs(loaded.feature_extractor, piece), spec)
        text, confidence = loaded.model.generate_scored(
            features.to(device), len(piece) / TARGET_RATE, loaded.generation
        )
        chunks.append((text, start / TARGET_RATE, (start + len(piece)) / TARGET_RATE, confidence))
    return chunks


def is_projector_model(model_dir: Path) -> bool:
    return (Path(model_dir) / CONFIG_FILE).is_file()


@dataclasses.dataclass
class LoadedProjector:
    """A projector model folder with everything it needs: speech in, transcripts out."""

    encoder: torch.nn.Module
    model: ProjectorModel
    feature_extractor: object
    generation: Generation

    def transcribe(self, samples: np.ndarray) -> str:
        """The transcript of one utterance's 16 kHz samples."""
        spec = InputSpec.of(self.feature_extractor)
        features = encoder_features(self.encoder, model_inputs(self.feature_extractor, samples), spec)
        return self.model.generate(features.to(model_device(self.model)), len(samples) / TARGET_RATE, self.generation)


def resolve(recorded: str, given: Path | None, what: str, model_dir: Path) -> Path:
    path = Path(given or recorded)
    if not path.is_dir():
        raise ProjectorError(
            f"{model_dir / CONFIG_FILE}: its {what} folder {path} does not exist here; run from the project folder "
            f"that trained it, or pass the folder (load(..., {what}=PATH))"
        )
    return path


def load(model_dir: Path, encoder: Path | None = None, decoder: Path | None = None) -> LoadedProjector:
    """A projector model folder ready for inference on the compute device, in eval mode."""
    model_dir = Path(model_dir)
    cfg = read_json(model_dir / CONFIG_FILE)
    encoder_dir = resolve(cfg["encoder"], encoder, "encoder", model_dir)
    decoder_dir = resolve(cfg["decoder"], decoder, "decoder", model_dir)
    check_model_folder(encoder_dir, f"{model_dir}: its encoder")
    decoder_model = load_decoder(decoder_dir)
    if cfg["decoder_lora"]:
        require_safetensors(model_dir / cfg["decoder_lora"] / "adapter_model.safetensors")
        decoder_model = PeftModel.from_pretrained(decoder_model, model_dir / cfg["decoder_lora"])
    projector = Projector(cfg["input_size"], cfg["output_size"], cfg["stack"], cfg["hidden_size"], cfg["activation"])
    projector.load_state_dict(load_file(str(require_safetensors(model_dir / WEIGHTS_FILE))))
    model = ProjectorModel(projector, decoder_model, load_tokenizer(decoder_dir), cfg["prompt"])
    device = compute_device()
    return LoadedProjector(
        AutoModel.from_pretrained(encoder_dir, use_safetensors=True, trust_remote_code=False).eval().to(device),
        model.eval().to(device),
        AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=False),
        Generation(**cfg["generation"]),
    )


def transcribe_utterances(model_dir: Path, utterances: list[Utterance]) -> list[str]:
    """Transcripts of `utterances` by a projector model folder (the evaluate stage's hypotheses)."""
    loaded = load(model_dir)
    clips = load_clips(utterances, lambda text: [], loaded.feature_extractor)
    spec = InputSpec.of(loaded.feature_extractor)
    device = model_device(loaded.model)
    return [
        loaded.model.generate(
            encoder_features(loaded.encoder, c.inputs, spec).to(device), c.n_samples / TARGET_RATE, loaded.generation
        )
        for c in clips
    ]


# --- training one fold -----------------------------------------------------------------------------------------------


def train_fold(
    fold_dir: Path,
    speed_manifest: Path,
    base_dir: Path,
    decoder_dir: Path,
    params: dict,
    *,
    out_dir: Path,
    curve_path: Path,
) -> dict:
    """The train stage for this method (asrflow.train hands it over): same loop, same outputs."""
    train_cfg, cfg = params["train"], params["train"][NAME]
    base = open_base(base_dir)
    decoder_path = decoder_directory(decoder_dir)
    tokenizer = load_tokenizer(decoder_path)
    train_utts = loop.training_set(read_manifest(fold_dir / "train.csv"), read_manifest(speed_manifest))
    dev_utts = read_manifest(fold_dir / "dev.csv")
    # Test transcripts are only read here, never trained on: a reference the decoder cannot write would cap its CER.
    every = train_utts + dev_utts + read_manifest(fold_dir / "test.csv")
    check_round_trip(tokenizer, [u.text for u in every], f"{fold_dir} (train.csv, dev.csv, test.csv)")
    loop.seed_everything(train_cfg["seed"])
    model = build(base, decoder_path, tokenizer, cfg).to(compute_device())
    feature_extractor = base.feature_extractor()
    train_clips = load_clips(train_utts, lambda text: [], feature_extractor)
    dev_clips = load_clips(dev_utts, lambda text: [], feature_extractor)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters()) + encoder_parameters(base)
    log.info(
        "%s fold %s: %d training clips, %d dev clips, %d/%d parameters train (encoder included in the total)",
        NAME,
        fold_dir.name,
        len(train_clips),
        len(dev_clips),
        trainable,
        total,
    )
    inputs = [fold_dir / "train.csv", fold_dir / "dev.csv", speed_manifest, base_dir / DESCRIPTION]
    inputs.append(decoder_dir / DECODER_DESCRIPTION)
    checkpoints = loop.fold_checkpoints(out_dir, params, inputs)

    def save_best(trained: ProjectorModel) -> None:
        with atomic_path(checkpoints.best) as tmp:
            save(
                trained, tmp, encoder=base.directory, decoder=decoder_path, cfg=cfg, feature_extractor=feature_extractor
            )

    settings = loop.loop_config(train_cfg, NAME)
    result = loop.fit(
        ProjectorTask(model, base, cfg),
        train_clips,
        dev_clips,
        settings,
        save_best,
        curve_path=curve_path,
        label=f"{NAME}/{fold_dir.name}",
        checkpoints=checkpoints,
    )
    decoder_type = model.decoder.config.model_type
    info = loop.training_info(
        result,
        params,
        NAME,
        fold_dir,
        base,
        settings=settings,
        trainable_params=trainable,
        total_params=total,
        trained=train_clips,
        dropped=[],
        decoder=str(decoder_path),
        decoder_model_type=decoder_type,
        architecture=f"frozen {base.model_type} encoder + MLP projector + frozen {decoder_type} causal LM decoder "
        "(beam search)",
    )
    loop.save_trained(checkpoints, out_dir, info)
    return info


class ProjectorMethod:
    """The registry's entry (asrflow.methods): the train and evaluate stages hand this method's jobs to the functions
    above (`own_training`), since it is no CTC model of the base's family."""

    name = NAME
    own_training = True

    def unavailable(self, base: Base, cfg: dict) -> str:
        return ""  # it reads the whole encoder's output, which every family has
