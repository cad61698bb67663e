"""The models of one host's keys, in `Pulumi.<stack>.yaml`: host, kopia, openlist."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema, model_validator

from components.config.fields import AbsolutePath, HostName, IpAddress, Model, NetworkAddress, PinnedImage, UserName
from components.config.references import SecretRef, SecretReference, parse_secret_ref


def _stack_name(value: str | None) -> str | None:
    # Pulumi's own rule for stack names.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
        raise ValueError("must be a stack name (letters, digits, '-', '_', '.')")
    return value


_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]{20,}$")


def _host_key(value: str) -> str:
    if not _HOST_KEY.fullmatch(value):
        raise ValueError("must be '<type> <base64>' as printed by 'ssh-keyscan -t ed25519 <host>' (without the host)")
    key_type, blob = value.split(" ")
    # The blob is SSH's wire form (RFC 4253 6.6): length-prefixed fields, the first a copy of the type. A key
    # that does not decode, is cut short, or names another type would pin nothing any host can present.
    try:
        fields = _ssh_wire_fields(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("is not a key: its base64 does not decode to one; copy it again from 'ssh-keyscan'") from None
    if fields[0] != key_type.encode():
        raise ValueError(f"is not a {key_type} key: its base64 holds another key type; copy it again") from None
    if key_type == "ssh-ed25519" and [len(f) for f in fields[1:]] != [32]:
        raise ValueError("is not a whole ssh-ed25519 key (32 bytes); copy it again from 'ssh-keyscan'")
    return value


def _ssh_wire_fields(raw: bytes) -> list[bytes]:
    """The length-prefixed fields of an SSH public key blob; ValueError when it does not split into them exactly."""
    fields: list[bytes] = []
    while raw:
        if len(raw) < 4:
            raise ValueError("truncated")
        (length,) = struct.unpack(">I", raw[:4])
        if len(raw) < 4 + length:
            raise ValueError("truncated")
        fields.append(raw[4 : 4 + length])
        raw = raw[4 + length :]
    if not fields:
        raise ValueError("empty")
    return fields


#: ssh's options that take an argument (`ssh.c` getopt string, OpenSSH 9): a letter after one of these, in
#: the same word, is its argument, not another option.
_SSH_FLAGS_WITH_ARGUMENT = set("bceilmopBDEFIJLOPQRSwW")


def _ssh_config_options(args: list[str]) -> list[tuple[str, str]]:
    """The `-o Keyword=value` options of an ssh argv, as (lowercase keyword, value), read as ssh's getopt reads
    them: `-o K=v`, `-oK=v`, `-vo K=v`, and 'K v' or 'K = v' in place of 'K=v'."""
    found: list[tuple[str, str]] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-") or word == "-":
            continue
        for i, flag in enumerate(word[1:], start=1):
            if flag in _SSH_FLAGS_WITH_ARGUMENT:
                argument = word[i + 1 :] or next(words, "")
                if flag == "o" and (match := re.fullmatch(r"\s*([A-Za-z]+)\s*(?:=|\s)\s*(.*?)\s*", argument)):
                    found.append((match[1].lower(), match[2]))
                break
    return found


# What the program sets to pin the host key (components/hosts.py): ssh takes the first value of an option, so
# these would not win today, but an option that says otherwise is a mistake or an attempt to weaken the pin.
_PIN_OPTIONS = {"userknownhostsfile", "globalknownhostsfile", "knownhostscommand"}


def _ssh_options(value: list[str]) -> list[str]:
    for keyword, setting in _ssh_config_options(value):
        weakens = (
            (keyword == "stricthostkeychecking" and setting.lower() != "yes")
            or keyword in _PIN_OPTIONS
            or (keyword == "verifyhostkeydns" and setting.lower() != "no")
        )
        if weakens:
            raise ValueError(
                "must not disable host key checking or replace the pinned key (StrictHostKeyChecking other than"
                " yes, UserKnownHostsFile, GlobalKnownHostsFile, KnownHostsCommand, VerifyHostKeyDNS): pin the"
                " key with hostKey instead"
            )
    return value


def _no_private_key(value: object | None) -> None:
    # Both the Docker provider and the file resources run the local `ssh` binary, which
    # cannot take a key from Pulumi: one way that works for both is ssh-agent or `-i`.
    if value is not None:
        raise ValueError(
            "is not supported: load the key into ssh-agent (`ssh-add <key file>`) or set "
            "host.ssh.options to ['-i', '<key file>']; both the Docker provider and the file writes use it"
        )


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty or blank: give a value, or remove the key")
    return value


class Ssh(Model):
    user: UserName = Field(
        description="the user Pulumi logs in as over SSH; a member of the host's docker group", examples=["shelken"]
    )
    address: NetworkAddress = Field(
        description="host name or IP the operator's machine reaches", examples=["vps.example.net"]
    )
    port: int = Field(default=22, ge=1, le=65535, description="the host's SSH port")
    host_key: Annotated[str, AfterValidator(_host_key)] = Field(
        alias="hostKey",
        description="the host's public key: the output of `ssh-keyscan -t ed25519 <address>` without the host"
        " column, 'ssh-ed25519 AAAA...'",
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbYqq2mmgdvGLR0Ni+Ai9hhdSwWAYKwk1M5XNtNQkNr"],
    )
    private_key: Annotated[object | None, AfterValidator(_no_private_key)] = Field(
        default=None,
        alias="privateKey",
        description="not supported: the operator's key comes from ssh-agent or `options` (['-i', '<key file>'])",
        json_schema_extra={"deprecated": True},  # refused whatever its value; editors strike it through
    )
    options: Annotated[list[str], AfterValidator(_ssh_options)] = Field(
        default_factory=list,
        description="extra ssh options; host key checking cannot be turned off",
        examples=[["-i", "~/.ssh/homelab", "-o", "ConnectTimeout=10"]],
    )


class Network(Model):
    name: str = Field(
        default="homelab", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the Docker network the containers join"
    )
    create: bool = Field(default=False, description="true: this stack creates the network; false: it must exist")


class Host(Model):
    name: HostName = Field(
        description="host name: container hostname and Kopia identity <username>@<name>; the stack's name",
        examples=["vps"],
    )
    stack_name: Annotated[str | None, AfterValidator(_stack_name)] = Field(
        default=None,
        alias="stackName",
        description="the stack that deploys this host, when its name differs from host.name (the e2e stack"
        " 'e2e-vps' deploys host 'vps'); a copy of the file under another stack name is refused",
        examples=["e2e-vps"],
    )
    deploy_address: IpAddress = Field(
        alias="deployAddress", description="the host's IP address that published ports bind to", examples=["100.64.0.2"]
    )
    publish_on_all_interfaces: bool = Field(
        default=False,
        alias="publishOnAllInterfaces",
        description="true: allow deployAddress 0.0.0.0 or '::' (every interface, the internet included on a VPS)",
    )
    ssh: Ssh
    data_dir: AbsolutePath = Field(
        alias="dataDir",
        description="host dir holding the containers' persistent data (OpenList's database: <dataDir>/openlist/data)",
        examples=["/opt/services"],
    )
    config_dir: AbsolutePath = Field(
        alias="configDir",
        description="host dir Pulumi writes Kopia's config files to; its parent must be writable by host.ssh.user",
        examples=["/opt/compose/vps/kopia"],
    )
    network: Network = Field(default_factory=Network)
    kopia_data_dir: AbsolutePath | None = Field(
        default=None,
        alias="kopiaDataDir",
        description="Kopia's cache, logs, state and restore dir; default <dataDir>/kopia. Must lie outside every "
        "backup source",
        examples=["/opt/kopia"],
    )
    homepage_group: Annotated[str | None, AfterValidator(_not_blank)] = Field(
        default=None,
        alias="homepageGroup",
        description="homepage.group label of the containers (the homepage dashboard); omit it for no homepage labels",
        examples=["VPS"],
    )

    @property
    def stack(self) -> str:
        """The stack that deploys this host: what the commands in its messages name (`pulumi up --stack ...`)."""
        return self.stack_name or self.name

    @property
    def kopia_dir(self) -> str:
        return self.kopia_data_dir or f"{self.data_dir}/kopia"

    @property
    def openlist_data_dir(self) -> str:
        """Where OpenList's database (S3 keys, the 189 login, and a Local storage inside it) lives on the host."""
        return f"{self.data_dir}/openlist/data"

    timezone: str = Field(
        default="Asia/Shanghai", description="TZ of the containers: the times in their logs", examples=["Europe/Berlin"]
    )


