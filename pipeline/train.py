"""The in-memory trainer every stage shares (policy search, model search, retraining).

Why it is fast on a CPU and on a GPU alike:
- the whole training set sits on the device as uint8 tensors; a batch is an index slice of a
  per-epoch permutation, so there is no Dataset, no PIL and no DataLoader worker;
- flip, crop and the optional augmentation policy run batched on the uint8 batch;
- channels_last on CPU, with bf16 autocast where the CPU runs bf16 natively (AVX-512 BF16 or
  AMX; fp32 elsewhere, where bf16 would be ~16x slower), AMP on CUDA;
- freed memory stays in the process for the next step (``keep_freed_memory``): a step's large
  tensors would otherwise come from fresh pages, faulted in anew every step.

Randomness is drawn from CPU ``torch.Generator``s seeded from ``seed`` and moved to the
device, so the same seed gives the same batches and augmentations on CPU and CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline import interrupt
from pipeline.augment.batch import BatchTransform
from pipeline.config import TrainConfig
from pipeline.data import ImageSet
from pipeline.device import (
    autocast,
    autocast_dtype,
    cpu_has_fast_bf16,
    keep_freed_memory,
    model_device,
    parameter_device,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "EpochMetrics",
    "EvalResult",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "TrainingCollapsedError",
    "TrainingDivergedError",
    "autocast_dtype",
    "batch_seconds",
    "collapse",
    "cpu_has_fast_bf16",
    "evaluate",
    "normalise",
    "place_model",
    "random_crop",
    "random_flip",
    "step_seconds",
    "steady_frozen_bias",
    "train",
    "whitening_indices",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_WHITENING_IMAGES = 5000  # images used by models that initialise from data (airbench whitening)


def whitening_indices(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """At most ``count`` image indices, drawn at random within each class in proportion to its
    size, for models that initialise from data (airbench's whitening). The first ``count``
    images would not do: a store or sample in class order gives them all one class.

    Its own generator (from ``seed``), so choosing them does not shift the batches' draws.
    """
    labels = labels.cpu()
    n = len(labels)
    if n <= count:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7_919))
    shuffled = labels[order]
    picked = []
    for label in shuffled.unique():
        members = order[shuffled == label]
        picked.append(members[: count * len(members) // n])  # floor: never more than count
    return torch.cat(picked).sort().values


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged: loss {loss} at epoch {epoch}, step {step}; "
            "lower the learning rate or check the inputs"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


class TrainingCollapsedError(TrainingDivergedError):
    """The training accuracy fell back to chance after the network had learned, with a finite
    loss: what the non-finite check cannot see, and the same remedy (a lower lr). A subclass, so
    every caller that handles a divergence (the retrain's half-lr restart, the searches' bad
    candidate) handles a collapse alike."""

    def __init__(self, epoch: int, step: int, loss: float, accuracy: float, best: EpochMetrics,
                 classes: int) -> None:
        chance = 1.0 / classes
        RuntimeError.__init__(
            self,
            f"training collapsed: training accuracy {accuracy:.3f} at epoch {epoch} (loss {loss:.4f}, finite), "
            f"back to chance ({chance:.3f}) from {best.train_accuracy:.3f} at epoch {best.epoch}; "
            "lower the learning rate",
        )
        self.epoch, self.step, self.loss = epoch, step, loss
        self.accuracy, self.best_accuracy, self.chance = accuracy, best.train_accuracy, chance


# A collapse: the network had learned (an epoch at least COLLAPSE_MIN_GAIN over chance), and an
# epoch's training accuracy is back under COLLAPSE_FRACTION of that best gain over chance. Only
# epochs of COLLAPSE_MIN_IMAGES or more count: over fewer the accuracy is too noisy to say.
# Trial 89 of BENCHMARKS' fidelity run: 0.424 after epoch 1, then 0.100 (chance) to the end.
COLLAPSE_MIN_GAIN = 0.1
COLLAPSE_FRACTION = 0.25
COLLAPSE_MIN_IMAGES = 1000


def collapse(history: list[EpochMetrics], classes: int, images: int) -> EpochMetrics | None:
    """The best earlier epoch when ``history``'s last epoch (of ``images`` training images over
    ``classes`` classes) has collapsed to chance (see ``COLLAPSE_MIN_GAIN``), else None."""
    if images < COLLAPSE_MIN_IMAGES or classes < 2 or len(history) < 2:
        return None
    chance = 1.0 / classes
    best = max(history[:-1], key=lambda m: m.train_accuracy)
    gain = best.train_accuracy - chance
    if gain < COLLAPSE_MIN_GAIN:
        return None
    return best if history[-1].train_accuracy - chance < COLLAPSE_FRACTION * gain else None


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raise from a callback to end training early; ``train`` then returns normally.

    Any other exception (e.g. ``optuna.TrialPruned``) propagates to the caller.
    """


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    n: int
    predictions: torch.Tensor | None = None  # [n] predicted classes (CPU), with keep_predictions


