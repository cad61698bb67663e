"""What the e2e tests of dumps read back: a dump's status line, and Kopia's snapshot times as epoch seconds."""

from __future__ import annotations

from pathlib import Path

from scripts.status import _parse_time


def kopia_epoch(text: str) -> int:
    """Seconds since the epoch of a time as Kopia writes it (RFC 3339 with nanoseconds)."""
    return int(_parse_time(text).timestamp())


def status_line(text_or_path: str | Path) -> tuple[str, int, str]:
    """A dump's status line (`<outcome> <epoch> <details>`, templates/dump-loop.sh), from its text or file."""
    text = text_or_path.read_text() if isinstance(text_or_path, Path) else text_or_path
    outcome, at, details = text.strip().split(" ", 2)
    return outcome, int(at), details
