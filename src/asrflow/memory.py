"""Memory plan: the peak accelerator memory of one training step, and the largest micro-batch that fits a budget.

Whether a 300 M – 1 B parameter fine-tune fits a GPU comes down to a few parts, each reported in bytes:

- weights: every parameter (and buffer) as the model holds it, float32: the master copy the optimiser updates
  (autocast makes bf16/fp16 copies on the fly; those are activations);
- gradients: every trained parameter, float32;
- optimiser state: AdamW two float32 moments per trained parameter; transformers' Adafactor (no first moment) the
  row and column means of each matrix' squared gradient, the full tensor for vectors;
- activations: what the forward pass saves for the backward pass plus the step's largest transient. They depend on
  kernels, the attention implementation, precision and checkpointing, so they are *measured*, never guessed;
- the optimiser step's transient (the update's temporaries), measured too.

How the activations are measured: the method's own model (its own `prepare`, so its own trainable/frozen split) is
built on the base cut to k and k+1 transformer layers (`num_hidden_layers` as a config override; k = 1, or the
number of top layers the frozen method trains) and runs one real step on the device at hand: a worst-case
micro-batch (as many clips of the longest length as `micro_batch_seconds` holds, `asrflow.batching.pack`'s rule)
through asrflow.loop.accumulate_loss (autocast, checkpointing, the method's task), then asrflow.loop.train_step's
clipping and update. Tensor memory comes from the allocator on CUDA (`max_memory_allocated` after
`reset_peak_memory_stats`) and from `LiveTensorBytes`, an exact live-storage tracker, elsewhere. Recorded: the peak
of the forward and backward passes above what was held before (weights, optimiser state, gradients), what the
forward pass left saved when the backward pass starts, and the optimiser step's peak.

How a plan extrapolates (`Probe`): weights, gradients, optimiser state and saved activations grow by the same amount
with every layer, so two layer counts give them exactly at any depth (weights are checked against a meta-device build
of the full config in the tests). The peak does not: in a shallow model it may sit in a fixed part (the positional
convolution, the feature encoder), so the plan takes the deeper probe's peak plus, per further layer, what one layer
saves. Activations grow linearly with the clips (of one length) per micro-batch: a second clip count gives the
slope when a budget asks for the largest micro-batch. `components` then adds the parts the way a step holds them.

Every probed model is small (one or two layers), so a plan takes seconds on a GPU; on this project's CPU about 5 to
15 s for a 1024-wide base in float32 (bf16 there is ten times slower: no native bf16).

The plan stage (asrflow.plan) writes a plan per method; `check_device_fits` makes the same plan the check every train
and release job runs on its own GPU before training, so a job that cannot fit fails in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import string
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AutoModelForCTC, PretrainedConfig, Wav2Vec2Config
from transformers.utils import logging as transformers_logging

from asrflow import methods
from asrflow.audio import TARGET_RATE
from asrflow.batching import Clip, model_inputs, pack
from asrflow.checkpoint import Base, describe
from asrflow.errors import AsrflowError
from asrflow.features import CACHE_ENV
from asrflow.loop import (
    LoopConfig,
    accumulate_loss,
    enable_gradient_checkpointing,
    loop_config,
    make_optimizer,
    model_overrides,
    seed_everything,
    train_step,
)
from asrflow.manifest import Utterance
from asrflow.model import compute_device, make_processor
from asrflow.resume import Optimisation
from asrflow.vocab import PAD, UNK, WORD_DELIMITER

FP32_BYTES = 4
GIB = 1024**3
# CTC targets of a worst-case clip: fast read speech is ~15 characters a second; the loss' memory grows with them.
LABELS_PER_SECOND = 15
PROBE_LANGUAGE = "und"  # no base has an adapter for it: the probe's adapters and head start fresh
PROBE_AUGMENT = {"mask_time_prob": 0.05, "mask_time_length": 5}  # params.yaml's augment section (SpecAugment)
OPTIMIZERS = ("adamw", "adafactor")
PARTS = ("weights", "gradients", "optimizer", "activations", "saved_activations", "optimizer_step")


# --- measuring -------------------------------------------------------------------------------------------------------


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created while this mode is active and still alive (CPU: no allocator
    statistics to read).

    Every op's outputs are seen; an output whose storage is new is added with its `nbytes`, and subtracted once the
    storage is freed (a weak reference to the C++ storage, checked lazily: only when the running total exceeds the
    peak, since frees only lower it). Views and in-place results of tensors that existed before (weights, held
    gradients, optimiser state) are not new storage and are not counted. Buffers a kernel allocates internally and
    frees before returning are not seen (small next to activations).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                key = storage_key(tensor)
                if key not in inputs or key in self.live:  # an alias of an untracked input is not new memory
                    self._add(tensor.untyped_storage(), key)
        return out

    def _add(self, storage: torch.UntypedStorage, key: int) -> None:
        nbytes = storage.nbytes()
        known = self.live.get(key)
        if known is not None and not known[0].expired():
            if known[1] == nbytes:
                return
            self.current -= known[1]  # resized in place (an out= kernel)
        elif known is not None:
            self.current -= known[1]  # freed, and its address reused by this new storage
        self.live[key] = (StorageWeakRef(storage), nbytes)
        self.current += nbytes
        if self.current > self.peak:
            self._sweep()
            self.peak = max(self.peak, self.current)

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]


def storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's C++ storage: shared by every view of it, unique while it lives."""
    return tensor.untyped_storage()._cdata


