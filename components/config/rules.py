"""The rules across keys: what no single model can check alone. Each rule is one function that returns its
problems, each named by its key; `consistency_problems` runs them all on a validated `StackConfig`."""

from __future__ import annotations

import ipaddress
import json

from components.config.drivers import CREDENTIAL_FIELD, KNOWN_DRIVER_FIELDS, json_type_name
from components.config.fields import is_within
from components.config.host import DUMPS_DIR, PAUSE_STATUS_NAME, dump_container_name, pauser_container_name
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

#: Docker's own state: every container's files, images and volumes.
DOCKER_STATE_DIR = "/var/lib/docker"

# Host directories that are not a deployment's own (docs/decisions.md, "System directories"):
#: Kernel interfaces, device nodes and runtime state, the Docker socket among them (/run/docker.sock; /var/run
#: is a link to /run): no config dir, data dir or backup source at, in or around them. A read-only mount does
#: not stop a process in the container from connecting to a socket.
VIRTUAL_DIRS = ("/dev", "/proc", "/run", "/sys", "/var/run")
#: Emptied at boot, or owned by the OS's package manager or by Docker: no config or data dir at or in them.
SYSTEM_OWNED_DIRS = ("/bin", "/boot", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/tmp", "/usr", DOCKER_STATE_DIR)  # noqa: S108
#: Trees that many services or users share: a config or data dir of its own may lie in one, never be one.
SHARED_DIRS = (
    "/",
    "/etc",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/snap",
    "/srv",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/opt",
    "/var/tmp",  # noqa: S108 (a directory refused as a whole, not a temp file)
)


def consistency_problems(config: StackConfig, stack: str | None) -> list[Problem]:
    """Rules that span keys, each on its own below; every problem names its key."""
    return [
        *_host_belongs_to_this_stack(config, stack),
        *_deploy_address_is_one_interface(config),
        *_host_dirs_are_not_system_dirs(config),
        *_config_dir_is_its_own(config),
        *_kopia_data_dir_outside_config_dir(config),
        *_policy_sources_are_mounted(config),
        *_mounts_are_scheduled_and_safe(config),
        *_source_host_paths_are_distinct(config),
        *_maintenance_owner_is_a_policy_host(config),
        *_only_the_maintenance_owner_creates_the_repository(config),
        *_only_the_owner_changes_the_repository_password(config),
        *_s3_endpoint_only_without_openlist(config),
        *_published_ports_do_not_collide(config),
        *_notification_names_are_unique(config),
        *_openlist_credentials_are_references(config),
        *_openlist_fields_fit_the_driver(config),
        *_openlist_gateway_is_configured_not_deployed(config),
        *_dumps_fit_their_sources(config),
        *_pauses_leave_the_backup_running(config),
    ]


def _host_belongs_to_this_stack(config: StackConfig, stack: str | None) -> list[Problem]:
    """One stack per host: a stack file copied for a new host, with the old host's name left in, would be a
    second `<user>@<host>` writing into the same snapshots (and a second maintenance owner that may create
    the repository). The host's name is the stack's name, or the file names its stack in host.stackName."""
    if stack is None:  # not a deploy (scripts/status reads stacks that were deployed)
        return []
    host = config.host
    if host.stack == stack:
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


def _host_dirs_are_not_system_dirs(config: StackConfig) -> list[Problem]:
    """The config dir is mounted whole into the Kopia container, Kopia writes under its data dir and OpenList
    under the data dir: a system or shared directory there would hand the container the Docker socket or
    other services' files, or mix this stack's files with the system's. A backup source is mounted read-only,
    which does not stop a process from connecting to a socket in it."""
    host = config.host
    own_dirs = {"host.configDir": host.config_dir, "host.dataDir": host.data_dir}
    if host.kopia_data_dir is not None:
        own_dirs["host.kopiaDataDir"] = host.kopia_data_dir
    problems = [(f"{PROJECT}:{key}", reason) for key, path in own_dirs.items() if (reason := _system_dir_reason(path))]
    problems += [
        (f"{PROJECT}:kopia.sources[{i}].hostPath", reason)
        for i, source in enumerate(config.kopia.sources)
        if (reason := _system_source_reason(source.host_path))
    ]
    return problems


def _system_dir_reason(path: str) -> str | None:
    """Why `path` cannot be a config or data dir of this stack, or None."""
    own = "set a directory of this stack's own, e.g. /opt/homelab-backup/<name>"
    for directory in VIRTUAL_DIRS:
        if is_within(path, directory):
            return f"{path} is in {directory}: kernel interfaces and runtime state (the Docker socket), not data; {own}"
    for directory in SYSTEM_OWNED_DIRS:
        if is_within(path, directory):
            return f"{path} is in {directory}, which the system (or Docker) owns and may empty or replace; {own}"
    if path in SHARED_DIRS:
        return f"{path} is a directory other services or users share, not one of this stack's own; {own}"
    return None


def _system_source_reason(path: str) -> str | None:
    """Why `path` cannot be a backup source, or None: what it would expose is not data worth a snapshot."""
    for directory in VIRTUAL_DIRS:
        if is_within(path, directory) or is_within(directory, path):
            return (
                f"{path} {'is in' if is_within(path, directory) else 'holds'} {directory}: kernel interfaces and"
                " runtime state, the Docker socket among them, which a read-only mount still lets the container"
                " use; back up the directories that hold the data"
            )
    if is_within(DOCKER_STATE_DIR, path):
        return (
            f"{path} holds Docker's whole state ({DOCKER_STATE_DIR}: images, every container's files, live"
            f" databases); back up the volumes that matter, e.g. {DOCKER_STATE_DIR}/volumes/<name>"
        )
    return None


def _config_dir_is_its_own(config: StackConfig) -> list[Problem]:
    """The config dir is mounted whole into the Kopia container: one that holds the data dir would show it
    OpenList's database (the S3 keys, the 189 login) and other services' data; one that holds a source would
    mix the files Pulumi writes with the data it backs up. (Kopia's own dir: `_kopia_data_dir_outside_config_dir`.)"""
    config_dir, key = config.host.config_dir, f"{PROJECT}:host.configDir"
    why = "the config dir is mounted whole into the Kopia container: give it a directory of its own"
    problems: list[Problem] = []
    if is_within(config.host.data_dir, config_dir):
        problems.append((key, f"{config_dir} holds host.dataDir ({config.host.data_dir}); {why}"))
    problems += [
        (key, f"{config_dir} holds kopia.sources[{i}].hostPath ({source.host_path}); {why}")
        for i, source in enumerate(config.kopia.sources)
        if is_within(source.host_path, config_dir) and source.host_path != config_dir
    ]
    return problems


def _kopia_data_dir_outside_config_dir(config: StackConfig) -> list[Problem]:
    """The config dir is mounted read-only and written file by file by Pulumi; Kopia's cache inside it (or it
    inside the cache) would mix Kopia's writes with the files that hold the secrets."""
    kopia_dir, config_dir = config.host.kopia_dir, config.host.config_dir
    if not (is_within(kopia_dir, config_dir) or is_within(config_dir, kopia_dir)):
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
        if source.path == "/" or any(is_within(source.path, d) for d in CONTAINER_RESERVED_DIRS):
            problems.append(
                (
                    key,
                    f"{source.path} is inside the container's own directories ({', '.join(CONTAINER_RESERVED_DIRS)}"
                    " or /): mount it elsewhere, e.g. /backup/<name>",
                )
            )
        if is_within(kopia_dir, source.host_path) or is_within(source.host_path, kopia_dir):
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} overlaps Kopia's own cache/logs ({kopia_dir}), which would be"
                    " backed up into the repository at every snapshot; set host.kopiaDataDir outside every source",
                )
            )
        if is_within(config_dir, source.host_path):
            problems.append(
                (
                    host_path_key,
                    f"{source.host_path} contains host.configDir ({config_dir}): secrets.env and tls.key would be"
                    " backed up; move host.configDir outside every source",
                )
            )
        if openlist_dir is not None and is_within(openlist_dir, source.host_path):
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
            elif is_within(later.host_path, earlier.host_path):
                reason = f"lies inside kopia.sources[{i}].hostPath ({earlier.host_path})"
            elif is_within(earlier.host_path, later.host_path):
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


