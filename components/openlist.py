"""OpenList: the S3 gateway in front of the 189 Cloud drive.

`OpenList` deploys it (on the VPS) and configures it; `OpenListGateway` only configures one this
program does not deploy (the cluster's, which sakamoto writes through). Both configure through
`OpenListSettings` (components/openlist_config.py): admin password, storage, bucket folder, S3 keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.config import Host, SecretRef, parse_admin_url
from components.config import OpenList as OpenListConfig
from components.host_files import OwnedDirectory, RemotePath
from components.openlist_config import OpenListSettings
from components.render import homepage_labels

DATA_DIR = "/opt/openlist/data"
WEB_PORT_IN_CONTAINER = 80
OPENLIST_UID = 1001  # the upstream image runs as this user


@dataclass(frozen=True)
class OpenListArgs:
    host: Host
    settings: OpenListConfig
    image: str
    network_name: pulumi.Input[str]
    ssh: list[str]  # components.hosts.ssh_command(host)
    ssh_target: str  # components.hosts.ssh_target(host)
    secrets: OpenListSecrets
    bucket: str  # repository.bucket


@dataclass(frozen=True)
class OpenListSecrets:
    admin_password: pulumi.Input[str]
    storage_fields: dict[str, pulumi.Input[str]]  # openlist.storage.secretFields, by field name
    s3_access_key_id: pulumi.Input[str]  # the same keys Kopia signs with
    s3_secret_access_key: pulumi.Input[str]
    restart_command: pulumi.Input[str] | None = None  # openlist.restartCommand, when it is a secret reference


@dataclass(frozen=True)
class OpenListGatewayArgs:
    settings: OpenListConfig  # with admin_url
    ssh: list[str]
    ssh_target: str
    secrets: OpenListSecrets
    bucket: str


class OpenList(pulumi.ComponentResource):
    web_url: pulumi.Output[str]
    s3_url: pulumi.Output[str]
    internal_s3_endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: OpenListArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:OpenList", name, None, opts)
        host, settings = args.host, args.settings
        child = pulumi.ResourceOptions(parent=self)
        data_dir = data_dir_on_host(host)

        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        # OpenList's alone: its database holds the S3 keys and the 189 login. Destroy keeps it.
        owned = OwnedDirectory(
            f"{name}-data-dir",
            at=RemotePath(args.ssh, args.ssh_target, data_dir),
            uid=OPENLIST_UID,
            mode="700",
            image=args.image,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[image]),
        )
        labels = homepage_labels(host.homepage_group, "openlist", "openlist.svg", "网盘S3服务")
        container = docker.Container(
            f"{name}-container",
            name=settings.container_name,
            image=image.image_id,
            restart="always",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            ports=[
                docker.ContainerPortArgs(
                    internal=WEB_PORT_IN_CONTAINER, external=settings.web_port, ip=host.deploy_address
                ),
                docker.ContainerPortArgs(internal=settings.s3_port, external=settings.s3_port, ip=host.deploy_address),
            ],
            volumes=[docker.ContainerVolumeArgs(host_path=data_dir, container_path=DATA_DIR)],
            envs=[f"{k}={v}" for k, v in container_env(host.timezone, settings.s3_port).items()],
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[owned]),
        )

        # Through the host: the web port as published on the deploy address.
        configured = settings_resource(
            f"{name}-settings",
            settings,
            ssh=args.ssh,
            ssh_target=args.ssh_target,
            endpoint={"host": host.deploy_address, "port": settings.web_port, "tls": False},
            s3_endpoint={"host": host.deploy_address, "port": settings.s3_port, "tls": False},
            container=container.name,
            secrets=args.secrets,
            bucket=args.bucket,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
        )

        self.web_url = pulumi.Output.from_input(f"http://{host.deploy_address}:{settings.web_port}")
        self.s3_url = pulumi.Output.from_input(f"http://{host.deploy_address}:{settings.s3_port}")
        # Kopia on the same host reaches OpenList by container name over the shared network: plain HTTP.
        # Through the settings resource, so Kopia is deployed once OpenList holds its keys and bucket.
        self.internal_s3_endpoint = pulumi.Output.all(container.name, configured.id).apply(
            lambda values: f"http://{values[0]}:{settings.s3_port}"
        )
        self.register_outputs(
            {"web_url": self.web_url, "s3_url": self.s3_url, "internal_s3_endpoint": self.internal_s3_endpoint}
        )


class OpenListGateway(pulumi.ComponentResource):
    """An OpenList this program does not deploy, configured through an SSH tunnel to this stack's host."""

    def __init__(self, name: str, args: OpenListGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:OpenListGateway", name, None, opts)
        settings = args.settings
        assert settings.admin_url is not None, "a gateway is an OpenList given by its admin URL"
        assert settings.s3_url is not None, "required with adminUrl (config rules)"
        host, port, tls = parse_admin_url(settings.admin_url)
        s3_host, s3_port, s3_tls = parse_admin_url(settings.s3_url)
        self._configured = settings_resource(
            f"{name}-settings",
            settings,
            ssh=args.ssh,
            ssh_target=args.ssh_target,
            endpoint={"host": host, "port": port, "tls": tls},
            s3_endpoint={"host": s3_host, "port": s3_port, "tls": s3_tls},
            container=None,  # not ours: restarted by openlist.restartCommand, or the up stops and says so
            secrets=args.secrets,
            bucket=args.bucket,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})

    def once_keys_in_force(self, s3_endpoint: pulumi.Input[str]) -> pulumi.Output[str]:
        """`s3_endpoint`, known only once this gateway holds the declared keys in force: a Kopia given it is
        created after that. Before, the gateway may serve S3 without authentication, and the restart that puts
        the keys in force would cut Kopia's uploads in the middle (with a drive that writes in place, such as
        SFTP or Local, a blob cut short stays, and every reader fails on it). On a rotation, new keys reach Kopia
        only after the gateway enforces them: a stopped `up` leaves Kopia on the keys the gateway still takes."""
        return pulumi.Output.all(s3_endpoint, self._configured.id).apply(lambda values: values[0])


