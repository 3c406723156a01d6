from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pipeline.data import ImageSet
from pipeline.train import (
    EpochMetrics,
    StopTraining,
    TrainConfig,
    TrainingCollapsedError,
    TrainingDivergedError,
    _Run,
    batch_seconds,
    collapse,
    epochs_within,
    evaluate,
    lr_factor,
    normalise,
    random_crop,
    random_flip,
    step_seconds,
    step_times,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
COLOURS = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]], dtype=torch.float)


def colour_task(n: int, seed: int) -> ImageSet:
    """4 classes told apart by the mean colour of noisy 16x16 images: separable, flip/crop-invariant."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    noise = torch.randn(n, 3, 16, 16, generator=gen) * 40
    images = (COLOURS[labels].view(n, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels, ["r", "g", "b", "y"], [f"{seed}-{i}" for i in range(n)])


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(8, 4),
    )


FAST = TrainConfig(epochs=3, batch_size=32, lr=0.2, warmup=0.1, label_smoothing=0.0)


def fresh(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_net()


def test_trainer_learns_a_separable_task() -> None:
    train_set, held_out = colour_task(256, 0), colour_task(128, 1)
    result = train(fresh(), train_set, FAST, eval_set=held_out, progress=False)
    assert result.eval is not None and result.eval.accuracy > 0.9  # chance is 0.25
    assert result.eval.n == 128
    assert len(result.history) == 3
    assert result.history[-1].train_accuracy > 0.8
    assert result.steps == 3 * (256 // 32)
    assert result.images_per_s > 0 and result.train_seconds > 0


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    # bitwise equal weights are promised on the CPU (cuDNN may choose non-deterministic kernels)
    data = colour_task(128, 0)
    a = train(fresh(), data, FAST, seed=5, progress=False, device="cpu").model.state_dict()
    b = train(fresh(), data, FAST, seed=5, progress=False, device="cpu").model.state_dict()
    c = train(fresh(), data, FAST, seed=6, progress=False, device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_same_seed_same_weights_in_a_fresh_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_train import FAST, colour_task, fresh
        from pipeline.train import train
        model = train(fresh(), colour_task(128, 0), FAST, seed=5, progress=False, device="cpu").model
        torch.save(model.state_dict(), sys.argv[1])
    """)
    out = tmp_path / "weights.pt"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=ROOT)
    theirs = torch.load(out)
    ours = train(fresh(), colour_task(128, 0), FAST, seed=5, progress=False, device="cpu").model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


