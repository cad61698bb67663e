"""homelab-backup: read the stack's config and every secret -> validate -> providers -> components -> exports.

Every input is read and checked before the first resource is declared: a bad key or a secret that cannot be
read stops the run (`pulumi up --skip-preview` included) with one message listing every problem, and nothing
on any host changes.
"""

import pulumi
import pulumi_docker as docker
from pulumi.runtime import config as runtime_config
from pulumi_azure_native import authorization

from components import dumps, hosts, render
from components.config import (
    DUMPS_DIR,
    PROJECT,
    ConfigError,
    SecretRef,
    dump_container_name,
    load_namespace,
    pauser_container_name,
    secret_references,
)
from components.dumps import DatabaseDump, DatabaseDumpArgs
from components.host_files import RemoteError
from components.kopia_node import KopiaNode, KopiaNodeArgs, KopiaSecrets
from components.openlist import OpenList, OpenListArgs, OpenListGateway, OpenListGatewayArgs, OpenListSecrets
from components.pauser import ContainerPauser, ContainerPauserArgs
from components.secrets import KEY_VAULT_RESOURCE, SecretReadError, SecretsError, read_secrets


def all_config() -> dict[str, str]:
    """Every config key Pulumi hands the program, known or not: `pulumi.Config` reads one key at a time and
    cannot see a misspelled one. Values stay text (objects as JSON) for `load_namespace`, never through
    `Config.get_object`, whose type error would print the value, secret or not."""
    return {**pulumi.runtime.get_config_env(), **runtime_config.CONFIG.get()}


def config_secret(key: str) -> str:
    """A `config:<key>` reference's value, which must be stored as a secret (encrypted in the stack file)."""
    full_key = f"{PROJECT}:{key}"
    value = pulumi.runtime.get_config(full_key)
    set_it = f"`pulumi config set --secret {key}` (it prompts for the value)"
    if value is None:
        raise SecretReadError(f"config:{key}: no config value {full_key} in this stack: set it with {set_it}")
    if not pulumi.runtime.is_config_secret(full_key):
        raise SecretReadError(
            f"config:{key}: {full_key} is stored in plain text in the stack file; store it as a secret with"
            f" {set_it}, and change the value if that file was ever shared"
        )
    return str(value)


def key_vault_token() -> str:
    """A token for the Key Vault data plane, from the azure-native provider's credentials (an invoke: no resource)."""
    try:
        return authorization.get_client_token(endpoint=KEY_VAULT_RESOURCE).token
    except Exception as error:  # the provider's own message says which credentials it tried
        reason = (str(error).strip().splitlines() or ["no reason given"])[0][:300]
        raise SecretReadError(
            f"cannot get an Azure token for Key Vault ({reason}): run 'az login' (or set ARM_CLIENT_ID,"
            " ARM_CLIENT_SECRET, ARM_TENANT_ID, ARM_SUBSCRIPTION_ID)"
        ) from None


values = all_config()
try:
    config = load_namespace(
        values,
        stack=pulumi.get_stack(),
        secret_keys={key for key in values if pulumi.runtime.is_config_secret(key)},
    )
    # The containers the dumps read from (PostgreSQL, MinIO) and the pauses freeze must be on the host: asked (a
    # read) before any resource.
    running_containers = dumps.inspect_containers(hosts.ssh_command(config.host), dumps.inspected_containers(config))
    if problems := dumps.container_problems(config, running_containers):
        raise ConfigError(problems)
    plain_secrets = read_secrets(
        secret_references(config),
        config_secret=config_secret,
        key_vault_token=key_vault_token,
        url_template=config.key_vault.url_template,
        api_version=config.key_vault.api_version,
    )
except (ConfigError, SecretsError, RemoteError) as error:
    # RunError: Pulumi prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None


def secret(key: str) -> pulumi.Output[str]:
    """The value behind the reference at config key `key` (e.g. 'kopia.secrets.serverPassword'), as a secret."""
    return pulumi.Output.secret(plain_secrets[f"{PROJECT}:{key}"])


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

openlist = gateway = None
if config.openlist is not None:
    # OpenList signs S3 requests with the keys Kopia uses: one home for them, kopia.s3.
    openlist_secrets = OpenListSecrets(
        admin_password=secret("openlist.adminPassword"),
        storage_fields={f: secret(f"openlist.storage.secretFields.{f}") for f in config.openlist.storage.secret_fields},
        s3_access_key_id=secret("kopia.s3.accessKeyId"),
        s3_secret_access_key=secret("kopia.s3.secretAccessKey"),
        restart_command=secret("openlist.restartCommand")
        if isinstance(config.openlist.restart_command, SecretRef)
        else None,
    )
    if config.deploys_openlist:
        openlist = OpenList(
            "openlist",
            OpenListArgs(
                host=host,
                settings=config.openlist,
                image=config.images.openlist,
                network_name=network_name,
                ssh=ssh,
                ssh_target=ssh_target,
                secrets=openlist_secrets,
                bucket=config.repository.bucket,
            ),
            opts=on_host,
        )
    else:
        gateway = OpenListGateway(
            "openlist-gateway",
            OpenListGatewayArgs(
                settings=config.openlist,
                ssh=ssh,
                ssh_target=ssh_target,
                secrets=openlist_secrets,
                bucket=config.repository.bucket,
            ),
        )

