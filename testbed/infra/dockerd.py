"""The local Docker engine: used if running, else started (and stopped) by the suite."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.infra.gate import E2EError, require_or_skip
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
    exists before any test network does (the suite's receivers and its SFTP drive listen there).

    Raises E2EError (one line: what was found, what to check) when the bridge has no local address."""
    answer = run(["docker", "network", "inspect", "--format", "{{json .}}", "bridge"])
    return choose_bridge_address(json.loads(answer.stdout), local_ipv4_addresses())


def local_ipv4_addresses() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses, as the kernel has them (`ip -json addr`, iproute2)."""
    answer = run(["ip", "-json", "-4", "addr", "show"])
    return {
        link["ifname"]: [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
        for link in json.loads(answer.stdout)
    }


def choose_bridge_address(network: Mapping[str, Any], local: Mapping[str, Sequence[str]]) -> str:
    """The host's own address on a Docker bridge network, from `docker network inspect` and the local addresses.

    The IPAM answer alone is not enough: Debian 12's engine (docker.io 20.10.24, API 1.41) reports the default
    bridge's IPAM config as `[{"Subnet": "172.17.0.0/16"}]`, with no Gateway, while docker0 holds 172.17.0.1.
    So, in order: the bridge interface's own address in the subnet, IPAM's Gateway, the subnet's first
    address; each only if this machine really has it (a container reaching it reaches us, not a neighbour).
    """
    name = network.get("Name", "?")
    subnets = [
        ipaddress.ip_network(c["Subnet"], strict=False)
        for c in (network.get("IPAM") or {}).get("Config") or []
        if c.get("Subnet") and ":" not in c["Subnet"]
    ]
    gateways = [c["Gateway"] for c in (network.get("IPAM") or {}).get("Config") or [] if c.get("Gateway")]
    interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "")
    every_local = {address for addresses in local.values() for address in addresses}
    candidates = [
        *local.get(interface, []),
        *gateways,
        *(str(next(subnet.hosts())) for subnet in subnets if subnet.num_addresses > 2),
    ]
    for candidate in candidates:
        address = ipaddress.ip_address(candidate)
        if candidate in every_local and any(address in subnet for subnet in subnets):
            return candidate
    raise E2EError(
        f"no local address on Docker's {name!r} network (subnets {[str(s) for s in subnets] or 'none'}, bridge"
        f" interface {interface or 'unnamed'}, tried {candidates or 'nothing'}): check `ip -4 addr show"
        f" {interface or 'docker0'}` and `docker network inspect {name}`, then restart dockerd"
    )


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
