"""Containers, networks and dirs a test made, removed after it."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from testbed.infra.pins import NAME_PREFIX, RESOURCE_LABEL
from testbed.infra.process import DockerRunner, docker, unique_name

# ---------------------------------------------------------------- cleanup


@dataclass
class ResourceTracker:
    """Containers, networks and dirs a test made; `cleanup()` removes them all, even after a failure.

    Names come from `name()` (`hle2e-...`); containers and networks get the `homelab.e2e` label.
    """

    workdir: Path
    runner: DockerRunner = docker
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def name(self, label: str) -> str:
        return unique_name(label)

    def container(self, name: str) -> str:
        """Remember a container (created by the test or by the program under test) for removal."""
        self.containers.append(name)
        return name

    def network(self, label: str = "net") -> str:
        """Create a user-defined bridge network and remember it for removal."""
        name = self.name(label)
        self.runner("network", "create", "--label", f"{RESOURCE_LABEL}=1", name)
        self.networks.append(name)
        return name

    def adopt_network(self, name: str) -> str:
        """Remember a network made elsewhere (e.g. by the program under test) for removal."""
        self.networks.append(name)
        return name

    def mkdir(self, label: str, *, owner: int | str | None = None, mode: int = 0o755) -> Path:
        """A fresh dir under the session's scratch dir, owned by `owner` (uid or user name) if given."""
        path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.workdir))
        path.chmod(mode)
        if owner is not None:
            uid = pwd.getpwnam(owner).pw_uid if isinstance(owner, str) else owner
            gid = pwd.getpwnam(owner).pw_gid if isinstance(owner, str) else owner
            os.chown(path, uid, gid)
        self.paths.append(path)
        return path

    def cleanup(self) -> list[str]:
        """Remove everything (containers first, then networks, then dirs); returns what could not be removed."""
        problems: list[str] = []
        for name in reversed(self.containers):
            result = self.runner("rm", "-f", "-v", name, check=False, timeout=120)
            if result.returncode != 0 and "No such container" not in result.stderr:
                problems.append(f"container {name}: {result.stderr.strip()}")
        for name in reversed(self.networks):
            result = self.runner("network", "rm", name, check=False, timeout=120)
            if result.returncode != 0 and "not found" not in result.stderr:
                problems.append(f"network {name}: {result.stderr.strip()}")
        for path in reversed(self.paths):
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                problems.append(f"dir {path}: still there")
        self.containers.clear()
        self.networks.clear()
        self.paths.clear()
        return problems


def make_session_workdir() -> Path:
    """`/tmp/hle2e-run-*` (0755: the SSH user must be able to reach dirs made for it inside)."""
    path = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}run-"))
    path.chmod(0o755)
    return path
