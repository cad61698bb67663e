"""The engine tier: each stack applied by the real Pulumi CLI, driven with the Automation API.

What a user runs is `pulumi preview/up/refresh/destroy`; this drives the same CLI:

* the program is `__main__.py` as an inline Automation API program (it runs in this
  Python process, so no Python language host plugin is needed), in a workspace whose
  `Pulumi.yaml` is the repository's and whose stack files are copies of the e2e stack
  files: Pulumi itself merges project and stack config, and `pulumi config set` (the
  test's host address, port and key) writes to the copies, never to the repository;
* a local file backend with a passphrase, no update check, no plugin downloads;
* the provider plugins (docker, tls) come from PATH or Pulumi's plugin cache, as the
  CLI finds them; the file resources' dynamic provider plugin ships with the CLI.

Where the plugins are missing the tier is skipped (or failed, with
`HOMELAB_ENGINE=require`) with a message naming them; the e2e suite then runs on
the adapter tier (testbed/adapter.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import infra

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "homelab-backup"
ENGINE_ENV = "HOMELAB_ENGINE"  # auto (default): use the engine where it can run; require; off
#: The resource plugins the program's providers need (azure-native is not needed with `config:` secrets).
REQUIRED_PLUGINS = ("docker", "tls")
PASSPHRASE = "homelab-backup-e2e"  # the local test backend's state encryption, not a user secret


def engine_mode() -> str:
    value = os.environ.get(ENGINE_ENV, "").strip().lower() or "auto"
    if value not in ("auto", "require", "off"):
        raise infra.E2EError(f"{ENGINE_ENV}={value!r}: expected 'auto' (default), 'require' or 'off'")
    return value


def plugin_cache() -> Path:
    return Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi") / "plugins"


def find_plugin(name: str) -> Path | None:
    """`pulumi-resource-<name>` on PATH, else the newest in Pulumi's plugin cache: where the CLI looks."""
    binary = f"pulumi-resource-{name}"
    on_path = shutil.which(binary)
    if on_path:
        return Path(on_path)
    candidates = sorted(plugin_cache().glob(f"resource-{name}-v*/{binary}"))
    return candidates[-1] if candidates else None


def missing_plugins() -> list[str]:
    return [name for name in REQUIRED_PLUGINS if find_plugin(name) is None]


def unavailable_reason() -> str | None:
    """Why the engine tier cannot run here, or None when it can."""
    if engine_mode() == "off":
        return f"{ENGINE_ENV}=off"
    missing = missing_plugins()
    if missing:
        names = ", ".join(f"pulumi-resource-{n}" for n in missing)
        return (
            f"the Pulumi provider plugins {names} are neither on PATH nor in {plugin_cache()} "
            "(`pulumi plugin install` puts them there; this machine's registries do not serve them)"
        )
    return None


def ensure_cli(cache: Path) -> Path:
    """A Pulumi installation root (`<root>/bin/pulumi`), built from the Go module proxy and cached by version.

    Next to the CLI goes what Pulumi's own release archive puts there for Python: the
    dynamic provider plugin, a shell script shipped in the `sdk/v3` module.
    """
    binary = infra.ensure_go_binary(infra.PULUMI_BUILD, cache)
    root = cache / f"pulumi-{infra.PULUMI_VERSION}"
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    with infra.cache_lock(cache, "pulumi-root"):
        target = bindir / "pulumi"
        if not target.exists() or target.stat().st_ino != binary.stat().st_ino:
            target.unlink(missing_ok=True)
            os.link(binary, target)
        dynamic = bindir / "pulumi-resource-pulumi-python"
        if not dynamic.exists():
            go = infra.go_executable()
            if go is None:
                infra.require_or_skip("go is not installed: install Go and put it on PATH")
            wrapper = infra.PULUMI_BUILD.wrapper_dir
            sdk = infra.module_dir(go, wrapper, "github.com/pulumi/pulumi/sdk/v3", infra.PULUMI_VERSION)
            shutil.copyfile(sdk / "python" / "dist" / "pulumi-resource-pulumi-python", dynamic)
            dynamic.chmod(0o755)
    return root


def _program() -> None:
    """The inline program: `__main__.py`, exactly as the Python language host would run it."""
    import runpy

    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