# Kopia writes through a gateway only once that gateway holds the declared S3 keys in force.
if openlist is not None:
    s3_endpoint = openlist.internal_s3_endpoint
elif gateway is not None:
    s3_endpoint = gateway.once_keys_in_force(secret("kopia.s3.endpoint"))
else:
    s3_endpoint = secret("kopia.s3.endpoint")

# The pauser, when a source pauses containers: up before Kopia, whose first snapshots after a start ask it at once.
pauser = None
paused_sources = render.paused_sources(config.kopia.sources)
if paused_sources:
    pauser = ContainerPauser(
        "pauser",
        ContainerPauserArgs(
            host=host,
            kopia=config.kopia,
            identity=config.identity,
            image=config.images.kopia,
            container_name=pauser_container_name(config.kopia.container_name),
        ),
        opts=on_host,
    )

kopia = KopiaNode(
    "kopia",
    KopiaNodeArgs(
        host=host,
        kopia=config.kopia,
        repository=config.repository,
        policy=config.policy,
        schedule=config.schedule,
        notifications=config.notifications,
        image=config.images.kopia,
        params=render.start_script_params(config),
        secrets=KopiaSecrets(
            repository_password=secret("kopia.secrets.repositoryPassword"),
            server_username=secret("kopia.secrets.serverUsername"),
            server_password=secret("kopia.secrets.serverPassword"),
            server_control_password=secret("kopia.secrets.serverControlPassword"),
            s3_access_key_id=secret("kopia.s3.accessKeyId"),
            s3_secret_access_key=secret("kopia.s3.secretAccessKey"),
            heartbeat_url=secret("kopia.health.heartbeatUrl") if config.kopia.health.heartbeat_url else None,
            previous_repository_password=secret("kopia.secrets.previousRepositoryPassword")
            if config.kopia.secrets.previous_repository_password
            else None,
            notifications={
                p.name: {role: secret(f"notifications[{i}].{key}") for role, key in p.secret_keys().items()}
                for i, p in enumerate(config.notifications)
            },
        ),
        s3_endpoint=s3_endpoint,
        network_name=network_name,
        ssh=ssh,
        ssh_target=ssh_target,
    ),
    opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[pauser] if pauser else [])),
)

# One container per declared dump, beside the database it reads (docs/decisions.md, "Live data").
database_dumps = {}
for i, source in enumerate(config.kopia.sources):
    for j, dump in enumerate(source.dumps):
        served = dumps.served_part(dump)
        running = running_containers[served.container] if served else None
        at = f"kopia.sources[{i}].dumps[{j}]"
        database_dumps[dump.name] = DatabaseDump(
            f"dump-{dump.name}",
            DatabaseDumpArgs(
                source=source,
                dump=dump,
                interval_seconds=config.schedule.interval_seconds,
                container_name=dump_container_name(config.kopia.container_name, dump.name),
                image=dumps.dump_image(dump, running),
                network=dumps.dump_network(dump, running) if running else None,
                config_dir=host.config_dir,
                timezone=host.timezone,
                ssh=ssh,
                ssh_target=ssh_target,
                password=secret(f"{at}.postgres.password") if dump.postgres else None,
                minio_keys=(secret(f"{at}.minio.accessKey"), secret(f"{at}.minio.secretKey")) if dump.minio else None,
            ),
            opts=on_host,
        )

pulumi.export("kopia_server_url", kopia.server_url)
pulumi.export("kopia_tls_fingerprint", kopia.tls_fingerprint)
pulumi.export("kopia_identity", kopia.identity)
pulumi.export("backup_sources", kopia.sources)
if database_dumps:  # what each dump writes where, and when: visible in `pulumi preview` and the stack outputs
    pulumi.export(
        "database_dumps",
        {
            d.name: f"{d.kind} -> {s.host_path}/{DUMPS_DIR}/{d.file_name}, {d.lead_seconds}s before each snapshot"
            for s in config.kopia.sources
            for d in s.dumps
        },
    )
if pauser is not None:  # what each source pauses for its snapshots, and for how long at most
    pulumi.export(
        "paused_containers",
        {
            s.path: f"{', '.join(pause.containers)}, paused for each snapshot, {pause.max_seconds}s at most"
            for _, s, pause in paused_sources
        },
    )
if openlist is not None:
    pulumi.export("openlist_web_url", openlist.web_url)
    pulumi.export("openlist_s3_url", openlist.s3_url)