@dataclass(frozen=True)
class EpochMetrics:
    """What the callback receives after every epoch (MLflow logging, Optuna pruning)."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float  # mean (label-smoothed) loss over the epoch
    train_accuracy: float
    eval_loss: float | None
    eval_accuracy: float | None
    images_per_s: float  # training throughput of this epoch (evaluation excluded)
    lr: float  # peak-group learning rate at the end of the epoch
    elapsed_s: float  # training seconds so far (evaluation excluded)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochMetrics] = field(default_factory=list)
    eval: EvalResult | None = None  # last evaluation of eval_set
    train_seconds: float = 0.0
    images_per_s: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    # a time limit's re-plans: (after this many epochs, the epochs planned in all from then on)
    planned: list[tuple[int, int]] = field(default_factory=list)

    @property
    def eval_curve(self) -> list[float]:
        """The eval set's accuracy after each epoch that evaluated it (the trials' curves)."""
        return [m.eval_accuracy for m in self.history if m.eval_accuracy is not None]


# ------------------------------------------------------------------ batched kernels


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (draws on the CPU generator)."""
    mask = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(mask.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros"
) -> torch.Tensor:
    """Pad by ``padding`` and crop back to the input size at a random offset per image.

    Two gathers (rows, then columns) instead of a per-image loop: the cost does not grow
    with the padding, unlike a loop over the (2p+1)^2 possible offsets.
    """
    if padding == 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="constant" if mode == "zeros" else mode)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0].view(n, 1, 1, 1) + torch.arange(h, device=images.device).view(1, 1, h, 1)
    padded = padded.gather(2, rows.expand(n, c, h, w + 2 * padding))
    cols = offsets[1].view(n, 1, 1, 1) + torch.arange(w, device=images.device).view(1, 1, 1, w)
    return padded.gather(3, cols.expand(n, c, h, w))


def normalise(images: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float32 standardised with the CIFAR-10 channel statistics."""
    mean = torch.tensor(CIFAR_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    inv_std = 1 / (torch.tensor(CIFAR_STD, device=images.device).view(1, 3, 1, 1) * 255)
    out = (images.float() - mean) * inv_std
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


# ------------------------------------------------------------------ evaluation


def place_model(model: nn.Module, device: torch.device, cfg: TrainConfig) -> nn.Module:
    """Move ``model`` to ``device`` in the memory format ``cfg`` trains it in (channels_last):
    ``evaluate`` keeps the model's format, and a contiguous network runs ~2x slower on a CPU."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _uses_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _tta_logits(model: nn.Module, inputs: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = model(inputs).float()
    return 0.5 * (logits + model(inputs.flip(-1)).float()) if flip else logits


def _shift(inputs: torch.Tensor, pixels: int, channels_last: bool) -> torch.Tensor:
    """Translate a float batch by ``pixels`` along both axes (reflect-padded, same size):
    positive moves the content down-right."""
    p = abs(pixels)
    h, w = inputs.shape[-2:]
    start = 0 if pixels > 0 else 2 * p
    out = F.pad(inputs, (p,) * 4, mode="reflect")[..., start : start + h, start : start + w]
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageSet,
    *,
    augment: BatchTransform | None = None,
    generator: torch.Generator | None = None,
    tta_flip: bool = False,
    tta_translate: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 1000,
    precision: str = "auto",
    keep_predictions: bool = False,
    draws: int = 1,
) -> EvalResult:
    """Cross-entropy and accuracy of ``model`` on ``data`` (eval mode, no label smoothing).

    ``draws`` > 1 (with ``augment``): each image is augmented ``draws`` times independently
    (one forward pass over all draws of a batch) and scored as Fast AutoAugment's search scores
    a policy (``eval_tta`` in its code): correct when any draw is classified correctly, its
    loss the lowest over the draws.

    ``augment`` is applied to each uint8 batch first (the policy search scores a policy by
    the accuracy of a model on augmented held-out data); ``generator`` defaults to seed 0 so
    two calls score the same augmented images. ``tta_flip`` averages the logits of each
    image and its mirror. ``tta_translate`` (airbench's second TTA level) also scores each
    view shifted one pixel up-left and one down-right (reflect padding) and weighs the
    unshifted view 1/2 and each shifted one 1/4: 2x (3x with flip) the evaluation cost.
    """
    keep_freed_memory()
    # Default: where the model already is (train() leaves it on its device), never elsewhere.
    dev = torch.device(device) if device is not None else parameter_device(model)
    model.to(dev)
    channels_last = _uses_channels_last(model)
    dtype = autocast_dtype(precision, dev)
    if augment is not None and generator is None:
        generator = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    kept: list[torch.Tensor] = []
    try:
        for start in range(0, len(data), batch_size):
            images = data.images[start : start + batch_size].to(dev, non_blocking=True)
            labels = data.labels[start : start + batch_size].to(dev, non_blocking=True)
            if augment is not None:
                assert generator is not None
                images = augment(images.repeat(draws, 1, 1, 1) if draws > 1 else images, generator)
            inputs = normalise(images, channels_last)
            with autocast(dev, dtype):
                logits = _tta_logits(model, inputs, tta_flip)
                if tta_translate:
                    logits = 0.5 * logits + 0.25 * (
                        _tta_logits(model, _shift(inputs, -1, channels_last), tta_flip)
                        + _tta_logits(model, _shift(inputs, 1, channels_last), tta_flip)
                    )
            if augment is not None and draws > 1:
                per_draw = logits.float().view(draws, len(labels), -1)
                losses = F.cross_entropy(per_draw.transpose(1, 2), labels.expand(draws, -1), reduction="none")
                total_loss += losses.min(0).values.sum()
                hits = per_draw.argmax(2) == labels
                predicted = torch.where(hits.any(0), labels, per_draw[0].argmax(1))
            else:
                total_loss += F.cross_entropy(logits, labels, reduction="sum")
                predicted = logits.argmax(1)
            correct += (predicted == labels).sum()
            if keep_predictions:
                kept.append(predicted.cpu())
    finally:
        model.train(was_training)
    n = len(data)
    predictions = torch.cat(kept) if keep_predictions and kept else None
    return EvalResult(loss=total_loss.item() / max(n, 1), accuracy=correct.item() / max(n, 1), n=n,
                      predictions=predictions)


