"""Typed models of everything the stacks hold, validated once at program start.

Project-level keys (`Pulumi.yaml`, shared by every host) and host keys
(`Pulumi.<stack>.yaml`) are read into one frozen `StackConfig`. Structural
errors come from pydantic; cross-field rules (a scheduled source must be
mounted, a mounted source must be scheduled, ...) from `_consistency_problems`.
`load_stack_config` reports *every* problem at once, each named by its config
key, before any resource is declared.

Nothing here imports pulumi: `__main__.py` hands over plain dicts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

PROJECT = "homelab-backup"

# Keys of the stack's config, in the project's namespace (`homelab-backup:<key>`).
PROJECT_KEYS = ("images", "repository", "policy", "keyVault", "notifications")
HOST_KEYS = ("host", "kopia", "openlist")

# The container's own directories: Kopia's (/app) and the system's. A backup source mounted over one
# would shadow the files Kopia, the start script and the health check run on (or hide the mount itself).
CONTAINER_RESERVED_DIRS = (
    "/app",
    "/bin",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",  # noqa: S108 (a directory a mount must not cover, not a temp file)
    "/usr",
    "/var",
)
# A retention count above this is a typo (Kopia keeps every snapshot it is told to count).
MAX_RETENTION_COUNT = 10_000
# Prefix of a committed stack file's host-specific value that must be replaced before a deploy
# ('SET-ME:<example>'); what follows is only an example.
PLACEHOLDER = "SET-ME:"

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+@-]*$")
_IMAGE_DIGEST = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# What OpenList lists for an empty folder, whatever prefix was asked for
# (docs/upstream-behaviour.md#an-empty-folder-lists-thisisanemptyfolderinthes3bucket).
OPENLIST_EMPTY_FOLDER_MARKER = "ThisIsAnEmptyFolderInTheS3Bucket"

# Kopia 0.22.3's compressor names (`kopia benchmark compression` lists them).
Compressor = Literal[
    "none",
    "deflate-best-compression",
    "deflate-best-speed",
    "deflate-default",
    "gzip",
    "gzip-best-compression",
    "gzip-best-speed",
    "lz4",
    "pgzip",
    "pgzip-best-compression",
    "pgzip-best-speed",
    "s2-better",
    "s2-default",
    "s2-parallel-4",
    "s2-parallel-8",
    "zstd",
    "zstd-better-compression",
    "zstd-best-compression",
    "zstd-fastest",
]


# ---------------------------------------------------------------- field types


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (start with '/')")
    if value != "/" and value.endswith("/"):
        raise ValueError("must not end with '/'")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' segments")
    if not _SAFE_PATH.fullmatch(value):
        raise ValueError("may hold only letters, digits and '/._+@-' (it goes into shell commands and Kopia's policy)")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a lowercase DNS label (letters, digits, '-')")
    return value


def _username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise ValueError("must be a lowercase user name (letters, digits, '_', '-')")
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address (ports are bound to it)") from None
    return value


def _pinned_image(value: str) -> str:
    if _IMAGE_DIGEST.fullmatch(value):
        return value  # pinned by content: the strongest pin
    if not _IMAGE.fullmatch(value):
        raise ValueError("must be '<repository>:<tag>' with an explicit tag")
    if value.rsplit(":", 1)[1] == "latest":
        raise ValueError("must pin a release, not ':latest'")
    return value


def _stack_name(value: str | None) -> str | None:
    # Pulumi's own rule for stack names.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
        raise ValueError("must be a stack name (letters, digits, '-', '_', '.')")
    return value


def _network_address(value: str) -> str:
    # A host name or an IP address. For SSH it goes into ssh://user@address and an ssh option: a leading '-'
    # or a space would inject options.
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not re.fullmatch(
        r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$", value
    ):
        raise ValueError("must be a host name or an IP address")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
HostName = Annotated[str, AfterValidator(_hostname)]
UserName = Annotated[str, AfterValidator(_username)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
PinnedImage = Annotated[str, AfterValidator(_pinned_image)]


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives; never the secret itself.

    `azure://<vault>/<secret>[/<field>]`: a Key Vault secret, or one key of a
    JSON or dotenv secret value. `config:<key>`: a Pulumi config secret of this
    stack (`pulumi config set --secret <key> ...`).
    """

    text: str
    vault: str | None = None
    secret: str | None = None
    field: str | None = None
    config_key: str | None = None

    def __str__(self) -> str:
        return self.text


_AZURE_REF = re.compile(
    r"^azure://(?P<vault>[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9])/(?P<secret>[A-Za-z0-9-]{1,127})(/(?P<field>[^/\s]+))?$"
)
# Keys of this project's namespace only: __main__ reads them with pulumi.Config().require_secret.
_CONFIG_REF = re.compile(r"^config:(?P<key>[A-Za-z0-9_.-]+)$")


def parse_secret_ref(value: Any) -> SecretRef:
    """Parse a reference string; the error says which forms are accepted."""
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a secret reference string")
    if match := _AZURE_REF.fullmatch(value):
        return SecretRef(value, vault=match["vault"], secret=match["secret"], field=match["field"])
    if match := _CONFIG_REF.fullmatch(value):
        return SecretRef(value, config_key=match["key"])
    raise ValueError(
        "must be a secret reference: 'azure://<vault>/<secret>[/<field>]' (Key Vault names: letters, digits, '-')"
        " or 'config:<key>' (a Pulumi config secret); never the secret value itself"
    )


