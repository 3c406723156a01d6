"""bench/malloc.py with --quick: one process per setting, the environment switch reaching each
(a process that does not report the setting it was given stops the bench), and the RESULT line."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from bench import malloc

from . import result_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory sets glibc's malloc; this is not Linux with glibc")
def test_the_quick_run_times_both_settings_in_their_own_processes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(REPO)  # the children run `python -m bench.malloc`
    result = result_of(malloc.main, ["malloc", "--quick"], monkeypatch, capsys)
    assert result["bench"] == "malloc" and result["quick"] == "True" and result["rounds"] == "1"
    assert float(result["resnet20_train_ratio"]) > 0 and float(result["resnet20_eval_ratio"]) > 0
    assert "machine" in result
