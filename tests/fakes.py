"""Stand-ins for the trainer shared by the search and the stage tests."""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.train import EpochMetrics, TrainingCollapsedError, TrainingDivergedError


def diverging(real: Callable[..., Any], on_call: int, lrs: list[float],
              error: TrainingDivergedError | None = None) -> Callable[..., Any]:
    """``real`` (``pipeline.train.train``'s signature) that records each call's lr in ``lrs``
    and raises ``error`` (a TrainingDivergedError by default) on call ``on_call`` (1-based), as
    a too-high lr would."""

    def train(model: Any, train_set: Any, cfg: Any, **kwargs: Any) -> Any:
        lrs.append(cfg.lr)
        if len(lrs) == on_call:
            raise error or TrainingDivergedError(epoch=3, step=118, loss=float("inf"))
        return real(model, train_set, cfg, **kwargs)

    return train


def collapsed(epoch: int, step: int) -> TrainingCollapsedError:
    """The error of a 10-class training that had reached 0.424 at epoch 1 (trial 89's retrain)
    and is back at chance, 0.100, at ``epoch``."""
    best = EpochMetrics(epoch=1, epochs=35, train_loss=1.9, train_accuracy=0.424, eval_loss=None, eval_accuracy=None,
                        images_per_s=1.0, lr=0.1, elapsed_s=1.0)
    return TrainingCollapsedError(epoch, step, 2.30, 0.1, best, classes=10)


class _InterruptedWhileFinalised:
    """Sends this process SIGINT from its finalizer and keeps running Python code there, so the
    handler's KeyboardInterrupt is raised inside ``__del__``, where Python prints and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        total = 0
        for i in range(200_000):  # the pending signal is handled between these bytecodes
            total += i


def drop_a_ctrl_c() -> None:
    """A Ctrl-C that Python drops: its KeyboardInterrupt is raised inside a finalizer."""
    obj = _InterruptedWhileFinalised()
    del obj
    gc.collect()


@contextmanager
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler for the duration, as a command starts with: a test earlier in the
    same process (a server, a library) may have left another one installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