#: A name Docker, the shell and a file name all take as it is: a container, a database, a login.
_PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"

#: The directory, inside a backup source, that its dumps are written to (docs/decisions.md, "Live data").
DUMPS_DIR = ".dumps"


class PostgresDump(Model):
    """`pg_dump` of one database, run from the database container's own image on its network."""

    container: str = Field(
        pattern=_PLAIN_NAME,
        description="the database's container on this host: the dump runs from its image, on its network, and"
        " reaches it by this name",
        examples=["immich-postgres"],
    )
    database: str = Field(pattern=_PLAIN_NAME, description="the database to dump", examples=["immich"])
    user: str = Field(pattern=_PLAIN_NAME, description="the role pg_dump logs in as", examples=["postgres"])
    password: SecretReference = Field(
        description="that role's password; reaches the dump container as a 0600 file, never its environment",
        examples=["azure://shelken-homelab/compose-sakamoto/IMMICH_DB_PASSWORD"],
    )
    port: int = Field(default=5432, ge=1, le=65535, description="the port PostgreSQL listens on in its container")
    network: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the Docker network the dump joins to reach the database; default: the container's only one",
        examples=["immich_default"],
    )


class SqliteDump(Model):
    """`VACUUM INTO` of one SQLite file: one read transaction, so a consistent copy while the app writes."""

    file: AbsolutePath = Field(
        description="the database file on the host, inside this source's hostPath",
        examples=["/opt/data/app/db.sqlite3"],
    )
    image: PinnedImage = Field(
        description="an image with the sqlite3 shell (the app's own image often has none)",
        examples=["keinos/sqlite3:3.47.2"],
    )


