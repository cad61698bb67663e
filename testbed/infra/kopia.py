"""The real kopia binary on this machine, as the oracle."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testbed.infra.openlist import OpenListS3
from testbed.infra.process import run

# ---------------------------------------------------------------- Kopia on this machine


@dataclass
class KopiaCli:
    """The host's Kopia binary with its own config file and secrets passed only through the environment.

    `KOPIA_PASSWORD`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are never on the command
    line (where `ps` would show them); logs and cache stay inside `config_dir`.
    """

    binary: Path
    config_dir: Path
    password: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "repository.config"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KOPIA_", "AWS_"))}
        env.update(
            KOPIA_PASSWORD=self.password,
            KOPIA_CHECK_FOR_UPDATES="false",
            KOPIA_LOG_DIR=str(self.config_dir / "logs"),
            KOPIA_CACHE_DIRECTORY=str(self.config_dir / "cache"),
        )
        if self.access_key_id is not None:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key is not None:
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        env.update(self.extra_env)
        return env

    def run(self, *args: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """`kopia --config-file=<dir>/repository.config <args>`."""
        return run(
            [self.binary, f"--config-file={self.config_file}", *args], env=self.env, check=check, timeout=timeout
        )

    def s3_args(self, s3: OpenListS3, prefix: str) -> list[str]:
        """`repository create|connect s3` flags for `s3` (keys come from the environment, not from here)."""
        return [
            f"--bucket={s3.bucket}",
            f"--prefix={prefix}",
            f"--endpoint={s3.endpoint}",
            "--disable-tls",
        ]
