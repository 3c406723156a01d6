"""The service under load: requests/s and latency of a real uvicorn process on loopback.

`autoaug serve` (the CLI a user runs) is started by the bench on a free port, with 1 and then 2
worker processes, and loaded with Debian's `wrk` (2 threads, N seconds per case, latency
distribution from `--latency`). The in-run peer is `/healthz`, which does nothing: every case is
also given as a ratio of its requests/s to /healthz's at the same number of connections.

Cases: `/healthz`, `/policy` (200, and 304 with `If-None-Match: <its ETag>`) and `/model` at 16
and 64 connections; `POST /predict` with 1, 16 and 32 real JPEGs per request (multipart body
posted by a wrk Lua script), reported as images/s.

What is served: `--published PATH` (a real `make run`'s published/), else a folder the bench
publishes itself through pipeline.artifacts: a searched policy from bench/results/policies and
the search space's `airbench_like` network with untrained weights (throughput does not depend on
the weights' values). wrk runs on the same cores as the server, as a user's load test would.

    python -m bench.service --data /path/to/cifar10-jpg.tar.gz            # 10 s per case
    python -m bench.service --quick                                      # 2 s, generated JPEGs
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bench.common import machine, result_line

REPO = Path(__file__).resolve().parents[1]
POLICY_FILE = REPO / "bench" / "results" / "policies" / "faa-k3-b80-draws1.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PREDICT_SIZES = (1, 16, 32)
PREDICT_CONNECTIONS = 8
READ_CONNECTIONS = (16, 64)


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    connections: int
    headers: tuple[str, ...] = ()
    script: Path | None = None
    images: int = 0  # images per request (POST /predict), 0 for the GETs


@dataclass(frozen=True)
class Measured:
    case: Case
    rps: float
    p50_ms: float
    p99_ms: float
    bad: int  # non-2xx/3xx answers plus socket errors

    @property
    def images_per_s(self) -> float:
        return self.rps * self.case.images


def fail(message: str) -> NoReturn:
    """One clear line on stderr and exit 2, like the CLI's errors for people."""
    print(f"bench/service: {message}", file=sys.stderr)
    sys.exit(2)


# ------------------------------------------------------------------------------ inputs


def real_jpegs(source: Path, count: int) -> list[bytes]:
    """``count`` image files as they are stored: from a CIFAR-10 tarball or image tree (its
    test/ images first), else decoded from any source pipeline.data reads and saved as JPEG."""
    if source.is_file() and tarfile.is_tarfile(source):
        found: list[bytes] = []
        with tarfile.open(source) as archive:
            for member in archive:  # stops early: no need to decompress the whole tarball
                if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found.append(handle.read())
                if len(found) == count:
                    return found
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files.sort(key=lambda p: "test" not in p.parts)
        if files:
            return [p.read_bytes() for p in files[:count]]
    return _encoded_from_store(source, count)


def _encoded_from_store(source: Path, count: int) -> list[bytes]:
    from PIL import Image

    from pipeline.data.decode import DecodeReport
    from pipeline.data.sources import iter_source

    found = []
    for record in iter_source(str(source), DecodeReport()):
        buffer = io.BytesIO()
        Image.fromarray(record.pixels).save(buffer, format="JPEG", quality=95)
        found.append(buffer.getvalue())
        if len(found) == count:
            break
    if not found:
        fail(f"no images in {source}")
    return found


def generated_jpegs(count: int) -> list[bytes]:
    """Small noisy JPEGs (--quick without --data): the decode cost of a real 32x32 JPEG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def multipart(images: list[bytes]) -> tuple[bytes, str]:
    """A /predict body (field ``files``, once per image) and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for index, data in enumerate(images):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{index}.jpg"\r\n'
                     "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_script(folder: Path, images: list[bytes]) -> Path:
    """A wrk Lua script that POSTs ``images`` as one multipart body on every request."""
    body, content_type = multipart(images)
    body_path = folder / f"body-{len(images)}.bin"
    body_path.write_bytes(body)
    script = folder / f"predict-{len(images)}.lua"
    script.write_text(
        f'local f = assert(io.open("{body_path}", "rb"))\n'
        "wrk.body = f:read(\"*a\")\nf:close()\n"
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
    )
    return script


