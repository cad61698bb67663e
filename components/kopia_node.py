"""KopiaNode: one host's Kopia server, its config files and its TLS certificate.

Thin wiring only: what the files and the start script say is decided in
`components/render.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from components import render
from components.config import Host, Kopia, NotificationProfile, Policy, Repository, Schedule, pauser_container_name
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
    #: only while the maintenance owner changes the repository password: the one the repository opens with now
    previous_repository_password: pulumi.Output[str] | None = None
    #: per declared notification profile (by name): its secrets by role, as `NotificationProfile.secret_keys()`
    notifications: Mapping[str, Mapping[str, pulumi.Output[str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class KopiaNodeArgs:
    """What one host's Kopia needs: its host, its Kopia settings, the shared repository, policy and schedule."""

    host: Host
    kopia: Kopia
    repository: Repository
    policy: Policy
    schedule: Schedule
    notifications: Sequence[NotificationProfile]
    image: str
    params: render.StartScriptParams  # render.start_script_params(config)
    secrets: KopiaSecrets
    s3_endpoint: pulumi.Input[str]  # 'http://host:port'; may be a secret
    network_name: pulumi.Input[str]
    ssh: list[str]  # components.hosts.ssh_command(host)
    ssh_target: str  # components.hosts.ssh_target(host)