SecretReference = Annotated[
    SecretRef,
    PlainValidator(parse_secret_ref),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": f"{_AZURE_REF.pattern}|{_CONFIG_REF.pattern}"}),
]


class _Model(BaseModel):
    """Base: YAML keys are camelCase aliases; unknown keys are errors; values are frozen.

    Strict: no coercion between types, so `port: true` is refused instead of becoming port 1, and
    `"5246"` is not a number. `pulumi config set --path` stores digits and true/false typed, so it fits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


# ---------------------------------------------------------------- project-level models


class Images(_Model):
    kopia: PinnedImage = Field(description="Kopia server image, e.g. kopia/kopia:0.22.3")
    openlist: PinnedImage = Field(description="OpenList image (v4.1.9+: uploads need real modification times)")


def _bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value):
        raise ValueError("must be 3-63 lowercase letters, digits, '.', '-'")
    return value


def _prefix(value: str) -> str:
    if problems := _prefix_problems(value):
        raise ValueError("; ".join(problems))
    return value


#: Kopia 0.22.3 defaults to 20 MiB packs (repo/format/format_provider.go); this project's choice, measured in
#: benchmarks/snapshot_throughput.py (README "Performance").
DEFAULT_PACK_SIZE_MB = 64
_KOPIA_DURATION = r"^[0-9]+(m|h)$"


class Maintenance(_Model):
    """When the maintenance owner runs Kopia's maintenance (kopia maintenance set --quick-interval/--full-interval)."""

    quick_interval: str = Field(
        default="1h", alias="quickInterval", pattern=_KOPIA_DURATION, description="Kopia's default: 1h"
    )
    full_interval: str = Field(
        default="24h",
        alias="fullInterval",
        pattern=_KOPIA_DURATION,
        description="Kopia's default: 24h; each full run lists every blob through OpenList",
    )


class Repository(_Model):
    # Field validators, not a model validator: they run even when another field of the model is invalid.
    bucket: Annotated[str, AfterValidator(_bucket)] = Field(
        description="S3 bucket both hosts write to (an OpenList S3 bucket name)"
    )
    prefix: Annotated[str, AfterValidator(_prefix)] = Field(description="object prefix inside the bucket, e.g. 'main/'")
    username: UserName = Field(description="Kopia user of every host's identity <username>@<host>")
    maintenance_owner: str = Field(
        alias="maintenanceOwner",
        description="<username>@<host> that runs maintenance and is the only host allowed to create the repository",
    )
    pack_size_mb: int = Field(
        default=DEFAULT_PACK_SIZE_MB,
        alias="packSizeMB",
        ge=10,
        le=120,
        description="Kopia's maximum pack blob size (MiB), set by the maintenance owner; fewer, larger blobs keep "
        "OpenList's folder listings short (docs/decisions.md, README 'Performance')",
    )
    maintenance: Maintenance = Field(default_factory=Maintenance)


def _prefix_problems(prefix: str) -> list[str]:
    if not prefix:
        # An empty folder in OpenList lists a fake object, so the bucket root can never look empty.
        return [
            f"must not be empty: OpenList lists '{OPENLIST_EMPTY_FOLDER_MARKER}' in an empty bucket root,"
            " which makes 'kopia repository create' fail; use e.g. 'main/'"
        ]
    problems = []
    if not prefix.endswith("/"):
        problems.append(f"must end with '/' (a folder), e.g. '{prefix}/'")
    segments = prefix.removesuffix("/").split("/")
    if prefix.startswith("/") or not all(_PREFIX_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        problems.append("must be folder names of letters, digits, '.', '_', '-' separated by '/', no leading '/'")
    if OPENLIST_EMPTY_FOLDER_MARKER in prefix:
        problems.append(f"must not contain OpenList's empty-folder marker '{OPENLIST_EMPTY_FOLDER_MARKER}'")
    return problems


class Retention(_Model):
    """Kopia retention; unset values inherit from the repository's (global) policy."""

    keep_latest: int | None = Field(default=None, alias="keepLatest", ge=0, le=MAX_RETENTION_COUNT)
    keep_hourly: int | None = Field(default=None, alias="keepHourly", ge=0, le=MAX_RETENTION_COUNT)
    keep_daily: int | None = Field(default=None, alias="keepDaily", ge=0, le=MAX_RETENTION_COUNT)
    keep_weekly: int | None = Field(default=None, alias="keepWeekly", ge=0, le=MAX_RETENTION_COUNT)
    keep_monthly: int | None = Field(default=None, alias="keepMonthly", ge=0, le=MAX_RETENTION_COUNT)
    keep_annual: int | None = Field(default=None, alias="keepAnnual", ge=0, le=MAX_RETENTION_COUNT)


class SourceTarget(_Model):
    """A scheduled source `<user>@<host>:<path>`, parsed."""

    user: UserName
    host: HostName
    path: AbsolutePath

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return _parse_target(value)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.path}"


def _parse_target(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"([^@:]+)@([^@:]+):(/.*)", value, re.DOTALL)
        if not match:
            raise ValueError("must be '<user>@<host>:/<path>', e.g. 'shelken@vps:/backup/data'")
        return {"user": match[1], "host": match[2], "path": match[3]}
    return value


