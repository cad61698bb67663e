"""The rules across keys: what no single model can check alone. Each rule is one function that returns its
problems, each named by its key; `consistency_problems` runs them all on a validated `StackConfig`."""

from __future__ import annotations

import ipaddress
import re

from components.config.problems import PROJECT, Problem
from components.config.stack import StackConfig, identity

# The container's own directories: Kopia's (/app) and the system's. A backup source mounted over one
# would shadow the files Kopia, the start script and the health check run on (or hide the mount itself).
CONTAINER_RESERVED_DIRS = (
    "/app",
    "/bin",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",  # noqa: S108 (a directory a mount must not cover, not a temp file)
    "/usr",
    "/var",
)


# Addition fields that hold a credential: refused in `fields` (plain text in the stack file and the state).
_SECRET_FIELD = re.compile(r"password|token|secret|cookie|key", re.IGNORECASE)


def consistency_problems(config: StackConfig, stack: str | None) -> list[Problem]:
    """Rules that span keys, each on its own below; every problem names its key."""
    return [
        *_host_belongs_to_this_stack(config, stack),
        *_deploy_address_is_one_interface(config),
        *_kopia_data_dir_outside_config_dir(config),
        *_policy_sources_are_mounted(config),
        *_mounts_are_scheduled_and_safe(config),
        *_source_host_paths_are_distinct(config),
        *_maintenance_owner_is_a_policy_host(config),
        *_s3_endpoint_only_without_openlist(config),
        *_published_ports_do_not_collide(config),
        *_notification_names_are_unique(config),
        *_openlist_credentials_are_references(config),
        *_openlist_gateway_is_configured_not_deployed(config),
    ]


def _host_belongs_to_this_stack(config: StackConfig, stack: str | None) -> list[Problem]:
    """One stack per host: a stack file copied for a new host, with the old host's name left in, would be a
    second `<user>@<host>` writing into the same snapshots (and a second maintenance owner that may create
    the repository). The host's name is the stack's name, or the file names its stack in host.stackName."""
    if stack is None:  # not a deploy (scripts/status reads stacks that were deployed)
        return []
    host = config.host
    expected = host.stack_name or host.name
    if expected == stack:
        return []
    if host.stack_name is not None:
        return [
            (
                f"{PROJECT}:host.stackName",
                f"names stack '{host.stack_name}', but this is stack '{stack}': this file was copied from another"
                " stack; set host.name (and host.stackName, or remove it) for this stack's host",
            )
        ]
    return [
        (
            f"{PROJECT}:host.name",
            f"'{host.name}' is not this stack's name '{stack}': one stack deploys one host, named like the stack."
            f" Set host.name: {stack} (and add its sources to policy.sources); only if this stack deploys"
            f" '{host.name}' under another stack name, say so with host.stackName: {stack}",
        )
    ]


def _deploy_address_is_one_interface(config: StackConfig) -> list[Problem]:
    """0.0.0.0 publishes Kopia's login and OpenList's S3 server on every interface (on a VPS, the internet)."""
    host = config.host
    if not ipaddress.ip_address(host.deploy_address).is_unspecified or host.publish_on_all_interfaces:
        return []
    return [
        (
            f"{PROJECT}:host.deployAddress",
            f"{host.deploy_address} publishes the ports on every interface: set the one address they should be"
            " reached at (e.g. the VPN or LAN address), or opt in with host.publishOnAllInterfaces: true",
        )
    ]


def _kopia_data_dir_outside_config_dir(config: StackConfig) -> list[Problem]:
    """The config dir is mounted read-only and written file by file by Pulumi; Kopia's cache inside it (or it
    inside the cache) would mix Kopia's writes with the files that hold the secrets."""
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    if not (_is_within(kopia_dir, config_dir) or _is_within(config_dir, kopia_dir)):
        return []
    key = "host.kopiaDataDir" if config.host.kopia_data_dir else "host.dataDir"
    return [
        (
            f"{PROJECT}:{key}",
            f"Kopia's cache/logs/state ({kopia_dir}) overlap host.configDir ({config_dir}); keep them apart",
        )
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
    """Each mount is scheduled, mounted once, outside the container's own dirs, and its host path holds
    neither Kopia's cache/logs, nor the config dir, nor OpenList's database (they would be backed up)."""
    problems: list[Problem] = []
    scheduled = {str(s) for s in config.policy.sources}
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    openlist_dir = config.host.openlist_data_dir if config.deploys_openlist else None
    seen: set[str] = set()
    for i, source in enumerate(config.kopia.sources):
        key = f"{PROJECT}:kopia.sources[{i}].path"
        host_path_key = f"{PROJECT}:kopia.sources[{i}].hostPath"
        if source.path in seen:
            problems.append((key, f"{source.path} is mounted twice"))
        seen.add(source.path)
        if source.path == "/" or any(_is_within(source.path, d) for d in CONTAINER_RESERVED_DIRS):
            problems.append(
                (
                    key,
                    f"{source.path} is inside the container's own directories ({', '.join(CONTAINER_RESERVED_DIRS)}"
                    " or /): mount it elsewhere, e.g. /backup/<name>",
                )
            )
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
        if openlist_dir is not None and _is_within(openlist_dir, source.host_path):
            # A live database copied mid-write, holding the S3 keys and the 189 login, stored on that drive.
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} contains OpenList's database ({openlist_dir}, under host.dataDir): it would"
                    " be backed up while OpenList writes it; set host.dataDir outside every source",
                )
            )
        target = f"{config.identity}:{source.path}"
        if target not in scheduled:
            problems.append((key, f"{source.path} is mounted but never backed up: add '{target}' to policy.sources"))
    return problems


