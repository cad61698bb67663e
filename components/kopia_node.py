"""KopiaNode: one host's Kopia server, its config files and its TLS certificate.

Thin wiring only: what the files and the start script say is decided in
`components/render.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from components import render
from components.config import StackConfig
from components.remote_files import ConfigFiles


@dataclass(frozen=True)
class KopiaSecrets:
    """Resolved secrets (all secret Outputs)."""

    repository_password: pulumi.Output[str]
    server_username: pulumi.Output[str]
    server_password: pulumi.Output[str]
    server_control_password: pulumi.Output[str]
    s3_access_key_id: pulumi.Output[str]
    s3_secret_access_key: pulumi.Output[str]
    heartbeat_url: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class KopiaNodeArgs:
    config: StackConfig
    secrets: KopiaSecrets
    s3_endpoint: pulumi.Input[str]  # 'http://host:port'; may be a secret
    network_name: pulumi.Input[str]
    ssh: list[str]  # components.hosts.ssh_command(host)
    ssh_target: str  # components.hosts.ssh_target(host)


def start_script_params(config: StackConfig) -> render.StartScriptParams:
    server = config.kopia.server
    return render.StartScriptParams(
        hostname=config.host.name,
        username=config.repository.username,
        maintenance_owner=config.repository.maintenance_owner,
        port=server.port,
        tls=not server.insecure,
        refresh_interval=server.refresh_interval,
        sources=tuple(str(s) for s in config.host_sources),
        max_snapshot_age_seconds=config.max_snapshot_age_seconds,
    )


class KopiaNode(pulumi.ComponentResource):
    server_url: pulumi.Output[str]
    tls_fingerprint: pulumi.Output[str | None]
    identity: pulumi.Output[str]
    sources: pulumi.Output[list[str]]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: KopiaNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:KopiaNode", name, None, opts)
        config = args.config
        host, server = config.host, config.kopia.server
        params = start_script_params(config)
        child = pulumi.ResourceOptions(parent=self)

        files: dict[str, pulumi.Input[str]] = {}
        storage = pulumi.Output.all(
            args.s3_endpoint, args.secrets.s3_access_key_id, args.secrets.s3_secret_access_key
        ).apply(lambda v: render.s3_storage(config.repository, v[0], v[1], v[2]))
        files[render.REPOSITORY_CONFIG] = pulumi.Output.secret(storage.apply(render.render_repository_config))
        files[render.STORAGE_TOKEN] = pulumi.Output.secret(storage.apply(render.render_storage_token))
        files[render.POLICY_JSON] = render.render_policy_json(config.policy)
        files[render.SECRETS_ENV] = pulumi.Output.secret(
            pulumi.Output.all(
                args.secrets.repository_password,
                args.secrets.server_username,
                args.secrets.server_password,
                args.secrets.server_control_password,
                args.secrets.heartbeat_url,
            ).apply(lambda v: render.render_secrets_env(render.kopia_secret_variables(*v)))
        )

        fingerprint: pulumi.Output[str] | None = None
        if params.tls:
            # Generated once and kept in Pulumi state: the fingerprint is known before the
            # server runs and survives container replacement.
            key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            cert = tls.SelfSignedCert(
                f"{name}-tls-cert",
                private_key_pem=key.private_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(common_name=host.name, organization="homelab-backup"),
                dns_names=[host.name, "localhost"],
                ip_addresses=sorted({host.deploy_address, "127.0.0.1"}),
                validity_period_hours=server.tls_validity_days * 24,
                early_renewal_hours=30 * 24,
                allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
                opts=child,
            )
            files[render.TLS_CERT] = cert.cert_pem
            files[render.TLS_KEY] = pulumi.Output.secret(key.private_key_pem)
            fingerprint = cert.cert_pem.apply(render.pem_sha256_fingerprint)

        config_files = ConfigFiles(
            f"{name}-config",
            ssh=args.ssh,
            target=args.ssh_target,
            directory=host.config_dir,
            files=files,
            secret_files=render.SECRET_FILES,
            opts=child,
        )
        # Keyed by secrets.env, so the label may be plain: a preview shows which label changes.
        names = sorted(files)
        digest = pulumi.Output.unsecret(
            pulumi.Output.all(*[files[f] for f in names]).apply(
                lambda contents: render.content_digest(
                    dict(zip(names, contents, strict=True)), key=contents[names.index(render.SECRETS_ENV)]
                )
            )
        )

        image = docker.RemoteImage(f"{name}-image", name=config.images.kopia, keep_locally=True, opts=child)
        data = host.kopia_dir
        volumes = [
            docker.ContainerVolumeArgs(host_path=host.config_dir, container_path=render.DEPLOY_DIR, read_only=True),
            docker.ContainerVolumeArgs(host_path=f"{data}/cache", container_path=render.CACHE_DIR),
            docker.ContainerVolumeArgs(host_path=f"{data}/logs", container_path=render.LOGS_DIR),
            docker.ContainerVolumeArgs(host_path=f"{data}/state", container_path=render.STATE_DIR),
        ] + [
            docker.ContainerVolumeArgs(host_path=s.host_path, container_path=s.path, read_only=True)
            for s in config.kopia.sources
        ]
        labels = render.homepage_labels(host.homepage_group, "kopia", "kopia.svg", "备份服务")
        container = docker.Container(
            f"{name}-container",
            name=config.kopia.container_name,
            image=image.image_id,
            hostname=host.name,  # Kopia's notification templates use the OS hostname
            restart="always",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            ports=[docker.ContainerPortArgs(internal=server.port, external=server.port, ip=host.deploy_address)],
            volumes=volumes,
            envs=[f"{k}={v}" for k, v in container_env(host.timezone).items()],
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())]
            + [docker.ContainerLabelArgs(label="homelab-backup.config-sha256", value=digest)],
            entrypoints=["/bin/sh", "-c", render.render_start_script(params), "kopia-start"],
            healthcheck=docker.ContainerHealthcheckArgs(
                # CMD-SHELL: Docker runs it with /bin/sh -c, like `docker run --health-cmd`.
                tests=["CMD-SHELL", render.render_healthcheck(params)],
                # Go's duration form, as the Docker provider reads them back: "60s" would be
                # refreshed as "1m0s" and show as drift on every `pulumi refresh`.
                interval=render.go_duration(config.kopia.health.check_interval_seconds),
                timeout=render.go_duration(20),
                start_period=render.go_duration(120),
                retries=3,
            ),
            destroy_grace_seconds=60,  # let a running snapshot stop cleanly
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config_files]),
        )

        scheme = "https" if params.tls else "http"
        self.server_url = pulumi.Output.from_input(f"{scheme}://{host.deploy_address}:{server.port}")
        self.tls_fingerprint = fingerprint if fingerprint is not None else pulumi.Output.from_input(None)
        self.identity = pulumi.Output.from_input(config.identity)
        self.sources = pulumi.Output.from_input(list(params.sources))
        self.container_name = container.name
        self.register_outputs(
            {
                "server_url": self.server_url,
                "tls_fingerprint": self.tls_fingerprint,
                "identity": self.identity,
                "sources": self.sources,
                "container_name": self.container_name,
            }
        )


def container_env(timezone: str) -> dict[str, str]:
    """The container's environment: no secrets here (they are in secrets.env), so `docker inspect` shows none."""
    return {
        "TZ": timezone,
        "KOPIA_CONFIG_PATH": render.KOPIA_CONFIG_PATH,
        "KOPIA_LOG_DIR": render.LOGS_DIR,
        "KOPIA_CACHE_DIRECTORY": render.CACHE_DIR,
        "KOPIA_CHECK_FOR_UPDATES": "false",
        "KOPIA_PERSIST_CREDENTIALS_ON_CONNECT": "false",
    }
