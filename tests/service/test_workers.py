"""`autoaug serve --workers 2`: a real uvicorn supervisor with two worker processes, each with
its own view of published/. After a publish, every worker serves the new version, and no answer
ever pairs one version's policy with another's ETag."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..projects import stop_process_group
from ..publishing import add_policy

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[str, dict[str, object]]:
    """ETag and body of one GET on a new connection (so the workers share the requests)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers["ETag"], json.loads(response.read())


def consistent(etag: str, body: dict[str, object]) -> bool:
    """The tag in the header is the one in the body, and names the body's version."""
    return etag == body["etag"] and etag.startswith(f'"policy-{body["version"]}-')


@pytest.fixture
def two_workers(published: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port), "--published", str(published),
               "--workers", "2"]
    env = {**os.environ, "AUTOAUG_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                fetch(f"{url}/policy")
                break
            except OSError:
                assert time.monotonic() < deadline, "the service did not answer within 120 s"
                time.sleep(0.3)
        yield url, proc.pid
    finally:
        stop_process_group(proc)


def children_of(session: int) -> list[int]:
    """Processes of the server's session (its own, started for it) other than its leader: the
    workers (and multiprocessing's helper, if one was started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and int(entry.name) != session:  # fields[3]: the session id
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="counts worker processes through /proc")
def test_every_worker_switches_to_a_new_publish(published: Path, two_workers: tuple[str, int]) -> None:
    url, supervisor = two_workers
    assert len(children_of(supervisor)) >= 2  # --workers 2 did start two processes
    before = [fetch(f"{url}/policy") for _ in range(20)]  # both workers now hold version 1
    assert {body["version"] for _, body in before} == {1}

    seen: list[tuple[str, dict[str, object]]] = []
    stop = threading.Event()

    def poll() -> None:  # answers during the switch: old or new, never a mix
        while not stop.is_set():
            seen.append(fetch(f"{url}/policy"))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        new = add_policy(published, magnitude=0.9)
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join(timeout=60)

    after = [fetch(f"{url}/policy") for _ in range(40)]  # 40 new connections: both workers answer
    assert {body["version"] for _, body in after} == {new.version}
    assert len({etag for etag, _ in after}) == 1
    for etag, body in before + seen + after:
        assert consistent(etag, body), (etag, body["version"])
    digest = hashlib.sha256(new.policy_text().encode()).hexdigest()[:16]
    assert after[0][0] == f'"policy-{new.version}-{digest}"'