#: S3's rule for bucket names (3 to 63 lower-case letters, digits, '.' and '-'; a letter or digit at each end).
_BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def _unique_buckets(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("names a bucket twice")
    return value


class MinioDump(Model):
    """`mc mirror` of a MinIO server's buckets through its S3 API, from a MinIO client image, on MinIO's network."""

    container: str = Field(
        pattern=_PLAIN_NAME,
        description="the MinIO server's container on this host: the mirror reaches its S3 API by this name, on its"
        " network",
        examples=["minio"],
    )
    port: int = Field(default=9000, ge=1, le=65535, description="the port MinIO's S3 API listens on in its container")
    network: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the Docker network the mirror joins to reach MinIO; default: the container's only one",
        examples=["minio_default"],
    )
    buckets: Annotated[list[Annotated[str, Field(pattern=_BUCKET_NAME)]] | None, AfterValidator(_unique_buckets)] = (
        Field(
            default=None,
            min_length=1,
            description="the buckets to mirror; omit it for every bucket the keys can list, listed again at each run",
            examples=[["photos", "documents"]],
        )
    )
    access_key: SecretReference = Field(
        alias="accessKey",
        description="an access key that may list and read those buckets (operations.md gives such a policy);"
        " reaches the mirror's container as a 0600 mc config file, never its environment",
        examples=["azure://shelken-homelab/compose-sakamoto/MINIO_BACKUP_ACCESS_KEY"],
    )
    secret_key: SecretReference = Field(
        alias="secretKey",
        description="that access key's secret key",
        examples=["azure://shelken-homelab/compose-sakamoto/MINIO_BACKUP_SECRET_KEY"],
    )
    image: PinnedImage = Field(
        description="the MinIO client image (`mc`, with a POSIX shell and coreutils), pinned",
        examples=["minio/mc:RELEASE.2025-03-12T17-29-24Z"],
    )