class Meter:
    """Tensor memory allocated within a `with` block above what was allocated on entry: `now()` and `peak`.

    On CUDA the caching allocator's own statistics (`memory_allocated`, `max_memory_allocated` after
    `reset_peak_memory_stats`); elsewhere a `LiveTensorBytes` tracker.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.tracker = LiveTensorBytes()
        self.start = 0
        self.peak = 0

    def __enter__(self) -> Meter:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.tracker.__enter__()
        return self

    def now(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) - self.start
        self.tracker._sweep()
        return self.tracker.current

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.tracker.__exit__(*exc)
            self.peak = self.tracker.peak


class BackwardMark:
    """A task whose loss records `meter.now()` when its backward pass starts: what the forward pass left saved for
    the backward pass (what each extra layer adds, unlike the peak, which may sit in a fixed part of a shallow
    model)."""

    def __init__(self, task, meter: Meter) -> None:
        self.task, self.meter, self.model = task, meter, task.model
        self.saved: list[int] = []

    def loss(self, clips: list) -> torch.Tensor:
        loss = self.task.loss(clips)
        loss.register_hook(lambda grad: self.saved.append(self.meter.now()))
        return loss


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (tied weights and views counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen[storage_key(tensor)] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


# --- counting --------------------------------------------------------------------------------------------------------


def adafactor_state_elements(shape: torch.Size) -> int:
    """transformers' Adafactor (beta1 None, as asrflow.loop makes it): the row and column means of the squared
    gradient for a tensor of 2+ dimensions (`shape[:-1]` and `shape[:-2] + shape[-1:]`), the full tensor otherwise,
    plus its RMS scalar."""
    if len(shape) >= 2:
        return math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1] + 1
    return math.prod(shape) + 1


def optimizer_state_bytes(params: list[torch.nn.Parameter], optimizer: str) -> int:
    """The optimiser's state once it has stepped: AdamW two float32 moments and a step count per tensor; Adafactor
    factored second moments."""
    if optimizer == "adafactor":
        return FP32_BYTES * sum(adafactor_state_elements(p.shape) for p in params)
    return sum(2 * FP32_BYTES * p.numel() + FP32_BYTES for p in params)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def parameter_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Weights (parameters and buffers), gradients, and the state of either optimiser for `model` as a method
    prepared it (both optimisers: the plan says what switching would save)."""
    params = trainable(model)
    return {
        "weights": tensor_bytes([*model.parameters(), *model.buffers()]),
        "gradients": sum(p.numel() * FP32_BYTES for p in params),
        **{name: optimizer_state_bytes(params, name) for name in OPTIMIZERS},
    }


# --- probing ---------------------------------------------------------------------------------------------------------


