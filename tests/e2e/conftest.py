"""Pytest wiring for the e2e suite; all the logic is in `testbed/infra/`.

Every test under tests/e2e is marked `e2e` and needs the session's prerequisites: with
HOMELAB_E2E unset (or `auto`) a missing one skips the tests, with `require` it fails them.
Setup steps print `[e2e setup] <step>: <seconds>s` straight to the terminal.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import infra

E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test on real Docker, sshd, Kopia and OpenList")
    capman = config.pluginmanager.getplugin("capturemanager")

    def write(line: str) -> None:
        reporter = config.pluginmanager.getplugin("terminalreporter")  # registered after this hook runs
        # Fixtures run while pytest captures fd 1 and 2: a minutes-long Go build would look stuck.
        # Suspend capture for the line; the terminal reporter starts it on a fresh line.
        if capman is None:  # -p no:capture
            stream = sys.__stderr__ or sys.stderr
            stream.write(line + "\n")
            stream.flush()
            return
        with capman.global_and_fixture_disabled():
            if reporter is not None:
                # With -v the test's name is already on the current line: start a fresh one.
                reporter.ensure_newline()
                reporter.write_line(line)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()

    infra.set_progress_writer(write)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


# ---------------------------------------------------------------- session: prerequisites, engine, builds


@pytest.fixture(scope="session", autouse=True)
def e2e_prerequisites() -> None:
    """Skip (auto) or fail (require) every e2e test when root, dockerd, go, sshd or busybox-static is missing."""
    infra.check_prerequisites()


@pytest.fixture(scope="session")
def e2e_cache() -> Path:
    """`${HOMELAB_E2E_CACHE:-/var/cache/homelab-backup-e2e}`: binaries and logs kept across sessions."""
    return infra.cache_dir()


@pytest.fixture(scope="session")
def docker_engine(e2e_cache: Path) -> infra.DockerEngine:
    """The local Docker engine; started if it was not running, and then left running (see DockerEngine)."""
    return infra.ensure_docker_engine(e2e_cache)


@pytest.fixture(scope="session")
def kopia_binary(e2e_cache: Path) -> Path:
    """`<cache>/bin/kopia-v0.22.3` on this machine (built with `go build` on first use)."""
    return infra.ensure_kopia_binary(e2e_cache)


@pytest.fixture(scope="session")
def openlist_binary(e2e_cache: Path) -> Path:
    """`<cache>/bin/openlist-v4.2.5` on this machine (built with `go build` on first use)."""
    return infra.ensure_openlist_binary(e2e_cache)


@pytest.fixture(scope="session")
def images(
    docker_engine: infra.DockerEngine, e2e_cache: Path, kopia_binary: Path, openlist_binary: Path
) -> infra.E2EImages:
    """`kopia/kopia:0.22.3` and `ghcr.io/openlistteam/openlist-git:v4.2.5`, built locally FROM scratch."""
    return infra.ensure_images(e2e_cache, kopia_binary, openlist_binary)


@pytest.fixture(scope="session")
def ssh_host(docker_engine: infra.DockerEngine) -> Iterator[infra.SshHost]:
    """A real sshd on 127.0.0.1 and Docker's bridge (key auth, user homelab-e2e in group docker; from containers
    SFTP only); stopped, keys deleted, at the end."""
    server = infra.SshServer()
    try:
        yield server.start(container_address=infra.bridge_gateway())
    finally:
        server.stop()


@pytest.fixture(scope="session")
def operator_agent(ssh_host: infra.SshHost) -> Iterator[str]:
    """An ssh-agent holding the operator's key (SSH_AUTH_SOCK), as a user has for the program's ssh."""
    with infra.operator_agent(ssh_host) as sock:
        yield sock


@pytest.fixture(scope="session")
def deploy_tier(e2e_cache: Path) -> tuple[str, Path | None]:
    """("engine", CLI root) where the Pulumi provider plugins are installed, else ("adapter", None).
    HOMELAB_ENGINE=require fails instead of falling back; =off always uses the adapter."""
    from testbed.system import choose_tier

    try:
        return choose_tier(e2e_cache)
    except infra.E2EError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def parts(images: infra.E2EImages, ssh_host: infra.SshHost, operator_agent: str, deploy_tier: tuple[str, Path | None]):
    """What a deployed system is made of (testbed.system.RealParts): `parts.system()` is a fresh one."""
    from testbed.system import RealParts

    tier, cli = deploy_tier
    return RealParts(images, ssh_host, operator_agent, tier, cli)


@pytest.fixture(scope="module")
def system(parts, request):
    """Both test stacks deployed once per test module, as the README's first deploy gives it
    (testbed.system.System.deploy); everything it made is removed after the module, pass or fail."""
    from testbed.system import say

    system = parts.system()
    request.addfinalizer(system.destroy)
    started = time.monotonic()
    system.deploy()
    say(f"deployed both stacks: {time.monotonic() - started:.1f}s")
    return system


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    """`/tmp/hle2e-run-*`: scratch dirs of this session (data dirs, kopia configs), deleted at the end."""
    path = infra.make_session_workdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- per test


@pytest.fixture
def ssh_docker(ssh_host: infra.SshHost) -> Iterator[infra.SshDocker]:
    """The docker CLI over SSH with the host key pinned, as pulumi-docker would reach the host."""
    with infra.SshDocker(ssh_host) as client:
        yield client


@pytest.fixture
def e2e_resources(docker_engine: infra.DockerEngine, e2e_workdir: Path) -> Iterator[infra.ResourceTracker]:
    """Register containers, networks and dirs here; they are removed after the test, pass or fail."""
    tracker = infra.ResourceTracker(workdir=e2e_workdir)
    yield tracker
    problems = tracker.cleanup()
    if problems:
        warnings.warn("e2e cleanup left: " + "; ".join(problems), stacklevel=1)


@pytest.fixture
def openlist_s3(images: infra.E2EImages, e2e_resources: infra.ResourceTracker) -> infra.OpenListS3:
    """A running OpenList from the local image on its own network, with admin, a Local storage at
    /189, S3 keys and bucket `kopia` (-> /189/kopia) set and applied by a restart."""
    network = e2e_resources.network("net")
    name = e2e_resources.container(e2e_resources.name("openlist"))
    data_dir = e2e_resources.mkdir("openlist-data") / "data"
    with infra.timed("start OpenList"):
        container = infra.start_openlist(name, network, data_dir, image=images.openlist)
    return infra.configure_openlist_s3(container)
