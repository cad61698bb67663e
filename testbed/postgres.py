"""A real PostgreSQL in a container of the suite's Debian image (`infra.ensure_postgres_image`), for the live-data
tests and the dump benchmark: its start, and SQL through its local socket as the database's own admin runs it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from testbed import infra
from testbed.system import wait_for

#: The server's socket dir inside its container: where psql and pg_isready look by default, as in the official image.
SOCKET_DIR = "/var/run/postgresql"
#: The data dir inside the container (a host dir is mounted there, or none: an empty database).
DATA_DIR = "/var/lib/db"

# The entrypoint: a data dir made on first start (the superuser's password random, made in the container, in a file
# removed after initdb: it is used nowhere), then the server as the postgres user, listening on the network with
# passwords (scram) and locally without.
ENTRYPOINT = f"""set -e
data={DATA_DIR}
mkdir -p "$data" {SOCKET_DIR}
chown postgres:postgres "$data" {SOCKET_DIR}; chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
    (umask 077; od -An -tx1 -N16 /dev/urandom | tr -d ' \\n' > /tmp/pw); chown postgres /tmp/pw
    runuser -u postgres -- initdb -D "$data" -U postgres --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256
    rm -f /tmp/pw
    echo 'host all all 0.0.0.0/0 scram-sha-256' >> "$data/pg_hba.conf"
fi
exec runuser -u postgres -- postgres -D "$data" -k {SOCKET_DIR} -c listen_addresses='*'
"""


def docker(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return infra.run(["docker", *args], check=check, timeout=600, input=stdin)


def psql(container: str, database: str, sql: str, user: str = "postgres") -> str:
    """SQL through the server's local socket (trust), as the database's own admin would run it."""
    return docker(
        "exec", "-i", container, "psql", "-h", SOCKET_DIR, "-U", user, "-d", database,
        "-v", "ON_ERROR_STOP=1", "-Atq", stdin=sql,
    ).stdout  # fmt: skip


def start_database(name: str, image: str, data_dir: Path | None, network: str) -> None:
    """A PostgreSQL container `name` on `network`, its data in `data_dir` (None: an empty one in the container);
    returns once it accepts connections."""
    volume = ["-v", f"{data_dir}:{DATA_DIR}"] if data_dir is not None else []
    docker(
        "run", "-d", "--name", name, "--network", network, "--label", f"{infra.RESOURCE_LABEL}=1",
        *volume,
        "--entrypoint", "sh", image, "-c", ENTRYPOINT,
    )  # fmt: skip

    def ready() -> bool:
        return docker("exec", name, "pg_isready", "-h", SOCKET_DIR, "-U", "postgres", check=False).returncode == 0

    wait_for(f"PostgreSQL in {name}", ready, 60, interval=1)