class _SpoiledAfter(nn.Module):
    """``tiny_net`` whose logits ``spoil`` replaces from the given forward call on."""

    def __init__(self, bad_call: int, spoil: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = tiny_net()
        self.calls = 0
        self.bad_call = bad_call
        self.spoil = spoil

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.net(x)
        return self.spoil(out) if self.calls >= self.bad_call else out


def _NaNAfter(bad_call: int) -> nn.Module:  # noqa: N802 - reads as the module it builds
    """NaN logits from the given forward call on."""
    return _SpoiledAfter(bad_call, lambda out: out * float("nan"))


def _ConstantAfter(bad_call: int) -> nn.Module:  # noqa: N802
    """Learns until the given forward call, then gives every image the same logits: its accuracy
    falls to chance with a finite loss, as a collapsed network's."""
    return _SpoiledAfter(bad_call, lambda out: out * 0 + torch.tensor([1.0, 0, 0, 0]))


def test_nan_loss_raises_naming_epoch_and_step() -> None:
    with pytest.raises(TrainingDivergedError, match="epoch 2, step 5") as err:
        train(_NaNAfter(bad_call=5), colour_task(128, 0), FAST, progress=False)  # 4 steps per epoch
    assert err.value.epoch == 2 and err.value.step == 5


def test_a_rarely_checked_loss_still_names_the_first_bad_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # On an accelerator the loss is checked every 20 steps and at each epoch's end (a check waits
    # for the device); the error still names the step where it went bad, not where it was seen.
    monkeypatch.setattr(_Run, "check_every", property(lambda run: 20))
    with pytest.raises(TrainingDivergedError, match="loss nan at epoch 2, step 6") as err:
        train(_NaNAfter(bad_call=6), colour_task(128, 0), FAST, progress=False, device="cpu")
    assert err.value.epoch == 2 and err.value.step == 6


def test_a_collapse_to_chance_with_a_finite_loss_raises_a_divergence() -> None:
    # 1024 images, 32 steps an epoch: it learns in epoch 1, predicts one class from epoch 2 on
    data = colour_task(1024, 0)
    seen: list[EpochMetrics] = []
    with pytest.raises(TrainingCollapsedError, match=r"accuracy 0\.250 at epoch 2 .*finite.*back to chance "
                       r"\(0\.250\) from 0\.\d+ at epoch 1; lower the learning rate") as err:
        train(_ConstantAfter(bad_call=33), data, FAST, progress=False, device="cpu", callback=seen.append)
    assert isinstance(err.value, TrainingDivergedError)  # every divergence handler handles it
    assert err.value.epoch == 2 and err.value.step == 64 and err.value.best_accuracy > 0.5
    assert [m.epoch for m in seen] == [1, 2]  # the collapsed epoch reached the callback (its curve)
    # the same network without the collapse trains its 3 epochs
    assert len(train(tiny_net(), data, FAST, progress=False, device="cpu").history) == 3


def _epochs(*accuracies: float) -> list[EpochMetrics]:
    return [EpochMetrics(epoch=i + 1, epochs=len(accuracies), train_loss=2.0, train_accuracy=a, eval_loss=None,
                         eval_accuracy=None, images_per_s=1.0, lr=0.1, elapsed_s=1.0) for i, a in enumerate(accuracies)]


def test_collapse_needs_a_learned_network_back_near_chance_over_enough_images() -> None:
    collapsed = collapse(_epochs(0.424, 0.30, 0.100), classes=10, images=49_664)  # trial 89's retrain
    assert collapsed is not None and collapsed.epoch == 1
    assert collapse(_epochs(0.424, 0.30), classes=10, images=49_664) is None  # worse, not back at chance
    assert collapse(_epochs(0.18, 0.10), classes=10, images=49_664) is None  # it never learned
    assert collapse(_epochs(0.424, 0.100), classes=10, images=512) is None  # too few images to say
    assert collapse(_epochs(0.424), classes=10, images=49_664) is None
    assert collapse(_epochs(0.95, 0.55), classes=2, images=4096) is not None  # two classes: 0.45 over chance, then 0.05


def test_callback_receives_metrics_and_can_stop_training() -> None:
    seen: list[EpochMetrics] = []

    def stop_after_two(m: EpochMetrics) -> None:
        seen.append(m)
        if m.epoch == 2:
            raise StopTraining

    result = train(fresh(), colour_task(128, 0), FAST, eval_set=colour_task(64, 1), callback=stop_after_two,
                   progress=False)
    assert result.stopped_early and len(result.history) == 2 == len(seen)
    first = seen[0]
    assert first.epoch == 1 and first.epochs == 3
    assert 0 <= first.train_accuracy <= 1 and first.train_loss > 0
    assert first.eval_accuracy is not None and first.eval_loss is not None
    assert first.images_per_s > 0 and first.lr > 0 and first.elapsed_s > 0


def test_callback_exceptions_propagate() -> None:
    def prune(m: EpochMetrics) -> None:
        raise optuna.TrialPruned(f"epoch {m.epoch}")

    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        train(fresh(), colour_task(64, 0), FAST, callback=prune, progress=False)


def test_eval_every_zero_evaluates_only_at_the_end() -> None:
    cfg = FAST.model_copy(update={"eval_every": 0})
    result = train(fresh(), colour_task(64, 0), cfg, eval_set=colour_task(32, 1), progress=False)
    assert [m.eval_accuracy is not None for m in result.history] == [False, False, True]


def test_augment_receives_uint8_batches_and_its_generator() -> None:
    calls: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append((images.dtype, tuple(images.shape)))
        assert isinstance(generator, torch.Generator)
        return 255 - images

    train(fresh(), colour_task(64, 0), FAST, augment=augment, progress=False)
    assert calls == [(torch.uint8, (32, 3, 16, 16))] * 6


def test_evaluate_with_flip_tta_averages_the_mirrored_logits() -> None:
    data = colour_task(40, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))  # not flip-invariant
    plain = evaluate(model, data, precision="fp32", batch_size=16)
    tta = evaluate(model, data, tta_flip=True, precision="fp32", batch_size=16)
    x = normalise(data.images, channels_last=False)
    with torch.no_grad():
        logits = 0.5 * (model(x) + model(x.flip(-1)))
    expected_acc = (logits.argmax(1) == data.labels).float().mean().item()
    expected_loss = nn.functional.cross_entropy(logits, data.labels).item()
    assert tta.accuracy == pytest.approx(expected_acc)
    assert tta.loss == pytest.approx(expected_loss, rel=1e-5)
    assert tta.loss != pytest.approx(plain.loss, rel=1e-5)
    assert tta.n == plain.n == 40


