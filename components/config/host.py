"""The models of one host's keys, in `Pulumi.<stack>.yaml`: host, kopia, openlist."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from components.config.fields import AbsolutePath, HostName, IpAddress, Model, NetworkAddress, UserName
from components.config.references import SecretReference


def _stack_name(value: str | None) -> str | None:
    # Pulumi's own rule for stack names.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
        raise ValueError("must be a stack name (letters, digits, '-', '_', '.')")
    return value


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


class Ssh(Model):
    user: UserName
    address: NetworkAddress = Field(description="host name or IP the operator's machine reaches")
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


class Network(Model):
    name: str = Field(default="homelab", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    create: bool = Field(default=False, description="true: this stack creates the network; false: it must exist")


class Host(Model):
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


class BackupSource(Model):
    host_path: AbsolutePath = Field(alias="hostPath", description="directory on the host")
    path: AbsolutePath = Field(description="where it is mounted read-only in the container; the policy names this path")


class S3(Model):
    endpoint: SecretReference | None = Field(
        default=None,
        description="reference to 'http(s)://host:port'; omit on a stack that deploys OpenList (then Kopia uses it)",
    )
    access_key_id: SecretReference = Field(alias="accessKeyId")
    secret_access_key: SecretReference = Field(alias="secretAccessKey")


class KopiaSecrets(Model):
    repository_password: SecretReference = Field(alias="repositoryPassword")
    server_username: SecretReference = Field(alias="serverUsername")
    server_password: SecretReference = Field(alias="serverPassword")
    server_control_password: SecretReference = Field(
        alias="serverControlPassword", description="for health checks (control API), separate from the UI login"
    )


class KopiaServer(Model):
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
    container_name: str = Field(default="kopia", alias="containerName", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    sources: list[BackupSource] = Field(min_length=1)
    s3: S3
    secrets: KopiaSecrets
    server: KopiaServer = Field(default_factory=KopiaServer)
    health: KopiaHealth = Field(default_factory=KopiaHealth)
    drill: KopiaDrill = Field(default_factory=KopiaDrill)
    cache: KopiaCache = Field(default_factory=KopiaCache)


_ADMIN_URL = re.compile(r"^(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})/?$")


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


class OpenListStorage(Model):
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


class OpenList(Model):
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
    restart_command: str | None = Field(
        default=None,
        alias="restartCommand",
        min_length=1,
        description="with adminUrl: the shell command, run on this host over SSH, that restarts that OpenList "
        "(e.g. 'kubectl -n media rollout restart deployment/openlist'); it reads its S3 keys at start only",
    )
    admin_username: str = Field(default="admin", alias="adminUsername", pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    admin_password: SecretReference = Field(alias="adminPassword", description="the admin login's password")
    storage: OpenListStorage = Field(default_factory=OpenListStorage)

    @property
    def deployed(self) -> bool:
        return self.admin_url is None
