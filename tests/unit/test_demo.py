"""The demo is the first thing a new user runs: a failure is one line and a non-zero exit, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import demo
from testbed import infra


def _fail_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def main() -> int:
        raise error

    monkeypatch.setattr(demo, "main", main)


def test_a_failure_is_one_line_naming_the_log_with_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(monkeypatch, RuntimeError("invalid stack config (1 problem):\n  - homelab-backup:x: must be set"))
    assert demo.run() == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("[demo] FAILED: invalid stack config (1 problem):; - homelab-backup:x: must be set")
    log = Path(line.rsplit("(details: ", 1)[1].rstrip(")"))
    try:
        assert "Traceback" in log.read_text() and "RuntimeError" in log.read_text()
    finally:
        log.unlink()


def test_a_missing_prerequisite_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Outside a test (PYTEST_CURRENT_TEST unset) require_or_skip has nothing to skip: it raises E2EError.
    monkeypatch.delenv("PYTEST_CURRENT_TEST")

    def main() -> int:
        infra.require_or_skip("dockerd: apt-get install docker.io")
        return 0

    monkeypatch.setattr(demo, "main", main)
    assert demo.run() == 1
    err = capsys.readouterr().err
    assert err.startswith("[demo] FAILED: this machine cannot run it: dockerd: apt-get install docker.io (details: ")
    assert err.count("\n") == 1
    Path(err.rsplit("(details: ", 1)[1].strip().rstrip(")")).unlink()


def test_success_is_exit_zero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo, "main", lambda: 0)
    assert demo.run() == 0
    assert capsys.readouterr().err == ""
