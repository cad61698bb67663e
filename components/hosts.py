"""How the operator's machine reaches a host: one `ssh` command line for every resource.

The Docker provider runs the local `ssh` binary (`ssh ... docker system dial-stdio`)
with `ssh_options`; the file resources (`components/host_files.py`) run the same
binary with the same options. So one SSH setup serves both: the operator's key
comes from ssh-agent or from `host.ssh.options` (e.g. `["-i", "~/.ssh/homelab"]`),
and the host key is pinned from stack config.
"""

from __future__ import annotations

from components.config import Host


def known_hosts_entry(address: str, port: int, host_key: str) -> str:
    """The known_hosts line ssh looks up for `address:port`: '[address]:port' on a port other than 22."""
    pattern = address if port == 22 else f"[{address}]:{port}"
    return f"{pattern} {host_key}"


def known_hosts_line(host: Host) -> str:
    """The known_hosts entry of the host's pinned key."""
    return known_hosts_entry(host.ssh.address, host.ssh.port, host.ssh.host_key)


def docker_host_url(host: Host) -> str:
    return f"ssh://{host.ssh.user}@{host.ssh.address}:{host.ssh.port}"


def ssh_options(host: Host) -> list[str]:
    """ssh options for every connection to the host: accept exactly the pinned host key, never prompt.

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


def ssh_target(host: Host) -> str:
    """`user@address:port`: which host a file resource lives on (a change replaces it)."""
    return f"{host.ssh.user}@{host.ssh.address}:{host.ssh.port}"


def ssh_command(host: Host) -> list[str]:
    """The argv that runs a command on the host: `ssh <options> -p <port> user@address` (then `-- command`)."""
    return ["ssh", *ssh_options(host), "-p", str(host.ssh.port), f"{host.ssh.user}@{host.ssh.address}"]
