"""The local Docker engine: used if running, else started (and stopped) by the suite."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.infra.gate import require_or_skip
from testbed.infra.process import progress, run, tail_file, timed

# ---------------------------------------------------------------- docker engine


def docker_info_ok() -> bool:
    """True when the docker CLI reaches an engine."""
    try:
        return run(["docker", "info"], check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bridge_gateway() -> str:
    """This machine's address on Docker's default bridge: reachable from a container on any network, and it
    exists before any test network does (the suite's receivers and its SFTP drive listen there)."""
    answer = run(["docker", "network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", "bridge"])
    return answer.stdout.strip()


@dataclass
class DockerEngine:
    """The engine the suite uses. One the suite started stays running when the run ends: the e2e suite, the
    demo and the benchmark share it, and a run waiting for the run lock may already be using it, so stopping
    it at the end of one run would pull it out from under the next."""

    process: subprocess.Popen[bytes] | None = None  # the dockerd this run started, if it started one

    def stop_after_failed_start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def ensure_docker_engine(cache: Path, timeout: float = 60, dockerd_args: Sequence[str] = ()) -> DockerEngine:
    """Use the running engine, or start `dockerd [dockerd_args]` in the background (as root) and wait for it.

    The log goes to `<cache>/logs/dockerd.log`; its tail is in the error when it does not come up. An engine
    started here is left running (see DockerEngine).
    """
    with timed("docker engine"):
        if docker_info_ok():
            return DockerEngine()
        if os.geteuid() != 0:
            require_or_skip("no docker engine answers `docker info`, and starting dockerd needs root")
        log_path = cache / "logs" / "dockerd.log"
        progress(f"docker engine: not running, starting dockerd (log: {log_path})")
        with log_path.open("ab") as log:
            log.write(f"\n===== dockerd started by the e2e suite at {time.ctime()} =====\n".encode())
            log.flush()
            process = subprocess.Popen(
                ["dockerd", *dockerd_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        engine = DockerEngine(process=process)
        deadline = time.monotonic() + timeout
        while not docker_info_ok():
            if process.poll() is not None:
                require_or_skip(
                    f"dockerd exited with {process.returncode} at start; tail of {log_path}:\n{tail_file(log_path)}"
                )
            if time.monotonic() > deadline:
                engine.stop_after_failed_start()
                require_or_skip(
                    f"dockerd did not answer `docker info` within {timeout:.0f}s; "
                    f"tail of {log_path}:\n{tail_file(log_path)}"
                )
            time.sleep(0.5)
        return engine