#: More files in flight than CPUs, so compression keeps both cores busy while packs upload (README "Performance").
DEFAULT_PARALLEL_FILE_READS = 8


class Policy(_Model):
    """The one backup policy of the repository, rendered to the same policy.json on every host."""

    retention: Retention
    compression: Compressor
    interval_seconds: int = Field(alias="intervalSeconds", ge=60, description="snapshot interval of every source")
    parallel_file_reads: int = Field(
        default=DEFAULT_PARALLEL_FILE_READS,
        alias="parallelFileReads",
        ge=1,
        le=64,
        description="files a snapshot reads and uploads at once (policy upload.maxParallelFileReads; Kopia's "
        "default is one per CPU)",
    )
    sources: list[SourceTarget] = Field(min_length=1, description="'<user>@<host>:/<path>' of every host")


class KeyVault(_Model):
    url_template: str = Field(
        default="https://{vault}.vault.azure.net",
        alias="urlTemplate",
        description="data-plane base URL; {vault} is replaced by the reference's vault name",
    )
    api_version: str = Field(default="7.4", alias="apiVersion", pattern=r"^[0-9]+\.[0-9]+(-preview)?$")

    @field_validator("url_template")
    @classmethod
    def _url_template(cls, value: str) -> str:
        if (
            value.count("{vault}") != 1
            or value.replace("{vault}", "").count("{")
            or "}" in value.replace("{vault}", "")
        ):
            raise ValueError("must contain '{vault}' exactly once and no other braces")
        host = urlsplit(value.replace("{vault}", "v")).hostname or ""
        local = host in ("127.0.0.1", "localhost", "::1")
        if not (value.startswith("https://") or (value.startswith("http://") and local)):
            raise ValueError("must be https:// (the Azure token travels with every request); http:// only on loopback")
        return value


# ---------------------------------------------------------------- host models


_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]{20,}$")


def _host_key(value: str) -> str:
    if not _HOST_KEY.fullmatch(value):
        raise ValueError("must be '<type> <base64>' as printed by 'ssh-keyscan -t ed25519 <host>' (without the host)")
    return value


def _ssh_options(value: list[str]) -> list[str]:
    # ssh takes 'Key=value' and 'Key value', keywords and yes/no values in any case.
    joined = " ".join(value).lower()
    if re.search(r"stricthostkeychecking\s*[=\s]\s*(no|off)\b", joined) or re.search(
        r"userknownhostsfile\s*[=\s]\s*/dev/null", joined
    ):
        raise ValueError("must not disable host key checking; pin the key with hostKey instead")
    return value


def _no_private_key(value: object | None) -> None:
    # Both the Docker provider and the file resources run the local `ssh` binary, which
    # cannot take a key from Pulumi: one way that works for both is ssh-agent or `-i`.
    if value is not None:
        raise ValueError(
            "is not supported: load the key into ssh-agent (`ssh-add <key file>`) or set "
            "host.ssh.options to ['-i', '<key file>']; both the Docker provider and the file writes use it"
        )


class Ssh(_Model):
    user: UserName
    address: Annotated[str, AfterValidator(_network_address)] = Field(
        description="host name or IP the operator's machine reaches"
    )
    port: int = Field(default=22, ge=1, le=65535)
    host_key: Annotated[str, AfterValidator(_host_key)] = Field(
        alias="hostKey",
        description="the host's public key: the output of `ssh-keyscan -t ed25519 <address>` without the host"
        " column, 'ssh-ed25519 AAAA...'",
    )
    private_key: Annotated[object | None, AfterValidator(_no_private_key)] = Field(
        default=None,
        alias="privateKey",
        description="not supported: the operator's key comes from ssh-agent or `options` (['-i', '<key file>'])",
    )
    options: Annotated[list[str], AfterValidator(_ssh_options)] = Field(
        default_factory=list, description="extra ssh options, e.g. ['-o', 'ConnectTimeout=10']"
    )