@pytest.mark.parametrize("flip", [False, True])
def test_evaluate_with_translate_tta_weighs_the_shifted_views_a_quarter_each(flip: bool) -> None:
    data = colour_task(40, 4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))  # not shift-invariant
    got = evaluate(model, data, tta_flip=flip, tta_translate=True, precision="fp32", batch_size=16)
    x = normalise(data.images, channels_last=False)
    # Reference: shift by indexing a reflect-padded copy, written independently of _shift.
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., 2:18, 2:18], padded[..., 0:16, 0:16]
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])  # content moved down-right

    def view(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v) + model(v.flip(-1))) if flip else model(v)

    with torch.no_grad():
        logits = 0.5 * view(x) + 0.25 * (view(up_left) + view(down_right))
    assert got.loss == pytest.approx(nn.functional.cross_entropy(logits, data.labels).item(), rel=1e-5)
    assert got.accuracy == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())
    plain = evaluate(model, data, tta_flip=flip, precision="fp32", batch_size=16)
    assert got.loss != pytest.approx(plain.loss, rel=1e-5)


def test_evaluate_with_augment_is_repeatable() -> None:
    data = colour_task(32, 3)
    model = fresh()

    def noisy(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop(images, 6, generator)

    a = evaluate(model, data, augment=noisy)
    b = evaluate(model, data, augment=noisy)
    c = evaluate(model, data, augment=noisy, generator=torch.Generator().manual_seed(9))
    assert a == b
    assert a.loss != c.loss


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (16, 3, 8, 10), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_random_flip_keeps_dtype_shape_and_is_seeded() -> None:
    x = _batch()
    out = random_flip(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(1)))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 0 < sum(flipped) < len(x)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_random_crop_equals_a_per_image_crop_of_the_padded_image(mode: str) -> None:
    x, pad = _batch(), 3
    out = random_crop(x, pad, torch.Generator().manual_seed(2), mode)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, random_crop(x, pad, torch.Generator().manual_seed(2), mode))
    offsets = torch.randint(0, 2 * pad + 1, (2, len(x)), generator=torch.Generator().manual_seed(2))
    padded = nn.functional.pad(x, (pad,) * 4, mode="constant" if mode == "zeros" else mode)
    for i in range(len(x)):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 10])
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_alternating_flip_and_lookahead_train() -> None:
    cfg = FAST.model_copy(update={"flip": "alternating", "lookahead": True, "crop_padding": 2,
                                  "crop_mode": "reflect", "schedule": "cosine", "epochs": 4})
    result = train(fresh(), colour_task(256, 0), cfg, eval_set=colour_task(64, 1), progress=False)
    assert result.eval is not None and result.eval.accuracy > 0.9


