"""Files and directories on a host, as Pulumi resources that `pulumi refresh` can read back.

Two Python dynamic providers (their plugin ships with Pulumi itself), both reaching
the host through the local `ssh` binary with the same options as the Docker
provider (`components/hosts.py`), so one SSH setup (ssh-agent or ssh config)
serves every resource:

- `RemoteFile`: a 0600 file, written atomically (temp file in the same dir, then
  rename), content on stdin and never in a command line. `read` reports the
  file's digest and mode, so a file deleted or edited on the host shows as drift
  on refresh and the next `pulumi up` writes it again. A replacement deletes
  the old file before writing the new one: replacing with create-before-delete
  would delete the file it had just written (same path).
- `OwnedDirectory`: a directory made and chowned by a one-shot `docker run` on
  the host (no root over SSH); `read` reports its owner and mode. Destroy keeps
  it: it holds data.

pulumi-command's `Command` cannot do this: it has no read, so refresh never sees
a file that changed on the host (docs/upstream-behaviour.md#command-has-no-read).
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

FILE_MODE = "600"
SSH_TIMEOUT_SECONDS = 120


class RemoteError(Exception):
    """A command on the host failed; the message says which and what the host answered."""


def content_sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def write_file_command(path: str) -> str:
    """Write stdin to `path` (mode 0600) atomically, making its directory (0700) if needed."""
    directory, filename = path.rsplit("/", 1)
    tmp_pattern = shlex.quote(f"{directory}/.{filename}.XXXXXX")
    return (
        f"set -e; umask 077; mkdir -p {shlex.quote(directory)}; "
        f"tmp=$(mktemp {tmp_pattern}); trap 'rm -f \"$tmp\"' EXIT; "
        f'cat > "$tmp"; chmod {FILE_MODE} "$tmp"; mv -f "$tmp" {shlex.quote(path)}; trap - EXIT'
    )


def delete_file_command(path: str) -> str:
    # The directory goes too once empty; anything else in it is left alone.
    directory = path.rsplit("/", 1)[0]
    return f"rm -f {shlex.quote(path)}; rmdir {shlex.quote(directory)} 2>/dev/null || true"


#: Prints 'missing', or the file's sha256 and its mode on two lines. `sha256sum` and `stat -c`
#: are in GNU coreutils and busybox alike.
def read_file_command(path: str) -> str:
    quoted = shlex.quote(path)
    return (
        f"if [ -f {quoted} ]; then sha256sum < {quoted} | cut -d' ' -f1 && stat -c %a {quoted}; else echo missing; fi"
    )


def read_directory_command(path: str) -> str:
    quoted = shlex.quote(path)
    return f"if [ -d {quoted} ]; then stat -c '%u %a' {quoted}; else echo missing; fi"


def own_directory_command(path: str, image: str, uid: int, mode: str) -> str:
    """Make `path` belong to `uid` with `mode`, through Docker (which the SSH user can drive) instead of root."""
    fix = f"chown {uid}:{uid} /data && chmod {mode} /data"
    return (
        "docker run --rm --user 0:0 --network none --entrypoint /bin/sh "
        f"-v {shlex.quote(path)}:/data {shlex.quote(image)} -c {shlex.quote(fix)}"
    )


def run_on_host(ssh: Sequence[str], command: str, what: str, stdin: str | None = None) -> str:
    """Run `command` through `ssh` (the full argv up to and including user@host); its stdout, or RemoteError."""
    try:
        result = subprocess.run(
            [*ssh, "--", command],
            input=(stdin or "").encode(),
            capture_output=True,
            timeout=SSH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{what}: no answer over SSH within {SSH_TIMEOUT_SECONDS}s ({ssh[-1]})") from None
    if result.returncode != 0:
        # stderr holds ssh's or the shell's message, never file content (content only goes to stdin).
        raise RemoteError(
            f"{what} failed on {ssh[-1]} (exit {result.returncode}): {result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode(errors="replace")


def _changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    return [key for key in keys if olds.get(key) != news.get(key)]


class _OnHostProvider(ResourceProvider):
    """What both providers share: the id is `<target>:<path>`; create and update both apply the inputs."""

    serialize_as_secret_always = False  # it captures nothing secret: secrets come in as inputs

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['target']}:{props['path']}", outs=self._apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._apply(news))

    @staticmethod
    def _apply(props: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class RemoteFileProvider(_OnHostProvider):
    """CRUD + read for one file on a host. Inputs: ssh (argv), target (user@host:port), path, content."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, ["target", "path"])
        content = news.get("content")
        stale = (
            not isinstance(content, str)  # unknown during preview
            or olds.get("sha256") != content_sha256(content)
            or olds.get("mode") != FILE_MODE
        )
        changes = bool(replaces) or stale or olds.get("ssh") != news.get("ssh")
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        answer = run_on_host(props["ssh"], read_file_command(props["path"]), f"reading {props['path']}").split()
        if answer == ["missing"]:
            return ReadResult(id_="", outs={})  # gone: refresh drops it, the next `up` writes it again
        sha256, mode = [*answer, "", ""][:2]
        return ReadResult(id_=id_, outs={**props, "sha256": sha256, "mode": mode})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        run_on_host(props["ssh"], delete_file_command(props["path"]), f"deleting {props['path']}")

    @staticmethod
    def _apply(props: Mapping[str, Any]) -> dict[str, Any]:
        run_on_host(props["ssh"], write_file_command(props["path"]), f"writing {props['path']}", stdin=props["content"])
        # No content in the outputs: the digest is enough to see drift.
        return {
            "ssh": props["ssh"],
            "target": props["target"],
            "path": props["path"],
            "sha256": content_sha256(props["content"]),
            "mode": FILE_MODE,
        }