class Dump(Model):
    """A consistent copy of one live database or object store, written into `<hostPath>/.dumps/` before each
    snapshot: `<name>.sql` (PostgreSQL), `<name>.sqlite` (SQLite) or the directory `<name>/` (MinIO)."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="the dump's name: its file `.dumps/<name>.sql` (`.sqlite`; MinIO: the directory `.dumps/<name>/`)"
        " and container `<kopia>-dump-<name>`",
        examples=["immich"],
    )
    postgres: PostgresDump | None = None
    sqlite: SqliteDump | None = None
    minio: MinioDump | None = None
    lead_seconds: int = Field(
        default=300,
        alias="leadSeconds",
        ge=10,
        description="how long before each scheduled snapshot the dump starts; a dump still running when the"
        " snapshot starts is reported as failed (late)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Dump:
        if [self.postgres, self.sqlite, self.minio].count(None) != 2:
            raise ValueError("give exactly one of postgres, sqlite or minio")
        return self

    @property
    def kind(self) -> str:
        return "postgres" if self.postgres is not None else "sqlite" if self.sqlite is not None else "minio"

    @property
    def file_name(self) -> str:
        """The dump's file (MinIO: directory) in the source's dumps directory."""
        return {"postgres": f"{self.name}.sql", "sqlite": f"{self.name}.sqlite", "minio": self.name}[self.kind]


def dump_container_name(kopia_container_name: str, dump_name: str) -> str:
    """A dump's container on the host: `<kopia.containerName>-dump-<name>`."""
    return f"{kopia_container_name}-dump-{dump_name}"


def pauser_container_name(kopia_container_name: str) -> str:
    """The host's pauser, the one container with the Docker socket: `<kopia.containerName>-pauser`."""
    return f"{kopia_container_name}-pauser"


#: The name a source's pause reports under: its status line is `.dumps/pause.status`, so no dump may take it.
PAUSE_STATUS_NAME = "pause"
#: Docker's own rule for container names.
_CONTAINER_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"