def settings_resource(
    name: str,
    settings: OpenListConfig,
    *,
    ssh: list[str],
    ssh_target: str,
    endpoint: dict,
    s3_endpoint: dict,
    container: pulumi.Input[str] | None,
    secrets: OpenListSecrets,
    bucket: str,
    opts: pulumi.ResourceOptions,
) -> OpenListSettings:
    return OpenListSettings(
        name,
        ssh=ssh,
        target=ssh_target,
        endpoint=endpoint,
        s3_endpoint=s3_endpoint,
        container=container,
        restart_command=restart_command(settings, secrets),
        admin_username=settings.admin_username,
        admin_password=secrets.admin_password,
        storage=storage_spec(settings),
        storage_secrets=secrets.storage_fields,
        bucket={"name": bucket, "folder": bucket_folder(settings, bucket)},
        s3_keys={"accessKeyId": secrets.s3_access_key_id, "secretAccessKey": secrets.s3_secret_access_key},
        opts=opts,
    )


def restart_command(settings: OpenListConfig, secrets: OpenListSecrets) -> pulumi.Input[str] | None:
    """The gateway's restart command: as declared, or the secret value its reference names."""
    if isinstance(settings.restart_command, SecretRef):
        assert secrets.restart_command is not None, "__main__.py reads every secret reference"
        return pulumi.Output.secret(secrets.restart_command)
    return settings.restart_command


def storage_spec(settings: OpenListConfig) -> dict:
    """The storage's plain settings, as the settings resource takes them."""
    storage = settings.storage
    return {
        "driver": storage.driver,
        "mountPath": storage.mount_path,
        "cacheExpiration": storage.cache_expiration_minutes,
        "webProxy": storage.web_proxy,
        "fields": dict(storage.fields),
    }


def bucket_folder(settings: OpenListConfig, bucket: str) -> str:
    """The bucket's folder on the drive, `<mountPath>/<bucket>`; the repository prefix lies below it."""
    return f"{settings.storage.mount_path.rstrip('/')}/{bucket}"


def container_env(timezone: str, s3_port: int) -> dict[str, str]:
    """OpenList's environment: its S3 server on, its ports, and a umask for its database."""
    return {
        "TZ": timezone,
        "S3_ENABLE": "true",
        "S3_PORT": str(s3_port),
        "HTTP_PORT": str(WEB_PORT_IN_CONTAINER),
        # The image's entrypoint applies it: the database (S3 keys, 189 login) is created 0600.
        "UMASK": "077",
    }


def data_dir_on_host(host: Host) -> str:
    """Where OpenList's database (and a Local storage inside it) lives on the host (one home: the config,
    whose rules keep it out of every backed-up tree)."""
    return host.openlist_data_dir