def probe_vocab(size: int = 40) -> dict[str, int]:
    """A CTC vocabulary of `size` tokens numbered as asrflow.vocab numbers them (blank, unknown, delimiter first)."""
    tokens = [PAD, UNK, WORD_DELIMITER, *string.ascii_lowercase, *string.digits, *string.punctuation]
    return {token: index for index, token in enumerate(tokens[:size])}


def worst_case_clips(feature_extractor, seconds: float, count: int, vocab_size: int) -> list[Clip]:
    """`count` clips of `seconds` each, made into model inputs by the base's own feature extractor, with
    LABELS_PER_SECOND non-repeating labels (what a micro-batch of the longest clips costs)."""
    samples = np.random.default_rng(0).standard_normal(round(seconds * TARGET_RATE)).astype(np.float32) * 0.1
    inputs = model_inputs(feature_extractor, samples)
    letters = vocab_size - 3  # after blank, unknown and delimiter
    labels = [3 + i % letters for i in range(max(1, round(seconds * LABELS_PER_SECOND)))]
    # One utterance id: feature caches (asrflow.features) compute identical clips once.
    return [Clip("probe", "probe", "", inputs, labels, len(samples)) for _ in range(count)]


def clips_per_micro_batch(loop: LoopConfig, longest_seconds: float) -> int:
    """How many clips of the longest length one micro-batch holds, by the loop's own rule (asrflow.batching.pack:
    padded length × count within micro_batch_seconds, at least one clip)."""
    samples = round(longest_seconds * TARGET_RATE)
    most = math.ceil(loop.micro_seconds * TARGET_RATE / samples) + 1
    return len(pack(list(range(most)), [samples] * most, loop.micro_seconds)[0])


@contextlib.contextmanager
def private_cache() -> Iterator[None]:
    """Feature caches of truncated models must not land in the real cache: they go to a temporary folder."""
    saved = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="asrflow-memory-") as tmp:
        os.environ[CACHE_ENV] = tmp
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = saved


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """A truncated load leaves the base's upper layers unused; transformers' load report would list every one, and
    its progress bars would fill a benchmark's output."""
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def build(
    base: Base, method: str, train_cfg: dict, layers: int, vocab: dict[str, int], *, device: torch.device
) -> torch.nn.Module:
    """The method's own model (its own trainable/frozen split) on the first `layers` transformer layers of `base`,
    as asrflow.loop.prepare_model makes it (seeded; the loop's config overrides), without layer drop: the worst
    case, every layer runs."""
    overrides = model_overrides(PROBE_AUGMENT, vocab) | {"layerdrop": 0.0, "num_hidden_layers": layers}
    seed_everything(0)
    with quiet_transformers():
        return methods.get(method).prepare(base, vocab, overrides, train_cfg[method], PROBE_LANGUAGE).to(device)


def constant_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """What asrflow.loop.train_step steps along with the optimiser; the learning rate does not change memory."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def initialise_state(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    """One step on zero gradients: the optimiser's state exists before the measured step, as from step 2 on."""
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_step(task, clips: list, loop: LoopConfig, device: torch.device) -> dict[str, int]:
    """One micro-batch's forward and backward as a later micro-batch of an accumulated batch runs it (the weights,
    optimiser state and gradients held), and the optimiser step: the peak of each above what was held before it, and
    what the forward pass saved for the backward pass."""
    params = trainable(task.model)
    optimizer = make_optimizer(params, loop)
    scaler = torch.amp.GradScaler(device.type, enabled=loop.precision == "fp16")
    initialise_state(optimizer, params)
    for param in params:
        param.grad = torch.zeros_like(param)
    task.train()
    with Meter(device) as passes:
        marked = BackwardMark(task, passes)
        accumulate_loss(marked, clips, loop, scaler)
    with Meter(device) as step:  # the loop's step on no clips: clipping, the optimiser's update, zero_grad
        train_step(task, [], loop, Optimisation(optimizer, constant_schedule(optimizer), scaler), params)
    return {"passes": passes.peak, "saved": marked.saved[0], "optimizer_step": step.peak}


