"""OpenList: the S3 gateway in front of the 189 Cloud drive (deployed on the VPS).

The 189 storage, `web_proxy` and the S3 keys are OpenList database settings made
once in its web UI (README, "First deploy"): without the keys its S3 server has
no authentication, and they are read only at start (restart after setting them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.config import Host
from components.config import OpenList as OpenListConfig
from components.host_files import OwnedDirectory
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
            ssh=args.ssh,
            target=args.ssh_target,
            path=data_dir,
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

        self.web_url = pulumi.Output.from_input(f"http://{host.deploy_address}:{settings.web_port}")
        self.s3_url = pulumi.Output.from_input(f"http://{host.deploy_address}:{settings.s3_port}")
        # Kopia on the same host reaches OpenList by container name over the shared network: plain HTTP.
        self.internal_s3_endpoint = container.name.apply(lambda n: f"http://{n}:{settings.s3_port}")
        self.register_outputs(
            {"web_url": self.web_url, "s3_url": self.s3_url, "internal_s3_endpoint": self.internal_s3_endpoint}
        )


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
