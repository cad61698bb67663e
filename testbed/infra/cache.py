"""The cache dir for builds and logs, and locks inside it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from testbed.infra.pins import CACHE_ENV, DEFAULT_CACHE

# ---------------------------------------------------------------- cache dir


def cache_dir() -> Path:
    """`${HOMELAB_E2E_CACHE:-/var/cache/homelab-backup-e2e}`, created: Go builds and logs are kept here."""
    path = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    (path / "bin").mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(cache: Path, name: str) -> Iterator[None]:
    """An exclusive lock in the cache so two sessions never build the same binary or image at once."""
    with (cache / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