def test_fp32_and_progress_bar_paths(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = FAST.model_copy(update={"precision": "fp32", "channels_last": False, "epochs": 1})
    result = train(fresh(), colour_task(64, 0), cfg, progress=True)
    assert result.steps == 2
    assert "epoch 1/1" in capsys.readouterr().out


def test_lr_schedules_warm_up_then_decay() -> None:
    for schedule in ("onecycle", "cosine"):
        cfg = TrainConfig(schedule=schedule, warmup=0.2, final_lr_fraction=0.1)
        factors = [lr_factor(s, 100, cfg) for s in range(100)]
        assert factors[0] == pytest.approx(0.2)
        assert max(factors) == pytest.approx(1.0)
        assert factors.index(max(factors)) == 20
        assert factors[-1] == pytest.approx(0.1, abs=0.02)
        assert all(a >= b for a, b in zip(factors[20:], factors[21:], strict=False))


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [("lr", -1.0, "greater than 0"), ("schedule", "step", "'onecycle' or 'cosine'"),
     ("epochs", 0, "greater than or equal to 1"), ("momentum", 1.0, "less than 1"),
     ("batch_sise", 8, "Extra inputs are not permitted")],
)
def test_train_config_rejects_bad_values_naming_key_value_and_rule(field: str, value: object, allowed: str) -> None:
    with pytest.raises(ValidationError) as err:
        TrainConfig.model_validate({field: value})
    text = str(err.value)
    assert field in text and repr(value).strip("'") in text and allowed in text


def test_empty_training_set_is_an_error() -> None:
    empty = colour_task(4, 0).subset(torch.arange(0))
    with pytest.raises(ValueError, match="empty"):
        train(fresh(), empty, FAST, progress=False)


def test_step_seconds_times_the_trainers_step_on_a_copy() -> None:
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    # on the CPU: on a GPU both nets are bound by kernel launches and take about the same time
    seconds = step_seconds(model, FAST, num_classes=4, image_size=16, steps=2, device="cpu")
    assert seconds > 0
    assert torch.equal(rng, torch.get_rng_state())  # the dropout draws of the copy's steps leave no trace
    after = model.state_dict()  # weights and BN statistics untouched: the copy took the steps
    assert all(torch.equal(before[k], after[k]) for k in before)
    wide = nn.Sequential(nn.Conv2d(3, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 4))
    with pytest.raises(ValueError, match="steps = 0"):
        step_seconds(model, FAST, num_classes=4, steps=0)
    # Several models take their steps in turn: one list of times per model, in the order given. A
    # network with ~2,000x the MACs takes measurably longer per step: compared in turn and by their
    # fastest steps, so a busy moment of a shared machine (it once made a tiny net's lone step
    # 0.14 s when timed apart from the wide one) slows both alike.
    small, big = step_times([model, wide], FAST, num_classes=4, image_size=16, steps=3, device="cpu")
    assert len(small) == len(big) == 3 and min(big) > 5 * min(small)


