"""A real SSH host (sshd on loopback), the operator's ssh-agent, and docker over ssh."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.hosts import known_hosts_entry
from testbed.infra.gate import E2EError
from testbed.infra.pins import NAME_PREFIX, OPENLIST_UID, SSH_USER
from testbed.infra.process import free_port, run, tail_file, timed, wait_until

# ---------------------------------------------------------------- a real SSH host


@dataclass(frozen=True)
class SshHost:
    """A host reachable over real SSH, as the program's `connection` and pulumi-docker need it.

    `host_public_key` is `ssh-ed25519 AAAA...`; `known_hosts_line` is the pinned
    `[127.0.0.1]:PORT ssh-ed25519 AAAA...` to put in a known_hosts file.
    """

    address: str
    port: int
    user: str
    private_key_path: Path
    private_key_pem: str
    host_public_key: str
    known_hosts_line: str
    #: `address:port` where containers reach this sshd (Docker's bridge gateway), and the private key of a
    #: second, SFTP-only login: OpenList's SFTP driver uses both as a drive that caches like 189 Cloud's.
    sftp_endpoint: str = ""
    sftp_private_key_pem: str = ""

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST for the docker CLI and pulumi-docker's provider `host`."""
        return f"ssh://{self.user}@{self.address}:{self.port}"

    def write_known_hosts(self, path: Path) -> Path:
        """Write the pinned line to `path` (for `pinned_ssh_opts(path)`, e.g. pulumi-docker's `ssh_opts`)."""
        path.write_text(self.known_hosts_line + "\n")
        return path


def _free_id(start: int = 2000) -> int:
    """The first id >= start that is neither a uid nor a gid yet."""
    used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    candidate = start
    while candidate in used:
        candidate += 1
    return candidate


def ensure_ssh_user(user: str = SSH_USER) -> None:
    """Create `user` (shell /bin/sh, home dir) if missing and put it in the docker socket's group.

    Its uid and gid are kept away from 1001, OpenList's uid: files the SSH user makes on the
    host must not look as if OpenList owned them, or a test could pass although the program
    forgot to chown OpenList's data dir. The password field is `*` (no password can match)
    rather than useradd's `!`: sshd without PAM treats `!` as a locked account and refuses
    even key logins.
    """
    sock = Path("/var/run/docker.sock")
    group = "docker"
    if sock.exists():
        gid = sock.stat().st_gid
        if gid == 0:
            raise E2EError(f"{sock} belongs to group root: the SSH user could not use docker (start dockerd -G docker)")
        group = grp.getgrgid(gid).gr_name
    else:
        try:
            grp.getgrnam(group)
        except KeyError:
            run(["groupadd", "--system", group])
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        new_id = _free_id()
        run(["groupadd", "--gid", str(new_id), user])
        ids = ["--uid", str(new_id), "--gid", str(new_id)]
        run(["useradd", "--create-home", "--shell", "/bin/sh", *ids, "--groups", group, "--password", "*", user])
        return
    if OPENLIST_UID in (entry.pw_uid, entry.pw_gid):  # made by an older version of this suite
        new_id = _free_id()
        run(["groupmod", "--gid", str(new_id), grp.getgrgid(entry.pw_gid).gr_name])
        run(["usermod", "--uid", str(new_id), "--gid", str(new_id), user])
        if Path(entry.pw_dir).is_dir():
            run(["chown", "-R", f"{new_id}:{new_id}", entry.pw_dir])
    run(["usermod", "--append", "--groups", group, "--shell", "/bin/sh", user])
    shadow = Path("/etc/shadow")
    if shadow.is_file():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user and fields[1].startswith("!"):
                run(["usermod", "--password", "*", user])


def _keygen(path: Path, comment: str) -> None:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def public_key(pub_path: Path) -> str:
    """`type base64` without the comment."""
    kind, blob = pub_path.read_text().split()[:2]
    return f"{kind} {blob}"


#: the program's own rule for known_hosts lines (components/hosts.py)
known_hosts_line = known_hosts_entry


SSHD_CONFIG = """\
# sshd for the homelab-backup e2e suite: loopback (and Docker's bridge, for the SFTP drive), key auth for one user.
Port {port}
ListenAddress 127.0.0.1
{extra_listen}HostKey {workdir}/ssh_host_ed25519_key
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
AllowUsers {user}
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The key files live in a temp dir, not under the user's home: skip the home-dir ownership checks.
StrictModes no
PermitUserEnvironment no
# The program reaches OpenList's admin API through `ssh -L` (OpenSSH's default allows it).
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
# pulumi-command copies files over SFTP.
Subsystem sftp internal-sftp
"""


class SshServer:
    """A session's sshd: started by `start()`, stopped and its keys deleted by `stop()`."""

    def __init__(self, user: str = SSH_USER) -> None:
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}sshd-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.host: SshHost | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def start(self, timeout: float = 20, container_address: str = "") -> SshHost:
        """Generate keys and config, start `sshd -D -e -f` on a free port, wait for its banner.

        With `container_address` (Docker's bridge gateway) it also listens there, and a second key may log in
        from a container for SFTP only (`restrict,command="internal-sftp"`: no shell, no forwarding).
        """
        with timed("sshd"):
            ensure_ssh_user(self.user)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
            # The SSH user reads authorized_keys (sshd drops to it for that): the dir must be traversable.
            self.workdir.chmod(0o755)
            _keygen(self.workdir / "ssh_host_ed25519_key", "hle2e-host")
            client_key = self.workdir / "client_ed25519"
            _keygen(client_key, "hle2e-client")
            authorized = self.workdir / "authorized_keys"
            lines = [(self.workdir / "client_ed25519.pub").read_text()]
            sftp_key = self.workdir / "sftp_ed25519"
            if container_address:
                _keygen(sftp_key, "hle2e-sftp-drive")
                lines.append('restrict,command="internal-sftp" ' + (self.workdir / "sftp_ed25519.pub").read_text())
            authorized.write_text("".join(lines))
            authorized.chmod(0o644)
            port = free_port()
            config = self.workdir / "sshd_config"
            extra_listen = f"ListenAddress {container_address}\n" if container_address else ""
            config.write_text(
                SSHD_CONFIG.format(port=port, workdir=self.workdir, user=self.user, extra_listen=extra_listen)
            )
            sshd = shutil.which("sshd") or "/usr/sbin/sshd"  # sshd re-execs itself: absolute path
            run([sshd, "-t", "-f", str(config)])
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self._wait_banner(port, timeout)
            host_key = public_key(self.workdir / "ssh_host_ed25519_key.pub")
            self.host = SshHost(
                address="127.0.0.1",
                port=port,
                user=self.user,
                private_key_path=client_key,
                private_key_pem=client_key.read_text(),
                host_public_key=host_key,
                known_hosts_line=known_hosts_line("127.0.0.1", port, host_key),
                sftp_endpoint=f"{container_address}:{port}" if container_address else "",
                sftp_private_key_pem=sftp_key.read_text() if container_address else "",
            )
            return self.host

    def _wait_banner(self, port: int, timeout: float) -> None:
        def banner() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise E2EError(f"sshd exited with {self.process.returncode}; log:\n{tail_file(self.log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    return s.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False

        try:
            wait_until(f"sshd on 127.0.0.1:{port}", banner, timeout, interval=0.2)
        except E2EError as e:
            raise E2EError(f"{e}; sshd log:\n{tail_file(self.log_path)}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop_process(self) -> None:
        """Stop sshd but keep the keys (a test can prove that docker over ssh then fails)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop sshd and delete its keys, config and log."""
        self.stop_process()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SshAgent:
    """A session's ssh-agent holding the operator's key, as a user's would: `SSH_AUTH_SOCK` for the program's
    ssh (the Docker provider and the file resources run the local `ssh`, which asks the agent)."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}agent-"))
        self.socket = self.workdir / "agent.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, key: Path) -> str:
        """Start the agent, add `key`, and return the socket path."""
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until("ssh-agent's socket", self.socket.exists, 10, interval=0.1)
        run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(self.socket)})
        return str(self.socket)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def operator_agent(host: SshHost) -> Iterator[str]:
    """An ssh-agent with the operator's key, exported as SSH_AUTH_SOCK for this process while it lasts."""
    agent = SshAgent()
    previous = os.environ.get("SSH_AUTH_SOCK")
    try:
        os.environ["SSH_AUTH_SOCK"] = agent.start(host.private_key_path)
        yield os.environ["SSH_AUTH_SOCK"]
    finally:
        if previous is None:
            os.environ.pop("SSH_AUTH_SOCK", None)
        else:
            os.environ["SSH_AUTH_SOCK"] = previous
        agent.stop()


def pinned_ssh_opts(known_hosts_file: Path) -> list[str]:
    """ssh options that trust exactly the host key in `known_hosts_file` and never prompt."""
    return [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=15",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def ssh_run(
    host: SshHost,
    command: str,
    *,
    stdin: bytes | None = None,
    ssh_opts: list[str] | None = None,
    check: bool = True,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """`ssh -i key -p port [opts] user@address -- command`; stdout/stderr come back as text.

    With `ssh_opts=None` the host key is pinned (StrictHostKeyChecking=yes against a temp
    known_hosts holding `host.known_hosts_line`); otherwise exactly `ssh_opts` plus `-i` are used.
    """
    with tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}ssh-") as tmp:
        if ssh_opts is None:
            known_hosts = Path(tmp) / "known_hosts"
            known_hosts.write_text(host.known_hosts_line + "\n")
            ssh_opts = pinned_ssh_opts(known_hosts)
        cmd = [
            "ssh", "-i", str(host.private_key_path), "-p", str(host.port), *ssh_opts,
            f"{host.user}@{host.address}", "--", command,
        ]  # fmt: skip
        return run(cmd, input=stdin, check=check, timeout=timeout)


class SshDocker:
    """The real docker CLI over `DOCKER_HOST=ssh://user@127.0.0.1:PORT`, as pulumi-docker connects.

    docker (like pulumi-docker) runs `ssh ... docker system dial-stdio` and has no flag for
    extra ssh options, so a temp dir first on PATH holds an `ssh` wrapper that execs
    `/usr/bin/ssh <ssh_opts...> -i <key> "$@"`. `ssh_opts=None` pins `host.known_hosts_line`.
    Use as a context manager, or call `close()`, to delete the temp dir.
    """

    def __init__(
        self,
        host: SshHost,
        ssh_opts: list[str] | None = None,
        *,
        known_hosts_line: str | None = None,
        docker_host: str | None = None,
    ):
        """`docker_host` overrides `host.docker_host`, e.g. with the program's declared provider `host`."""
        self.host = host
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}sshdocker-")
        tmp = Path(self._tmp.name)
        if ssh_opts is None:
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text((known_hosts_line or host.known_hosts_line) + "\n")
            ssh_opts = pinned_ssh_opts(known_hosts)
        self.ssh_opts = list(ssh_opts)
        bindir = tmp / "bin"
        bindir.mkdir()
        real_ssh = "/usr/bin/ssh" if Path("/usr/bin/ssh").is_file() else (shutil.which("ssh") or "ssh")
        wrapper = bindir / "ssh"
        wrapper.write_text(
            "#!/bin/sh\n"
            "# docker's ssh connection helper has no way to pass ssh options: this adds them.\n"
            f'exec {shlex.join([real_ssh, *self.ssh_opts, "-i", str(host.private_key_path)])} "$@"\n'
        )
        wrapper.chmod(0o755)
        self.bindir = bindir
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        }
        self.env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.env["DOCKER_HOST"] = docker_host or host.docker_host

    def run(
        self,
        *args: str,
        check: bool = True,
        input: bytes | str | None = None,
        timeout: float | None = 600,
    ) -> subprocess.CompletedProcess[str]:
        """`docker <args>` through sshd; same contract as `docker()`."""
        return run(["docker", *args], check=check, input=input, env=self.env, timeout=timeout)

    @classmethod
    def for_provider(cls, host: SshHost, provider_inputs: Mapping[str, Any]) -> SshDocker:
        """The docker CLI as a declared pulumi-docker provider reaches its host: its `host` URL and `sshOpts`
        (JSON text in a provider's config, a list once read back from state)."""
        opts = provider_inputs.get("sshOpts", "[]")
        return cls(host, json.loads(opts) if isinstance(opts, str) else list(opts), docker_host=provider_inputs["host"])

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> SshDocker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- the SFTP drive's login, as a provider changes it

#: how authorized_keys marks the SFTP-only login's key (SshServer.start)
SFTP_KEY_OPTIONS = 'restrict,command="internal-sftp" '


def authorized_keys_file(host: SshHost) -> Path:
    """The sshd's authorized_keys (next to the operator's key; sshd reads it at every login)."""
    return host.private_key_path.parent / "authorized_keys"


def make_sftp_key(directory: Path) -> Path:
    """A new ed25519 key pair in `directory` (`sftp_ed25519`, `.pub`); the private key's path."""
    key = directory / "sftp_ed25519"
    _keygen(key, "hle2e-sftp-drive")
    return key


def replace_sftp_key(host: SshHost, public_key_file: Path) -> None:
    """The SFTP-only login takes the key of `public_key_file` from now on, and no other (the operator's login
    is left as it is)."""
    path = authorized_keys_file(host)
    lines = [line for line in path.read_text().splitlines(keepends=True) if not line.startswith(SFTP_KEY_OPTIONS)]
    path.write_text("".join(lines) + SFTP_KEY_OPTIONS + public_key_file.read_text())


def sftp_list(host: SshHost, key: Path, folder: str) -> subprocess.CompletedProcess[str]:
    """`sftp -b -` with `ls <folder>` as the SFTP login with `key`, at the endpoint containers use; host key
    pinned. Exit 0 when the key logs in."""
    address, _, port = host.sftp_endpoint.rpartition(":")
    with tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}sftp-") as tmp:
        known_hosts = Path(tmp) / "known_hosts"
        known_hosts.write_text(known_hosts_line(address, int(port), host.host_public_key) + "\n")
        command = ["sftp", "-b", "-", "-i", str(key), "-P", port, *pinned_ssh_opts(known_hosts)]
        return run([*command, f"{host.user}@{address}"], input=f"ls {folder}\n".encode(), check=False, timeout=60)