def probe(
    base: Base,
    method: str,
    train_cfg: dict,
    loop: LoopConfig,
    longest_seconds: float,
    *,
    layer_counts: list[int],
    clip_counts: list[int],
    device: torch.device,
) -> Probe:
    """Build the method's model at each layer count and measure one training step (`measure_step`) with each number
    of clips of `longest_seconds` per micro-batch. Feature caches go to a temporary folder."""
    methods.check_available(base, method, train_cfg)
    vocab = probe_vocab()
    processor = make_processor(vocab, base.feature_extractor())
    samples = round(longest_seconds * TARGET_RATE)
    params, steps = {}, {}
    started = time.perf_counter()
    with private_cache():
        for layers in layer_counts:
            model = build(base, method, train_cfg, layers, vocab, device=device)
            if loop.gradient_checkpointing:
                enable_gradient_checkpointing(model)
            task = methods.get(method).task(model, processor, train_cfg[method], base)
            params[layers] = parameter_bytes(model)
            for clips in clip_counts:
                batch = task.prepare(worst_case_clips(processor.feature_extractor, longest_seconds, clips, len(vocab)))
                one_group = dataclasses.replace(
                    loop, batch_seconds=(clips * samples + 0.5) / TARGET_RATE, micro_batch_seconds=None
                )
                steps[layers, clips] = measure_step(task, batch, one_group, device)
            del model, task
    return Probe(params, steps, round(time.perf_counter() - started, 1))


# --- extrapolating ---------------------------------------------------------------------------------------------------


