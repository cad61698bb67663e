"""homelab-backup: read the stack's config -> validate -> providers -> components -> exports. Nothing else."""

import pulumi
import pulumi_docker as docker
from pulumi_azure_native import authorization

from components import hosts, render
from components.config import HOST_KEYS, PROJECT, PROJECT_KEYS, ConfigError, load_namespace
from components.kopia_node import KopiaNode, KopiaNodeArgs, KopiaSecrets
from components.openlist import OpenList, OpenListArgs
from components.secrets import KEY_VAULT_RESOURCE, SecretResolver

stack_config = pulumi.Config()
try:
    config = load_namespace({f"{PROJECT}:{key}": stack_config.get_object(key) for key in PROJECT_KEYS + HOST_KEYS})
except ConfigError as error:
    # RunError: Pulumi prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

secrets = SecretResolver(
    config_secret=stack_config.require_secret,
    key_vault_token=lambda: authorization.get_client_token_output(endpoint=KEY_VAULT_RESOURCE).token,
    url_template=config.key_vault.url_template,
    api_version=config.key_vault.api_version,
)
host = config.host
ssh, ssh_target = hosts.ssh_command(host), hosts.ssh_target(host)

docker_provider = docker.Provider(
    f"{host.name}-docker", host=hosts.docker_host_url(host), ssh_opts=hosts.ssh_options(host)
)
on_host = pulumi.ResourceOptions(providers=[docker_provider])

if host.network.create:
    network_name = docker.Network(
        f"{host.name}-network", name=host.network.name, opts=pulumi.ResourceOptions(provider=docker_provider)
    ).name
else:
    # Fails the preview when the network is missing, instead of failing a container create later.
    network_name = docker.get_network_output(
        name=host.network.name, opts=pulumi.InvokeOutputOptions(provider=docker_provider)
    ).name

openlist = None
if config.openlist is not None:
    openlist = OpenList(
        "openlist",
        OpenListArgs(
            host=host,
            settings=config.openlist,
            image=config.images.openlist,
            network_name=network_name,
            ssh=ssh,
            ssh_target=ssh_target,
        ),
        opts=on_host,
    )

s3 = config.kopia.s3
kopia_secrets = config.kopia.secrets
kopia = KopiaNode(
    "kopia",
    KopiaNodeArgs(
        host=host,
        kopia=config.kopia,
        repository=config.repository,
        policy=config.policy,
        notifications=config.notifications,
        image=config.images.kopia,
        params=render.start_script_params(config),
        secrets=KopiaSecrets(
            repository_password=secrets.resolve(kopia_secrets.repository_password),
            server_username=secrets.resolve(kopia_secrets.server_username),
            server_password=secrets.resolve(kopia_secrets.server_password),
            server_control_password=secrets.resolve(kopia_secrets.server_control_password),
            s3_access_key_id=secrets.resolve(s3.access_key_id),
            s3_secret_access_key=secrets.resolve(s3.secret_access_key),
            heartbeat_url=secrets.resolve(heartbeat) if (heartbeat := config.kopia.health.heartbeat_url) else None,
            notifications={
                p.name: {role: secrets.resolve(ref) for role, ref in p.secret_refs().items()}
                for p in config.notifications
            },
        ),
        s3_endpoint=openlist.internal_s3_endpoint if openlist else secrets.resolve(s3.endpoint),
        network_name=network_name,
        ssh=ssh,
        ssh_target=ssh_target,
    ),
    opts=on_host,
)

pulumi.export("kopia_server_url", kopia.server_url)
pulumi.export("kopia_tls_fingerprint", kopia.tls_fingerprint)
pulumi.export("kopia_identity", kopia.identity)
pulumi.export("backup_sources", kopia.sources)
if openlist is not None:
    pulumi.export("openlist_web_url", openlist.web_url)
    pulumi.export("openlist_s3_url", openlist.s3_url)