def _source_host_paths_are_distinct(config: StackConfig) -> list[Problem]:
    """The same host directory mounted twice, or one inside another, is backed up twice."""
    problems: list[Problem] = []
    sources = config.kopia.sources
    for j, later in enumerate(sources):
        for i, earlier in enumerate(sources[:j]):
            if later.host_path == earlier.host_path:
                reason = f"is also kopia.sources[{i}].hostPath"
            elif _is_within(later.host_path, earlier.host_path):
                reason = f"lies inside kopia.sources[{i}].hostPath ({earlier.host_path})"
            elif _is_within(earlier.host_path, later.host_path):
                reason = f"contains kopia.sources[{i}].hostPath ({earlier.host_path})"
            else:
                continue
            problems.append(
                (
                    f"{PROJECT}:kopia.sources[{j}].hostPath",
                    f"{later.host_path} {reason}: the same files would be backed up twice; back up each tree once",
                )
            )
    return problems


def _maintenance_owner_is_a_policy_host(config: StackConfig) -> list[Problem]:
    """The maintenance owner is one of the policy's hosts, under the repository's user: otherwise no host runs
    maintenance, and none may create the repository."""
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
    if config.deploys_openlist and config.kopia.s3.endpoint is not None:
        return [(key, "must be omitted on a stack that deploys OpenList: Kopia reaches it over the Docker network")]
    if not config.deploys_openlist and config.kopia.s3.endpoint is None:
        return [(key, "is required when this stack does not deploy OpenList")]
    return []


def _published_ports_do_not_collide(config: StackConfig) -> list[Problem]:
    """The ports this stack publishes on the deploy address are distinct: two containers cannot bind one port."""
    ports = {"kopia.server.port": config.kopia.server.port}
    if config.openlist is not None and config.deploys_openlist:
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


def _notification_names_are_unique(config: StackConfig) -> list[Problem]:
    """Kopia keeps one profile per name: a second one with the same name would silently replace the first."""
    names = [profile.name for profile in config.notifications]
    return [
        (f"{PROJECT}:notifications[{index}].name", f"{name!r} is declared twice")
        for index, name in enumerate(names)
        if name in names[:index]
    ]


def _openlist_credentials_are_references(config: StackConfig) -> list[Problem]:
    """A drive's password or token in `fields` would sit in the stack file and the state in plain text; a
    field in both lists would be written twice with different values."""
    if config.openlist is None:
        return []
    storage = config.openlist.storage
    problems: list[Problem] = []
    for name in storage.fields:
        key = f"{PROJECT}:openlist.storage.fields.{name}"
        if name in storage.secret_fields:
            problems.append((key, "is also in openlist.storage.secretFields: keep it in one of them"))
        elif _SECRET_FIELD.search(name):
            problems.append((key, "looks like a credential: move it to openlist.storage.secretFields as a reference"))
    return problems


def _openlist_gateway_is_configured_not_deployed(config: StackConfig) -> list[Problem]:
    """With adminUrl the stack configures an OpenList it does not run: container and ports are not its own;
    without it, the program restarts its own OpenList and takes no restart command."""
    if config.openlist is None:
        return []
    if config.openlist.deployed:
        if config.openlist.restart_command is None:
            return []
        return [
            (
                f"{PROJECT}:openlist.restartCommand",
                "applies only with openlist.adminUrl: the OpenList this stack deploys is restarted by the program",
            )
        ]
    deploy_only = {"container_name": "containerName", "web_port": "webPort", "s3_port": "s3Port"}
    return [
        (
            f"{PROJECT}:openlist.{alias}",
            "applies only to an OpenList this stack deploys; remove it, or remove openlist.adminUrl",
        )
        for name, alias in deploy_only.items()
        if name in config.openlist.model_fields_set
    ]


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