def line(points: dict[int, float], x: float) -> float:
    """The straight line through one or two measured points, at `x` (one point: that value)."""
    (x0, y0), *rest = sorted(points.items())
    if not rest:
        return y0
    ((x1, y1),) = rest
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the truncated models measured: parameter bytes by layer count, and by (layers, clips per micro-batch)
    `measure_step`'s forward/backward peak, saved activations and optimiser-step peak.

    Transformer layers are identical, so parameter bytes and saved activations are straight lines in the layer
    count, and activations straight lines in the clips (of one length) per micro-batch. The peak is not a straight
    line in the layers: in a shallow model it may sit in a fixed part (the positional convolution, the feature
    encoder), in a deep one it sits at the top of the stack. So the plan takes the deeper probe's peak and adds, for
    every further layer, what one layer saves: exact once the peak is at the top, an upper bound before.
    """

    params: dict[int, dict[str, int]]
    steps: dict[tuple[int, int], dict[str, int]]
    seconds: float

    def parameters(self, layers: int) -> dict[str, int]:
        names = next(iter(self.params.values()))
        return {name: round(line({n: counts[name] for n, counts in self.params.items()}, layers)) for name in names}

    def _at(self, key: str, layers: int, clips: int) -> float:
        """A measured quantity at a probed layer count, for any number of clips."""
        return line({c: step[key] for (n, c), step in self.steps.items() if n == layers}, clips)

    def saved_per_layer(self, clips: int) -> float:
        shallow, deep = min(self.params), max(self.params)
        if shallow == deep:
            return 0.0
        return (self._at("saved", deep, clips) - self._at("saved", shallow, clips)) / (deep - shallow)

    def saved(self, layers: int, clips: int) -> int:
        """What the forward pass leaves saved for the backward pass: the activations without the transient."""
        deep = max(self.params)
        return max(0, round(self._at("saved", deep, clips) + (layers - deep) * self.saved_per_layer(clips)))

    def activations(self, layers: int, clips: int) -> int:
        deep = max(self.params)
        return max(0, round(self._at("passes", deep, clips) + (layers - deep) * self.saved_per_layer(clips)))

    def optimizer_step(self, layers: int) -> int:
        clips = min(c for _, c in self.steps)
        return max(0, round(line({n: self._at("optimizer_step", n, clips) for n in self.params}, layers)))


def components(probe_: Probe, layers: int, clips: int, optimizer: str, accumulating: bool) -> dict[str, int]:
    """Every part of the peak, in bytes, and the peak itself.

    A later micro-batch of an accumulated batch holds all gradients while its activations peak: weights + state +
    gradients + the larger of the activations and the optimiser step's transient. A batch of one micro-batch starts
    with no gradients (zero_grad(set_to_none=True)): they appear while the backward pass frees the activations, layer
    by layer from the top, so its peak is the larger of the activations (at the top) and what the bottom layer's
    backward pass holds: every gradient plus the step of a one-layer model (the stack's input side, one layer's saved
    activations and its transient; an upper bound), or plus the optimiser step's transient.
    """
    counts = probe_.parameters(layers)
    activations = probe_.activations(layers, clips)
    step = probe_.optimizer_step(layers)
    held = counts["weights"] + counts[optimizer]
    if accumulating:
        peak = held + counts["gradients"] + max(activations, step)
    else:
        peak = held + max(activations, counts["gradients"] + max(step, probe_.activations(1, clips)))
    return {
        "weights": counts["weights"],
        "gradients": counts["gradients"],
        "optimizer": counts[optimizer],
        "activations": activations,
        "saved_activations": probe_.saved(layers, clips),
        "optimizer_step": step,
        "peak_bytes": peak,
    }


# --- planning --------------------------------------------------------------------------------------------------------


def micro_batch_options(loop: LoopConfig, longest_seconds: float) -> list[tuple[float, int, bool]]:
    """(micro_batch_seconds, clips of the longest length it holds, whether batches accumulate) for every micro-batch
    size worth setting, smallest first: whole multiples of the longest clip, then the whole batch (no accumulation)."""
    per_batch = clips_per_micro_batch(dataclasses.replace(loop, micro_batch_seconds=None), longest_seconds)
    return [(n * longest_seconds, n, True) for n in range(1, per_batch)] + [(loop.batch_seconds, per_batch, False)]


def largest_micro_batch(
    probe_: Probe, layers: int, loop: LoopConfig, longest_seconds: float, budget_bytes: int
) -> float | None:
    """The largest `micro_batch_seconds` whose worst-case step fits `budget_bytes` (None: not even one clip)."""
    fitting = [
        seconds
        for seconds, clips, accumulating in micro_batch_options(loop, longest_seconds)
        if components(probe_, layers, clips, loop.optimizer, accumulating)["peak_bytes"] <= budget_bytes
    ]
    return max(fitting, default=None)


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def advice(
    parts: dict[str, int],
    counts: dict[str, int],
    loop: LoopConfig,
    longest_seconds: float,
    budget_bytes: int | None,
    *,
    largest: float | None,
) -> str:
    """What to change when the step does not fit: the micro-batch if a smaller one fits, else the settings that
    lower the peak, with what each saves where that is known without probing."""
    if budget_bytes is None:
        return ""
    head = f"peak {gib(parts['peak_bytes'])} of a {gib(budget_bytes)} budget"
    if parts["peak_bytes"] <= budget_bytes:
        return f"fits: {head}"
    if largest is not None and largest >= loop.batch_seconds:
        return (
            f"does not fit: {head}; set train.micro_batch_seconds: null (whole batches: no gradients held "
            f"across micro-batches)"
        )
    if largest is not None:
        clips = clips_per_micro_batch(dataclasses.replace(loop, micro_batch_seconds=largest), longest_seconds)
        return (
            f"does not fit: {head}; set train.micro_batch_seconds: {largest:g} (at most {clips} clips of "
            f"{longest_seconds:g} s per micro-batch; gradients accumulate over the batch as before)"
        )
    if parts["weights"] >= budget_bytes:
        return f"does not fit: {head}, and the weights alone take {gib(parts['weights'])}: a larger device is needed"
    remedies = []
    if loop.precision == "fp32":
        remedies.append(f"train.precision: bf16 (activations are {gib(parts['activations'])})")
    if not loop.gradient_checkpointing:
        remedies.append("train.gradient_checkpointing: true")
    if loop.optimizer == "adamw":
        remedies.append(f"train.optimizer: adafactor (saves {gib(counts['adamw'] - counts['adafactor'])})")
    if parts["gradients"] > parts["weights"] / 10:
        remedies.append(
            f"a method that trains fewer weights: adapter, lora or frozen (gradients and optimiser "
            f"state are {gib(parts['gradients'] + parts['optimizer'])})"
        )
    remedies.append(f"shorter clips: audio.max_seconds below {longest_seconds:g} (or audio.too_long: split)")
    return f"does not fit: {head}, even with one {longest_seconds:g}-s clip per micro-batch; change " + "; or ".join(
        remedies
    )


def report(probe_: Probe, loop: LoopConfig, longest_seconds: float, layers: int, budget_bytes: int | None) -> dict:
    """The plan of one configuration from a probe: components at the configured micro-batch, fit and advice."""
    clips = clips_per_micro_batch(loop, longest_seconds)
    accumulating = loop.micro_seconds < loop.batch_seconds
    parts = components(probe_, layers, clips, loop.optimizer, accumulating)
    largest = None if budget_bytes is None else largest_micro_batch(probe_, layers, loop, longest_seconds, budget_bytes)
    return {
        **parts,
        "budget_bytes": budget_bytes,
        "fits": None if budget_bytes is None else parts["peak_bytes"] <= budget_bytes,
        "largest_micro_batch_seconds": largest,
        "clips_per_micro_batch": clips,
        "accumulating": accumulating,
        "message": advice(parts, probe_.parameters(layers), loop, longest_seconds, budget_bytes, largest=largest),
    }


def probe_layers(method_cfg: dict, layers: int) -> list[int]:
    """Two consecutive layer counts (one if the base is that small); a method training the top N layers needs N."""
    first = max(1, method_cfg.get("train_top_layers", 0))
    return sorted({min(first, layers), min(first + 1, layers)})


def probe_clips(loop: LoopConfig, longest_seconds: float, slope: bool) -> list[int]:
    """The configured micro-batch's clip count, and (for the largest micro-batch) a neighbour to give the slope."""
    clips = clips_per_micro_batch(loop, longest_seconds)
    if not slope or len(micro_batch_options(loop, longest_seconds)) == 1:
        return [clips]
    return [clips, clips + 1] if clips == 1 else [clips - 1, clips]


