"""One run at a time: the e2e stacks and the demo use fixed names and host paths."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.infra.gate import E2EError
from testbed.infra.process import progress

# ---------------------------------------------------------------- one run at a time

#: The e2e stacks and the demo use fixed container names and host paths: one run per machine at a time.
RUN_LOCK = Path("/var/lock/homelab-backup-e2e.lock")


@contextlib.contextmanager
def exclusive_run(what: str, timeout: float = 3600) -> Iterator[None]:
    """Hold the machine-wide run lock while `what` uses the fixed names and paths; wait (with progress)
    while another run (a demo, the tests, a benchmark) holds it, and say which process that is."""
    RUN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with RUN_LOCK.open("a+") as handle:
        started = time.monotonic()
        next_report = started
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - started > timeout:
                    raise E2EError(
                        f"{what}: another run still holds {RUN_LOCK} after {timeout:.0f}s; "
                        "wait for it to finish, or stop it (its pid is in the file)"
                    ) from None
                if now >= next_report:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    progress(f"{what}: waiting for another run to finish ({holder}; lock {RUN_LOCK})")
                    next_report = now + 30
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {what}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
