"""A headless chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
no extra package, no port). For pages that render in JavaScript and keep talking to their
server (the MLflow UI), where ``--dump-dom`` / ``--screenshot`` with a virtual-time budget can
wait for ever: here the test waits in real time until the page shows what it expects."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPAND_NESTED_RUNS = """(() => { let n = 0;
  document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]').forEach(b => {
    if (b.innerHTML.includes('M7.25 7.25V4.5')) { b.click(); n++; } });  // the "+" icon: collapsed
  return n; })()"""
"""JavaScript for the MLflow UI's runs table: open every collapsed parent run (nested runs:
folds, trials); evaluates to how many it opened."""


class Browser:
    """One headless chromium with one page; use as a context manager."""

    def __init__(self, chromium: str, profile: Path, width: int = 1600, height: int = 1000) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # the child's ends above 9, so the shell's "3<&N 4>&M" cannot overwrite one with the other
        for_child = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = for_child
        # chromium reads commands on fd 3 and writes replies on fd 4: the shell puts the pipes there
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.profile = profile
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', *args],  # dash: fds < 10
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._out = os.fdopen(to_browser_w, "wb", buffering=0)
        self._in = os.fdopen(from_browser_r, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.errors: list[str] = []  # the page's uncaught exceptions and console errors, as they come
        self.call("Runtime.enable", session=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._out.close()
        self._in.close()

    def call(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._read()
            self._note_error(reply)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
        raise TimeoutError(f"{method}: no reply within {timeout} s")

    def _note_error(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def wait_for(self, ready: Callable[[str], bool], timeout: float = 60) -> str:
        """The page's HTML once ``ready(html)`` holds (polled every half second), or a TimeoutError
        that names a file with the whole page and the page's errors (``errors``)."""
        deadline = time.monotonic() + timeout
        html = ""
        while time.monotonic() < deadline:
            html = self.html()
            if ready(html):
                return html
            time.sleep(0.5)
        kept = self.profile.parent / "not-ready.html"  # the whole page and its errors, to read why
        kept.write_text(html + "".join(f"\n<!-- page error: {e} -->" for e in self.errors))
        raise TimeoutError(f"the page was not ready within {timeout} s (all of it: {kept}); it ends with: "
                           f"{html[-1500:]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