def plan(
    base: Base,
    method: str,
    train_cfg: dict,
    longest_seconds: float,
    budget_bytes: int | None = None,
    *,
    device: torch.device | None = None,
    layers: int | None = None,
) -> dict:
    """Peak memory of one training step of `method` on `base` with the params' train section `train_cfg`, for clips
    of up to `longest_seconds` (audio.max_seconds, or the corpus' longest); every component in bytes, whether it
    fits `budget_bytes`, the largest micro-batch that does, and what to change when nothing does. `layers`
    extrapolates to another depth than the base's (a hypothetical base saved truncated: `config_base`)."""
    device = device or compute_device()
    loop = loop_config(train_cfg, method)
    layers = layers or base.info["num_hidden_layers"]
    measured = probe(
        base,
        method,
        train_cfg,
        loop,
        longest_seconds,
        layer_counts=probe_layers(train_cfg[method], layers),
        clip_counts=probe_clips(loop, longest_seconds, budget_bytes is not None),
        device=device,
    )
    return {
        "base": base.name,
        "method": method,
        "layers": layers,
        "device": str(device),
        "settings": {
            "precision": loop.precision,
            "gradient_checkpointing": loop.gradient_checkpointing,
            "micro_batch_seconds": loop.micro_batch_seconds,
            "batch_seconds": loop.batch_seconds,
            "optimizer": loop.optimizer,
            "longest_seconds": longest_seconds,
        },
        **report(measured, loop, longest_seconds, layers, budget_bytes),
        "probe": {
            "layers": sorted(measured.params),
            "clips": sorted({c for _, c in measured.steps}),
            "saved_per_layer_bytes": round(measured.saved_per_layer(clips_per_micro_batch(loop, longest_seconds))),
            "seconds": measured.seconds,
        },
    }


# --- the check before training --------------------------------------------------------------------------------------


class PlanError(AsrflowError):
    """The configured training does not fit the GPU; the message says which setting to change."""