@dataclass
class EngineDeployment:
    """One stack on the real engine. `up` is `pulumi up`, `destroy` is `pulumi destroy`."""

    stack: str  # e.g. "e2e-vps"
    operator: infra.SshHost
    cli_root: Path
    workspace_dir: Path
    backend_dir: Path
    ssh_auth_sock: str
    log: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    _stack: Any = None
    _docker: infra.SshDocker | None = None

    tier = "engine"

    # ------------------------------------------------------------ the workspace

    @property
    def env(self) -> dict[str, str]:
        # The CLI first; the provider plugins are where `find_plugin` found them (PATH or the plugin cache).
        path = [str(self.cli_root / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
        return {
            "PULUMI_BACKEND_URL": f"file://{self.backend_dir}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_PYTHON_CMD": sys.executable,  # the dynamic provider plugin's Python (has pulumi, dill)
            "PYTHONPATH": str(ROOT),  # it unpickles components.host_files
            "SSH_AUTH_SOCK": self.ssh_auth_sock,  # the operator's key, for docker's ssh and the file writes
            "PATH": os.pathsep.join(path),
        }

    def workspace_stack(self) -> Any:
        if self._stack is None:
            from pulumi import automation as auto

            prepare_workspace(self.workspace_dir)
            self._stack = auto.create_or_select_stack(
                stack_name=self.stack,
                project_name=PROJECT,
                program=_program,
                opts=auto.LocalWorkspaceOptions(
                    work_dir=str(self.workspace_dir),
                    pulumi_command=auto.PulumiCommand(str(self.cli_root), skip_version_check=True),
                    env_vars=self.env,
                ),
            )
        return self._stack

    def set_config(self, overrides: dict[str, Any], secrets: dict[str, str]) -> None:
        """`pulumi config set` for every value (objects as JSON, which the program reads with get_object)."""
        from pulumi import automation as auto

        values = {
            key: auto.ConfigValue(value if isinstance(value, str) else json.dumps(value))
            for key, value in overrides.items()
        }
        for key, value in secrets.items():
            full = key if ":" in key else f"{PROJECT}:{key}"
            values[full] = auto.ConfigValue(value, secret=True)
        self.workspace_stack().set_all_config(values)

    # ------------------------------------------------------------ operations

    def _run(self, what: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        started = time.monotonic()
        lines: list[str] = []
        try:
            result = operation(on_output=lines.append, color="never", **kwargs)
        except Exception as error:
            tail = "\n".join(lines[-40:])
            raise infra.E2EError(f"pulumi {what} --stack {self.stack} failed: {error}\n{tail}") from None
        self.log.append(f"{what} ({time.monotonic() - started:.0f}s)")
        return result

    def up(self, overrides: dict[str, Any], secrets: dict[str, str], **kwargs: Any) -> Any:
        self.set_config(overrides, secrets)
        result = self._run("up", self.workspace_stack().up, **kwargs)
        self.outputs = {k: v.value for k, v in result.outputs.items()}
        self._use_docker_provider()
        return result

    def preview(self, overrides: dict[str, Any], secrets: dict[str, str], **kwargs: Any) -> Any:
        """`pulumi preview` of the stack with these config values (they stay set, as after `config set`)."""
        self.set_config(overrides, secrets)
        return self._run("preview", self.workspace_stack().preview, **kwargs)

    def refresh(self, **kwargs: Any) -> Any:
        return self._run("refresh", self.workspace_stack().refresh, **kwargs)

    def preview_refresh(self, **kwargs: Any) -> Any:
        return self._run("refresh --preview-only", self.workspace_stack().preview_refresh, **kwargs)

    @property
    def declared_containers(self) -> list[dict]:
        """The container inputs in the engine's state (what `pulumi up` declared)."""
        return [r["inputs"] for r in self.resources() if r["type"] == "docker:index/container:Container"]

    def state_at_rest(self) -> str:
        """The state as stored (secrets as ciphertext): the backend's own file, read back as text.

        Not `stack.export_stack()`: the Automation API exports with `--show-secrets`.
        """
        path = self.backend_dir / ".pulumi" / "stacks" / PROJECT / f"{self.stack}.json"
        if not path.is_file():
            raise infra.E2EError(f"no state file {path}: has `pulumi up --stack {self.stack}` run?")
        return json.dumps(json.loads(path.read_text()).get("checkpoint", {}).get("latest", {}))

    def resources(self) -> list[dict]:
        return json.loads(self.state_at_rest()).get("resources", [])

    def urn(self, type_suffix: str, name: str) -> str:
        for resource in self.resources():
            if resource["type"].endswith(type_suffix) and resource["urn"].endswith(f"::{name}"):
                return resource["urn"]
        raise infra.E2EError(f"no {type_suffix} named {name} in the state of {self.stack}")

    def destroy(self) -> None:
        if self._stack is None:
            return
        try:
            self._run("destroy", self.workspace_stack().destroy)
        finally:
            if self._docker is not None:
                self._docker.close()
                self._docker = None

    # ------------------------------------------------------------ the docker door

    def _use_docker_provider(self) -> None:
        """docker CLI through the provider config the engine used (host URL and sshOpts from state)."""
        if self._docker is not None:
            return
        for resource in self.resources():
            if resource["type"] == "pulumi:providers:docker":
                self._docker = infra.SshDocker.for_provider(self.operator, resource["inputs"])
                return
        raise infra.E2EError(f"no docker provider in the state of {self.stack}")

    @property
    def docker_env(self) -> dict[str, str]:
        self._use_docker_provider()
        assert self._docker is not None
        return self._docker.env

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> Any:
        self._use_docker_provider()
        assert self._docker is not None
        return self._docker.run(*args, check=check, timeout=timeout)


def prepare_workspace(workspace: Path) -> None:
    """The repository's Pulumi.yaml, venv and program, and COPIES of the e2e stack files (config set writes)."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in ("Pulumi.yaml", "venv", "components", "__main__.py", "requirements.txt"):
        link = workspace / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    for stack_file in ROOT.glob("Pulumi.e2e-*.yaml"):
        target = workspace / stack_file.name
        if not target.exists():
            shutil.copyfile(stack_file, target)