def _unique_containers(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("names a container twice")
    return value


class Pause(Model):
    """Containers frozen (`docker pause`) for the length of each snapshot of this source and resumed after it, also
    when the snapshot fails: a consistent copy of an app that has no dump. Kopia's snapshot actions ask a pauser
    container, which alone holds the Docker socket (docs/decisions.md, "Live data")."""

    containers: Annotated[list[Annotated[str, Field(pattern=_CONTAINER_NAME)]], AfterValidator(_unique_containers)] = (
        Field(
            min_length=1,
            description="the app's containers on this host, paused together before the snapshot and resumed after it",
            examples=[["paperless", "paperless-redis"]],
        )
    )
    max_seconds: int = Field(
        default=1800,
        alias="maxSeconds",
        ge=30,
        le=86400,
        description="the longest the containers stay paused: a pause that outlives it (a snapshot that takes longer,"
        " a Kopia stopped mid-snapshot) is ended by the pauser and reported as a failure of the source",
    )


class BackupSource(Model):
    host_path: AbsolutePath = Field(alias="hostPath", description="directory on the host", examples=["/opt/data"])
    path: AbsolutePath = Field(
        description="where it is mounted read-only in the container; the policy names this path",
        examples=["/backup/data"],
    )
    dumps: list[Dump] = Field(
        default_factory=list,
        description="live databases and object stores in this source, each dumped through its own client into"
        ' <hostPath>/.dumps before every snapshot (docs/operations.md, "Databases" and "MinIO")',
    )
    pause: Pause | None = Field(
        default=None,
        description="containers paused for the length of each snapshot of this source, for an app without a dump"
        ' (docs/operations.md, "Apps without a dump")',
    )


class S3(Model):
    endpoint: SecretReference | None = Field(
        default=None,
        description="reference to 'http(s)://host:port'; omit on a stack that deploys OpenList (then Kopia uses it)",
        examples=["azure://shelken-homelab/compose-sakamoto/OPENLIST_S3_ENDPOINT"],
    )
    access_key_id: SecretReference = Field(
        alias="accessKeyId",
        description="the S3 access key id Kopia signs with (and OpenList checks, when this stack configures it)",
        examples=["azure://shelken-homelab/compose-vps/OPENLIST_S3_ACCESS_KEY_ID"],
    )
    secret_access_key: SecretReference = Field(
        alias="secretAccessKey",
        description="the S3 secret access key",
        examples=["azure://shelken-homelab/compose-vps/OPENLIST_S3_SECRET_ACCESS_KEY"],
    )


class KopiaSecrets(Model):
    repository_password: SecretReference = Field(
        alias="repositoryPassword",
        description="the repository's password, the same on every host; lost, the backups cannot be read",
        examples=["azure://shelken-homelab/compose-vps/KOPIA_REPO_PASSWORD"],
    )
    server_username: SecretReference = Field(
        alias="serverUsername",
        description="the server UI's login name",
        examples=["azure://shelken-homelab/compose-vps/KOPIA_SERVER_USERNAME"],
    )
    server_password: SecretReference = Field(
        alias="serverPassword",
        description="the server UI's password",
        examples=["azure://shelken-homelab/compose-vps/KOPIA_SERVER_PASSWORD"],
    )
    server_control_password: SecretReference = Field(
        alias="serverControlPassword",
        description="for health checks (control API), separate from the UI login",
        examples=["azure://shelken-homelab/compose-vps/KOPIA_SERVER_CONTROL_PASSWORD"],
    )
    previous_repository_password: SecretReference | None = Field(
        default=None,
        alias="previousRepositoryPassword",
        description="only while changing the repository password, and only on the maintenance owner's stack: the "
        "password the repository opens with now. At its next start that host's Kopia changes the repository's "
        "password to repositoryPassword; remove this key once every host runs with the new one",
        examples=["azure://shelken-homelab/compose-sakamoto/KOPIA_REPO_PASSWORD_PREVIOUS"],
    )


class KopiaServer(Model):
    port: int = Field(default=51515, ge=1, le=65535, description="the server's port, published on host.deployAddress")
    insecure: bool = Field(
        default=False, description="true: serve plain HTTP (kopia --insecure). Visible opt-out of TLS"
    )
    refresh_interval: str = Field(
        default="5m",
        alias="refreshInterval",
        pattern=r"^[1-9][0-9]*(s|m|h)$",
        description="how often the server re-reads sources; a failed snapshot is retried only then (kopia #5521)",
    )
    # Above the 30-day early renewal, or every `pulumi up` would renew the certificate; at most 20 years,
    # so a typo (36500) cannot pin one key for a lifetime.
    tls_validity_days: int = Field(
        default=3650, alias="tlsValidityDays", ge=60, le=7300, description="validity of the server's TLS certificate"
    )


class KopiaHealth(Model):
    check_interval_seconds: int = Field(
        default=60,
        alias="checkIntervalSeconds",
        ge=5,
        le=3600,
        description="how often Docker runs the health check (unhealthy after 3 failed checks in a row)",
    )
    heartbeat_url: SecretReference | None = Field(
        default=None,
        alias="heartbeatUrl",
        description="secret reference to a dead man's switch URL (healthchecks.io style), pinged after every "
        "healthy check; when pings stop, the monitoring service alerts",
        examples=["azure://shelken-homelab/compose-vps/HEARTBEAT_URL"],
    )
    upload_allowance_seconds: int = Field(
        default=86400,
        alias="uploadAllowanceSeconds",
        ge=0,
        le=60 * 86400,
        description="how much longer a source may go without a finished snapshot while it uploads (raise it for "
        "a first upload that takes days); a hung upload shows once this passes",
    )
    margin_seconds: int = Field(
        default=600,
        alias="marginSeconds",
        ge=0,
        le=7 * 24 * 3600,
        description="a source is unhealthy when its last snapshot is older than two intervals plus this margin",
    )


class KopiaDrill(Model):
    interval_seconds: int = Field(
        default=86400,
        alias="intervalSeconds",
        ge=60,
        le=30 * 86400,
        description="how often the container verifies the snapshots of its sources (`kopia snapshot verify`)",
    )
    files_percent: float = Field(
        default=1.0,
        alias="filesPercent",
        gt=0,
        le=100,
        description="which share of the files each drill downloads and checks",
    )


DEFAULT_CONTENT_CACHE_MB = 2000
DEFAULT_METADATA_CACHE_MB = 5000


class KopiaCache(Model):
    """Kopia's local cache on this host (connect flags). Index blobs are cached besides these and not limited."""

    content_mb: int = Field(
        default=DEFAULT_CONTENT_CACHE_MB,
        alias="contentMB",
        ge=0,
        description="data read back (restores, the drill); Kopia's default 5000",
    )
    metadata_mb: int = Field(
        default=DEFAULT_METADATA_CACHE_MB,
        alias="metadataMB",
        ge=0,
        description="directory and manifest packs every snapshot reads; Kopia's default 5000",
    )


class Kopia(Model):
    container_name: str = Field(
        default="kopia", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$", description="container name"
    )
    sources: list[BackupSource] = Field(
        min_length=1, description="the host dirs this host backs up, each mounted where policy.sources names it"
    )
    s3: S3
    secrets: KopiaSecrets
    server: KopiaServer = Field(default_factory=KopiaServer)
    health: KopiaHealth = Field(default_factory=KopiaHealth)
    drill: KopiaDrill = Field(default_factory=KopiaDrill)
    cache: KopiaCache = Field(default_factory=KopiaCache)
    create_repository: bool = Field(
        default=False,
        alias="createRepository",
        description="true only for the first `pulumi up` of the maintenance owner's stack: it may then create the "
        "repository where the storage holds none; without it no host ever creates one. Set it with `pulumi up "
        "--config-path --config homelab-backup:kopia.createRepository=true`, then remove it (`pulumi config rm "
        "--path homelab-backup:kopia.createRepository`) and run `pulumi up`",
    )


_ADMIN_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})/?$")


