"""Apply what the program declares to a real Docker engine and a real SSH host.

The Pulumi engine cannot run here, so the e2e suite runs `__main__.py` under
mocks (testbed/mocks.py) and hands the captured resources to `Deployment`,
which does what the providers would do, through the same doors they use:

- `pulumi:providers:docker`: its `host` (ssh://user@host:port) and `sshOpts`
  (with the pinned host key) drive the real `docker` CLI over `ssh ... docker
  system dial-stdio`, like pulumi-docker.
- `docker:index/network:Network`: `docker network create`.
- `docker:index/remoteImage:RemoteImage`: the image must already be on the
  engine (no registry is reachable; the suite builds the pinned tags locally).
- `docker:index/container:Container`: `docker run -d` with the declared name,
  hostname, restart policy, network (or network mode), ports, volumes, env, labels, entrypoint and
  health check. A container whose declared spec changed is replaced, as the
  Docker provider replaces containers on any change of these inputs.
- the program's dynamic resources (`RemoteFile`, `OwnedDirectory` in
  components/host_files.py, `OpenListSettings` in components/openlist_config.py):
  their own provider code is called, as the engine would call it: `create` on
  first apply; then, since Pulumi.yaml sets `refresh: always`, `read` and on its
  answer `diff`, then `update` (or delete and create, for a replacement, or
  create when read found it gone); `delete` when no longer declared, and on destroy. They run the local `ssh`
  with the declared options; the operator's key comes from ssh-agent
  (`SSH_AUTH_SOCK`), as for a user.

What it does not model: Pulumi state files, `pulumi refresh` and `preview`
(the engine tier, testbed/engine.py, runs those), parallelism, provider
retries and timeouts, the Docker provider's `must_run` check after create,
inputs the program does not use, and the TLS provider (the mocks generate the
key and certificate with `cryptography`, the way the provider would, once per
deployment unless their inputs change, as Pulumi's state keeps them). It
refuses resource types it does not translate.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from components.host_files import OwnedDirectoryProvider, RemoteFileProvider
from components.openlist_config import OpenListSettingsProvider
from testbed import infra
from testbed.mocks import ProgramRun, Recorded, RecordingMocks, run_program, unwrap_all

CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/remoteImage:RemoteImage"
NETWORK = "docker:index/network:Network"
DOCKER_PROVIDER = "pulumi:providers:docker"
#: The program's dynamic resources and their providers (the code the engine would run).
DYNAMIC_PROVIDERS = {
    "pulumi-python:dynamic/homelab:RemoteFile": RemoteFileProvider,
    "pulumi-python:dynamic/homelab:OwnedDirectory": OwnedDirectoryProvider,
    "pulumi-python:dynamic/homelab:OpenListSettings": OpenListSettingsProvider,
}
#: Made by the mocks themselves (testbed/mocks.py generates the key and certificate, as the TLS provider would).
MADE_BY_THE_MOCKS = {"tls:index/privateKey:PrivateKey", "tls:index/selfSignedCert:SelfSignedCert"}
#: What the adapter translates; anything else the program declares is refused.
TRANSLATED = {CONTAINER, IMAGE, NETWORK, DOCKER_PROVIDER, *DYNAMIC_PROVIDERS, *MADE_BY_THE_MOCKS}


def dependency_order(resources: list[Recorded]) -> list[Recorded]:
    """`resources` so that each comes after every one it depends on (explicit `depends_on` and the
    resources its inputs come from: what the engine sends as the registration's dependencies)."""
    by_name = {r.name: r for r in resources}
    ordered: list[Recorded] = []
    visiting: set[str] = set()

    def visit(resource: Recorded) -> None:
        if resource in ordered:
            return
        if resource.name in visiting:
            raise RuntimeError(f"dependency cycle through {resource.name}")
        visiting.add(resource.name)
        for urn in resource.options.get("depends_on", []):
            dependency = by_name.get(urn.rsplit("::", 1)[-1])
            if dependency is not None:
                visit(dependency)
        visiting.discard(resource.name)
        ordered.append(resource)

    for resource in sorted(resources, key=lambda r: r.name):
        visit(resource)
    return ordered


def _spec_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Deployment:
    """One stack's resources on the real host; `apply` is `pulumi up`, `destroy` is `pulumi destroy`."""

    stack: str
    operator: infra.SshHost  # the SSH host and the operator's key (what ssh-agent would hold)
    applied: dict[str, tuple[str, dict]] = field(default_factory=dict)  # dynamic resource -> (type, outputs)
    applied_containers: dict[str, str] = field(default_factory=dict)  # container name -> spec hash
    networks: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # the stack outputs of the last `up`
    declared_containers: list[dict] = field(default_factory=list)  # the container inputs of the last `up`
    state: dict[tuple[str, str], Any] = field(default_factory=dict)  # what the TLS provider keeps in Pulumi state
    _docker: infra.SshDocker | None = None

    tier = "adapter"

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
        self._docker = infra.SshDocker.for_provider(self.operator, provider.inputs)

    # ------------------------------------------------------------ apply / destroy

    def up(self, overrides: dict[str, Any], secrets: dict[str, str]) -> ProgramRun:
        """`pulumi up`: run the program for this stack under mocks, then apply what it declared."""
        run = run_program(self.stack, overrides=overrides, secrets=secrets, mocks=RecordingMocks(state=self.state))
        self.apply(run)
        self.outputs = dict(run.outputs)
        self.declared_containers = [unwrap_all(c.inputs) for c in run.by_type(CONTAINER)]
        return run

    def apply(self, run: ProgramRun) -> None:
        untranslated = sorted({r.typ for r in run.resources if not r.typ.startswith("homelab:")} - TRANSLATED)
        if untranslated:
            raise RuntimeError(f"the adapter does not translate {untranslated}: run this on the engine tier")
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
        # In the program's own dependency order, as the engine would (files and dirs before the
        # containers that depend on them, OpenList before the Kopia whose endpoint it is).
        for resource in dependency_order(
            [r for r in run.resources if r.typ in DYNAMIC_PROVIDERS or r.typ == CONTAINER]
        ):
            if resource.typ == CONTAINER:
                self._apply_container(resource, images)
            else:
                self._apply_dynamic(resource)
        # What the program no longer declares is deleted, as the engine deletes it (e.g. the previous
        # repository password's file, declared only while the password changes).
        declared = {r.name for r in run.resources if r.typ in DYNAMIC_PROVIDERS}
        for name, (typ, outs) in reversed(list(self.applied.items())):
            if name not in declared:
                DYNAMIC_PROVIDERS[typ]().delete(name, outs)
                del self.applied[name]
                self.log.append(f"delete {name}")

    def _apply_dynamic(self, resource: Recorded) -> None:
        """What the engine does with a dynamic resource: create, or diff and then update or replace."""
        provider = DYNAMIC_PROVIDERS[resource.typ]()
        news = {k: v for k, v in unwrap_all(resource.inputs).items() if k != "__provider"}
        if resource.name in self.applied:  # `refresh: always`: what is there now, before the diff
            read = provider.read(resource.name, self.applied[resource.name][1])
            if read.id:
                self.applied[resource.name] = (resource.typ, dict(read.outs or {}))
            else:
                del self.applied[resource.name]
        if resource.name not in self.applied:
            outs = provider.create(news).outs
            self.log.append(f"create {resource.name}")
        else:
            olds = self.applied[resource.name][1]
            diff = provider.diff(resource.name, olds, news)
            if not diff.changes:
                return
            if diff.replaces:
                provider.delete(resource.name, olds)  # delete-before-replace, as the program declares
                outs = provider.create(news).outs
                self.log.append(f"replace {resource.name}")
            else:
                outs = provider.update(resource.name, olds, news).outs
                self.log.append(f"update {resource.name}")
        self.applied[resource.name] = (resource.typ, dict(outs or {}))

    @staticmethod
    def container_args(spec: dict, digest: str, images: dict[str, str]) -> list[str]:
        """`docker run` arguments for a declared (unwrapped) container spec, labelled with its digest."""
        args = ["--name", spec["name"], "--restart", spec.get("restart", "no")]
        if spec.get("hostname"):
            args += ["--hostname", spec["hostname"]]
        if spec.get("networkMode"):
            args += ["--network", spec["networkMode"]]
        for network in spec.get("networksAdvanced") or []:
            args += ["--network", network["name"]]
        for port in spec.get("ports", []):
            args += ["-p", f"{port['ip']}:{int(port['external'])}:{int(port['internal'])}"]
        for volume in spec.get("volumes", []):
            mode = ":ro" if volume.get("readOnly") else ""
            args += ["-v", f"{volume['hostPath']}:{volume['containerPath']}{mode}"]
        for mount in spec.get("mounts", []):
            if mount.get("type") != "bind" or set(mount) - {"type", "source", "target", "readOnly"}:
                raise RuntimeError(f"the adapter translates plain bind mounts only, not {mount}")
            readonly = ",readonly" if mount.get("readOnly") else ""
            args += ["--mount", f"type=bind,source={mount['source']},target={mount['target']}{readonly}"]
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
        for name, (typ, outs) in reversed(list(self.applied.items())):
            try:
                DYNAMIC_PROVIDERS[typ]().delete(name, outs)
            except Exception as error:
                errors.append(f"{name}: {error}")
        for network in self.networks:
            self.docker("network", "rm", network, check=False)
        # Destroyed: a second destroy (the suite's finalizer after a test destroyed) has nothing to do.
        self.networks.clear()
        self.applied_containers.clear()
        self.applied.clear()
        self.state.clear()  # a destroyed stack's state holds nothing: the next up makes a new key
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        if errors:
            raise RuntimeError("destroy left things behind: " + "; ".join(errors))
