"""A Ctrl-C dropped by Python inside a finalizer still stops the command (pipeline.interrupt)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from pipeline import interrupt
from pipeline.train import EpochMetrics, train

from .fakes import drop_a_ctrl_c, python_sigint
from .test_train import FAST, colour_task, fresh


@pytest.fixture(autouse=True)
def _python_sigint() -> Iterator[None]:
    with python_sigint():
        yield


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list[type[BaseException] | None]:
    """The exceptions Python drops (its unraisable hook: "Exception ignored in ...")."""
    seen: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_type))
    return seen


def test_a_ctrl_c_dropped_in_a_finalizer_is_raised_again_by_check(
    dropped: list[type[BaseException] | None],
) -> None:
    with interrupt.handling():
        interrupt.check()  # nothing requested yet: a no-op
        drop_a_ctrl_c()  # Python drops the KeyboardInterrupt here ...
        assert dropped == [KeyboardInterrupt]  # ... as unraisable
        assert interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()  # ... but the next loop turn raises it again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert not interrupt.requested()
    interrupt.check()


def test_without_the_handler_the_same_ctrl_c_is_lost(dropped: list[type[BaseException] | None]) -> None:
    # What the handler is for: under Python's own handler the finalizer's interrupt vanishes.
    drop_a_ctrl_c()
    assert dropped == [KeyboardInterrupt]
    assert not interrupt.requested()
    interrupt.check()


def test_an_ignored_sigint_stays_ignored() -> None:
    # A command started in the background by a non-interactive shell ignores SIGINT: so does autoaug.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.handling():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with interrupt.handling():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


def test_a_dropped_ctrl_c_stops_training_before_the_next_epoch() -> None:
    seen: list[EpochMetrics] = []

    def dropped_during_epoch_one(m: EpochMetrics) -> None:
        seen.append(m)
        if m.epoch == 1:
            drop_a_ctrl_c()

    with interrupt.handling(), pytest.raises(KeyboardInterrupt):
        train(fresh(), colour_task(64, 0), FAST, callback=dropped_during_epoch_one, progress=False)
    assert [m.epoch for m in seen] == [1]  # FAST has 3 epochs: the second never started
