"""Database dumps: what the host runs its databases in (asked before any resource), and one container per dump.

A dump's container runs the database's own client (`pg_dump` from the database container's image; `sqlite3`
from a declared image) on the schedule of the source's snapshots, and writes into the source's `.dumps`
directory; `components/templates/dump-loop.sh` says exactly what it does. Thin wiring only: the script, the
credentials file and the health rule are rendered in `components/render.py`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components import render
from components.config import (
    DUMPS_DIR,
    PROJECT,
    BackupSource,
    Dump,
    MinioDump,
    PostgresDump,
    Problem,
    StackConfig,
)
from components.host_files import RemoteFile, RemotePath, run_on_host


@dataclass(frozen=True)
class RunningContainer:
    """What the program needs of a database container on the host: the image it runs, the networks it is on."""

    image: str
    networks: tuple[str, ...]


#: One line per container: its image as it was named at create (`.Config.Image`), then its networks; or '-'.
_INSPECT = (
    "docker inspect --type container --format"
    " '{{.Config.Image}}{{range $name, $_ := .NetworkSettings.Networks}} {{$name}}{{end}}'"
)


def inspect_containers(ssh: Sequence[str], names: Sequence[str]) -> dict[str, RunningContainer | None]:
    """The named containers on the host (None: no such container), asked over the stack's pinned SSH with
    `docker inspect`: a read, so a preview may do it before any resource. RemoteError when SSH fails."""
    if not names:
        return {}
    # One line per name, whatever docker prints: for a missing container it prints an empty line (and exits 1).
    script = "; ".join(
        f'if found=$({_INSPECT} {shlex.quote(name)} 2>/dev/null); then echo "$found"; else echo -; fi' for name in names
    )
    lines = run_on_host(ssh, script, "looking up the database containers").splitlines()
    found: dict[str, RunningContainer | None] = {}
    for name, line in zip(names, [*lines, *["-"] * len(names)], strict=False):
        image, *networks = line.split() or ["-"]
        found[name] = None if image == "-" else RunningContainer(image, tuple(sorted(networks)))
    return found


def served_part(dump: Dump) -> PostgresDump | MinioDump | None:
    """The part of a dump that reaches a server's container over its network (PostgreSQL, MinIO), or None."""
    return dump.postgres or dump.minio


def inspected_containers(config: StackConfig) -> list[str]:
    """The containers the stack's PostgreSQL and MinIO dumps read from and its pauses freeze, each once."""
    names = [served.container for s in config.kopia.sources for d in s.dumps if (served := served_part(d)) is not None]
    names += [name for s in config.kopia.sources if s.pause is not None for name in s.pause.containers]
    return list(dict.fromkeys(names))


def dump_network(dump: Dump, running: RunningContainer) -> str | None:
    """The network a PostgreSQL or MinIO dump joins: the declared one, or the server container's only one."""
    served = served_part(dump)
    assert served is not None
    if served.network is not None:
        return served.network
    return running.networks[0] if len(running.networks) == 1 else None


def container_problems(config: StackConfig, running: Mapping[str, RunningContainer | None]) -> list[Problem]:
    """A PostgreSQL or MinIO dump whose container is not on the host, or whose network cannot be told, and a
    paused container that is not on the host: refused before any resource, naming the key, like any other bad
    config."""

    def not_on_host(key: str, name: str, start: str) -> Problem:
        return (
            key,
            f"no container {name!r} on host {config.host.name} (docker inspect finds none): start {start}, or"
            " correct the name",
        )

    problems: list[Problem] = []
    for i, source in enumerate(config.kopia.sources):
        for k, name in enumerate(source.pause.containers if source.pause else []):
            if running.get(name) is None:
                problems.append(
                    not_on_host(f"{PROJECT}:kopia.sources[{i}].pause.containers[{k}]", name, "the app first")
                )
        for j, dump in enumerate(source.dumps):
            served = served_part(dump)
            if served is None:
                continue
            key = f"{PROJECT}:kopia.sources[{i}].dumps[{j}].{dump.kind}"
            name, found = served.container, running.get(served.container)
            if found is None:
                start = "the database first (its image is what the dump runs)" if dump.postgres else "MinIO first"
                problems.append(not_on_host(f"{key}.container", name, start))
            elif served.network is not None and served.network not in found.networks:
                problems.append(
                    (
                        f"{key}.network",
                        f"container {name!r} is not on network {served.network!r} (it is on:"
                        f" {', '.join(found.networks) or 'none'})",
                    )
                )
            elif dump_network(dump, found) is None:
                problems.append(
                    (
                        f"{key}.network",
                        f"is required: container {name!r} is on {len(found.networks)} networks"
                        f" ({', '.join(found.networks) or 'none'}); name the one the dump reaches it on",
                    )
                )
    return problems