@dataclass(frozen=True)
class RemotePath:
    """Where a resource lives: `ssh`, the argv that reaches the host (up to and including user@host); `target`,
    the host as `user@host:port` (another target or path replaces the resource); `path` on that host."""

    ssh: Sequence[str]
    target: str
    path: str


class _OnHost(Resource):
    """What both resources share: their inputs begin with where they live (`ssh`, `target`, `path`)."""

    path: pulumi.Output[str]

    def __init__(
        self,
        provider: _OnHostProvider,
        name: str,
        at: RemotePath,
        inputs: Mapping[str, Any],
        opts: pulumi.ResourceOptions | None,
    ):
        props = {"ssh": list(at.ssh), "target": at.target, "path": at.path, **inputs}
        super().__init__(provider, name, props, opts)


class RemoteFile(_OnHost, module="homelab", name="RemoteFile"):
    """A 0600 file on a host. `secret=True` keeps its digest secret in state as well as its content."""

    def __init__(
        self,
        name: str,
        *,
        at: RemotePath,
        content: pulumi.Input[str],
        secret: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        options = pulumi.ResourceOptions(
            delete_before_replace=True,
            additional_secret_outputs=["content", "sha256"] if secret else [],
        )
        inputs = {"content": pulumi.Output.secret(content) if secret else content}
        super().__init__(RemoteFileProvider(), name, at, inputs, pulumi.ResourceOptions.merge(opts, options))


class OwnedDirectoryProvider(_OnHostProvider):
    """A directory owned by `uid` with `mode`. Inputs: ssh, target, path, uid, mode, image. Delete keeps it."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, ["target", "path"])
        drifted = olds.get("owner") != news.get("uid") or olds.get("actualMode") != news.get("mode")
        changes = bool(replaces) or drifted or olds.get("ssh") != news.get("ssh")
        return DiffResult(changes=changes, replaces=replaces)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        answer = run_on_host(props["ssh"], read_directory_command(props["path"]), f"reading {props['path']}")
        if answer.split() == ["missing"]:
            return ReadResult(id_="", outs={})
        owner, mode = [*answer.split(), "", ""][:2]
        owner_id = int(owner) if owner.isdigit() else owner
        return ReadResult(id_=id_, outs={**props, "owner": owner_id, "actualMode": mode})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing: the directory holds data (OpenList's database) that outlives the stack."""

    @staticmethod
    def _apply(props: Mapping[str, Any]) -> dict[str, Any]:
        command = own_directory_command(props["path"], props["image"], int(props["uid"]), props["mode"])
        run_on_host(props["ssh"], command, f"owning {props['path']}")
        # `owner`/`actualMode` mirror what read reports, so diff compares like with like.
        return {**props, "owner": int(props["uid"]), "actualMode": props["mode"]}


class OwnedDirectory(_OnHost, module="homelab", name="OwnedDirectory"):
    """A directory on a host owned by `uid` with `mode`, made through a one-shot `docker run` of `image`."""

    def __init__(
        self,
        name: str,
        *,
        at: RemotePath,
        uid: int,
        mode: str,
        image: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(OwnedDirectoryProvider(), name, at, {"uid": uid, "mode": mode, "image": image}, opts)