class Network(_Model):
    name: str = Field(default="homelab", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    create: bool = Field(default=False, description="true: this stack creates the network; false: it must exist")


class Host(_Model):
    name: HostName = Field(description="host name: container hostname and Kopia identity <username>@<name>")
    stack_name: Annotated[str | None, AfterValidator(_stack_name)] = Field(
        default=None,
        alias="stackName",
        description="the stack that deploys this host, when its name differs from host.name (the e2e stack"
        " 'e2e-vps' deploys host 'vps'); a copy of the file under another stack name is refused",
    )
    deploy_address: IpAddress = Field(
        alias="deployAddress", description="the host's IP address that published ports bind to"
    )
    publish_on_all_interfaces: bool = Field(
        default=False,
        alias="publishOnAllInterfaces",
        description="true: allow deployAddress 0.0.0.0 or '::' (every interface, the internet included on a VPS)",
    )
    ssh: Ssh
    data_dir: AbsolutePath = Field(alias="dataDir", description="host dir holding the containers' persistent data")
    config_dir: AbsolutePath = Field(alias="configDir", description="host dir Pulumi writes Kopia's config files to")
    network: Network = Field(default_factory=Network)
    kopia_data_dir: AbsolutePath | None = Field(
        default=None,
        alias="kopiaDataDir",
        description="Kopia's cache, logs and state; default <dataDir>/kopia. Must lie outside every backup source",
    )
    homepage_group: str | None = Field(default=None, alias="homepageGroup", description="homepage.group label")

    @property
    def kopia_dir(self) -> str:
        return self.kopia_data_dir or f"{self.data_dir}/kopia"

    @property
    def openlist_data_dir(self) -> str:
        """Where OpenList's database (S3 keys, the 189 login, and a Local storage inside it) lives on the host."""
        return f"{self.data_dir}/openlist/data"

    timezone: str = Field(default="Asia/Shanghai")


class BackupSource(_Model):
    host_path: AbsolutePath = Field(alias="hostPath", description="directory on the host")
    path: AbsolutePath = Field(description="where it is mounted read-only in the container; the policy names this path")


class S3(_Model):
    endpoint: SecretReference | None = Field(
        default=None,
        description="reference to 'http(s)://host:port'; omit on a stack that deploys OpenList (then Kopia uses it)",
    )
    access_key_id: SecretReference = Field(alias="accessKeyId")
    secret_access_key: SecretReference = Field(alias="secretAccessKey")


class KopiaSecrets(_Model):
    repository_password: SecretReference = Field(alias="repositoryPassword")
    server_username: SecretReference = Field(alias="serverUsername")
    server_password: SecretReference = Field(alias="serverPassword")
    server_control_password: SecretReference = Field(
        alias="serverControlPassword", description="for health checks (control API), separate from the UI login"
    )


class KopiaServer(_Model):
    port: int = Field(default=51515, ge=1, le=65535)
    insecure: bool = Field(
        default=False, description="true: serve plain HTTP (kopia --insecure). Visible opt-out of TLS"
    )
    refresh_interval: str = Field(
        default="5m",
        alias="refreshInterval",
        pattern=r"^[0-9]+(s|m|h)$",
        description="how often the server re-reads sources; a failed snapshot is retried only then (kopia #5521)",
    )
    # Above the 30-day early renewal, or every `pulumi up` would renew the certificate; at most 20 years,
    # so a typo (36500) cannot pin one key for a lifetime.
    tls_validity_days: int = Field(default=3650, alias="tlsValidityDays", ge=60, le=7300)


class KopiaHealth(_Model):
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


class KopiaDrill(_Model):
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


#: Kopia's severity names and numbers (notification/notification_send.go @ v0.22.3).
SEVERITIES = {"verbose": -100, "success": -10, "report": 0, "warning": 10, "error": 20}


class WebhookTarget(_Model):
    """A webhook (also ntfy, Gotify, Discord, Slack): Kopia sends the message body with a `Subject` header."""

    url: SecretReference = Field(description="secret reference to the URL (it usually holds a token)")
    method: Literal["POST", "PUT"] = "POST"
    format: Literal["txt", "html"] = Field(default="txt", description="message body format")
    headers: SecretReference | None = Field(
        default=None, description="secret reference to extra headers, one 'Name: value' per line"
    )


class EmailTarget(_Model):
    """Mail through an SMTP server (Kopia uses STARTTLS when the server offers it)."""

    smtp_server: Annotated[str, AfterValidator(_network_address)] = Field(alias="smtpServer")
    smtp_port: int = Field(default=587, alias="smtpPort", ge=1, le=65535)
    username: str | None = Field(default=None, description="SMTP login; omit for a relay without authentication")
    password: SecretReference | None = Field(default=None, description="secret reference to the SMTP password")
    from_address: str = Field(alias="from", pattern=r"^[^\s@]+@[^\s@]+$")
    to: list[Annotated[str, Field(pattern=r"^[^\s@,]+@[^\s@,]+$")]] = Field(min_length=1)
    format: Literal["txt", "html"] = Field(default="txt", description="message body format")

    @model_validator(mode="after")
    def _password_with_username(self) -> EmailTarget:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class NotificationProfile(_Model):
    """One of Kopia's notification profiles: where the servers send snapshot reports and errors."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="the profile's name; Kopia stores it as homelab-<name>"
    )
    min_severity: Literal["verbose", "success", "report", "warning", "error"] = Field(
        default="warning",
        alias="minSeverity",
        description="the least severe message sent: 'warning' sends failed and partly failed snapshots, not "
        "every successful one (Kopia's own default, 'report', sends them all)",
    )
    webhook: WebhookTarget | None = None
    email: EmailTarget | None = None

    @model_validator(mode="after")
    def _one_target(self) -> NotificationProfile:
        if (self.webhook is None) == (self.email is None):
            raise ValueError("give exactly one of webhook or email")
        return self

    def secret_keys(self) -> dict[str, str]:
        """The profile's secrets by role ('url', 'headers', 'password'): each role's key within the profile."""
        keys = {
            "url": "webhook.url" if self.webhook else None,
            "headers": "webhook.headers" if self.webhook and self.webhook.headers else None,
            "password": "email.password" if self.email and self.email.password else None,
        }
        return {role: key for role, key in keys.items() if key is not None}


DEFAULT_CONTENT_CACHE_MB = 2000
DEFAULT_METADATA_CACHE_MB = 5000


class KopiaCache(_Model):
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


class Kopia(_Model):
    container_name: str = Field(default="kopia", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    sources: list[BackupSource] = Field(min_length=1)
    s3: S3
    secrets: KopiaSecrets
    server: KopiaServer = Field(default_factory=KopiaServer)
    health: KopiaHealth = Field(default_factory=KopiaHealth)
    drill: KopiaDrill = Field(default_factory=KopiaDrill)
    cache: KopiaCache = Field(default_factory=KopiaCache)


_ADMIN_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})/?$")
# Addition fields that hold a credential: refused in `fields` (plain text in the stack file and the state).
_SECRET_FIELD = re.compile(r"password|token|secret|cookie|key", re.IGNORECASE)


def _admin_url(value: str) -> str:
    match = _ADMIN_URL.fullmatch(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError("must be 'http(s)://<host>:<port>' (OpenList's web port, as the stack's host reaches it)")
    return value


def parse_admin_url(value: str) -> tuple[str, int, bool]:
    """(host, port, TLS) of an `openlist.adminUrl`."""
    match = _ADMIN_URL.fullmatch(value)
    assert match is not None, "validated by the model"
    return match["host"].strip("[]"), int(match["port"]), match["scheme"] == "https"


class OpenListStorage(_Model):
    """The one storage the bucket lives on: the 189 Cloud drive by default."""

    driver: str = Field(
        default="189CloudPC",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$",
        description="OpenList's driver name (189CloudPC; the e2e suite uses Local as a stand-in)",
    )
    mount_path: AbsolutePath = Field(default="/189", alias="mountPath", description="where OpenList mounts it")
    # 30 minutes (OpenList's own default): every page of an S3 listing lists the folder again, so only this
    # cache keeps a large listing from asking 189 for the whole folder page after page (README "Performance"),
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
        default_factory=dict, description="the driver's plain fields (its 'addition'), e.g. username"
    )
    secret_fields: dict[str, SecretReference] = Field(
        default_factory=dict,
        alias="secretFields",
        description="the driver's credential fields as secret references, e.g. password or refresh_token",
    )


class OpenList(_Model):
    """An OpenList this stack deploys, or (with adminUrl) one it only configures, e.g. a cluster's."""

    container_name: str = Field(default="openlist", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    web_port: int = Field(default=5244, alias="webPort", ge=1, le=65535)
    s3_port: int = Field(default=5246, alias="s3Port", ge=1, le=65535)
    admin_url: Annotated[str | None, AfterValidator(lambda v: v if v is None else _admin_url(v))] = Field(
        default=None,
        alias="adminUrl",
        description="an OpenList this stack does not deploy: its web address as this host reaches it "
        "(the program configures it through an SSH tunnel to this host)",
    )
    admin_username: str = Field(default="admin", alias="adminUsername", pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    admin_password: SecretReference = Field(alias="adminPassword", description="the admin login's password")
    storage: OpenListStorage = Field(default_factory=OpenListStorage)

    @property
    def deployed(self) -> bool:
        return self.admin_url is None


# ---------------------------------------------------------------- root


def identity(username: str, hostname: str) -> str:
    """A host's Kopia identity, `user@host`: what its snapshots and policies are filed under."""
    return f"{username}@{hostname}"


def is_maintenance_owner(maintenance_owner: str, host_identity: str) -> bool:
    """Only the maintenance owner runs maintenance, and only it may create the repository."""
    return maintenance_owner == host_identity


class StackConfig(_Model):
    images: Images
    repository: Repository
    policy: Policy
    key_vault: KeyVault = Field(default_factory=KeyVault, alias="keyVault")
    notifications: list[NotificationProfile] = Field(
        default_factory=list,
        description="Kopia notification profiles; they live in the repository and serve every host, so declare "
        "them in Pulumi.yaml",
    )
    host: Host
    kopia: Kopia
    openlist: OpenList | None = None

    @property
    def identity(self) -> str:
        return identity(self.repository.username, self.host.name)

    @property
    def max_snapshot_age_seconds(self) -> int:
        """A source whose last snapshot is older is stale: two intervals plus the health margin."""
        return 2 * self.policy.interval_seconds + self.kopia.health.margin_seconds

    @property
    def max_drill_age_seconds(self) -> int:
        """A restore drill older than this is overdue: two drill intervals plus the health margin."""
        return 2 * self.kopia.drill.interval_seconds + self.kopia.health.margin_seconds

    @property
    def host_sources(self) -> list[SourceTarget]:
        """The policy's sources that this host backs up."""
        return [s for s in self.policy.sources if s.host == self.host.name]

    @property
    def is_maintenance_owner(self) -> bool:
        return is_maintenance_owner(self.repository.maintenance_owner, self.identity)

    @property
    def deploys_openlist(self) -> bool:
        """This stack runs an OpenList container (not only configures another's)."""
        return self.openlist is not None and self.openlist.deployed


def secret_references(config: StackConfig) -> list[tuple[str, SecretRef]]:
    """Every secret reference of the stack with its fully qualified key, in the models' order."""
    found: list[tuple[str, SecretRef]] = []

    def walk(value: Any, loc: tuple[int | str, ...]) -> None:
        if isinstance(value, SecretRef):
            found.append((_key(loc), value))
        elif isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                walk(getattr(value, name), (*loc, field.alias or name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        elif isinstance(value, Mapping):  # openlist.storage.secretFields: one reference per field name
            for name, item in value.items():
                walk(item, (*loc, str(name)))

    walk(config, ())
    return found


class ConfigError(Exception):
    """Invalid stack config: every problem, each with its `homelab-backup:<key>` path."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  - {key}: {message}" for key, message in problems)
        super().__init__(
            f"invalid stack config ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}\n"
            f"Fix them in Pulumi.yaml ({', '.join(PROJECT_KEYS)}: shared by every host) or in "
            f"Pulumi.<stack>.yaml ({', '.join(HOST_KEYS)}), then preview again. Not 'pulumi config set --path' on a "
            "Pulumi.yaml key: the stack's value would replace the whole shared object."
        )


def _key(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{PROJECT}:{path}"


def _pydantic_problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        problems.append((_key(loc), message))
    return problems


Problem = tuple[str, str]  # (fully qualified key, message)


def _consistency_problems(config: StackConfig, stack: str | None) -> list[Problem]:
    """Rules that span keys, each on its own below; every problem names its key."""
    return [
        *_host_belongs_to_this_stack(config, stack),
        *_deploy_address_is_one_interface(config),
        *_kopia_data_dir_outside_config_dir(config),
        *_policy_sources_are_mounted(config),
        *_mounts_are_scheduled_and_safe(config),
        *_source_host_paths_are_distinct(config),
        *_maintenance_owner_is_a_policy_host(config),
        *_s3_endpoint_only_without_openlist(config),
        *_published_ports_do_not_collide(config),
        *_notification_names_are_unique(config),
        *_openlist_credentials_are_references(config),
        *_openlist_gateway_is_configured_not_deployed(config),
    ]


def _openlist_credentials_are_references(config: StackConfig) -> list[Problem]:
    """A drive's password or token in `fields` would sit in the stack file and the state in plain text; a
    field in both lists would be written twice with different values."""
    if config.openlist is None:
        return []
    storage = config.openlist.storage
    problems: list[Problem] = []
    for name in storage.fields:
        key = f"{PROJECT}:openlist.storage.fields.{name}"
        if name in storage.secret_fields:
            problems.append((key, "is also in openlist.storage.secretFields: keep it in one of them"))
        elif _SECRET_FIELD.search(name):
            problems.append((key, "looks like a credential: move it to openlist.storage.secretFields as a reference"))
    return problems


def _openlist_gateway_is_configured_not_deployed(config: StackConfig) -> list[Problem]:
    """With adminUrl the stack configures an OpenList it does not run: container and ports are not its own."""
    if config.openlist is None or config.openlist.deployed:
        return []
    deploy_only = {"container_name": "containerName", "web_port": "webPort", "s3_port": "s3Port"}
    return [
        (
            f"{PROJECT}:openlist.{alias}",
            "applies only to an OpenList this stack deploys; remove it, or remove openlist.adminUrl",
        )
        for name, alias in deploy_only.items()
        if name in config.openlist.model_fields_set
    ]


def _notification_names_are_unique(config: StackConfig) -> list[Problem]:
    """Kopia keeps one profile per name: a second one with the same name would silently replace the first."""
    names = [profile.name for profile in config.notifications]
    return [
        (f"{PROJECT}:notifications[{index}].name", f"{name!r} is declared twice")
        for index, name in enumerate(names)
        if name in names[:index]
    ]


def _host_belongs_to_this_stack(config: StackConfig, stack: str | None) -> list[Problem]:
    """One stack per host: a stack file copied for a new host, with the old host's name left in, would be a
    second `<user>@<host>` writing into the same snapshots (and a second maintenance owner that may create
    the repository). The host's name is the stack's name, or the file names its stack in host.stackName."""
    if stack is None:  # not a deploy (scripts/status reads stacks that were deployed)
        return []
    host = config.host
    expected = host.stack_name or host.name
    if expected == stack:
        return []
    if host.stack_name is not None:
        return [
            (
                f"{PROJECT}:host.stackName",
                f"names stack '{host.stack_name}', but this is stack '{stack}': this file was copied from another"
                " stack; set host.name (and host.stackName, or remove it) for this stack's host",
            )
        ]
    return [
        (
            f"{PROJECT}:host.name",
            f"'{host.name}' is not this stack's name '{stack}': one stack deploys one host, named like the stack."
            f" Set host.name: {stack} (and add its sources to policy.sources); only if this stack deploys"
            f" '{host.name}' under another stack name, say so with host.stackName: {stack}",
        )
    ]


def _deploy_address_is_one_interface(config: StackConfig) -> list[Problem]:
    """0.0.0.0 publishes Kopia's login and OpenList's S3 server on every interface (on a VPS, the internet)."""
    host = config.host
    if not ipaddress.ip_address(host.deploy_address).is_unspecified or host.publish_on_all_interfaces:
        return []
    return [
        (
            f"{PROJECT}:host.deployAddress",
            f"{host.deploy_address} publishes the ports on every interface: set the one address they should be"
            " reached at (e.g. the VPN or LAN address), or opt in with host.publishOnAllInterfaces: true",
        )
    ]


def _kopia_data_dir_outside_config_dir(config: StackConfig) -> list[Problem]:
    """The config dir is mounted read-only and written file by file by Pulumi; Kopia's cache inside it (or it
    inside the cache) would mix Kopia's writes with the files that hold the secrets."""
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    if not (_is_within(kopia_dir, config_dir) or _is_within(config_dir, kopia_dir)):
        return []
    key = "host.kopiaDataDir" if config.host.kopia_data_dir else "host.dataDir"
    return [
        (
            f"{PROJECT}:{key}",
            f"Kopia's cache/logs/state ({kopia_dir}) overlap host.configDir ({config_dir}); keep them apart",
        )
    ]


def _source_host_paths_are_distinct(config: StackConfig) -> list[Problem]:
    """The same host directory mounted twice, or one inside another, is backed up twice."""
    problems: list[Problem] = []
    sources = config.kopia.sources
    for j, later in enumerate(sources):
        for i, earlier in enumerate(sources[:j]):
            if later.host_path == earlier.host_path:
                reason = f"is also kopia.sources[{i}].hostPath"
            elif _is_within(later.host_path, earlier.host_path):
                reason = f"lies inside kopia.sources[{i}].hostPath ({earlier.host_path})"
            elif _is_within(earlier.host_path, later.host_path):
                reason = f"contains kopia.sources[{i}].hostPath ({earlier.host_path})"
            else:
                continue
            problems.append(
                (
                    f"{PROJECT}:kopia.sources[{j}].hostPath",
                    f"{later.host_path} {reason}: the same files would be backed up twice; back up each tree once",
                )
            )
    return problems


def _policy_sources_are_mounted(config: StackConfig) -> list[Problem]:
    """Each policy source is listed once, under the repository's user, and this host's are mounted."""
    problems: list[Problem] = []
    mounted = {s.path for s in config.kopia.sources}
    seen: set[str] = set()
    for i, target in enumerate(config.policy.sources):
        key = f"{PROJECT}:policy.sources[{i}]"
        if str(target) in seen:
            problems.append((key, f"'{target}' is listed twice"))
        seen.add(str(target))
        if target.user != config.repository.username:
            problems.append(
                (key, f"user '{target.user}' differs from repository.username '{config.repository.username}'")
            )
        if target.host == config.host.name and target.path not in mounted:
            problems.append(
                (
                    key,
                    f"'{target}' is scheduled but {target.path} is not mounted on host '{config.host.name}'"
                    f" (mounted: {', '.join(sorted(mounted)) or 'nothing'}); add it to kopia.sources",
                )
            )
    return problems


def _mounts_are_scheduled_and_safe(config: StackConfig) -> list[Problem]:
    """Each mount is scheduled, mounted once, outside the container's own dirs, and its host path holds
    neither Kopia's cache/logs, nor the config dir, nor OpenList's database (they would be backed up)."""
    problems: list[Problem] = []
    scheduled = {str(s) for s in config.policy.sources}
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    openlist_dir = config.host.openlist_data_dir if config.deploys_openlist else None
    seen: set[str] = set()
    for i, source in enumerate(config.kopia.sources):
        key = f"{PROJECT}:kopia.sources[{i}].path"
        host_path_key = f"{PROJECT}:kopia.sources[{i}].hostPath"
        if source.path in seen:
            problems.append((key, f"{source.path} is mounted twice"))
        seen.add(source.path)
        if source.path == "/" or any(_is_within(source.path, d) for d in CONTAINER_RESERVED_DIRS):
            problems.append(
                (
                    key,
                    f"{source.path} is inside the container's own directories ({', '.join(CONTAINER_RESERVED_DIRS)}"
                    " or /): mount it elsewhere, e.g. /backup/<name>",
                )
            )
        if _is_within(kopia_dir, source.host_path) or _is_within(source.host_path, kopia_dir):
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} overlaps Kopia's own cache/logs ({kopia_dir}), which would be"
                    " backed up into the repository at every snapshot; set host.kopiaDataDir outside every source",
                )
            )
        if _is_within(config_dir, source.host_path):
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} contains host.configDir ({config_dir}): secrets.env and tls.key would be"
                    " backed up; move host.configDir outside every source",
                )
            )
        if openlist_dir is not None and _is_within(openlist_dir, source.host_path):
            # A live database copied mid-write, holding the S3 keys and the 189 login, stored on that drive.
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} contains OpenList's database ({openlist_dir}, under host.dataDir): it would"
                    " be backed up while OpenList writes it; set host.dataDir outside every source",
                )
            )
        target = f"{config.identity}:{source.path}"
        if target not in scheduled:
            problems.append((key, f"{source.path} is mounted but never backed up: add '{target}' to policy.sources"))
    return problems


