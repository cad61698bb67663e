"""The one check that a rendered script is POSIX sh: `sh -n`, then shellcheck where it is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

import pytest


def assert_posix_sh_and_shellcheck_clean(scripts: Sequence[str]) -> None:
    """Every script parses as sh; then each passes shellcheck, or the test is skipped saying only `sh -n` ran."""
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (./scripts/setup.sh installs it): only `sh -n` ran")
    for script in scripts:
        # SC1091: the sourced secrets.env exists only in the container.
        lint = subprocess.run(
            ["shellcheck", "-s", "sh", "-e", "SC1091", "-"], input=script, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout
