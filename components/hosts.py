"""How the operator's machine reaches a host: the Docker provider's SSH URL and pulumi-command's connection.

Both pin the host key from stack config. The Docker provider runs the local `ssh`
binary (`ssh ... docker system dial-stdio`), so the pin is handed to it as ssh
options; pulumi-command checks `host_key` itself.
"""

from __future__ import annotations

import pulumi
import pulumi_command as command

from components.config import Host


def known_hosts_line(host: Host) -> str:
    """The known_hosts entry of the pinned key; non-default ports use the '[address]:port' form."""
    ssh = host.ssh
    pattern = ssh.address if ssh.port == 22 else f"[{ssh.address}]:{ssh.port}"
    return f"{pattern} {ssh.host_key}"


def docker_host_url(host: Host) -> str:
    return f"ssh://{host.ssh.user}@{host.ssh.address}:{host.ssh.port}"


def docker_ssh_opts(host: Host) -> list[str]:
    """ssh options for the Docker provider: accept exactly the pinned host key, never prompt.

    KnownHostsCommand (OpenSSH >= 8.5) supplies the pinned entry without writing a
    known_hosts file on the operator's machine; the user's own known_hosts files are
    not consulted, so a stale entry there cannot override the pin.
    """
    return [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"KnownHostsCommand=/bin/echo {known_hosts_line(host)}",
        "-o",
        "BatchMode=yes",
        *host.ssh.options,
    ]


def ssh_connection(host: Host, private_key: pulumi.Output[str] | None) -> command.remote.ConnectionArgs:
    """pulumi-command's connection; without a private key it uses the ssh-agent (SSH_AUTH_SOCK)."""
    return command.remote.ConnectionArgs(
        host=host.ssh.address,
        port=host.ssh.port,
        user=host.ssh.user,
        host_key=host.ssh.host_key,
        private_key=private_key,
        dial_error_limit=3,
        per_dial_timeout=15,
    )