def _only_the_maintenance_owner_creates_the_repository(config: StackConfig) -> list[Problem]:
    """One host may create the repository: two creators racing on an empty prefix would write two format blobs.
    Refused on any other stack, so the one-off `--config` cannot land on the wrong host."""
    if not config.kopia.create_repository or config.is_maintenance_owner:
        return []
    owner = config.repository.maintenance_owner
    return [
        (
            f"{PROJECT}:kopia.createRepository",
            f"only the maintenance owner {owner} creates the repository, and this stack deploys {config.identity}:"
            f" remove it (pulumi config rm --stack {config.host.stack} --path {PROJECT}:kopia.createRepository);"
            f" this host connects once {owner} has created it",
        )
    ]


def _only_the_owner_changes_the_repository_password(config: StackConfig) -> list[Problem]:
    """The repository has one password, changed by one client (`kopia repository change-password`): the
    maintenance owner, whose start script does it. Every other host just gets the new password."""
    if config.kopia.secrets.previous_repository_password is None or config.is_maintenance_owner:
        return []
    owner = config.repository.maintenance_owner
    return [
        (
            f"{PROJECT}:kopia.secrets.previousRepositoryPassword",
            f"only the maintenance owner ({owner}) changes the repository password: declare it on that host's "
            "stack; this host needs only the new repositoryPassword",
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
        elif CREDENTIAL_FIELD.search(name):
            problems.append((key, "looks like a credential: move it to openlist.storage.secretFields as a reference"))
    return problems


def _openlist_fields_fit_the_driver(config: StackConfig) -> list[Problem]:
    """For a driver the project knows, each declared field is one of its fields, of its type: OpenList drops a
    field the driver lacks without a word (a misspelled secret field would leave the real credential as it
    was, and every later diff clean), and fails the storage on a number where the driver holds text (a phone
    number written unquoted), after the container exists."""
    if config.openlist is None:
        return []
    storage = config.openlist.storage
    known = KNOWN_DRIVER_FIELDS.get(storage.driver)
    if known is None:
        return []
    problems: list[Problem] = []
    declared = [("fields", name, value) for name, value in storage.fields.items()]
    declared += [("secretFields", name, "") for name in storage.secret_fields]
    for where, name, value in declared:
        key = f"{PROJECT}:openlist.storage.{where}.{name}"
        if name not in known:
            problems.append(
                (
                    key,
                    f"is not a field of OpenList's {storage.driver} driver, which would drop it without a word"
                    f" (check its spelling; the driver's fields: {', '.join(sorted(known))})",
                )
            )
        elif type(value) is not known[name]:
            wanted, given = json_type_name(known[name]), json_type_name(type(value))
            hint = f" (quote it: '{json.dumps(value)}')" if known[name] is str and where == "fields" else ""
            problems.append((key, f"is {given}, but the {storage.driver} driver takes {wanted} here{hint}"))
    return problems


def _openlist_gateway_is_configured_not_deployed(config: StackConfig) -> list[Problem]:
    """With adminUrl the stack configures an OpenList it does not run: container and ports are not its own, and
    its S3 address is given (s3Url); without it, the program restarts and reaches its own OpenList."""
    if config.openlist is None:
        return []
    if config.openlist.deployed:
        gateway_only = {
            "restartCommand": (config.openlist.restart_command, "is restarted by the program"),
            "s3Url": (config.openlist.s3_url, "is reached at host.deployAddress and openlist.s3Port"),
        }
        return [
            (f"{PROJECT}:openlist.{key}", f"applies only with openlist.adminUrl: the OpenList this stack deploys {why}")
            for key, (value, why) in gateway_only.items()
            if value is not None
        ]
    deploy_only = {"container_name": "containerName", "web_port": "webPort", "s3_port": "s3Port"}
    problems: list[Problem] = [
        (
            f"{PROJECT}:openlist.{alias}",
            "applies only to an OpenList this stack deploys; remove it, or remove openlist.adminUrl",
        )
        for name, alias in deploy_only.items()
        if name in config.openlist.model_fields_set
    ]
    if config.openlist.s3_url is None:
        problems.append(
            (
                f"{PROJECT}:openlist.s3Url",
                "is required with openlist.adminUrl: that OpenList's S3 address as this host reaches it (e.g. "
                "http://openlist.cluster.lan:5246); every up checks there that it enforces the S3 keys",
            )
        )
    return problems


def _dumps_fit_their_sources(config: StackConfig) -> list[Problem]:
    """Each dump has a name of its own on the host (its file and its container), starts before the snapshot it
    is for (its lead is shorter than the interval), and an SQLite file lies inside its source: the dump lands
    next to the raw file, in the same snapshot."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    interval = config.schedule.interval_seconds
    for i, source in enumerate(config.kopia.sources):
        for j, dump in enumerate(source.dumps):
            key = f"{PROJECT}:kopia.sources[{i}].dumps[{j}]"
            if dump.name in seen:
                problems.append(
                    (f"{key}.name", f"{dump.name!r} is also {seen[dump.name]}: give each dump its own name")
                )
            seen.setdefault(dump.name, f"kopia.sources[{i}].dumps[{j}].name")
            if dump.lead_seconds >= interval:
                problems.append(
                    (
                        f"{key}.leadSeconds",
                        f"{dump.lead_seconds}s is not shorter than schedule.intervalSeconds ({interval}s): the dump"
                        " must start after one snapshot and finish before the next",
                    )
                )
            if dump.sqlite is not None:
                file, dumps_dir = dump.sqlite.file, f"{source.host_path}/{DUMPS_DIR}"
                if not is_within(file, source.host_path) or file == source.host_path:
                    problems.append(
                        (
                            f"{key}.sqlite.file",
                            f"{file} is outside this source ({source.host_path}): declare the dump under the source"
                            " that holds the database",
                        )
                    )
                elif is_within(file, dumps_dir):
                    problems.append((f"{key}.sqlite.file", f"{file} is in {dumps_dir}, where the dumps are written"))
    return problems


def _pauses_leave_the_backup_running(config: StackConfig) -> list[Problem]:
    """A pause freezes only the apps: never the containers that take the snapshot (Kopia, the OpenList it writes
    through, a dump, the pauser itself: a frozen one would hang the snapshot it waits for), never a container two
    sources pause (one snapshot's resume would thaw it in the middle of the other's), and no dump takes the
    name the pause reports under."""
    problems: list[Problem] = []
    kopia = config.kopia.container_name
    backup = {
        kopia: "the Kopia container",
        pauser_container_name(kopia): "the pauser itself",
        **{
            dump_container_name(kopia, d.name): f"dump {d.name}'s container"
            for s in config.kopia.sources
            for d in s.dumps
        },
    }
    if config.deploys_openlist:
        assert config.openlist is not None
        backup[config.openlist.container_name] = "the OpenList gateway Kopia writes through"
    paused_by: dict[str, str] = {}
    for i, source in enumerate(config.kopia.sources):
        for j, dump in enumerate(source.dumps):
            if dump.name == PAUSE_STATUS_NAME:
                problems.append(
                    (
                        f"{PROJECT}:kopia.sources[{i}].dumps[{j}].name",
                        f"{PAUSE_STATUS_NAME!r} is reserved: a source's pause reports as"
                        f" .dumps/{PAUSE_STATUS_NAME}.status; give the dump another name",
                    )
                )
        if source.pause is None:
            continue
        for k, name in enumerate(source.pause.containers):
            key = f"{PROJECT}:kopia.sources[{i}].pause.containers[{k}]"
            if name in backup:
                problems.append((key, f"{name!r} is {backup[name]}: pausing it would stop the backup itself"))
            elif name in paused_by:
                problems.append(
                    (
                        key,
                        f"{name!r} is also paused by {paused_by[name]}: one snapshot's resume would unpause it during"
                        " the other's; pause each container for one source",
                    )
                )
            paused_by.setdefault(name, f"kopia.sources[{i}].pause")
    return problems