# ------------------------------------------------------------------ optimisation pieces


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # normalisation layers: no decay, fast biases


def _has_frozen_weight(module: nn.Module) -> bool:
    """A layer whose weight does not train (the whitening stem's conv, set from data)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and not weight.requires_grad


def _frozen_weight_biases(model: nn.Module) -> list[nn.Parameter]:
    """The trainable biases of layers with a frozen weight (not of normalisation layers, whose
    frozen scale is airbench's BN): what ``TrainConfig.whiten_bias_epochs`` freezes."""
    biases = [getattr(m, "bias", None) for m in model.modules() if _has_frozen_weight(m) and not isinstance(m, _NORMS)]
    return [b for b in biases if isinstance(b, nn.Parameter) and b.requires_grad]


@contextlib.contextmanager
def _whiten_bias_frozen(model: nn.Module) -> Iterator[None]:
    """Freeze ``_frozen_weight_biases(model)`` inside the block and let them train again after it.
    Autograd then computes no gradient below the first trained layer; SGD skips a parameter
    without a gradient (no momentum, no decay: as at lr 0), and lookahead still averages it."""
    frozen = _frozen_weight_biases(model)
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: decaying BN scales/shifts and biases only
    fights the normalisation (the usual 'no decay on BN/bias' rule). ``bias_lr_scale`` speeds
    up what airbench speeds up: the biases of normalisation layers and of a layer whose weight
    is frozen (the whitening stem's conv). Its BN scales are frozen, so those biases are all
    that learns there. A trainable BN scale, and the bias of a conv or linear layer that trains
    its weight (a search-space head's classifier), keep the plain lr: at 64x the peak lr a
    classifier's bias swings the logits and the loss diverges (a 40-epoch retrain at batch 512
    did, from epoch 4). So one recipe trains airbench's networks exactly as before and plain
    ones alike."""
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    fast: list[nn.Parameter] = []
    for module in model.modules():
        frozen_weight = _has_frozen_weight(module)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if p.dim() > 1:
                decay.append(p)
            elif name == "bias" and (isinstance(module, _NORMS) or frozen_weight):
                fast.append(p)
            else:
                plain.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "lr_scale": 1.0})
    if fast:
        groups.append({"params": fast, "weight_decay": 0.0, "lr_scale": cfg.bias_lr_scale})
    return groups


def lr_factor(step: float, total_steps: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based; fractional where a time limit compressed the
    schedule: ``_Run.position``) of ``total_steps``.

    Linear warm-up from 20 % of the peak (not 0: the first steps are not wasted) over
    ``cfg.warmup`` of the steps, then a linear (onecycle) or cosine decay to
    ``cfg.final_lr_fraction``.
    """
    warmup_steps = cfg.warmup * total_steps
    if step < warmup_steps:
        return 0.2 + 0.8 * step / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    end = cfg.final_lr_fraction
    if cfg.schedule == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1 + (end - 1) * progress


class _Lookahead:
    """airbench's lookahead: every 5 steps in the last 70 % of training, pull the weights
    (and BN statistics) towards a slow exponential average and continue from there; the
    averaging strengthens as training ends, which acts as a cheap, free-at-test-time EMA."""

    every = 5
    start_fraction = 0.3

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.average: dict[str, torch.Tensor] | None = None

    def _tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                yield name, value

    @torch.no_grad()
    def step(self, step: int, position: float, total_steps: int) -> None:
        """After SGD step ``step``, which stands at ``position`` of ``total_steps`` in the
        schedule (``_Run.position``: ``step`` itself unless a time limit compressed it)."""
        if position < self.start_fraction * total_steps or step % self.every:
            return
        if self.average is None:
            self.average = {name: value.clone() for name, value in self._tensors()}
            return
        decay = 0.95**self.every * (position / total_steps) ** 3
        for name, value in self._tensors():
            self.average[name].lerp_(value, 1 - decay)
            value.copy_(self.average[name])

    @torch.no_grad()
    def sync(self) -> None:
        """Put the averaged weights in the model (end of epoch)."""
        if self.average is not None:
            for name, value in self._tensors():
                value.copy_(self.average[name])


# ------------------------------------------------------------------ training


@dataclass
class _Run:
    """What one training run holds and advances: the model and its optimiser, the data on the
    device, the generators, the step count and the progress bar.

    ``_Run.start`` builds it; ``_train_step`` and ``_train_epoch`` only advance it. Random draws
    come in a fixed order: the flip bits at the start, then per step the permutation (once per
    epoch), flip and crop on ``batch_rng``, and the augmentation on ``augment_rng`` (its own
    generator, so adding a policy does not change which batches are drawn).
    """

    model: nn.Module
    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    images: torch.Tensor  # uint8 [N, 3, H, W] on the device
    labels: torch.Tensor
    batch_size: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    lookahead: _Lookahead | None
    augment: BatchTransform | None
    batch_rng: torch.Generator
    augment_rng: torch.Generator
    flip_bits: torch.Tensor | None  # alternating flip: the images mirrored on even epochs
    bar: tqdm
    progress: bool
    epochs: int  # the epochs planned: cfg.epochs, fewer once a time limit shortened the schedule
    step: int = 0  # SGD steps taken
    train_seconds: float = 0.0  # training time so far, evaluation excluded
    # the schedule's position (in steps of total_steps) is linear in the step from this anchor on:
    # (0, 0) until a time limit re-plans, then (the step it re-planned at, where that step stood)
    anchor_step: int = 0
    anchor_position: float = 0.0

    @classmethod
    def start(
        cls, model: nn.Module, train_set: ImageSet, cfg: TrainConfig, device: torch.device,
        dtype: torch.dtype | None, *, augment: BatchTransform | None, seed: int, progress: bool,
    ) -> _Run:
        """Move the model and the data to ``device``, draw the flip bits, let the model
        initialise itself from the data, and build the optimiser."""
        keep_freed_memory()  # before the first step's tensors: each step reuses the last one's memory
        place_model(model, device, cfg)
        images = train_set.images.to(device)
        n = len(images)
        batch_size = min(cfg.batch_size, n)
        steps_per_epoch = n // batch_size  # drop the ragged last batch: constant batch statistics
        batch_rng = torch.Generator().manual_seed(seed)
        flip_bits = (torch.rand(n, generator=batch_rng) < 0.5).to(device) if cfg.flip == "alternating" else None
        init_from_data = getattr(model, "init_from_data", None)
        if cfg.data_init and callable(init_from_data):
            chosen = whitening_indices(train_set.labels, _WHITENING_IMAGES, seed).to(device)
            init_from_data(normalise(images[chosen], channels_last=False))
        optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        return cls(
            model=model, cfg=cfg, device=device, dtype=dtype, images=images, labels=train_set.labels.to(device),
            batch_size=batch_size, steps_per_epoch=steps_per_epoch, optimizer=optimizer,
            scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
            lookahead=_Lookahead(model) if cfg.lookahead else None, augment=augment, batch_rng=batch_rng,
            augment_rng=torch.Generator().manual_seed(seed + 1_000_003), flip_bits=flip_bits,
            bar=tqdm(total=steps_per_epoch * cfg.epochs, disable=not progress, unit="step", dynamic_ncols=True,
                     leave=False),
            progress=progress, epochs=cfg.epochs,
        )

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def position(self, step: int) -> float:
        """Where SGD step ``step`` stands in the lr and lookahead schedule, in steps of
        ``total_steps``: the step itself until a re-plan; after one, the rest of the schedule
        is spread evenly over the steps left, so the lr never jumps."""
        if self.anchor_step == 0 and self.anchor_position == 0.0:
            return step
        left = max(self.total_steps - self.anchor_step, 1)
        return self.anchor_position + (step - self.anchor_step) * (self.total_steps - self.anchor_position) / left

    def replan(self, epochs: int) -> None:
        """Train ``epochs`` epochs in all instead of ``self.epochs`` from the next step on."""
        fraction = self.position(self.step) / self.total_steps
        self.epochs = epochs
        self.anchor_step, self.anchor_position = self.step, fraction * self.total_steps
        self.bar.total = self.total_steps
        self.bar.refresh()

    @property
    def check_every(self) -> int:
        """Steps between finite-loss checks: a check waits for the device, cheap only on a CPU."""
        return 1 if self.device.type == "cpu" else 20


@dataclass
class _EpochTally:
    """Running sums of one epoch, kept on the device so a step never waits for it."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_step: torch.Tensor  # the first step with a non-finite loss (-1: none), and that loss:
    first_bad_loss: torch.Tensor  # kept on the device, so the report names it however rarely it is checked
    images: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _EpochTally:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long),
                   torch.full((), -1, device=device, dtype=torch.long), torch.zeros((), device=device))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.first_bad_loss = torch.where(first, loss.float(), self.first_bad_loss)
        self.loss_sum += loss * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.images += len(labels)


@dataclass
class _Batches:
    """What ``_augmented_batch`` reads of a ``_Run``, alone: ``batch_seconds`` times batches
    without a model."""

    cfg: TrainConfig
    images: torch.Tensor
    flip_bits: torch.Tensor | None
    batch_rng: torch.Generator
    augment: BatchTransform | None
    augment_rng: torch.Generator


def _augmented_batch(run: _Run | _Batches, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """The uint8 images at ``idx``, flipped, cropped, then augmented."""
    cfg = run.cfg
    images = run.images[idx]
    if cfg.flip == "random":
        images = random_flip(images, run.batch_rng)
    elif cfg.flip == "alternating":
        # A fixed random half is mirrored on even epochs, the other half on odd ones: every
        # image is seen both ways in any two consecutive epochs (airbench's alternating flip).
        assert run.flip_bits is not None
        mask = run.flip_bits[idx] ^ bool(epoch % 2)
        images = torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)
    images = random_crop(images, cfg.crop_padding, run.batch_rng, cfg.crop_mode)
    return run.augment(images, run.augment_rng) if run.augment is not None else images


def _train_step(run: _Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step at the scheduled learning rate; returns the (detached) loss and logits."""
    cfg = run.cfg
    factor = lr_factor(run.position(run.step), run.total_steps, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.peak_lr * factor * group["lr_scale"]
    with autocast(run.device, run.dtype):
        logits = run.model(normalise(images, cfg.channels_last)).float()
    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    return loss.detach(), logits.detach()


def _train_epoch(run: _Run, epoch: int) -> EpochMetrics:
    """One pass over a fresh permutation of the training set (``epoch`` is 1-based).

    Raises ``TrainingDivergedError`` on a non-finite loss. The metrics carry no evaluation:
    ``train`` adds it, outside the timed part.
    """
    tally = _EpochTally.zeros(run.device)
    start = time.perf_counter()
    order = torch.randperm(len(run.images), generator=run.batch_rng).to(run.device)
    for batch_index in range(run.steps_per_epoch):
        idx = order[batch_index * run.batch_size : (batch_index + 1) * run.batch_size]
        labels = run.labels[idx]
        loss, logits = _train_step(run, _augmented_batch(run, idx, epoch), labels)
        tally.add(loss, logits, labels, run.step)
        last = batch_index == run.steps_per_epoch - 1
        if (run.step % run.check_every == 0 or last) and tally.first_bad_step >= 0:
            raise TrainingDivergedError(epoch, int(tally.first_bad_step), float(tally.first_bad_loss))
        if run.lookahead is not None:
            run.lookahead.step(run.step, run.position(run.step), run.total_steps)
        if run.progress and (run.step % 10 == 0 or last):
            run.bar.set_postfix(
                epoch=epoch,
                loss=f"{tally.loss_sum.item() / tally.images:.3f}",
                acc=f"{tally.correct.item() / tally.images:.3f}",
                img_s=f"{tally.images / (time.perf_counter() - start):.0f}",
            )
        run.bar.update(1)
    if run.lookahead is not None:
        run.lookahead.sync()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - start
    run.train_seconds += seconds
    return EpochMetrics(
        epoch=epoch,
        epochs=run.epochs,
        train_loss=tally.loss_sum.item() / tally.images,
        train_accuracy=tally.correct.item() / tally.images,
        eval_loss=None,
        eval_accuracy=None,
        images_per_s=tally.images / seconds,
        lr=run.optimizer.param_groups[0]["lr"],
        elapsed_s=run.train_seconds,
    )


def _evaluates_after(epoch: int, epochs: int, cfg: TrainConfig) -> bool:
    """Whether ``train`` scores the eval set after ``epoch`` of ``epochs``: every ``eval_every``
    epochs, and always after the last."""
    return epoch == epochs or bool(cfg.eval_every and epoch % cfg.eval_every == 0)


def epochs_within(limit_s: float, epoch: int, seconds: float, epochs: int, pace: float | None = None) -> int:
    """The epochs a run that has trained ``epoch`` epochs in ``seconds`` plans in all, to end
    within ``limit_s`` training seconds at ``pace`` seconds an epoch (default: its mean pace so
    far): at most ``epochs`` (the recipe's; a faster pace later gives back epochs a slow start
    took), and at least one more than it has trained (the lr decay needs steps to end on)."""
    pace = seconds / epoch if pace is None else pace
    fit = epoch + math.floor(max(limit_s - seconds, 0.0) / pace + 1e-9)
    return max(epoch + 1, min(epochs, fit))


def train(
    model: nn.Module,
    train_set: ImageSet,
    cfg: TrainConfig,
    *,
    augment: BatchTransform | None = None,
    eval_set: ImageSet | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    callback: Callable[[EpochMetrics], None] | None = None,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_set`` and return it with its per-epoch history.

    Per step: slice a batch of uint8 images on the device, flip/crop it, apply ``augment``,
    normalise, forward/backward under autocast, SGD step with a per-step lr. After each
    epoch ``callback`` receives an ``EpochMetrics``; it may raise ``StopTraining`` to end
    early or anything else (``optuna.TrialPruned``) to abort. A non-finite loss raises
    ``TrainingDivergedError``; an epoch whose training accuracy fell back to chance after the
    network had learned (``collapse``), its subclass ``TrainingCollapsedError``. Same seed, same
    data and same initial weights give the same trained weights (on CPU, also in a fresh
    process). ``device``: see ``model_device``.

    ``time_limit_s``: training seconds (evaluation excluded) the run should end within. After
    each epoch it plans the epochs that fit at its mean pace so far (``epochs_within``: never
    more than ``cfg.epochs``), and the lr schedule and lookahead run their remaining course
    over the steps left; ``TrainResult.planned`` lists each change. When most epochs train with
    the stem's bias frozen (``steady_frozen_bias``), the planning starts after the first such
    epoch and reads the pace of those epochs only. Without it (the default)
    a run trains ``cfg.epochs`` and is reproducible as above; with it, how many epochs it
    trains depends on the machine's speed.

    ``cfg.whiten_bias_epochs``: after that many epochs the biases of layers with a frozen weight
    (the whitening stem's) stop training, as airbench94's do after 3, and the backward pass ends
    at the first trained layer; they are trainable again when ``train`` returns.
    """
    if len(train_set) == 0:
        raise ValueError("train: the training set is empty")
    dev = model_device(model, device)
    run = _Run.start(model, train_set, cfg, dev, autocast_dtype(cfg.precision, dev), augment=augment, seed=seed,
                     progress=progress)
    result = TrainResult(model=model)
    # Model-internal randomness (dropout) comes from the global RNG: seed it, then restore it.
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model.train()
        frozen_bias = contextlib.ExitStack()  # the whitening stem's bias, once whiten_bias_epochs have passed
        # A time limit plans from the pace of the epochs after the stem's bias froze, when most epochs
        # are such (the step the model search timed): the first epochs are slower and would shorten the run.
        settled = cfg.whiten_bias_epochs if cfg.whiten_bias_epochs is not None and steady_frozen_bias(cfg) else 0
        settled_seconds = 0.0
        classes, epoch_images = len(train_set.classes), run.steps_per_epoch * run.batch_size  # for ``collapse``
        try:
            epoch = 0
            while epoch < run.epochs:
                if epoch == cfg.whiten_bias_epochs:
                    frozen_bias.enter_context(_whiten_bias_frozen(model))
                epoch += 1
                interrupt.check()  # a Ctrl-C that a finalizer dropped during the last epoch
                metrics = _train_epoch(run, epoch)
                if eval_set is not None and _evaluates_after(epoch, run.epochs, cfg):
                    result.eval = evaluate(model, eval_set, tta_flip=cfg.tta, tta_translate=cfg.tta_translate,
                                           device=dev, precision=cfg.precision)
                    model.train()
                    metrics = replace(metrics, eval_loss=result.eval.loss, eval_accuracy=result.eval.accuracy)
                result.history.append(metrics)
                if progress:
                    extra = f" eval_acc={metrics.eval_accuracy:.4f}" if metrics.eval_accuracy is not None else ""
                    run.bar.write(
                        f"epoch {epoch}/{run.epochs} loss={metrics.train_loss:.4f} "
                        f"acc={metrics.train_accuracy:.4f}{extra} img/s={metrics.images_per_s:.0f}"
                    )
                if callback is not None:
                    callback(metrics)  # the collapsed epoch too: its curve shows where it went
                if (best := collapse(result.history, classes, epoch_images)) is not None:
                    raise TrainingCollapsedError(epoch, run.step, metrics.train_loss, metrics.train_accuracy, best,
                                                 classes)
                if epoch == settled:
                    settled_seconds = run.train_seconds
                if time_limit_s is not None and settled < epoch < run.epochs:
                    _keep_time(run, result, epoch, time_limit_s, (run.train_seconds - settled_seconds) / (epoch - settled))
        except StopTraining:
            result.stopped_early = True
        finally:
            frozen_bias.close()  # the model leaves as it came: its stem bias trainable
            run.bar.close()
    result.steps = run.step
    result.train_seconds = run.train_seconds
    done = len(result.history) * run.steps_per_epoch * run.batch_size
    result.images_per_s = done / result.train_seconds if result.train_seconds else 0.0
    model.eval()
    return result


def _keep_time(run: _Run, result: TrainResult, epoch: int, limit_s: float, pace: float) -> None:
    """Re-plan ``run``'s epochs after ``epoch`` to end within ``limit_s`` training seconds at
    ``pace`` seconds an epoch."""
    epochs = epochs_within(limit_s, epoch, run.train_seconds, run.cfg.epochs, pace)
    if epochs == run.epochs:
        return
    tqdm.write(f"time limit {limit_s / 60:.2f} min: {epoch} epochs took {run.train_seconds / 60:.2f} min, so "
               f"{epochs} of {run.cfg.epochs} epochs in all (was {run.epochs}); the lr decay runs its course over them")
    run.replan(epochs)
    result.planned.append((epoch, epochs))


def steady_frozen_bias(cfg: TrainConfig) -> bool:
    """Whether most of ``cfg``'s epochs train with the whitening stem's bias frozen
    (``whiten_bias_epochs``): the step ``step_times`` then times, as the step that predicts the
    run's minutes best (a 24-epoch retrain trains it for 3)."""
    return cfg.whiten_bias_epochs is not None and cfg.whiten_bias_epochs < cfg.epochs / 2


def step_times(
    models: nn.Module | list[nn.Module],
    cfg: TrainConfig,
    *,
    num_classes: int,
    image_size: int = 32,
    device: str | torch.device | None = None,
    steps: int = 3,
    until: Callable[[list[list[float]]], bool] | None = None,
) -> list[list[float]]:
    """Seconds of each of ``steps`` ``train`` SGD steps of each model, on copies (see
    ``step_seconds``). Several models take their steps in turn (model 0's step 1, model 1's
    step 1, ...), so a slower moment of the machine slows them alike: their ratio is what a
    noisy machine measures best. The first steps include allocations and kernel selection.
    ``until``: asked after each round with the times so far; true stops the timing there."""
    if steps < 1:
        raise ValueError(f"step_seconds: steps = {steps} must be >= 1")
    models = [models] if isinstance(models, nn.Module) else models
    dev = model_device(models[0], device)
    n = cfg.batch_size * steps
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
    data = ImageSet(images, torch.randint(0, num_classes, (n,), generator=gen), [str(c) for c in range(num_classes)],
                    [str(i) for i in range(n)])
    times: list[list[float]] = [[] for _ in models]
    # the global RNG (dropout, data-dependent init) is left as it was: timing changes no later draw
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        runs = []
        for model in models:
            probe = copy.deepcopy(model)
            runs.append(_Run.start(probe, data, cfg.model_copy(update={"epochs": 1}), dev,
                                   autocast_dtype(cfg.precision, dev), augment=None, seed=0, progress=False))
            if steady_frozen_bias(cfg):  # time the step most of cfg's epochs take
                for p in _frozen_weight_biases(probe):
                    p.requires_grad_(False)
            probe.train()
        for i in range(steps):
            for run, out in zip(runs, times, strict=True):
                batch = slice(i * run.batch_size, (i + 1) * run.batch_size)
                start = time.perf_counter()
                loss, _ = _train_step(run, run.images[batch], run.labels[batch])
                loss.item()  # waits for the device
                out.append(time.perf_counter() - start)
            if until is not None and until(times):
                break
    for run in runs:
        run.bar.close()
    return times


def step_seconds(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    num_classes: int,
    image_size: int = 32,
    device: str | torch.device | None = None,
    steps: int = 3,
    warmup: int = 1,
    limit: float | None = None,
) -> float:
    """Median seconds of one of ``train``'s SGD steps on ``model`` at ``cfg``'s batch size.

    What a model costs to train on this machine, measured rather than counted: depthwise and
    squeeze-excite blocks run far below a CPU's dense-convolution speed, so MACs understate
    their cost. The step is the trainer's own (channels_last, autocast, optimiser, lr schedule)
    on random images, run on a copy of ``model`` (its weights and BN statistics are left as they
    were), with the whitening stem's bias frozen when most of ``cfg``'s epochs freeze it
    (``steady_frozen_bias``); flip, crop and the policy cost the same for every model and are left out
    (``batch_seconds`` times them). The first ``warmup`` steps (allocations, kernel selection)
    are not timed.

    ``limit`` (seconds): the timing stops once more than half of the ``steps`` timed steps took
    longer, since the median is then over ``limit`` whatever the others would take; the median of
    the steps taken is returned (over ``limit`` as well). A budget that refuses slow models pays
    fewer of their slow steps for the same decision.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"step_seconds: steps = {steps} must be >= 1 and warmup = {warmup} >= 0")

    def over(times: list[list[float]]) -> bool:
        return limit is not None and sum(t > limit for t in times[0][warmup:]) > steps // 2

    times = step_times(model, cfg, num_classes=num_classes, image_size=image_size, device=device,
                       steps=steps + warmup, until=over)[0]
    return statistics.median(times[warmup:])


def batch_seconds(
    train_set: ImageSet,
    cfg: TrainConfig,
    *,
    augment: BatchTransform | None,
    device: str | torch.device | None = None,
    steps: int = 5,
    warmup: int = 1,
) -> float:
    """Median seconds ``train`` spends on a batch before its SGD step: gathering
    ``cfg.batch_size`` of ``train_set``'s images, the flip, the crop and ``augment`` (the
    policy), the work ``step_seconds`` leaves out. It costs the same whatever the model, so
    the same for every candidate: a search measures it once, and a candidate's retrain step is
    its ``step_seconds`` plus this. For a small network on a CPU it is a fifth of the step or
    more (the augmentation runs on the cores that train). The first ``warmup`` batches are not
    timed."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"batch_seconds: steps = {steps} must be >= 1 and warmup = {warmup} >= 0")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    images = train_set.images.to(dev)
    n = len(images)
    batch_size = min(cfg.batch_size, n)
    batch_rng = torch.Generator().manual_seed(0)
    flip_bits = (torch.rand(n, generator=batch_rng) < 0.5).to(dev) if cfg.flip == "alternating" else None
    source = _Batches(cfg, images, flip_bits, batch_rng, augment, torch.Generator().manual_seed(1))
    times = []
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        for i in range(steps + warmup):
            idx = torch.randperm(n, generator=batch_rng)[:batch_size].to(dev)
            start = time.perf_counter()
            batch = _augmented_batch(source, idx, epoch=i + 1)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - start)
            del batch
    return statistics.median(times[warmup:])


def predicted_minutes(step: float, cfg: TrainConfig, images: int) -> float:
    """Training minutes of ``cfg`` on ``images`` images at ``step`` seconds a step (a
    ``step_seconds`` at ``cfg.batch_size``): ``cfg.epochs`` epochs of ceil(images / batch size)
    steps, one step an epoch more than ``train`` takes when it drops a ragged last batch (the
    prediction errs on the long side)."""
    return step * cfg.epochs * math.ceil(images / cfg.batch_size) / 60