def publish_for_bench(root: Path) -> str:
    """A searched policy and an untrained airbench_like network, published like the stage does."""
    import torch

    from pipeline.artifacts import publish_model, publish_policy
    from pipeline.augment import Policy
    from pipeline.models import SPACE_POINTS, build_model

    policy = Policy.from_json(POLICY_FILE.read_text())
    publish_policy(root, policy, fingerprint="bench", mlflow_run_id=uuid.uuid4().hex,
                   summary={"score": 0.0, "trials": 0}, studies=["bench"])
    torch.manual_seed(0)
    config = SPACE_POINTS["airbench_like"]
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    publish_model(root, build_model(config, len(classes)).eval(), config=config, classes=classes,
                  metrics={"test_accuracy": 0.1}, fingerprint="bench", lineage={}, export=False)
    return (f"published by the bench: policy {POLICY_FILE.relative_to(REPO)}, model airbench_like "
            "with untrained weights (throughput does not depend on the weights)")


# ------------------------------------------------------------------------------ server and wrk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@contextmanager
def running_service(published: Path, workers: int, max_files: int) -> Iterator[str]:
    """`autoaug serve` with ``workers`` processes on a free port; its base URL once /readyz is 200."""
    port = free_port()
    env = {**os.environ, "AUTOAUG_MAX_FILES": str(max_files), "AUTOAUG_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--published", str(published), "--workers", str(workers)]
    proc = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                fail(f"`autoaug serve` exited with {proc.returncode} before it was ready")
            try:
                if get(f"{url}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail("the service was not ready within 120 s")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)  # its own session: the supervisor and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> tuple[float, float, float, int]:
    """requests/s, p50 and p99 in ms, and the number of bad answers, from wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    latency = {q: float(v) * _UNIT_MS[unit] for q, v, unit in _LATENCY.findall(text)}
    if rps is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    count = int(bad.group(1)) if bad else 0
    if errors:  # a read error is wrk's count of connections the server closed: not a failed answer
        count += int(errors.group(1)) + int(errors.group(3)) + int(errors.group(4))
    return float(rps.group(1)), latency["50"], latency["99"], count


def run_wrk(wrk: str, url: str, case: Case, seconds: int) -> Measured:
    command = [wrk, "-t2", f"-c{case.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for header in case.headers:
        command += ["-H", header]
    if case.script is not None:
        command += ["-s", str(case.script)]
    result = subprocess.run([*command, url + case.path], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"wrk failed ({result.returncode}): {result.stderr.strip()[:300]}")
    rps, p50, p99, bad = parse_wrk(result.stdout)
    return Measured(case, rps, p50, p99, bad)


# ------------------------------------------------------------------------------ the bench


def cases(url: str, scripts: dict[int, Path]) -> list[Case]:
    status, headers, body = get(f"{url}/policy")
    etag = {k.lower(): v for k, v in headers.items()}.get("etag")
    if status != 200 or etag is None:
        fail(f"GET /policy answered {status}: {body[:200]!r}")
    if get(f"{url}/policy", {"If-None-Match": etag})[0] != 304:
        fail("GET /policy with its ETag did not answer 304")
    out = []
    for c in READ_CONNECTIONS:
        out += [Case("healthz", "/healthz", c), Case("policy", "/policy", c),
                Case("policy_304", "/policy", c, headers=(f"If-None-Match: {etag}",)), Case("model", "/model", c)]
    out += [Case(f"predict_{n}", "/predict", PREDICT_CONNECTIONS, script=scripts[n], images=n) for n in PREDICT_SIZES]
    return out


def check_predict(url: str, images: list[bytes]) -> None:
    body, content_type = multipart(images)
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        fail(f"POST /predict answered {exc.code}: {exc.read()[:300]!r}")
    if len(answer["predictions"]) != len(images):
        fail("/predict returned a different number of predictions")


def report(workers: int, measured: list[Measured]) -> dict[str, float]:
    peer = {m.case.connections: m.rps for m in measured if m.case.name == "healthz"}
    print(f"\n--workers {workers}")
    print(f"{'case':<12} {'conns':>5} {'req/s':>9} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'vs /healthz':>11} {'bad':>5}")
    fields: dict[str, float] = {}
    for m in measured:
        c = m.case
        ratio = m.rps / peer[c.connections] if c.connections in peer else float("nan")
        images = f"{m.images_per_s:9.0f}" if c.images else f"{'':>9}"
        versus = f"{ratio:11.2f}" if c.connections in peer else f"{'–':>11}"
        print(f"{c.name:<12} {c.connections:>5} {m.rps:9.0f} {images} {m.p50_ms:8.2f} {m.p99_ms:8.2f} "
              f"{versus} {m.bad:>5}")
        key = f"w{workers}_{c.name}" + ("" if c.images else f"_c{c.connections}")
        fields[f"{key}_rps"] = m.rps
        fields[f"{key}_p99_ms"] = m.p99_ms
        if c.images:
            fields[f"{key}_ips"] = m.images_per_s
        elif c.name != "healthz":
            fields[f"{key}_ratio"] = ratio
        if m.bad:
            fields[f"{key}_bad"] = m.bad
    return fields


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", default=None, help="CIFAR-10 tarball, image-folder tree or ingested store: "
                   "the JPEGs /predict classifies (required unless --quick)")
    p.add_argument("--quick", action="store_true", help="a short smoke run (2 s per case)")
    p.add_argument("--seconds", type=int, default=None, help="per case (default 10, --quick 2)")
    p.add_argument("--published", type=Path, default=None,
                   help="a published/ folder to serve (default: one the bench publishes)")
    p.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    p.add_argument("--only", default=None, help="cases whose name starts with one of these (comma-separated), "
                   "plus /healthz, the peer")
    args = p.parse_args(argv)

    wrk = shutil.which("wrk")
    if wrk is None:
        fail("wrk is missing: install it (Debian: apt-get install -y wrk)")
    if args.data is None and not args.quick:
        fail("--data PATH is needed (or --quick, with generated JPEGs)")
    seconds = args.seconds or (2 if args.quick else 10)
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    images = real_jpegs(Path(args.data), max(PREDICT_SIZES)) if args.data else generated_jpegs(max(PREDICT_SIZES))

    print(f"machine: {machine()} cores={len(os.sched_getaffinity(0))}")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min load average before the run: other processes on these cores)")
    print(f"wrk: 2 threads, {seconds} s per case; /predict at {PREDICT_CONNECTIONS} connections; "
          f"AUTOAUG_MAX_FILES={max(PREDICT_SIZES)}; images: {'from ' + args.data if args.data else 'generated 32x32 JPEGs'} "
          f"({sum(map(len, images)) / len(images):.0f} B on average)")
    fields: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        folder = Path(tmp)
        if args.published is not None:
            published, what = args.published.resolve(), f"published: {args.published}"
        else:
            published = folder / "published"
            what = publish_for_bench(published)
        print(what)
        scripts = {n: post_script(folder, images[:n]) for n in PREDICT_SIZES}
        for workers in worker_counts:
            with running_service(published, workers, max(PREDICT_SIZES)) as url:
                check_predict(url, images[: max(PREDICT_SIZES)])
                todo = cases(url, scripts)
                if args.only:
                    keep = ("healthz", *args.only.split(","))
                    todo = [case for case in todo if case.name.startswith(keep)]
                if workers == worker_counts[0]:
                    size = len(get(f"{url}/policy")[2])
                    print(f"/policy body: {size / 1024:.1f} KiB")
                fields.update(report(workers, [run_wrk(wrk, url, case, seconds) for case in todo]))
    fields["seconds"] = seconds
    fields["machine"] = machine().replace(" ", "_").replace("'", "")
    print(result_line(**fields))


if __name__ == "__main__":
    main()