def test_batch_seconds_times_the_batches_flip_crop_and_policy_at_the_batch_size() -> None:
    # What step_seconds leaves out: the retrain's batch before its SGD step. A policy that takes
    # 20 ms a batch is in the median; the batches are the recipe's size, flipped (alternating)
    # and cropped as train does; the global RNG is left as it was.
    seen: list[tuple[int, ...]] = []

    def slow_policy(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        seen.append(tuple(images.shape))
        time.sleep(0.02)
        return images

    data = colour_task(100, seed=0)
    cfg = FAST.model_copy(update={"flip": "alternating", "crop_padding": 2})
    rng = torch.get_rng_state()
    plain = batch_seconds(data, cfg, augment=None, device="cpu", steps=3)
    slow = batch_seconds(data, cfg, augment=slow_policy, device="cpu", steps=3)
    assert torch.equal(rng, torch.get_rng_state())
    assert 0 < plain < 0.02 <= slow
    assert seen == [(32, 3, 16, 16)] * 4  # one untimed batch, then 3 timed, at the recipe's batch size
    assert batch_seconds(data.subset(torch.arange(10)), cfg, augment=None, steps=1) > 0  # a set under a batch
    with pytest.raises(ValueError, match="steps = 0"):
        batch_seconds(data, cfg, augment=None, steps=0)


@pytest.mark.parametrize(("steps", "limit", "taken"), [(3, 0.0, 1 + 2), (3, 1e9, 1 + 3), (4, 0.0, 1 + 3), (1, 0.0, 1 + 1)])
def test_step_seconds_stops_timing_once_the_median_is_over_the_limit(
    monkeypatch: pytest.MonkeyPatch, steps: int, limit: float, taken: int,
) -> None:
    # more than half of the timed steps over the limit: the median is over it whatever the rest
    import pipeline.train as train_module

    calls: list[int] = []
    real_step = train_module._train_step

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_step", counted)
    seconds = step_seconds(fresh(), FAST, num_classes=4, image_size=16, steps=steps, device="cpu", limit=limit)
    assert len(calls) == taken  # the untimed first step, then the timed ones
    assert (seconds > limit) == (limit == 0.0)


def test_a_model_initialised_from_data_sees_every_class_of_a_class_ordered_set(monkeypatch) -> None:
    # The store keeps images in class order; whitening from its first images saw one class.
    import pipeline.train as train_module

    monkeypatch.setattr(train_module, "_WHITENING_IMAGES", 40)
    data = colour_task(400, seed=0)
    order = torch.argsort(data.labels, stable=True)
    ordered = ImageSet(data.images[order], data.labels[order], data.classes, [data.ids[i] for i in order.tolist()])
    seen: list[torch.Tensor] = []

    class Recording(nn.Sequential):
        def init_from_data(self, images: torch.Tensor) -> None:
            seen.append(images.clone())

    model = Recording(*tiny_net())
    train(model, ordered, TrainConfig(epochs=1, batch_size=100, lr=0.1), device="cpu", seed=0)
    (images,) = seen
    assert len(images) == 40
    every = normalise(ordered.images, channels_last=False).flatten(1)
    found = torch.cdist(images.flatten(1), every).argmin(dim=1)  # which image each one is
    assert torch.bincount(ordered.labels[found], minlength=4).tolist() == [10, 10, 10, 10]


def test_the_trainer_scales_lr_from_lr_batch_size_to_batch_size() -> None:
    # The one lr rule (TrainConfig.peak_lr): lr is stated at lr_batch_size images per step.
    flat = dict(epochs=1, warmup=0.0, final_lr_fraction=1.0, label_smoothing=0.0)  # the lr stays at its peak
    stated = TrainConfig(batch_size=16, lr=0.1, lr_batch_size=8, **flat)
    assert stated.peak_lr == pytest.approx(0.2)
    assert TrainConfig(batch_size=16, lr=0.1, **flat).peak_lr == 0.1  # no reference batch: lr as given
    result = train(fresh(), colour_task(64, 0), stated, progress=False)
    assert result.history[-1].lr == pytest.approx(0.2)


def test_the_bias_lr_scale_speeds_up_norm_and_frozen_layer_biases_only() -> None:
    # airbench's 64x is for BN biases (its BN scales are frozen) and the whitening conv's bias
    # (its weight is frozen); a classifier's bias at 64x the peak lr made a retrain diverge
    from pipeline.config import SPACE, TrainConfig
    from pipeline.models import SPACE_POINTS, build_model
    from pipeline.train import _param_groups

    cfg = TrainConfig(bias_lr_scale=64.0, weight_decay=1e-3)
    frozen = nn.Conv2d(3, 3, 1, bias=True)
    frozen.weight.requires_grad_(False)
    model = nn.Sequential(frozen, nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Linear(4, 2))
    groups = _param_groups(model, cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    conv, bn, linear = model[1], model[2], model[3]
    assert by_param[id(conv.weight)]["lr_scale"] == 1.0 and by_param[id(conv.weight)]["weight_decay"] == 1e-3
    assert id(frozen.weight) not in by_param  # frozen: not optimised at all
    for fast in (frozen.bias, bn.bias):
        assert by_param[id(fast)]["lr_scale"] == 64.0 and by_param[id(fast)]["weight_decay"] == 0.0
    for plain in (bn.weight, conv.bias, linear.bias):
        assert by_param[id(plain)]["lr_scale"] == 1.0 and by_param[id(plain)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    # airbench's networks have no trainable 1-D parameter but BN and whitening biases: all at 64x, as before
    for name in ("airbench_small", "airbench94"):
        airbench = build_model(SPACE_POINTS[name])
        trainable_1d = {id(p) for p in airbench.parameters() if p.requires_grad and p.dim() == 1}
        fast_group = next(g for g in _param_groups(airbench, cfg) if g["lr_scale"] == 64.0)
        assert trainable_1d and trainable_1d == {id(p) for p in fast_group["params"]}
    assert SPACE.values["bias_lr_scale"] == 64.0  # the candidates' recipe is airbench's


def test_epochs_within_plans_the_epochs_that_fit_at_the_pace_so_far() -> None:
    # 2 epochs in 40 s: 20 s each, 60 s left of 100: 3 more
    assert epochs_within(100.0, 2, 40.0, 10) == 5
    assert epochs_within(1000.0, 2, 40.0, 10) == 10  # never more than the recipe's
    assert epochs_within(30.0, 2, 40.0, 10) == 3  # past the limit: one more, for the lr decay to end on
    assert epochs_within(60.0, 2, 40.0, 10) == 3  # exactly one more fits


class FakeClock:
    """time.perf_counter for the trainer: each epoch takes the next of ``seconds`` (the trainer
    reads the clock at an epoch's start and end only when progress is off)."""

    def __init__(self, seconds: list[float]) -> None:
        self.seconds, self.now, self.calls = seconds, 0.0, 0

    def __call__(self) -> float:
        if self.calls % 2:  # an epoch's end
            self.now += self.seconds[min(self.calls // 2, len(self.seconds) - 1)]
        self.calls += 1
        return self.now


def test_a_time_limit_shortens_the_run_and_the_lr_decay_still_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = FAST.model_copy(update={"epochs": 10, "eval_every": 0})
    data, held = colour_task(64, 0), colour_task(32, 1)
    monkeypatch.setattr("pipeline.train.time.perf_counter", FakeClock([10.0]))
    result = train(fresh(), data, cfg, eval_set=held, progress=False, time_limit_s=45.0)
    # after epoch 1 (10 s): 3 more fit in the 35 s left; the plan holds after that
    assert result.planned == [(1, 4)] and len(result.history) == 4
    assert [m.epochs for m in result.history] == [10, 4, 4, 4]
    assert [m.eval_accuracy is not None for m in result.history] == [False, False, False, True]
    assert "time limit 0.75 min: 1 epochs took 0.17 min, so 4 of 10 epochs in all" in capsys.readouterr().out
    # the lr decayed to where a plain 4-epoch run ends, far below where 4 of 10 epochs stand
    monkeypatch.undo()
    plain4 = train(fresh(), data, cfg.model_copy(update={"epochs": 4}), progress=False)
    plain10 = train(fresh(), data, cfg, progress=False)
    # (its last step stands between a plain 4-epoch run's last two: 8 steps, the last at 6.8)
    last = plain4.history[-1].lr
    assert last <= result.history[-1].lr <= last * lr_factor(6, 8, cfg) / lr_factor(7, 8, cfg)
    assert result.history[-1].lr < 0.3 * plain10.history[3].lr
    # without a limit nothing changes: the same weights as before the limit existed
    again = train(fresh(), data, cfg, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 plain10.model.state_dict().values(), strict=True))
    assert plain10.planned == []


def test_a_faster_pace_later_gives_back_the_epochs_a_slow_start_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.train.time.perf_counter", FakeClock([30.0, 5.0]))
    result = train(fresh(), colour_task(64, 0), FAST.model_copy(update={"epochs": 6}), progress=False,
                   time_limit_s=100.0)
    # 30 s: 3 epochs in all; 35 s for 2: 5; 40 s for 3: all 6 (the recipe's) fit
    assert result.planned == [(1, 3), (2, 5), (3, 6)] and len(result.history) == 6


def test_a_replan_moves_the_schedule_on_without_a_jump() -> None:
    cfg = FAST.model_copy(update={"epochs": 10})
    run = _Run.start(fresh(), colour_task(64, 0), cfg, torch.device("cpu"), None, augment=None, seed=0, progress=False)
    assert run.total_steps == 20 and run.position(7) == 7
    run.step = 6
    before = lr_factor(run.position(6), run.total_steps, cfg)
    run.replan(4)  # 8 steps in all: steps 6 and 7 take the schedule from 6/20 to its end
    assert run.total_steps == 8
    assert lr_factor(run.position(6), run.total_steps, cfg) == pytest.approx(before)
    assert run.position(6) / run.total_steps == pytest.approx(6 / 20) and run.position(8) == pytest.approx(8)
    factors = [lr_factor(run.position(s), run.total_steps, cfg) for s in range(6, 9)]
    assert factors == sorted(factors, reverse=True)


def whitened_net() -> nn.Module:
    """tiny_net behind a frozen-weight 'stem' with a bias, as the whitening stem is."""
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 3, 1, bias=True)
    stem.weight.requires_grad_(False)
    return nn.Sequential(stem, *tiny_net())


@pytest.mark.parametrize("epochs_trained", [None, 0, 1])
def test_the_stem_bias_trains_for_whiten_bias_epochs_then_stays(epochs_trained: int | None) -> None:
    model = whitened_net()
    stem, conv = model[0], model[1]
    start = stem.bias.detach().clone()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    cfg = FAST.model_copy(update={"whiten_bias_epochs": epochs_trained, "lookahead": False})
    train(model, colour_task(128, 0), cfg, seed=0,
          callback=lambda m: seen.append((stem.bias.detach().clone(), conv.weight.detach().clone())))
    biases = [start] + [bias for bias, _ in seen]
    moved = [not torch.equal(before, after) for before, after in zip(biases, biases[1:], strict=False)]
    if epochs_trained is None:
        assert moved == [True, True, True]
    else:
        assert moved == [e < epochs_trained for e in range(3)]  # trains in the first epochs only
    assert all(not torch.equal(a, b) for (_, a), (_, b) in zip(seen, seen[1:], strict=False))  # the rest trains on
    assert stem.bias.requires_grad  # trainable again once train returns


def test_the_step_times_the_frozen_stem_bias_when_most_epochs_freeze_it() -> None:
    from pipeline.train import steady_frozen_bias

    assert steady_frozen_bias(TrainConfig(epochs=24, whiten_bias_epochs=3))
    assert not steady_frozen_bias(TrainConfig(epochs=4, whiten_bias_epochs=3))  # the candidates' 4 epochs
    assert not steady_frozen_bias(TrainConfig(epochs=24, whiten_bias_epochs=None))
    model = whitened_net()
    step_times(model, TrainConfig(epochs=24, batch_size=8, whiten_bias_epochs=3), num_classes=4, image_size=16,
               device="cpu", steps=1)
    assert model[0].bias.requires_grad  # the probe is a copy


@pytest.mark.parametrize(("seconds", "planned"), [([20.0, 20.0, 5.0], []), ([20.0, 20.0, 20.0], [(3, 5)])])
def test_a_time_limit_plans_from_the_pace_after_the_stem_bias_froze(
    monkeypatch: pytest.MonkeyPatch, seconds: list[float], planned: list[tuple[int, int]],
) -> None:
    # Epochs 1-2 train the stem's bias (slower steps); the model search timed the later, frozen step.
    # From the mean pace after epoch 1 (20 s) only 5 of 10 epochs would fit 100 s; the plan waits
    # for epoch 3 and reads its pace alone.
    monkeypatch.setattr("pipeline.train.time.perf_counter", FakeClock(seconds))
    cfg = FAST.model_copy(update={"epochs": 10, "whiten_bias_epochs": 2})
    result = train(fresh(), colour_task(64, 0), cfg, progress=False, time_limit_s=100.0)
    assert result.planned == planned and len(result.history) == (planned[-1][1] if planned else 10)