class KopiaNode(pulumi.ComponentResource):
    """One host's Kopia server: a TLS certificate, its config files on the host, and its container."""

    server_url: pulumi.Output[str]
    tls_fingerprint: pulumi.Output[str | None]
    identity: pulumi.Output[str]
    sources: pulumi.Output[list[str]]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: KopiaNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("homelab:index:KopiaNode", name, None, opts)
        self._name, self._args = name, args
        files = self._secret_and_policy_files()
        certificate = self._tls_certificate() if args.params.tls else None
        if certificate is not None:
            files[render.TLS_CERT], files[render.TLS_KEY] = certificate
        config_files = ConfigFiles(
            f"{name}-config",
            ssh=args.ssh,
            target=args.ssh_target,
            directory=args.host.config_dir,
            files={**files, **self._files_read_at_start_only()},
            secret_files=render.SECRET_FILES | {render.notification_file(p.name) for p in args.notifications},
            opts=pulumi.ResourceOptions(parent=self),
        )
        container = self._container(files, config_files)

        host, params = args.host, args.params
        scheme = "https" if params.tls else "http"
        self.server_url = pulumi.Output.from_input(f"{scheme}://{host.deploy_address}:{params.port}")
        self.tls_fingerprint = (
            certificate[0].apply(render.pem_sha256_fingerprint)
            if certificate is not None
            else pulumi.Output.from_input(None)
        )
        self.identity = pulumi.Output.from_input(params.identity)
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

    def _secret_and_policy_files(self) -> dict[str, pulumi.Input[str]]:
        """repository.config, storage.token, policy.json, secrets.env and one file per notification profile,
        rendered (components/render.py)."""
        args = self._args
        secrets = args.secrets
        storage = pulumi.Output.all(args.s3_endpoint, secrets.s3_access_key_id, secrets.s3_secret_access_key).apply(
            lambda v: render.s3_storage(args.repository, v[0], v[1], v[2])
        )
        return {
            render.REPOSITORY_CONFIG: pulumi.Output.secret(storage.apply(render.render_repository_config)),
            render.STORAGE_TOKEN: pulumi.Output.secret(storage.apply(render.render_storage_token)),
            render.POLICY_JSON: render.render_policy_json(
                args.policy,
                args.schedule,
                render.dump_dir_targets(args.params.identity, args.kopia.sources),
                render.mirror_dir_targets(args.params.identity, args.kopia.sources),
                render.pause_policy_entries(
                    args.params.identity, args.kopia.sources, pauser_container_name(args.kopia.container_name)
                ),
            ),
            render.SECRETS_ENV: pulumi.Output.secret(
                pulumi.Output.all(
                    secrets.repository_password,
                    secrets.server_username,
                    secrets.server_password,
                    secrets.server_control_password,
                    secrets.heartbeat_url,
                ).apply(lambda v: render.render_secrets_env(render.kopia_secret_variables(*v)))
            ),
            **{render.notification_file(p.name): self._notification_profile(p) for p in args.notifications},
        }

    def _files_read_at_start_only(self) -> dict[str, pulumi.Input[str]]:
        """Files outside the container's restart digest: the previous repository password, which the start
        script reads only when the declared one does not open the repository. Declaring it together with a new
        password restarts Kopia (secrets.env changes); removing it once the password has changed restarts
        nothing, so no snapshot is interrupted for it."""
        previous = self._args.secrets.previous_repository_password
        if previous is None:
            return {}
        return {render.PREVIOUS_PASSWORD_ENV: pulumi.Output.secret(previous.apply(render.render_previous_password_env))}

    def _notification_profile(self, profile: NotificationProfile) -> pulumi.Output[str]:
        secrets = self._args.secrets.notifications[profile.name]
        # Output.all() of no secrets (a mail relay without login) would give a list, not a dict
        values = pulumi.Output.all(**secrets) if secrets else pulumi.Output.from_input({})
        return pulumi.Output.secret(values.apply(lambda v: render.render_notification_profile(profile, v)))

    def _tls_certificate(self) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """(certificate PEM, secret key PEM). Generated once and kept in Pulumi state: the fingerprint is known
        before the server runs and survives container replacement."""
        host, child = self._args.host, pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{self._name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        cert = tls.SelfSignedCert(
            f"{self._name}-tls-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name=host.name, organization="homelab-backup"),
            dns_names=[host.name, "localhost"],
            ip_addresses=sorted({host.deploy_address, "127.0.0.1"}),
            validity_period_hours=self._args.kopia.server.tls_validity_days * 24,
            early_renewal_hours=30 * 24,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        return cert.cert_pem, pulumi.Output.secret(key.private_key_pem)

    def _container(self, files: dict[str, pulumi.Input[str]], config_files: ConfigFiles) -> docker.Container:
        """The Kopia container: replaced whenever a config file changes (the digest label), so it restarts on them."""
        args, name = self._args, self._name
        host, kopia, params = args.host, args.kopia, args.params
        child = pulumi.ResourceOptions(parent=self)
        # Keyed by secrets.env, so the label may be plain: a preview shows which label changes.
        names = sorted(files)
        digest = pulumi.Output.unsecret(
            pulumi.Output.all(*[files[f] for f in names]).apply(
                lambda contents: render.content_digest(
                    dict(zip(names, contents, strict=True)), key=contents[names.index(render.SECRETS_ENV)]
                )
            )
        )
        image = docker.RemoteImage(f"{name}-image", name=args.image, keep_locally=True, opts=child)
        data = host.kopia_dir
        volumes = [
            docker.ContainerVolumeArgs(host_path=host.config_dir, container_path=render.DEPLOY_DIR, read_only=True),
            docker.ContainerVolumeArgs(host_path=f"{data}/cache", container_path=render.CACHE_DIR),
            docker.ContainerVolumeArgs(host_path=f"{data}/logs", container_path=render.LOGS_DIR),
            docker.ContainerVolumeArgs(host_path=f"{data}/state", container_path=render.STATE_DIR),
            # The sources are read-only: the UI restores here (docs/operations.md, "Restore").
            docker.ContainerVolumeArgs(host_path=f"{data}/restore", container_path=render.RESTORE_DIR),
        ]
        if params.enable_actions:  # the pause requests it writes for the pauser (components/pauser.py)
            volumes.append(docker.ContainerVolumeArgs(host_path=pause_dir(host), container_path=render.PAUSE_DIR))
        # The sources as bind *mounts*: Docker refuses to start when a source's host path is missing (a disk
        # that did not mount, a typo), where a volume would create it empty and Kopia would back up nothing.
        sources = [
            docker.ContainerMountArgs(type="bind", source=s.host_path, target=s.path, read_only=True)
            for s in kopia.sources
        ]
        labels = render.homepage_labels(host.homepage_group, "kopia", "kopia.svg", "备份服务")
        return docker.Container(
            f"{name}-container",
            name=kopia.container_name,
            image=image.image_id,
            hostname=host.name,  # Kopia's notification templates use the OS hostname
            restart="always",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            ports=[docker.ContainerPortArgs(internal=params.port, external=params.port, ip=host.deploy_address)],
            volumes=volumes,
            mounts=sources,
            envs=[f"{k}={v}" for k, v in container_env(host.timezone).items()],
            labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(labels.items())]
            + [docker.ContainerLabelArgs(label="homelab-backup.config-sha256", value=digest)],
            entrypoints=["/bin/sh", "-c", render.render_start_script(params), "kopia-start"],
            healthcheck=docker.ContainerHealthcheckArgs(
                # CMD-SHELL: Docker runs it with /bin/sh -c, like `docker run --health-cmd`.
                tests=["CMD-SHELL", render.render_healthcheck(params)],
                # Go's duration form, as the Docker provider reads them back: "60s" would be
                # refreshed as "1m0s" and show as drift on every `pulumi refresh`.
                interval=render.go_duration(kopia.health.check_interval_seconds),
                timeout=render.go_duration(20),
                start_period=render.go_duration(120),
                retries=3,
            ),
            destroy_grace_seconds=60,  # let a running snapshot stop cleanly
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config_files]),
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


def pause_dir(host: Host) -> str:
    """The host directory shared by the Kopia container (its actions write the pause requests) and the pauser."""
    return f"{host.kopia_dir}/pause"