def _admin_url(value: str, port: str = "web port") -> str:
    match = _ADMIN_URL.fullmatch(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"must be 'http(s)://<host>:<port>' (OpenList's {port}, as the stack's host reaches it)")
    if match["host"].startswith("["):
        try:
            ipaddress.IPv6Address(match["host"].strip("[]"))
        except ValueError:
            raise ValueError("must hold an IPv6 address between '[' and ']'") from None
    return value


def parse_admin_url(value: str) -> tuple[str, int, bool]:
    """(host, port, TLS) of an `openlist.adminUrl` or `openlist.s3Url`."""
    match = _ADMIN_URL.fullmatch(value)
    assert match is not None, "validated by the model"
    return match["host"].strip("[]"), int(match["port"]), match["scheme"] == "https"


class OpenListStorage(Model):
    """The one storage the bucket lives on: the 189 Cloud drive by default."""

    driver: str = Field(
        default="189CloudPC",
        # OpenList's names hold spaces ("115 Cloud", drivers/115/meta.go @ v4.2.5), never at either end.
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9 _.-]*[A-Za-z0-9_.-])?$",
        description="OpenList's driver name (189CloudPC; the e2e suite uses Local as a stand-in)",
    )
    mount_path: AbsolutePath = Field(default="/189", alias="mountPath", description="where OpenList mounts it")
    # 30 minutes (OpenList's own default): every page of an S3 listing lists the folder again, so only this
    # cache keeps a large listing from asking 189 for the whole folder page after page (docs/performance.md),
    # and it is below the smallest margin of Kopia's maintenance safety (1 h), so a listing this stale cannot
    # make maintenance drop what the other host just wrote (docs/decisions.md). 0 lists the drive every page.
    cache_expiration_minutes: int = Field(
        default=30,
        alias="cacheExpirationMinutes",
        ge=0,
        le=1440,
        description="how long OpenList trusts a cached listing of the drive (its default is 30)",
    )
    web_proxy: bool = Field(
        default=True,
        alias="webProxy",
        description="true: OpenList serves downloads itself; Kopia's S3 client follows no redirect",
    )
    fields: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="the driver's plain fields (its 'addition'); a credential-like name is refused here",
        examples=[{"username": "13800000000"}],
    )
    secret_fields: dict[str, SecretReference] = Field(
        default_factory=dict,
        alias="secretFields",
        description="the driver's credential fields as secret references, e.g. password or refresh_token",
        examples=[{"password": "azure://shelken-homelab/compose-vps/CLOUD189_PASSWORD"}],
    )


