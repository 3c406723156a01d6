"""A Ctrl-C that is not lost.

Python raises KeyboardInterrupt after whatever bytecode runs when SIGINT arrives. When that is a
finalizer (``__del__``), a weakref or garbage-collection callback, or another callback called from
C, Python prints "Exception ignored in ..." and drops the exception: the command would carry on
as if no Ctrl-C had come. So every command runs under `handling()`, whose handler also remembers
the request, and the long loops (the search runner between trials, the trainer between epochs)
call `check()`, which raises KeyboardInterrupt again when a request was dropped. (A command
started with SIGINT ignored, as a background job of a non-interactive shell is, keeps ignoring it.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether a Ctrl-C came while `handling()` was active."""
    return _requested


def check() -> None:
    """Raises KeyboardInterrupt when a Ctrl-C came; a no-op otherwise (cheap: call it often)."""
    if _requested:
        raise KeyboardInterrupt


@contextmanager
def handling() -> Iterator[None]:
    """Remember Ctrl-C for the duration, then restore the previous handler. Installed only where
    Python's own handler is (the main thread, SIGINT not ignored: a job started in the background
    by a non-interactive shell keeps ignoring it)."""
    global _requested
    _requested = False
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _requested = False