def _maintenance_owner_is_a_policy_host(config: StackConfig) -> list[Problem]:
    owner = config.repository.maintenance_owner
    user, _, owner_host = owner.partition("@")
    hosts_in_policy = {s.host for s in config.policy.sources}
    if user == config.repository.username and owner_host in hosts_in_policy:
        return []
    choices = ", ".join(sorted(identity(config.repository.username, h) for h in hosts_in_policy))
    return [
        (
            f"{PROJECT}:repository.maintenanceOwner",
            f"'{owner}' must be <username>@<host> of a host in policy.sources ({choices})",
        )
    ]


def _s3_endpoint_only_without_openlist(config: StackConfig) -> list[Problem]:
    """A stack with OpenList reaches it over the Docker network; one without must name its endpoint."""
    key = f"{PROJECT}:kopia.s3.endpoint"
    if config.deploys_openlist and config.kopia.s3.endpoint is not None:
        return [(key, "must be omitted on a stack that deploys OpenList: Kopia reaches it over the Docker network")]
    if not config.deploys_openlist and config.kopia.s3.endpoint is None:
        return [(key, "is required when this stack does not deploy OpenList")]
    return []


def _published_ports_do_not_collide(config: StackConfig) -> list[Problem]:
    ports = {"kopia.server.port": config.kopia.server.port}
    if config.openlist is not None and config.deploys_openlist:
        ports |= {"openlist.webPort": config.openlist.web_port, "openlist.s3Port": config.openlist.s3_port}
    problems: list[Problem] = []
    first_user: dict[int, str] = {}
    for name, port in ports.items():
        if port in first_user:
            problems.append(
                (f"{PROJECT}:{name}", f"published ports collide: {port} is also {first_user[port]}; pick another port")
            )
        first_user.setdefault(port, name)
    return problems


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def load_namespace(
    values: Mapping[str, Any], *, stack: str | None = None, secret_keys: Collection[str] | None = None
) -> StackConfig:
    """The stack's config from fully qualified keys (`homelab-backup:host`, ...), as `pulumi config` lists them.

    The one way every caller reads the program's keys: `__main__.py` (every key Pulumi hands the program)
    and `scripts/status` (from the Automation API). Values may be objects or their JSON text.
    `stack`: the stack being deployed (its host must be its own). `secret_keys`: the keys stored as secrets;
    given, every other key of the namespace must be a program key or named by a `config:` reference.
    """
    picked: dict[str, Any] = {}
    others: list[str] = []
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue  # pulumi:, docker:, azure-native: ... belong to Pulumi and the providers
        if key not in PROJECT_KEYS + HOST_KEYS:
            others.append(full_key)
            continue
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            with contextlib.suppress(json.JSONDecodeError):  # else the model reports the key's type
                value = json.loads(value)
        if value is not None:
            picked[key] = value
    problems: list[Problem] = []
    if secret_keys is not None:
        refs = (_CONFIG_REF.fullmatch(text) for _, text in _strings(picked))
        referenced = {f"{PROJECT}:{ref['key']}" for ref in refs if ref}
        for full_key in others:
            if full_key not in referenced and full_key not in secret_keys:
                problems.extend(_unknown_top_level_key(full_key))
    return load_stack_config(picked, stack=stack, namespace_problems=problems)