def _restart_command(value: object) -> SecretRef | str | None:
    """A shell command, or a secret reference to one (a command that carries a token stays a secret)."""
    if value is None or isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a shell command, or a secret reference to one")
    if value.startswith(("azure://", "config:")):
        return parse_secret_ref(value)
    return _not_blank(value)


RestartCommand = Annotated[
    SecretRef | str | None,
    PlainValidator(_restart_command),
    PlainSerializer(lambda value: None if value is None else str(value)),
    WithJsonSchema({"type": "string", "minLength": 1}),
]


class OpenList(Model):
    """An OpenList this stack deploys, or (with adminUrl) one it only configures, e.g. a cluster's."""

    container_name: str = Field(
        default="openlist",
        alias="containerName",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$",
        description="container name (only on a stack that deploys OpenList)",
    )
    web_port: int = Field(
        default=5244, alias="webPort", ge=1, le=65535, description="web UI and admin API port, on host.deployAddress"
    )
    s3_port: int = Field(default=5246, alias="s3Port", ge=1, le=65535, description="S3 port, on host.deployAddress")
    admin_url: Annotated[str | None, AfterValidator(lambda v: v if v is None else _admin_url(v))] = Field(
        default=None,
        alias="adminUrl",
        description="an OpenList this stack does not deploy: its web address as this host reaches it "
        "(the program configures it through an SSH tunnel to this host)",
        examples=["http://openlist.cluster.lan:5244"],
    )
    s3_url: Annotated[str | None, AfterValidator(lambda v: v if v is None else _admin_url(v, "S3 port"))] = Field(
        default=None,
        alias="s3Url",
        description="with adminUrl: that OpenList's S3 address as this host reaches it; every up checks there "
        "that its S3 port enforces the keys",
        examples=["http://openlist.cluster.lan:5246"],
    )
    restart_command: RestartCommand = Field(
        default=None,
        alias="restartCommand",
        description="with adminUrl: the shell command, run on this host over SSH, that restarts that OpenList"
        "; it reads its S3 keys at start only, and without this command every `pulumi up` stops while its S3 port"
        " does not enforce the declared keys. A command that carries a token: a secret reference to it"
        " (azure://... or config:<key>)",
        examples=["kubectl -n media rollout restart deployment/openlist"],
    )
    admin_username: str = Field(
        default="admin", alias="adminUsername", pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="the admin login"
    )
    admin_password: SecretReference = Field(
        alias="adminPassword",
        description="the admin login's password (on a gateway this stack does not deploy: the one it has)",
        examples=["azure://shelken-homelab/compose-vps/OPENLIST_ADMIN_PASSWORD"],
    )
    storage: OpenListStorage = Field(default_factory=OpenListStorage)

    @property
    def deployed(self) -> bool:
        return self.admin_url is None
