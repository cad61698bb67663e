"""Apply what the program declares to a real Docker engine and a real SSH host.

The Pulumi engine cannot run here, so the e2e suite runs `__main__.py` under
mocks (tests/harness.py) and hands the captured resources to `Deployment`,
which does what the providers would do, through the same doors they use:

- `pulumi:providers:docker`: its `host` (ssh://user@host:port) and `sshOpts`
  (with the pinned host key) drive the real `docker` CLI over `ssh ... docker
  system dial-stdio`, like pulumi-docker.
- `docker:index/network:Network`: `docker network create`.
- `docker:index/remoteImage:RemoteImage`: the image must already be on the
  engine (no registry is reachable; the suite builds the pinned tags locally).
- `docker:index/container:Container`: `docker run -d` with the declared name,
  hostname, restart policy, network, ports, volumes, env, labels, entrypoint and
  health check. A container whose declared spec changed is replaced, as the
  Docker provider replaces containers on any change of these inputs.
- `command:remote:Command`: `create` (first apply) or `update` (when its inputs
  changed) runs over SSH with the declared `stdin`, connecting with the declared
  user, port and pinned `hostKey`; `delete` runs on destroy.

What it does not model: Pulumi state files and `pulumi refresh` (command
resources cannot be refreshed anyway), resource options such as
`delete_before_replace`, parallelism, provider retries and timeouts, the
Docker provider's `must_run` check after create, inputs the program does not
use, and the TLS provider (the mocks generate the key and certificate with
`cryptography`, the way the provider would).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from tests.e2e import infra
from tests.harness import ProgramRun, Recorded, unwrap_all

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
IMAGE = "docker:index/remoteImage:RemoteImage"
NETWORK = "docker:index/network:Network"
DOCKER_PROVIDER = "pulumi:providers:docker"


def _spec_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Deployment:
    """One stack's resources on the real host; `apply` is `pulumi up`, `destroy` is `pulumi destroy`."""

    stack: str
    operator: infra.SshHost  # the SSH host and the operator's key (what ssh-agent would hold)
    applied_commands: dict[str, str] = field(default_factory=dict)  # name -> hash of inputs
    applied_containers: dict[str, str] = field(default_factory=dict)  # container name -> spec hash
    commands: dict[str, dict] = field(default_factory=dict)  # last declared inputs (for destroy)
    networks: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    _docker: infra.SshDocker | None = None

    # ------------------------------------------------------------ doors

    @property
    def docker_env(self) -> dict[str, str]:
        assert self._docker is not None, "apply() first: the provider decides where docker goes"
        return self._docker.env

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI through the declared Docker provider (ssh://... with its sshOpts), like pulumi-docker."""
        assert self._docker is not None, "apply() first: the provider decides where docker goes"
        return self._docker.run(*args, check=check, timeout=timeout)

    def _use_provider(self, provider: Recorded) -> None:
        if self._docker is not None:
            self._docker.close()
        self._docker = infra.SshDocker(
            self.operator,
            json.loads(provider.inputs.get("sshOpts", "[]")),
            docker_host=provider.inputs["host"],
        )

    def ssh(self, connection: dict, command: str, stdin: str | None) -> subprocess.CompletedProcess:
        """pulumi-command's remote run: the declared user, address, port and pinned host key; stdin piped."""
        port = int(connection["port"])
        declared = dataclasses.replace(
            self.operator,
            address=connection["host"],
            port=port,
            user=connection["user"],
            host_public_key=connection["hostKey"],
            known_hosts_line=infra.known_hosts_line(connection["host"], port, connection["hostKey"]),
        )
        return infra.ssh_run(declared, command, stdin=stdin.encode() if stdin else None, check=False, timeout=120)

    # ------------------------------------------------------------ apply / destroy

    def apply(self, run: ProgramRun) -> None:
        self._use_provider(run.one(DOCKER_PROVIDER))
        images = {r.outputs["imageId"]: r.inputs["name"] for r in run.by_type(IMAGE)}
        for image in images.values():
            if self.docker("image", "inspect", image, check=False).returncode != 0:
                raise RuntimeError(f"image {image} is not on the engine (no registry here: build it first)")
        for network in run.by_type(NETWORK):
            name = network.inputs["name"]
            if self.docker("network", "inspect", name, check=False).returncode != 0:
                self.docker("network", "create", name)
                self.networks.append(name)
        # Commands before containers: the program makes every container depend on its files.
        for command in sorted(run.by_type(COMMAND), key=lambda r: r.name):
            self._apply_command(command)
        # OpenList before Kopia: dependency order of the program (Kopia's endpoint is OpenList).
        for container in sorted(run.by_type(CONTAINER), key=lambda r: "kopia" in r.name):
            self._apply_container(container, images)

    def _apply_command(self, command: Recorded) -> None:
        inputs = unwrap_all(command.inputs)
        self.commands[command.name] = inputs
        digest = _spec_hash({k: inputs.get(k) for k in ("create", "update", "stdin", "connection")})
        if self.applied_commands.get(command.name) == digest:
            return
        script = inputs["update"] if command.name in self.applied_commands and "update" in inputs else inputs["create"]
        result = self.ssh(inputs["connection"], script, inputs.get("stdin"))
        if result.returncode != 0:
            raise RuntimeError(f"{command.name}: remote command failed ({result.returncode}): {result.stderr.strip()}")
        self.applied_commands[command.name] = digest
        self.log.append(f"command {command.name}")

    @staticmethod
    def container_args(spec: dict, digest: str, images: dict[str, str]) -> list[str]:
        """`docker run` arguments for a declared (unwrapped) container spec, labelled with its digest."""
        args = ["--name", spec["name"], "--restart", spec.get("restart", "no")]
        if spec.get("hostname"):
            args += ["--hostname", spec["hostname"]]
        for network in spec.get("networksAdvanced", []):
            args += ["--network", network["name"]]
        for port in spec.get("ports", []):
            args += ["-p", f"{port['ip']}:{int(port['external'])}:{int(port['internal'])}"]
        for volume in spec.get("volumes", []):
            mode = ":ro" if volume.get("readOnly") else ""
            args += ["-v", f"{volume['hostPath']}:{volume['containerPath']}{mode}"]
        for env in spec.get("envs", []):
            args += ["-e", env]
        for label in spec.get("labels", []):
            args += ["--label", f"{label['label']}={label['value']}"]
        args += ["--label", f"homelab-e2e.spec={digest}"]
        health = spec.get("healthcheck")
        if health:
            kind, *test = health["tests"]
            assert kind == "CMD-SHELL", "docker run can only express CMD-SHELL health checks"
            args += ["--health-cmd", test[0], "--health-interval", health.get("interval", "30s")]
            args += ["--health-timeout", health.get("timeout", "30s"), "--health-retries", str(int(health["retries"]))]
            args += ["--health-start-period", health.get("startPeriod", "0s")]
        entrypoint = spec.get("entrypoints") or []
        if entrypoint:
            args += ["--entrypoint", entrypoint[0]]
        args.append(images[spec["image"]])
        return args + entrypoint[1:] + list(spec.get("command") or [])

    def _apply_container(self, container: Recorded, images: dict[str, str]) -> None:
        spec = unwrap_all(container.inputs)
        name = spec["name"]
        digest = _spec_hash(spec)
        current = self.docker("inspect", "--format", '{{index .Config.Labels "homelab-e2e.spec"}}', name, check=False)
        if current.returncode == 0 and current.stdout.strip() == digest:
            return  # no change: Pulumi would leave it alone
        if current.returncode == 0:
            self.docker("rm", "-f", name)  # any change of a container input replaces it
            self.log.append(f"replace {name}")
        self.docker("run", "-d", *self.container_args(spec, digest, images))
        self.applied_containers[name] = digest
        self.log.append(f"create {name}")

    def destroy(self) -> None:
        """Best effort, every step attempted: used in finalizers."""
        errors = []
        for name in list(self.applied_containers):
            result = self.docker("rm", "-f", name, check=False)
            if result.returncode != 0 and "No such container" not in result.stderr:
                errors.append(result.stderr.strip())
        for name, inputs in self.commands.items():
            if inputs.get("delete") and name in self.applied_commands:
                result = self.ssh(inputs["connection"], inputs["delete"], None)
                if result.returncode != 0:
                    errors.append(f"{name}: {result.stderr.strip()}")
        for network in self.networks:
            self.docker("network", "rm", network, check=False)
        # Destroyed: a second destroy (the suite's finalizer after a test destroyed) has nothing to do.
        self.networks.clear()
        self.applied_containers.clear()
        self.applied_commands.clear()
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        if errors:
            raise RuntimeError("destroy left things behind: " + "; ".join(errors))
