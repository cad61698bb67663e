"""ContainerPauser: the one container with the Docker socket, which pauses a source's containers for its snapshots.

Kopia's before- and after-snapshot-root actions (in policy.json, run in the Kopia container, which has no socket)
only write "pause" or "resume" into a directory shared with this container; it acts on those two words, for the
containers the stack fixed at deploy, and on nothing else (docs/decisions.md, "Live data"). Thin wiring only: the
scripts are rendered in `components/render.py` from `components/templates/pauser.sh` and `pause-action.sh`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components import render
from components.config import DUMPS_DIR, Host, Kopia
from components.kopia_node import pause_dir


@dataclass(frozen=True)
class ContainerPauserArgs:
    host: Host
    kopia: Kopia  # its sources' pauses, and the Kopia container's name
    identity: str  # user@host
    image: str  # the Kopia image: a POSIX shell and curl, already on the host
    container_name: str  # config.pauser_container_name(kopia.containerName)


class ContainerPauser(pulumi.ComponentResource):
    """The pauser container of one host: the Docker socket, the pause requests, and each paused source's .dumps
    directory (its status line)."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: ContainerPauserArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:ContainerPauser", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        paused = render.paused_sources(args.kopia.sources)
        volumes = [
            docker.ContainerVolumeArgs(host_path=render.DOCKER_SOCKET, container_path=render.DOCKER_SOCKET),
            docker.ContainerVolumeArgs(host_path=pause_dir(args.host), container_path=render.PAUSE_DIR),
            *(
                docker.ContainerVolumeArgs(
                    host_path=f"{source.host_path}/{DUMPS_DIR}", container_path=f"{render.PAUSER_SOURCES_DIR}/{i}"
                )
                for i, source, _ in paused
            ),
        ]
        # What it may pause, for each source: visible in `pulumi preview` and `docker inspect`.
        labels = {
            f"homelab-backup.pauses.{i}": f"{source.path}: {', '.join(pause.containers)}" for i, source, pause in paused
        }
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        container = docker.Container(
            f"{name}-container",
            name=args.container_name,
            image=image.image_id,
            restart="always",
            network_mode="none",  # it talks to the socket alone
            volumes=volumes,
            envs=[f"TZ={args.host.timezone}"],
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())],
            entrypoints=["/bin/sh", "-c", render.render_pauser_script(args.identity, args.kopia.sources), "pauser"],
            # Stopped with SIGTERM, not killed, when a deploy replaces or removes it: it unpauses on its way out.
            destroy_grace_seconds=10,
            opts=child,
        )
        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