def budget_bytes(gpu_memory_gb: float | None, device: torch.device) -> int | None:
    """The memory one training job may use: a share (USABLE) of the configured GPU size, else of the GPU at hand's,
    else none. The rest is for the CUDA context and the caching allocator's rounding and fragmentation, which the
    tensor peak does not count."""
    if gpu_memory_gb:
        return int(gpu_memory_gb * GIB * USABLE)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * USABLE)
    return None


def require_fit(result: dict) -> None:
    """Stop with the plan's own advice when the step does not fit."""
    if result["fits"] is False:
        raise PlanError(f"{result['method']} on {result['base']}: {result['message']}")


def check_device_fits(base: Base, method: str, train_cfg: dict, utterances: list[Utterance]) -> None:
    """On a GPU, stop before training when the configured step does not fit its memory (longest clip: the longest of
    `utterances`). On a CPU nothing is checked: main memory is not what stops these runs, and the probe costs time."""
    device = compute_device()
    if device.type == "cuda":
        longest = max(u.duration or 0.0 for u in utterances)
        require_fit(plan(base, method, train_cfg, longest, budget_bytes(None, device), device=device))


# --- measuring a whole step (what the plan predicts) -----------------------------------------------------------------


def measure_training_step(
    base: Base,
    method: str,
    train_cfg: dict,
    longest_seconds: float,
    *,
    device: torch.device | None = None,
    before_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """The measured peak tensor memory of one steady-state training step of the full model, as asrflow.loop runs it:
    a batch of `batch_seconds` of the longest clips through accumulate_loss, clipping and the optimiser step, the
    optimiser's state already there and no gradients held. What `plan` predicts; slow (the whole model).
    `before_step` runs just before the step (a benchmark resets the process' peak RSS there)."""
    device = device or compute_device()
    loop = loop_config(train_cfg, method)
    vocab = probe_vocab()
    processor = make_processor(vocab, base.feature_extractor())
    with private_cache():
        model = build(base, method, train_cfg, base.info["num_hidden_layers"], vocab, device=device)
        if loop.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        task = methods.get(method).task(model, processor, train_cfg[method], base)
        per_batch = clips_per_micro_batch(dataclasses.replace(loop, micro_batch_seconds=None), longest_seconds)
        clips = task.prepare(worst_case_clips(processor.feature_extractor, longest_seconds, per_batch, len(vocab)))
        params = trainable(model)
        optimizer = make_optimizer(params, loop)
        scaler = torch.amp.GradScaler(device.type, enabled=loop.precision == "fp16")
        initialise_state(optimizer, params)
        state = [t for entry in optimizer.state.values() for t in entry.values() if isinstance(t, torch.Tensor)]
        held = tensor_bytes([*model.parameters(), *model.buffers(), *state])
        task.train()
        if before_step is not None:
            before_step()
        started = time.perf_counter()
        with Meter(device) as meter:
            train_step(task, clips, loop, Optimisation(optimizer, constant_schedule(optimizer), scaler), params)
        seconds = time.perf_counter() - started
    return {"peak_bytes": held + meter.peak, "held_bytes": held, "seconds": round(seconds, 2)}


# --- hypothetical bases ----------------------------------------------------------------------------------------------

# The shapes of facebook/mms-1b-all and facebook/wav2vec2-xls-r-300m; the conv encoder and positional convolution are
# wav2vec2's defaults, as in those checkpoints, and so are the dropouts (attention dropout 0.1: on a CPU, attention
# then runs the math path, which keeps its probabilities for the backward pass).
STABLE = {"do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True}
HYPOTHETICAL = {
    "MMS-1B": Wav2Vec2Config(
        hidden_size=1280,
        num_hidden_layers=48,
        num_attention_heads=16,
        intermediate_size=5120,
        adapter_attn_dim=16,
        **STABLE,
    ),
    "XLS-R-300m": Wav2Vec2Config(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, **STABLE
    ),
}
GPUS_GIB = (16, 24, 40, 80)
# Of a GPU's memory, what tensors may use: the CUDA context and the caching allocator's fragmentation take the rest.
USABLE = 0.9


def config_base(config: PretrainedConfig, directory: Path, layers: int | None = None) -> Base:
    """A base made from a config alone: a random *ForCTC model of `config` (cut to `layers` transformer layers if
    given: the plan extrapolates to the config's own depth) saved to `directory` and described as the pretrain stage
    describes a checkpoint."""
    config = config.__class__.from_dict({**config.to_dict(), **({"num_hidden_layers": layers} if layers else {})})
    torch.manual_seed(0)
    with quiet_transformers():
        AutoModelForCTC.from_config(config, trust_remote_code=False).save_pretrained(directory)
    return Base(Path(directory), describe(Path(directory)))


def meta_parameter_count(config: PretrainedConfig) -> int:
    """All parameters of the full model of `config`, built on the meta device (no memory): the check of the plan's
    extrapolated weights."""
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCTC.from_config(config, trust_remote_code=False).parameters())


def config_table(
    configs: dict[str, PretrainedConfig],
    method_names: list[str],
    train_cfg: dict,
    settings: dict[str, dict],
    longest_seconds: float,
    *,
    gpus_gib: tuple[int, ...] = GPUS_GIB,
    device: torch.device | None = None,
) -> list[dict]:
    """For each config × method × setting (train-section overrides), the plan's components and the largest
    micro-batch on each GPU size (None: nothing fits). A method that cannot train on a config has no rows."""
    device = device or compute_device()
    rows = []
    with tempfile.TemporaryDirectory(prefix="asrflow-memory-") as tmp:
        for name, config in configs.items():
            depth = max(probe_layers(train_cfg[m], config.num_hidden_layers)[-1] for m in method_names)
            base = config_base(config, Path(tmp) / name, depth)
            for method in method_names:
                if not methods.get(method).unavailable(base, train_cfg[method]):
                    rows += method_rows(
                        name,
                        base,
                        method,
                        config.num_hidden_layers,
                        train_cfg,
                        settings=settings,
                        longest_seconds=longest_seconds,
                        gpus_gib=gpus_gib,
                        device=device,
                    )
    return rows


def method_rows(
    name: str,
    base: Base,
    method: str,
    layers: int,
    train_cfg: dict,
    *,
    settings: dict[str, dict],
    longest_seconds: float,
    gpus_gib: tuple[int, ...],
    device: torch.device,
) -> list[dict]:
    """`config_table`'s rows of one method. Settings that differ only in the optimiser share a probe: activations do
    not depend on it (the update's transient is then the first setting's optimiser's: a few tensors' worth)."""
    probes: dict[tuple[str, bool], Probe] = {}
    rows = []
    for label, overrides in settings.items():
        cfg = train_cfg | overrides
        loop = loop_config(cfg, method)
        key = (loop.precision, loop.gradient_checkpointing)
        if key not in probes:
            probes[key] = probe(
                base,
                method,
                cfg,
                loop,
                longest_seconds,
                layer_counts=probe_layers(cfg[method], base.info["num_hidden_layers"]),
                clip_counts=probe_clips(loop, longest_seconds, True),
                device=device,
            )
        plans = {gpu: report(probes[key], loop, longest_seconds, layers, int(gpu * GIB * USABLE)) for gpu in gpus_gib}
        rows.append(
            {
                "base": name,
                "method": method,
                "setting": label,
                **{part: plans[gpus_gib[0]][part] for part in PARTS},
                **{f"{gpu}GB": plan_["largest_micro_batch_seconds"] for gpu, plan_ in plans.items()},
            }
        )
    return rows


def format_config_table(rows: list[dict], gpus_gib: tuple[int, ...] = GPUS_GIB) -> str:
    """`config_table`'s rows as a Markdown table: GiB per component, and per GPU the largest micro-batch in seconds
    ('–': nothing fits)."""
    header = [
        "base",
        "method",
        "setting",
        "weights",
        "grads",
        "optimiser",
        "activations",
        *(f"{g} GB" for g in gpus_gib),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["base"],
            row["method"],
            row["setting"],
            *(f"{row[k] / GIB:.1f}" for k in ("weights", "gradients", "optimizer", "activations")),
            *("–" if row[f"{g}GB"] is None else f"{row[f'{g}GB']:g} s" for g in gpus_gib),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
