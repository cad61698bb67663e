"""Progress lines, timing, running commands and waiting for things."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shlex
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.infra.gate import E2EError
from testbed.infra.pins import NAME_PREFIX

# ---------------------------------------------------------------- progress and timing


def _default_progress_writer(line: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()


_progress_writer: Callable[[str], None] = _default_progress_writer


def set_progress_writer(writer: Callable[[str], None]) -> None:
    """Where progress lines go; conftest.py installs one that gets past pytest's output capture."""
    global _progress_writer
    _progress_writer = writer


def progress(message: str) -> None:
    """One `[e2e setup] ...` line on the terminal, even while pytest captures output."""
    _progress_writer(f"[e2e setup] {message}")


def say(message: str) -> None:
    """One `[e2e] ...` line about the system under test (which tier, how long an `up` took), on the terminal."""
    _progress_writer(f"[e2e] {message}")


@contextlib.contextmanager
def timed(step: str, *, announce: bool = False) -> Iterator[None]:
    """Report how long `step` took (`[e2e setup] <step>: <seconds>s`); `announce` also reports its start."""
    if announce:
        progress(f"{step}: started")
    started = time.monotonic()
    try:
        yield
    except BaseException:
        progress(f"{step}: FAILED after {time.monotonic() - started:.1f}s")
        raise
    progress(f"{step}: {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- running commands


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError its message shows stderr, which is usually the answer."""

    def __str__(self) -> str:
        def tail(text: str | bytes | None) -> str:
            if not text:
                return ""
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            return text[-4000:].strip()

        cmd = self.cmd if isinstance(self.cmd, str) else shlex.join(str(c) for c in self.cmd)
        parts = [f"command exited {self.returncode}: {cmd}"]
        if tail(self.stderr):
            parts.append(f"stderr:\n{tail(self.stderr)}")
        if tail(self.stdout):
            parts.append(f"stdout:\n{tail(self.stdout)}")
        return "\n".join(parts)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text; `check` raises `CommandError` showing stderr.

    `input` may be bytes (sent as is) so that secrets and binary payloads need no encoding games.
    """
    args = [os.fspath(c) for c in cmd]
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        args,
        input=data,
        capture_output=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    result = subprocess.CompletedProcess(
        args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(result.returncode, args, result.stdout, result.stderr)
    return result


def run_in_terminal(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    answers: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command on a pseudo-terminal, as a user at a shell would, typing each answer after its prompt.

    For programs that read a password from the terminal only (Kopia's `connect` refuses a pipe). An answer is
    typed once its prompt has appeared and the terminal no longer echoes (the program turned echo off to read
    it), so it never shows in the output. stdout and stderr come back together, as on a screen, in `stdout`.
    """
    args = [os.fspath(c) for c in cmd]
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            args, stdin=follower, stdout=follower, stderr=follower, env=dict(env), start_new_session=True
        )
    finally:
        os.close(follower)
    screen, pending = b"", dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every process holding the terminal has ended
                    break
                if not chunk:
                    break
                screen += chunk
            for prompt in [p for p in pending if p.encode() in screen]:
                if not termios.tcgetattr(leader)[3] & termios.ECHO:
                    os.write(leader, pending.pop(prompt).encode() + b"\n")
            if time.monotonic() > deadline:
                proc.kill()
                raise E2EError(f"{shlex.join(args)} did not end within {timeout:.0f}s; the screen:\n{screen[-4000:]!r}")
        returncode = proc.wait(timeout=30)
    finally:
        os.close(leader)
    text = screen.decode(errors="replace").replace("\r\n", "\n")
    return subprocess.CompletedProcess(args, returncode, text, "")


def docker(
    *args: str, check: bool = True, input: bytes | str | None = None, timeout: float | None = 600
) -> subprocess.CompletedProcess[str]:
    """The local docker CLI against the local engine (the e2e "remote" hosts share this engine)."""
    return run(["docker", *args], check=check, input=input, timeout=timeout)


def containers_mounting(path: Path) -> list[str]:
    """The names of the local engine's containers (running or not) that mount `path` or anything under it."""
    ids = docker("ps", "-aq").stdout.split()
    if not ids:
        return []
    inspected = docker("inspect", "--format", "{{.Name}}{{range .Mounts}} {{.Source}}{{end}}", *ids, check=False)
    names = []
    for line in inspected.stdout.splitlines():
        name, *sources = line.split()
        if any(Path(source) == path or Path(source).is_relative_to(path) for source in sources):
            names.append(name.lstrip("/"))
    return names


#: Anything that runs the docker CLI: `docker` above, or `SshDocker(...).run` to go through sshd.
DockerRunner = Callable[..., subprocess.CompletedProcess[str]]


def tail_file(path: Path, lines: int = 40) -> str:
    """The end of a log file for an error message (empty when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_name(label: str) -> str:
    """`hle2e-<label>-<random>`: unique per call, so parallel or leftover runs never collide."""
    return f"{NAME_PREFIX}{label}-{secrets.token_hex(4)}"


def wait_until(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `probe` until it returns something truthy, and return that; E2EError naming `what` after
    `timeout` seconds. Exceptions of the `retry_on` types count as "not yet"; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if value := probe():
                return value
        except retry_on as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise E2EError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
