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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
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

# Kopia's own directories inside the container: a backup source mounted here would shadow them.
KOPIA_RESERVED_DIRS = ("/app",)

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
    if not _SAFE_PATH.match(value):
        raise ValueError("may hold only letters, digits and '/._+@-' (it goes into shell commands and Kopia's policy)")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError("must be a lowercase DNS label (letters, digits, '-')")
    return value


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError("must be a lowercase user name (letters, digits, '_', '-')")
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address (ports are bound to it)") from None
    return value


def _pinned_image(value: str) -> str:
    if _IMAGE_DIGEST.match(value):
        return value  # pinned by content: the strongest pin
    if not _IMAGE.match(value):
        raise ValueError("must be '<repository>:<tag>' with an explicit tag")
    if value.rsplit(":", 1)[1] == "latest":
        raise ValueError("must pin a release, not ':latest'")
    return value


def _network_address(value: str) -> str:
    # A host name or an IP address. For SSH it goes into ssh://user@address and an ssh option: a leading '-'
    # or a space would inject options.
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not re.match(
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
    if match := _AZURE_REF.match(value):
        return SecretRef(value, vault=match["vault"], secret=match["secret"], field=match["field"])
    if match := _CONFIG_REF.match(value):
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
    """Base: YAML keys are camelCase aliases; unknown keys are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- project-level models


class Images(_Model):
    kopia: PinnedImage = Field(description="Kopia server image, e.g. kopia/kopia:0.22.3")
    openlist: PinnedImage = Field(description="OpenList image (v4.1.9+: uploads need real modification times)")


def _bucket(value: str) -> str:
    if not _BUCKET.match(value):
        raise ValueError("must be 3-63 lowercase letters, digits, '.', '-'")
    return value


def _prefix(value: str) -> str:
    if problems := _prefix_problems(value):
        raise ValueError("; ".join(problems))
    return value


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
    if prefix.startswith("/") or not all(_PREFIX_SEGMENT.match(s) and s not in (".", "..") for s in segments):
        problems.append("must be folder names of letters, digits, '.', '_', '-' separated by '/', no leading '/'")
    if OPENLIST_EMPTY_FOLDER_MARKER in prefix:
        problems.append(f"must not contain OpenList's empty-folder marker '{OPENLIST_EMPTY_FOLDER_MARKER}'")
    return problems


class Retention(_Model):
    """Kopia retention; unset values inherit from the repository's (global) policy."""

    keep_latest: int | None = Field(default=None, alias="keepLatest", ge=0)
    keep_hourly: int | None = Field(default=None, alias="keepHourly", ge=0)
    keep_daily: int | None = Field(default=None, alias="keepDaily", ge=0)
    keep_weekly: int | None = Field(default=None, alias="keepWeekly", ge=0)
    keep_monthly: int | None = Field(default=None, alias="keepMonthly", ge=0)
    keep_annual: int | None = Field(default=None, alias="keepAnnual", ge=0)


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
        match = re.match(r"^([^@:]+)@([^@:]+):(/.*)$", value)
        if not match:
            raise ValueError("must be '<user>@<host>:/<path>', e.g. 'shelken@vps:/backup/data'")
        return {"user": match[1], "host": match[2], "path": match[3]}
    return value


class Policy(_Model):
    """The one backup policy of the repository, rendered to the same policy.json on every host."""

    retention: Retention
    compression: Compressor
    interval_seconds: int = Field(alias="intervalSeconds", ge=60, description="snapshot interval of every source")
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
    if not _HOST_KEY.match(value):
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
        description="the host's public key, as in known_hosts without the host column: 'ssh-ed25519 AAAA...'",
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
    deploy_address: IpAddress = Field(alias="deployAddress", description="address published ports bind to")
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
    # Above the 30-day early renewal, or every `pulumi up` would renew the certificate.
    tls_validity_days: int = Field(default=3650, alias="tlsValidityDays", ge=60)


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

    def secret_refs(self) -> dict[str, SecretRef]:
        """The profile's secrets by role ('url', 'headers', 'password'), for the resolver and the renderer."""
        refs = {
            "url": self.webhook and self.webhook.url,
            "headers": self.webhook and self.webhook.headers,
            "password": self.email and self.email.password,
        }
        return {role: ref for role, ref in refs.items() if ref is not None}


class Kopia(_Model):
    container_name: str = Field(default="kopia", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    sources: list[BackupSource] = Field(min_length=1)
    s3: S3
    secrets: KopiaSecrets
    server: KopiaServer = Field(default_factory=KopiaServer)
    health: KopiaHealth = Field(default_factory=KopiaHealth)
    drill: KopiaDrill = Field(default_factory=KopiaDrill)


class OpenList(_Model):
    container_name: str = Field(default="openlist", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    web_port: int = Field(default=5244, alias="webPort", ge=1, le=65535)
    s3_port: int = Field(default=5246, alias="s3Port", ge=1, le=65535)


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


def _consistency_problems(config: StackConfig) -> list[Problem]:
    """Rules that span keys, each on its own below; every problem names its key."""
    return [
        *_policy_sources_are_mounted(config),
        *_mounts_are_scheduled_and_safe(config),
        *_maintenance_owner_is_a_policy_host(config),
        *_s3_endpoint_only_without_openlist(config),
        *_published_ports_do_not_collide(config),
        *_notification_names_are_unique(config),
    ]


def _notification_names_are_unique(config: StackConfig) -> list[Problem]:
    """Kopia keeps one profile per name: a second one with the same name would silently replace the first."""
    names = [profile.name for profile in config.notifications]
    return [
        (f"{PROJECT}:notifications[{index}].name", f"{name!r} is declared twice")
        for index, name in enumerate(names)
        if name in names[:index]
    ]


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
    """Each mount is scheduled, mounted once, outside Kopia's own dirs, and its host path holds neither
    Kopia's cache/logs nor the config dir (they would be backed up)."""
    problems: list[Problem] = []
    scheduled = {str(s) for s in config.policy.sources}
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    seen: set[str] = set()
    for i, source in enumerate(config.kopia.sources):
        key = f"{PROJECT}:kopia.sources[{i}].path"
        host_path_key = f"{PROJECT}:kopia.sources[{i}].hostPath"
        if source.path in seen:
            problems.append((key, f"{source.path} is mounted twice"))
        seen.add(source.path)
        if any(_is_within(source.path, d) for d in KOPIA_RESERVED_DIRS):
            problems.append((key, f"{source.path} is inside Kopia's own directories {KOPIA_RESERVED_DIRS}"))
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
    if config.openlist is not None and config.kopia.s3.endpoint is not None:
        return [(key, "must be omitted on a stack that deploys OpenList: Kopia reaches it over the Docker network")]
    if config.openlist is None and config.kopia.s3.endpoint is None:
        return [(key, "is required when this stack does not deploy OpenList")]
    return []


def _published_ports_do_not_collide(config: StackConfig) -> list[Problem]:
    ports = {"kopia.server.port": config.kopia.server.port}
    if config.openlist is not None:
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


def load_namespace(values: Mapping[str, Any]) -> StackConfig:
    """The stack's config from fully qualified keys (`homelab-backup:host`, ...), as `pulumi config` lists them.

    The one way every caller reads the program's keys: `__main__.py` (from `pulumi.Config`) and
    `scripts/status` (from the Automation API). Values may be objects or their JSON text.
    """
    picked: dict[str, Any] = {}
    for key in PROJECT_KEYS + HOST_KEYS:
        value = values.get(f"{PROJECT}:{key}")
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            with contextlib.suppress(json.JSONDecodeError):  # else the model reports the key's type
                value = json.loads(value)
        if value is not None:
            picked[key] = value
    return load_stack_config(picked)


def load_stack_config(values: Mapping[str, Any]) -> StackConfig:
    """Validate the stack's config (`{key: value}` without namespace) or raise ConfigError listing every problem."""
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc)) from None
    problems = _consistency_problems(config)
    if problems:
        raise ConfigError(problems)
    return config