def _unknown_top_level_key(full_key: str) -> list[Problem]:
    """A plain key the program never reads: a misspelled key would otherwise be silently ignored. (A key stored
    as a secret is a value for a `config:` reference, maybe of another stack sharing the same secrets.)"""
    return [
        (
            full_key,
            f"unknown key (check its spelling): the program reads {', '.join(PROJECT_KEYS + HOST_KEYS)} and the"
            " secrets named by 'config:<key>' references",
        )
    ]


def load_stack_config(
    values: Mapping[str, Any], *, stack: str | None = None, namespace_problems: Sequence[Problem] = ()
) -> StackConfig:
    """Validate the stack's config (`{key: value}` without namespace) or raise ConfigError listing every problem.

    A placeholder is reported instead of what the model says about it; a control character where the model
    saw nothing wrong (a free-text label, a pattern-checked name) is reported on its own.
    """
    placeholders = _placeholders_are_replaced(values)
    model: list[Problem] = []
    config = None
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as exc:
        model = [p for p in _pydantic_problems(exc) if not any(_is_key_within(p[0], k) for k, _ in placeholders)]
    reported = [k for k, _ in placeholders + model]
    controls = [p for p in _no_control_characters(values) if not any(_is_key_within(p[0], k) for k in reported)]
    problems = [*namespace_problems, *placeholders, *model, *controls]
    if config is not None:  # the rules across keys need a whole model; they run beside any other problem
        problems += _consistency_problems(config, stack)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _strings(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[tuple[int | str, ...], str]]:
    """Every string in raw config values, with its location."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*loc, str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, (*loc, i))


def _placeholders_are_replaced(values: Mapping[str, Any]) -> list[Problem]:
    """A committed stack file's host-specific values are 'SET-ME:<example>' until the user sets them, so a
    deploy stops here naming what to set, instead of failing later at SSH or at binding a port."""
    return [
        (
            _key(loc),
            f"is a placeholder ('{text}'): set this host's value{_description(loc)}",
        )
        for loc, text in _strings(values)
        if text.startswith(PLACEHOLDER)
    ]


def _no_control_characters(values: Mapping[str, Any]) -> list[Problem]:
    """Names, paths and labels go into shell commands, file names and Kopia's policy: a newline or another
    control character there (a config dir 'kopia\\n') would be created on the host as it is."""
    return [
        (_key(loc), "must not contain control characters (a newline, a tab, ...)")
        for loc, text in _strings(values)
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)
    ]


def _description(loc: tuple[int | str, ...]) -> str:
    """': <the key's description>' from the models, or '' when the key has none."""
    model: Any = StackConfig
    description = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()} if _is_model(model) else {}
        if part not in fields:
            return ""
        description = fields[part].description
        model = _model_of(fields[part].annotation)
    return f": {description}" if description else ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_of(annotation: Any) -> Any:
    """The model inside `X`, `X | None`, `list[X]` or `Annotated[X, ...]`, or None."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_of(arg)) is not None:
            return found
    return None


def _is_key_within(key: str, outer: str) -> bool:
    return key == outer or key.startswith((outer + ".", outer + "["))
