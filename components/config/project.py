"""The models of the keys every host shares, in `Pulumi.yaml`: images, repository, policy, schedule,
keyVault, notifications."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator

from components.config.fields import AbsolutePath, HostName, Model, NetworkAddress, PinnedImage, UserName
from components.config.references import SecretReference

# A retention count above this is a typo (Kopia keeps every snapshot it is told to count).
MAX_RETENTION_COUNT = 10_000


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


class Images(Model):
    kopia: PinnedImage = Field(description="Kopia server image, pinned", examples=["kopia/kopia:0.22.3"])
    openlist: PinnedImage = Field(
        description="OpenList image (v4.1.9+: uploads need real modification times)",
        examples=["ghcr.io/openlistteam/openlist-git:v4.2.5"],
    )


def _bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value):
        raise ValueError("must be 3-63 lowercase letters, digits, '.', '-'")
    return value


def _prefix(value: str) -> str:
    if problems := _prefix_problems(value):
        raise ValueError("; ".join(problems))
    return value


#: Kopia 0.22.3 defaults to 20 MiB packs (repo/format/format_provider.go); this project's choice, measured in
#: benchmarks/snapshot_throughput.py (docs/performance.md).
DEFAULT_PACK_SIZE_MB = 64
_KOPIA_DURATION = r"^[1-9][0-9]*(m|h)$"  # 0m would run maintenance without pause


class Maintenance(Model):
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


class Repository(Model):
    # Field validators, not a model validator: they run even when another field of the model is invalid.
    bucket: Annotated[str, AfterValidator(_bucket)] = Field(
        description="S3 bucket both hosts write to (an OpenList S3 bucket name)", examples=["kopia"]
    )
    prefix: Annotated[str, AfterValidator(_prefix)] = Field(
        description="object prefix inside the bucket: a folder path ending in '/'", examples=["main/"]
    )
    username: UserName = Field(
        description="Kopia user of every host's identity <username>@<host>", examples=["shelken"]
    )
    maintenance_owner: str = Field(
        alias="maintenanceOwner",
        description="<username>@<host> that runs maintenance and is the only host allowed to create the repository",
        examples=["shelken@sakamoto"],
    )
    pack_size_mb: int = Field(
        default=DEFAULT_PACK_SIZE_MB,
        alias="packSizeMB",
        ge=10,
        le=120,
        description="Kopia's maximum pack blob size (MiB), set by the maintenance owner; fewer, larger blobs keep "
        "OpenList's folder listings short (docs/decisions.md, docs/performance.md)",
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


def _retention_count(alias: str, description: str, example: int) -> Any:
    """One retention count of `Retention`: optional (unset inherits the global policy's), 0 to MAX_RETENTION_COUNT."""
    return Field(default=None, alias=alias, ge=0, le=MAX_RETENTION_COUNT, description=description, examples=[example])


class Retention(Model):
    """Kopia retention; unset values inherit from the repository's (global) policy."""

    keep_latest: int | None = _retention_count("keepLatest", "newest snapshots kept", 10)
    keep_hourly: int | None = _retention_count("keepHourly", "hours kept (the latest snapshot of each)", 24)
    keep_daily: int | None = _retention_count("keepDaily", "days kept (the latest snapshot of each)", 7)
    keep_weekly: int | None = _retention_count("keepWeekly", "weeks kept (the latest snapshot of each)", 4)
    keep_monthly: int | None = _retention_count("keepMonthly", "months kept (the latest snapshot of each)", 12)
    keep_annual: int | None = _retention_count("keepAnnual", "years kept (the latest snapshot of each)", 3)


class SourceTarget(Model):
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


#: A source as the stack files write it, '<user>@<host>:/<path>' (parsed into a SourceTarget): for editors, a string.
SourceTargetText = Annotated[
    SourceTarget,
    WithJsonSchema({"type": "string", "pattern": r"^[^@:]+@[^@:]+:/.*$"}),
]


#: More files in flight than CPUs, so compression keeps both cores busy while packs upload (docs/performance.md).
DEFAULT_PARALLEL_FILE_READS = 8


class Policy(Model):
    """The one backup policy of the repository, rendered to the same policy.json on every host."""

    retention: Retention
    compression: Compressor = Field(description="Kopia's compressor for every source", examples=["zstd-fastest"])
    parallel_file_reads: int = Field(
        default=DEFAULT_PARALLEL_FILE_READS,
        alias="parallelFileReads",
        ge=1,
        le=64,
        description="files a snapshot reads and uploads at once (policy upload.maxParallelFileReads; Kopia's "
        "default is one per CPU)",
    )
    sources: list[SourceTargetText] = Field(
        min_length=1,
        description="'<user>@<host>:/<path>' of every host",
        examples=[["shelken@sakamoto:/backup/minio", "shelken@vps:/backup/data"]],
    )


class Schedule(Model):
    """When every source is snapshotted: policy.json's `scheduling`, rendered into each source's entry.

    A key of its own beside `policy`, so that a stack can change the interval alone (the e2e stacks: one
    minute): a stack's value replaces the whole project value, Pulumi does not merge the two objects.
    """

    interval_seconds: int = Field(
        alias="intervalSeconds", ge=60, description="snapshot interval of every source", examples=[3600]
    )


class KeyVault(Model):
    url_template: str = Field(
        default="https://{vault}.vault.azure.net",
        alias="urlTemplate",
        description="data-plane base URL; {vault} is replaced by the reference's vault name",
    )
    api_version: str = Field(
        default="7.4",
        alias="apiVersion",
        pattern=r"^[0-9]+\.[0-9]+(-preview)?$",
        description="Key Vault REST API version of the secret reads",
    )

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


#: Kopia's severity names and numbers (notification/notification_send.go @ v0.22.3).
SEVERITIES = {"verbose": -100, "success": -10, "report": 0, "warning": 10, "error": 20}


class WebhookTarget(Model):
    """A webhook (also ntfy, Gotify, Discord, Slack): Kopia sends the message body with a `Subject` header."""

    url: SecretReference = Field(
        description="secret reference to the URL (it usually holds a token)",
        examples=["azure://shelken-homelab/homelab-backup/NTFY_URL"],
    )
    method: Literal["POST", "PUT"] = Field(default="POST", description="HTTP method of the request")
    format: Literal["txt", "html"] = Field(default="txt", description="message body format")
    headers: SecretReference | None = Field(
        default=None,
        description="secret reference to extra headers, one 'Name: value' per line",
        examples=["azure://shelken-homelab/homelab-backup/NTFY_HEADERS"],
    )


class EmailTarget(Model):
    """Mail through an SMTP server (Kopia uses STARTTLS when the server offers it)."""

    smtp_server: NetworkAddress = Field(
        alias="smtpServer", description="SMTP server's host name or IP address", examples=["smtp.example.net"]
    )
    smtp_port: int = Field(default=587, alias="smtpPort", ge=1, le=65535, description="SMTP server's port")
    username: str | None = Field(
        default=None,
        description="SMTP login; omit for a relay without authentication",
        examples=["kopia@example.net"],
    )
    password: SecretReference | None = Field(
        default=None,
        description="secret reference to the SMTP password",
        examples=["azure://shelken-homelab/homelab-backup/SMTP_PASSWORD"],
    )
    from_address: str = Field(
        alias="from", pattern=r"^[^\s@]+@[^\s@]+$", description="sender address", examples=["kopia@example.net"]
    )
    to: list[Annotated[str, Field(pattern=r"^[^\s@,]+@[^\s@,]+$")]] = Field(
        min_length=1, description="recipient addresses", examples=[["me@example.net"]]
    )
    format: Literal["txt", "html"] = Field(default="txt", description="message body format")

    @model_validator(mode="after")
    def _password_with_username(self) -> EmailTarget:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class NotificationProfile(Model):
    """One of Kopia's notification profiles: where the servers send snapshot reports and errors."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
        description="the profile's name; Kopia stores it as homelab-<name>",
        examples=["ntfy"],
    )
    min_severity: Literal["verbose", "success", "report", "warning", "error"] = Field(
        default="warning",
        alias="minSeverity",
        description="the least severe message sent: 'warning' sends failed and partly failed snapshots, not "
        "every successful one (Kopia's own default, 'report', sends them all)",
    )
    webhook: WebhookTarget | None = Field(default=None, description="send by webhook (exactly one of webhook, email)")
    email: EmailTarget | None = Field(default=None, description="send by mail (exactly one of webhook, email)")

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
