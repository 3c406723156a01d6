"""bench/service.py end to end with --quick: a real `autoaug serve`, wrk against it, a RESULT line.

One worker count and 1-second cases keep it to well under a minute; skipped, with the reason,
where Debian's wrk is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.service import multipart, parse_wrk

REPO = Path(__file__).resolve().parents[2]

WRK_REPORT = """Running 2s test @ http://127.0.0.1:8000/policy
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  12.00ms   90.00%
  Latency Distribution
     50%    1.95ms
     75%    2.20ms
     90%    2.60ms
     99%  850.00us
  4000 requests in 2.00s, 40.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   2000.50
Transfer/sec:     20.00MB
"""


def test_wrk_report_is_read_with_its_units() -> None:
    rps, p50, p99, bad = parse_wrk(WRK_REPORT)
    assert (rps, p50, p99) == (2000.5, 1.95, 0.85)
    assert bad == 5 + 2  # non-2xx/3xx answers and timeouts; read errors are closed connections


def test_multipart_body_names_every_file() -> None:
    body, content_type = multipart([b"a", b"bc"])
    boundary = content_type.split("boundary=")[1]
    assert body.count(f"--{boundary}\r\n".encode()) == 2 and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="files"; filename="1.jpg"' in body


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian: apt-get install -y wrk)")
def test_quick_run_ends_with_a_result_line() -> None:
    command = [sys.executable, "-m", "bench.service", "--quick", "--seconds", "1", "--workers", "1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT ")
    fields = dict(item.split("=", 1) for item in lines[-1].split()[1:])
    for key in ("w1_healthz_c16_rps", "w1_policy_c64_ratio", "w1_policy_304_c16_ratio", "w1_model_c16_rps",
                "w1_predict_32_ips", "machine"):
        assert key in fields, key
    assert float(fields["w1_policy_c16_rps"]) > 0 and float(fields["w1_predict_1_ips"]) > 0
    assert not any(key.endswith("_bad") for key in fields), lines[-1]  # every answer 2xx/3xx
    assert "untrained weights" in result.stdout and "bf16=" in result.stdout


def test_missing_wrk_is_one_clear_line(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # an empty PATH: no wrk
    result = subprocess.run([sys.executable, "-m", "bench.service", "--quick"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("bench/service: wrk is missing")