def dump_image(dump: Dump, running: RunningContainer | None) -> str:
    """The image a dump runs: PostgreSQL, the database container's own (its pg_dump matches its server); SQLite
    and MinIO, the declared one."""
    if dump.postgres is not None:
        assert running is not None, "the database container is checked before any resource (container_problems)"
        return running.image
    declared = dump.minio or dump.sqlite
    assert declared is not None  # the model requires one kind
    return declared.image


def dumped_from(dump: Dump) -> str:
    """What a dump reads, for its container's label: the database container, the SQLite file, MinIO's buckets."""
    if dump.postgres is not None:
        return dump.postgres.container
    if dump.minio is not None:
        buckets = ", ".join(dump.minio.buckets) if dump.minio.buckets else "every bucket"
        return f"{render.minio_url(dump.minio)} ({buckets})"
    assert dump.sqlite is not None  # the model requires one kind
    return dump.sqlite.file


@dataclass(frozen=True)
class DatabaseDumpArgs:
    """One dump of one source, and where it runs."""

    source: BackupSource
    dump: Dump
    interval_seconds: int  # schedule.intervalSeconds: the dumps run before each snapshot
    container_name: str  # dump_container_name(...)
    image: str  # the database container's image (PostgreSQL) or the declared sqlite3 or mc image
    network: str | None  # PostgreSQL, MinIO: the network the server is reached on; SQLite: none at all
    config_dir: str  # host.configDir: the credentials file goes to <configDir>/dumps/<name>/
    timezone: str
    ssh: list[str]
    ssh_target: str
    password: pulumi.Output[str] | None = None  # PostgreSQL: the role's password (a secret Output)
    minio_keys: tuple[pulumi.Output[str], pulumi.Output[str]] | None = None  # MinIO: access and secret key (secret)


class DatabaseDump(pulumi.ComponentResource):
    """A container that dumps one database into its source's `.dumps` directory before every snapshot; for
    PostgreSQL and MinIO, the 0600 credentials file it reads."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseDumpArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:DatabaseDump", name, None, opts)
        dump, source = args.dump, args.source
        child = pulumi.ResourceOptions(parent=self)
        volumes = [
            docker.ContainerVolumeArgs(
                host_path=f"{source.host_path}/{DUMPS_DIR}", container_path=render.DUMP_OUTPUT_DIR
            )
        ]
        # PostgreSQL and MinIO read their credentials from a 0600 file, mounted read-only into this container
        # alone: (the resource's name suffix, the file's name, its content).
        credentials: tuple[str, str, pulumi.Output[str]] | None = None
        if dump.postgres is not None:
            assert args.password is not None, "a PostgreSQL dump needs its password"
            credentials = ("pgpass", render.PGPASS_FILE, args.password.apply(render.render_pgpass))
        elif dump.minio is not None:
            assert args.minio_keys is not None, "a MinIO dump needs its keys"
            minio = dump.minio
            mc_config = pulumi.Output.all(*args.minio_keys).apply(lambda keys: render.render_mc_config(minio, *keys))
            credentials = ("mc-config", render.MC_CONFIG_FILE, mc_config)
        else:
            assert dump.sqlite is not None
            volumes.append(
                docker.ContainerVolumeArgs(
                    host_path=dump.sqlite.file.rsplit("/", 1)[0], container_path=render.DUMP_SQLITE_DIR
                )
            )
        depends_on: list[pulumi.Resource] = []
        if credentials is not None:
            suffix, file_name, content = credentials
            secrets_dir = render.dump_secrets_dir(args.config_dir, dump)
            depends_on.append(
                RemoteFile(
                    f"{name}-{suffix}",
                    at=RemotePath(args.ssh, args.ssh_target, f"{secrets_dir}/{file_name}"),
                    content=pulumi.Output.secret(content),
                    secret=True,
                    opts=child,
                )
            )
            volumes.append(
                docker.ContainerVolumeArgs(
                    host_path=secrets_dir, container_path=render.DUMP_SECRETS_DIR, read_only=True
                )
            )
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        what = dumped_from(dump)
        labels = {
            "homelab-backup.dump": dump.kind,
            "homelab-backup.dump-of": what,
            "homelab-backup.dump-file": f"{source.host_path}/{DUMPS_DIR}/{dump.file_name}",
        }
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            image=image.image_id,
            restart="always",
            # SQLite needs no network at all; PostgreSQL and MinIO are reached on the server's own network.
            network_mode=None if args.network else "none",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network)] if args.network else None,
            volumes=volumes,
            envs=[f"TZ={args.timezone}"],
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            entrypoints=["/bin/sh", "-c", render.render_dump_script(dump, args.interval_seconds), "homelab-dump"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
