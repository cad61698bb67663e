"""Pure functions that render what lands on a host: Kopia's files and the container's start script.

No pulumi import: every function takes plain values and returns text, so the
output is testable byte for byte (tests/unit/test_render.py, golden files) and
the start script runs for real under `sh` in tests/unit/test_start_script.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from components.config import (
    DEFAULT_CONTENT_CACHE_MB,
    DEFAULT_METADATA_CACHE_MB,
    DEFAULT_PACK_SIZE_MB,
    DUMPS_DIR,
    OPENLIST_EMPTY_FOLDER_MARKER,
    PAUSE_STATUS_NAME,
    SEVERITIES,
    BackupSource,
    Dump,
    MinioDump,
    NotificationProfile,
    Pause,
    Policy,
    Repository,
    Schedule,
    StackConfig,
    identity,
    is_maintenance_owner,
)

# Where things live inside the Kopia container.
DEPLOY_DIR = "/app/deploy"  # the host's config dir, mounted read-only
CACHE_DIR = "/app/cache"  # persistent: a cold cache re-reads every index through the slow backend
LOGS_DIR = "/app/logs"
STATE_DIR = "/app/state"  # persistent: remembers that this host has seen the repository
RESTORE_DIR = "/app/restore"  # writable: where a restore from the server's UI lands (<kopiaDataDir>/restore)
KOPIA_CONFIG_PATH = "/app/config/repository.config"  # Kopia's own connection file, rewritten at every start

# The files Pulumi writes into the host's config dir (all mode 0600).
REPOSITORY_CONFIG = "repository.config"
STORAGE_TOKEN = "storage.token"  # noqa: S105 (a file name, not a secret)
POLICY_JSON = "policy.json"
SECRETS_ENV = "secrets.env"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
#: Only while the repository password changes, on the maintenance owner: the password it opens with now
#: (`kopia.secrets.previousRepositoryPassword`). Read at start only, so it restarts nothing by itself.
PREVIOUS_PASSWORD_ENV = "previous-repository-password.env"  # noqa: S105 (a file name, not a secret)
#: The files that hold secrets: their content and digest stay Pulumi secrets in state.
SECRET_FILES = frozenset({REPOSITORY_CONFIG, STORAGE_TOKEN, SECRETS_ENV, TLS_KEY, PREVIOUS_PASSWORD_ENV})

# Kopia 0.22.3 messages the start script tells apart (repo/connect.go, cli/command_repository_create.go).
MSG_NOT_INITIALIZED = "repository not initialized in the provided storage"
MSG_EXISTING_DATA = "found existing data in storage location"
MSG_INVALID_PASSWORD = "invalid repository password"  # noqa: S105 (Kopia's ErrInvalidPassword, repo/format/format_blob.go)


# ---------------------------------------------------------------- policy.json


def policy_document(
    policy: Policy,
    schedule: Schedule,
    dump_dirs: Sequence[str] = (),
    mirror_dirs: Sequence[str] = (),
    host_entries: Mapping[str, dict] | None = None,
) -> dict[str, dict]:
    """One fully qualified entry per source (`user@host:/path`), and one per dumps directory of this host.

    Fully qualified keys only: `(global)` and `@host` entries are shared with
    whatever else uses the repository, and importing them from two hosts would
    fight. Unset retention values inherit from `(global)`. A dumps directory
    (`dump_dirs`, from `dump_dir_targets`) counts an entry of an unknown type as an
    error: the named pipe a failed dump leaves there fails the snapshot's report, so
    Kopia's notification profiles alert (Kopia ignores such entries by default,
    snapshot/upload/upload.go @ v0.22.3). A dumps directory that holds a MinIO mirror
    (`mirror_dirs`, a subset) also leaves out its top-level dot entries: the mirror's
    staging copy and temp directories, never a published copy (templates/dump-minio.sh).
    `host_entries` are this host's own `user@host` entries (`pause_policy_entries`).
    """
    retention = {
        key: value
        for key, value in policy.retention.model_dump(by_alias=True).items()
        if value is not None  # unset: inherit
    }
    entry = {
        "compression": {"compressorName": policy.compression},
        "retention": retention,
        "scheduling": {"intervalSeconds": schedule.interval_seconds},
        "upload": {"maxParallelFileReads": policy.parallel_file_reads},
    }
    document = {str(source): entry for source in sorted(policy.sources, key=str)}
    for target in dump_dirs:
        document[target] = {"errorHandling": {"ignoreUnknownTypes": False}}
        if target in mirror_dirs:
            # Anchored at the .dumps directory (Kopia's ignore rules are gitignore rules, based at the policy's
            # directory): an object whose name starts with a dot, deeper down, stays in.
            document[target]["files"] = {"ignore": [MIRROR_IGNORE_RULE]}
    document.update(host_entries or {})
    return document


def render_policy_json(
    policy: Policy,
    schedule: Schedule,
    dump_dirs: Sequence[str] = (),
    mirror_dirs: Sequence[str] = (),
    host_entries: Mapping[str, dict] | None = None,
) -> str:
    """policy.json for `kopia policy import`: byte-identical on every host but for each host's own dumps
    directories and `user@host` entry (imported without --delete-other-policies, so one host's entries never
    remove another's)."""
    document = policy_document(policy, schedule, dump_dirs, mirror_dirs, host_entries)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


#: The .dumps policy's ignore rule where a MinIO mirror writes: its staging copy and temp dirs (dot entries).
MIRROR_IGNORE_RULE = "/.*"


def dump_dir_targets(host_identity: str, sources: Sequence[BackupSource]) -> tuple[str, ...]:
    """`user@host:<path>/.dumps` of each source that declares a dump or a pause: their policy entries."""
    return tuple(f"{host_identity}:{s.path}/{DUMPS_DIR}" for s in sources if s.dumps or s.pause)


def mirror_dir_targets(host_identity: str, sources: Sequence[BackupSource]) -> tuple[str, ...]:
    """`user@host:<path>/.dumps` of each source that declares a MinIO dump."""
    return tuple(f"{host_identity}:{s.path}/{DUMPS_DIR}" for s in sources if any(d.minio for d in s.dumps))


# ---------------------------------------------------------------- storage


@dataclass(frozen=True)
class S3Endpoint:
    host_port: str
    use_tls: bool


def parse_s3_endpoint(url: str) -> S3Endpoint:
    """'http://openlist:5246' -> host:port without TLS. The scheme is required: it decides TLS."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("S3 endpoint must look like 'http://host:port' or 'https://host[:port]'")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("S3 endpoint must be scheme, host and port only (path-style bucket URLs are built by Kopia)")
    return S3Endpoint(host_port=parts.netloc, use_tls=parts.scheme == "https")


def s3_storage(repository: Repository, endpoint_url: str, access_key_id: str, secret_access_key: str) -> dict:
    """Kopia's blob storage connection info for an S3 endpoint (repo/blob/s3/s3_options.go)."""
    endpoint = parse_s3_endpoint(endpoint_url)
    config: dict[str, object] = {
        "bucket": repository.bucket,
        "prefix": repository.prefix,
        "endpoint": endpoint.host_port,
        "accessKeyID": access_key_id,
        "secretAccessKey": secret_access_key,
    }
    if not endpoint.use_tls:
        config["doNotUseTLS"] = True
    return {"type": "s3", "config": config}


def render_repository_config(storage: Mapping) -> str:
    """repository.config for `kopia repository connect from-config --file`.

    Only `storage` is read by from-config (cli/command_repository_connect_from_config.go);
    cache settings are connect flags, so no `caching` block is rendered.
    """
    return json.dumps({"storage": storage}, indent=2, sort_keys=True) + "\n"


def render_storage_token(storage: Mapping) -> str:
    """The same storage as a Kopia token (repo/token.go), for `repository create from-config --token-file`.

    `create from-config` refuses `--file` in 0.22.3; a token file keeps the S3 keys
    off the command line. No password inside: that comes from KOPIA_PASSWORD.
    """
    token = json.dumps({"version": "1", "storage": storage}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=") + "\n"


# ---------------------------------------------------------------- secrets.env


def shell_quote(value: str) -> str:
    """Single-quote for POSIX sh; any byte but NUL survives."""
    if "\x00" in value:
        raise ValueError("a secret value must not contain NUL bytes")
    return "'" + value.replace("'", "'\\''") + "'"


def render_secrets_env(variables: Mapping[str, str]) -> str:
    """`export NAME='value'` lines, sourced by the start script and the health check.

    Secrets reach Kopia through this 0600 file, not the container's env, so
    `docker inspect` and `ps` never show them.
    """
    lines = ["# Written by Pulumi (homelab-backup). Secret: mode 0600, never commit or print."]
    for name in sorted(variables):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"invalid variable name {name!r}")
        lines.append(f"export {name}={shell_quote(variables[name])}")
    return "\n".join(lines) + "\n"


def kopia_secret_variables(
    repository_password: str,
    server_username: str,
    server_password: str,
    server_control_password: str,
    heartbeat_url: str | None = None,
) -> dict[str, str]:
    """Kopia's own env names (cli/command_server*.go): UI login, control API login, repository password;
    and the health check's heartbeat URL, when one is configured."""
    variables = {
        "KOPIA_PASSWORD": repository_password,
        "KOPIA_SERVER_USERNAME": server_username,
        "KOPIA_SERVER_PASSWORD": server_password,
        "KOPIA_SERVER_CONTROL_USER": SERVER_CONTROL_USER,
        "KOPIA_SERVER_CONTROL_PASSWORD": server_control_password,
    }
    if heartbeat_url is not None:
        variables[HEARTBEAT_URL_VARIABLE] = heartbeat_url
    return variables


#: secrets.env variable the health check pings after every healthy check
HEARTBEAT_URL_VARIABLE = "HOMELAB_HEARTBEAT_URL"

#: the variable of PREVIOUS_PASSWORD_ENV: not one of Kopia's, so no Kopia command reads it by accident
PREVIOUS_PASSWORD_VARIABLE = "HOMELAB_PREVIOUS_REPOSITORY_PASSWORD"  # noqa: S105 (a variable name)


def render_previous_password_env(previous_password: str) -> str:
    """PREVIOUS_PASSWORD_ENV: sourced by the maintenance owner's start script when the declared password does
    not open the repository, to change the repository's password to the declared one."""
    return render_secrets_env({PREVIOUS_PASSWORD_VARIABLE: previous_password})


SERVER_CONTROL_USER = "server-control"


# ---------------------------------------------------------------- notification profiles

#: Kopia profiles this program owns are named homelab-<name>; the start script deletes the ones no longer
#: declared and leaves profiles made by hand alone.
KOPIA_PROFILE_PREFIX = "homelab-"


def notification_file(profile_name: str) -> str:
    """The host file holding one declared profile: notification-<name>.json (secret: it holds the URL or
    the SMTP password)."""
    return f"notification-{profile_name}.json"


def kopia_notification_profile(profile: NotificationProfile, secret_values: Mapping[str, str]) -> dict:
    """One profile as Kopia stores it (notification/notifyprofile/notification_profile.go, the senders'
    options in notification/sender/{webhook,email}/*_options.go @ v0.22.3), every field given, so Kopia
    applies no default of its own. `secret_values` holds the resolved `profile.secret_keys()`."""
    if profile.webhook is not None:
        method = {
            "type": "webhook",
            "config": {
                "endpoint": secret_values["url"],
                "format": profile.webhook.format,
                "headers": secret_values.get("headers", ""),
                "method": profile.webhook.method,
            },
        }
    else:
        email = profile.email
        assert email is not None  # the model requires one target
        method = {
            "type": "email",
            "config": {
                "cc": "",
                "format": email.format,
                "from": email.from_address,
                "smtpIdentity": "",
                "smtpPassword": secret_values.get("password", ""),
                "smtpPort": email.smtp_port,
                "smtpServer": email.smtp_server,
                "smtpUsername": email.username or "",
                "to": ",".join(email.to),
            },
        }
    return {
        "profile": KOPIA_PROFILE_PREFIX + profile.name,
        "method": method,
        "minSeverity": SEVERITIES[profile.min_severity],
    }


def render_notification_profile(profile: NotificationProfile, secret_values: Mapping[str, str]) -> str:
    """The profile's JSON exactly as Kopia's server answers `GET /api/v1/notificationProfiles/<name>`: Go's
    encoder, indented by two spaces, HTML characters escaped, the sender options as a map (sorted keys). The
    start script posts this file, and skips the post when the server already answers the same bytes."""
    text = json.dumps(kopia_notification_profile(profile, secret_values), indent=2, ensure_ascii=False)
    for char in "<>&\u2028\u2029":  # what Go's encoder escapes inside strings
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text + "\n"


# ---------------------------------------------------------------- the start script


@dataclass(frozen=True)
class StartScriptParams:
    hostname: str
    username: str
    maintenance_owner: str  # user@host
    port: int
    tls: bool
    refresh_interval: str
    sources: tuple[str, ...]  # this host's user@host:/path, for the log line and the health check
    # Container paths; the tests point them at temp dirs to run the script for real.
    deploy_dir: str = DEPLOY_DIR
    state_dir: str = STATE_DIR
    cache_dir: str = CACHE_DIR
    #: how long a host that may not create the repository waits between tries while there is none
    repository_wait_seconds: int = 30
    #: the health check calls a source stale when its last snapshot is older than this
    max_snapshot_age_seconds: int = 2 * 3600 + 600
    #: how much longer than that a source may go without a finished snapshot while it uploads
    upload_allowance_seconds: int = 86400
    #: the restore drill: how often, and which share of the files it reads back
    drill_interval_seconds: int = 86400
    drill_files_percent: float = 1.0
    #: the health check calls the drill overdue when its last result is older than this
    max_drill_age_seconds: int = 2 * 86400 + 600
    #: Kopia's cache limits on this host (connect flags), MB
    content_cache_mb: int = DEFAULT_CONTENT_CACHE_MB
    metadata_cache_mb: int = DEFAULT_METADATA_CACHE_MB
    #: what the maintenance owner applies to the repository: max pack size (MiB) and the maintenance schedule
    pack_size_mb: int = DEFAULT_PACK_SIZE_MB
    quick_maintenance_interval: str = "1h"
    full_maintenance_interval: str = "24h"
    #: a source pauses containers: connect with --enable-actions, and refuse to serve unless Kopia stored it
    enable_actions: bool = False
    #: kopia.createRepository: this (owner's) start may create the repository where the storage holds none
    create_repository: bool = False
    #: the stack that deploys this host, named in the commands the messages give; default: the host's name
    stack: str = ""
    #: the database dumps of this host's sources, as the health check finds their status lines
    dumps: tuple[DumpCheck, ...] = ()

    @property
    def identity(self) -> str:
        return identity(self.username, self.hostname)

    @property
    def stack_name(self) -> str:
        return self.stack or self.hostname

    @property
    def is_maintenance_owner(self) -> bool:
        return is_maintenance_owner(self.maintenance_owner, self.identity)


@dataclass(frozen=True)
class DumpCheck:
    """One dump (or a source's pause) the health rule judges: its source, its name, and its status file as the
    checker sees it."""

    source: str  # user@host:/path
    name: str  # a dump's name; a pause's containers, joined by commas
    status_file: str
    what: str = "dump"  # or "pause"


def dump_checks(config: StackConfig, *, on_host: bool) -> tuple[DumpCheck, ...]:
    """Every dump and pause of this host's sources; status files at their host paths (`on_host`, for scripts/status
    over SSH) or where the Kopia container mounts the sources (its health check)."""
    checks: list[DumpCheck] = []
    for source in config.kopia.sources:
        at = source.host_path if on_host else source.path
        checks += [
            DumpCheck(f"{config.identity}:{source.path}", dump.name, dump_status_file(at, dump.name))
            for dump in source.dumps
        ]
        if source.pause is not None:
            containers = ",".join(source.pause.containers)
            checks.append(
                DumpCheck(
                    f"{config.identity}:{source.path}", containers, dump_status_file(at, PAUSE_STATUS_NAME), "pause"
                )
            )
    return tuple(checks)


def start_script_params(config: StackConfig) -> StartScriptParams:
    """What the start script and the health check need of a stack's config."""
    server = config.kopia.server
    return StartScriptParams(
        hostname=config.host.name,
        username=config.repository.username,
        maintenance_owner=config.repository.maintenance_owner,
        port=server.port,
        tls=not server.insecure,
        refresh_interval=server.refresh_interval,
        sources=tuple(str(s) for s in config.host_sources),
        max_snapshot_age_seconds=config.max_snapshot_age_seconds,
        upload_allowance_seconds=config.kopia.health.upload_allowance_seconds,
        drill_interval_seconds=config.kopia.drill.interval_seconds,
        drill_files_percent=config.kopia.drill.files_percent,
        max_drill_age_seconds=config.max_drill_age_seconds,
        content_cache_mb=config.kopia.cache.content_mb,
        metadata_cache_mb=config.kopia.cache.metadata_mb,
        pack_size_mb=config.repository.pack_size_mb,
        quick_maintenance_interval=config.repository.maintenance.quick_interval,
        full_maintenance_interval=config.repository.maintenance.full_interval,
        create_repository=config.kopia.create_repository,
        stack=config.host.stack,
        dumps=dump_checks(config, on_host=False),
        enable_actions=bool(paused_sources(config.kopia.sources)),
    )


# The one-off creation of the repository (kopia.createRepository; docs/decisions.md): how to ask for it, and the
# reminder to take the request back, which the health check and `scripts/status` both show while it is set.
CREATE_REPOSITORY_KEY = "homelab-backup:kopia.createRepository"


def create_repository_command(stack: str) -> str:
    """The first deploy of the maintenance owner: the one `pulumi up` that may create the repository."""
    return f"pulumi up --stack {stack} --config-path --config {CREATE_REPOSITORY_KEY}=true"


def create_repository_reminder(stack: str) -> str:
    """Why a host whose stack still sets kopia.createRepository is not healthy, and what to do."""
    return (
        f"kopia.createRepository is still set: remove it (pulumi config rm --stack {stack} --path"
        f" {CREATE_REPOSITORY_KEY}) and run pulumi up --stack {stack}"
    )


#: The start script's template: a shell file (lintable with shellcheck), its @MARKERS@ filled in below.
TEMPLATES = Path(__file__).resolve().parent / "templates"
START_SCRIPT_TEMPLATE = TEMPLATES / "kopia-start.sh"


def fill_template(template: Path, replacements: Mapping[str, str], *, unquoted: Iterable[str]) -> str:
    """The template with every @MARKER@ replaced, in one pass: a value holding a marker is not substituted
    again, and a marker without a value is a KeyError, not a silent leftover.

    `unquoted` names every value from the stack's config that the template places as shell words without
    quotes (paths, identities, sources): each must be a single word the shell reads as itself (no space,
    quote, `$`, backquote, `;`, newline, ...). Config rules keep such values out today; the scripts do not
    rely on that, so every template is filled through this one guard."""
    for value in unquoted:
        if shlex.quote(value) != value:
            raise ValueError(f"{value!r} cannot be placed unquoted in {template.name}")
    return re.sub(r"@[A-Z_]+@", lambda m: replacements[m.group(0)], template.read_text())


def render_start_script(params: StartScriptParams) -> str:
    """The Kopia container's entrypoint (POSIX sh: dash in the upstream image, busybox in tests)."""
    required = [REPOSITORY_CONFIG, STORAGE_TOKEN, POLICY_JSON, SECRETS_ENV]
    if params.tls:
        required += [TLS_CERT, TLS_KEY]
        tls_flags = f"--tls-cert-file={params.deploy_dir}/{TLS_CERT} --tls-key-file={params.deploy_dir}/{TLS_KEY}"
    else:
        tls_flags = "--insecure"  # explicit opt-in in the stack config (kopia.server.insecure)
    replacements = {
        "@DEPLOY_DIR@": params.deploy_dir,
        "@STATE_DIR@": params.state_dir,
        "@CACHE_DIR@": params.cache_dir,
        "@IDENTITY@": params.identity,
        "@OWNER@": params.maintenance_owner,
        "@IS_OWNER@": "yes" if params.is_maintenance_owner else "no",
        "@CREATE_REQUESTED@": "yes" if params.create_repository else "no",
        "@CREATE_COMMAND@": shell_quote(create_repository_command(params.stack_name)),
        "@CREATE_REMINDER@": shell_quote(create_repository_reminder(params.stack_name)),
        "@HOSTNAME@": params.hostname,
        "@USERNAME@": params.username,
        "@REQUIRED_FILES@": " ".join(required),
        "@REPOSITORY_CONFIG@": REPOSITORY_CONFIG,
        "@STORAGE_TOKEN@": STORAGE_TOKEN,
        "@POLICY_JSON@": POLICY_JSON,
        "@SECRETS_ENV@": SECRETS_ENV,
        "@MSG_NOT_INITIALIZED@": MSG_NOT_INITIALIZED,
        "@MSG_EXISTING_DATA@": MSG_EXISTING_DATA,
        "@MSG_INVALID_PASSWORD@": MSG_INVALID_PASSWORD,
        "@PREVIOUS_PASSWORD_ENV@": PREVIOUS_PASSWORD_ENV,
        "@PREVIOUS_PASSWORD_VARIABLE@": PREVIOUS_PASSWORD_VARIABLE,
        "@EMPTY_MARKER@": OPENLIST_EMPTY_FOLDER_MARKER,
        "@SOURCES@": " ".join(params.sources),
        "@PORT@": str(params.port),
        "@SCHEME@": "TLS" if params.tls else "INSECURE: plain HTTP",
        "@TLS_FLAGS@": tls_flags,
        "@REFRESH_INTERVAL@": params.refresh_interval,
        "@REPOSITORY_WAIT_SECONDS@": str(params.repository_wait_seconds),
        "@DRILL_INTERVAL@": str(params.drill_interval_seconds),
        "@DRILL_RETRY@": str(min(params.drill_interval_seconds, 3600)),
        "@DRILL_FIRST_WAIT@": str(min(params.drill_interval_seconds, 60)),
        "@CLOCK_SKEW_SECONDS@": str(CLOCK_SKEW_SECONDS),
        "@DRILL_PERCENT@": f"{params.drill_files_percent:g}",
        "@DRILL_SOURCES@": " ".join(f"--sources={s}" for s in params.sources),
        "@NOTIFICATION_FILES@": notification_file("*"),
        "@PROFILE_PREFIX@": KOPIA_PROFILE_PREFIX,
        "@NOTIFY_RETRY@": "30",
        "@UI_API@": render_ui_api(params),
        "@CACHE_FLAGS@": f"--content-cache-size-mb={params.content_cache_mb} "
        f"--metadata-cache-size-mb={params.metadata_cache_mb}",
        "@ACTIONS_FLAG@": "--enable-actions" if params.enable_actions else "",
        "@ACTIONS_REQUIRED@": "yes" if params.enable_actions else "no",
        "@PACK_SIZE_MB@": str(params.pack_size_mb),
        "@PACK_SIZE_BYTES@": str(params.pack_size_mb << 20),
        "@MAINTENANCE_FLAGS@": f"--quick-interval={params.quick_maintenance_interval} "
        f"--full-interval={params.full_maintenance_interval}",
        **_own_server(params),
    }
    unquoted = (
        *_identity_and_paths(params),
        params.maintenance_owner,
        params.refresh_interval,
        params.quick_maintenance_interval,
        params.full_maintenance_interval,
        params.cache_dir,
    )
    return fill_template(START_SCRIPT_TEMPLATE, replacements, unquoted=unquoted)


def _identity_and_paths(params: StartScriptParams) -> tuple[str, ...]:
    """The config values every script of the container places unquoted: who it runs as, where its files are,
    and which sources it backs up."""
    return (params.hostname, params.username, params.deploy_dir, params.state_dir, *params.sources)


DRILL_VERDICT_TEMPLATE = TEMPLATES / "kopia-drill-verdict.sh"
#: How far ahead of the judging clock a snapshot's or a drill's time may lie before it is reported as a wrong
#: clock rather than taken as fresh (a negative age is never stale). The health check compares with the host's
#: own clock; `scripts/status` compares with the operator's, which may differ by a little.
CLOCK_SKEW_SECONDS = 300


def render_drill_verdict(state_dir: str, max_drill_age_seconds: int) -> str:
    """The restore drill's verdict as a sh snippet: one line, exit 1 when the last drill failed or is overdue.
    The health check embeds it (the container's state dir); `scripts/status` runs it over SSH against the
    host's copy (`<kopiaDataDir>/state`). One home for the rule."""
    replacements = {
        "@STATE_DIR@": state_dir,
        "@MAX_DRILL_AGE_SECONDS@": str(max_drill_age_seconds),
        "@CLOCK_SKEW_SECONDS@": str(CLOCK_SKEW_SECONDS),
    }
    return fill_template(DRILL_VERDICT_TEMPLATE, replacements, unquoted=(state_dir,))


def _own_server(params: StartScriptParams) -> dict[str, str]:
    """How the scripts inside the container reach their own server: on loopback, trusting only the
    certificate Pulumi wrote (curl's --cacert), or plain HTTP when the stack opted out of TLS."""
    scheme = "https" if params.tls else "http"
    return {
        "@SERVER_URL@": f"{scheme}://127.0.0.1:{params.port}",
        "@CURL_TLS@": f"--cacert {params.deploy_dir}/{TLS_CERT}" if params.tls else "",
    }


DUMP_VERDICT_TEMPLATE = TEMPLATES / "dump-verdict.sh"


def render_dump_verdict(checks: Sequence[DumpCheck], state_dir: str, max_age_seconds: int) -> str:
    """The dumps' verdict as a sh snippet: one "<source>: dump <name> ..." line per failed, stale or missing
    dump, exit 1 then. The health check embeds it (the container's paths); `scripts/status` runs it over SSH
    against the host's (`dump_checks(config, on_host=True)`). One home for the rule; empty without dumps."""
    if not checks:
        return ""
    replacements = {
        "@STATE_DIR@": state_dir,
        "@MAX_AGE_SECONDS@": str(max_age_seconds),
        "@DUMPS@": "\n".join(f"{c.source} {c.what} {c.name} {c.status_file}" for c in checks),
    }
    unquoted = (state_dir, *(value for c in checks for value in (c.source, c.what, c.name, c.status_file)))
    return fill_template(DUMP_VERDICT_TEMPLATE, replacements, unquoted=unquoted)


HEALTHCHECK_TEMPLATE = TEMPLATES / "kopia-health.sh"
#: The rules that decide whether a source is backing up; the health check and `scripts/status` both run them.
VERDICT_AWK = TEMPLATES / "kopia-verdict.awk"


#: The rule on each source's last snapshot attempt (the server's task list); also run by both.
ATTEMPTS_AWK = TEMPLATES / "kopia-attempts.awk"


def awk_program(path: Path) -> str:
    program = path.read_text()
    if "'" in program:
        raise ValueError(f"{path} must not contain a single quote: the health check quotes it with them")
    return program


UI_API_TEMPLATE = TEMPLATES / "kopia-ui-api.sh"


def render_ui_api(params: StartScriptParams) -> str:
    """The shell functions that call Kopia's UI API (login, session cookie, CSRF token); the start script
    (notification profiles) and the health check (the task list) both embed them."""
    return fill_template(UI_API_TEMPLATE, _own_server(params), unquoted=(params.deploy_dir,)).rstrip("\n")


def render_healthcheck(params: StartScriptParams) -> str:
    """Health: every source of this host is backing up (the template's header says exactly what that means).

    It asks the control API with the server-control login, over TLS trusting only this
    server's own certificate (the one Pulumi wrote), and reads each source's status, last
    snapshot and next snapshot time (docs/upstream-behaviour.md#a-failed-snapshots-source-returns-to-idle).
    """
    replacements = {
        "@IDENTITY@": params.identity,
        "@DEPLOY_DIR@": params.deploy_dir,
        "@STATE_DIR@": params.state_dir,
        "@SECRETS_ENV@": SECRETS_ENV,
        **_own_server(params),
        "@MAX_AGE_SECONDS@": str(params.max_snapshot_age_seconds),
        "@UPLOAD_ALLOWANCE_SECONDS@": str(params.upload_allowance_seconds),
        "@CLOCK_SKEW_SECONDS@": str(CLOCK_SKEW_SECONDS),
        "@UI_API@": render_ui_api(params),
        "@ATTEMPTS_AWK@": awk_program(ATTEMPTS_AWK),
        "@DRILL_VERDICT@": render_drill_verdict(params.state_dir, params.max_drill_age_seconds).rstrip("\n"),
        "@DUMP_VERDICT@": _embedded_dump_verdict(params),
        "@SOURCES@": " ".join(params.sources),
        "@HEARTBEAT_URL_VARIABLE@": HEARTBEAT_URL_VARIABLE,
        "@VERDICT_AWK@": awk_program(VERDICT_AWK),
        "@CREATE_REMINDER@": shell_quote(
            create_repository_reminder(params.stack_name) if params.create_repository else ""
        ),
    }
    return fill_template(HEALTHCHECK_TEMPLATE, replacements, unquoted=_identity_and_paths(params))


def _embedded_dump_verdict(params: StartScriptParams) -> str:
    """The dumps' verdict inside the health check: its lines in `dumps`, its outcome in `dumps_ok`, which fail the
    check with the sources' verdict (and so stop the heartbeat)."""
    verdict = render_dump_verdict(params.dumps, params.state_dir, params.max_snapshot_age_seconds)
    if not verdict:
        return 'dumps="" dumps_ok=0  # no database dumps on this host'
    return f"# The database dumps (components/templates/dump-verdict.sh).\ndumps=$(\n{verdict.rstrip()}\n)\ndumps_ok=$?"


# ---------------------------------------------------------------- database dumps

DUMP_LOOP_TEMPLATE = TEMPLATES / "dump-loop.sh"
DUMP_MINIO_TEMPLATE = TEMPLATES / "dump-minio.sh"
#: Inside a dump's container: the source's dumps directory, its credentials (read-only), an SQLite file's directory.
DUMP_OUTPUT_DIR = "/dumps"
DUMP_SECRETS_DIR = "/run/homelab-dump"
DUMP_SQLITE_DIR = "/db"
#: The credentials file of a PostgreSQL dump, in `<host.configDir>/dumps/<name>/` on the host.
PGPASS_FILE = "pgpass"
#: A MinIO dump's: mc's config, with the access keys (mc reads it from its config dir).
MC_CONFIG_FILE = "mc-config.json"


def dump_status_file(source_dir: str, name: str) -> str:
    """Where a dump's (or the source's pause's) status line is, under its source's directory (on the host, or
    mounted in a container)."""
    return f"{source_dir}/{DUMPS_DIR}/{name}.status"


def dump_secrets_dir(config_dir: str, dump: Dump) -> str:
    """The host directory of one dump's credentials, mounted read-only into that dump's container alone."""
    return f"{config_dir}/dumps/{dump.name}"


def _refuse_line_breaks(what: str, value: str) -> None:
    """A credential written as one line of a credentials file: a line break or NUL would end or cut it. The
    program refuses such values before any resource (secrets.py); this guards the renderers themselves."""
    if any(c in value for c in "\n\r\x00"):
        raise ValueError(f"{what} must be one line")


def render_pgpass(password: str) -> str:
    """libpq's password file (`*:*:*:*:<password>`, `:` and `\\` escaped), read by pg_dump through PGPASSFILE:
    the password is on no command line and in no environment."""
    _refuse_line_breaks("a database password", password)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def _dump_command(dump: Dump, secrets_dir: str, sqlite_dir: str) -> tuple[str, str]:
    """(the client command, which writes the dump to "$tmp"; the client's name for messages)."""
    if dump.postgres is not None:
        pg = dump.postgres
        return (
            f"PGPASSFILE={secrets_dir}/{PGPASS_FILE} pg_dump --host={pg.container} --port={pg.port}"
            f' --username={pg.user} --dbname={pg.database} --no-password --file="$tmp"',
            "pg_dump",
        )
    if dump.minio is not None:
        return 'mirror "$tmp"', "mc"  # a function of the MinIO prelude (templates/dump-minio.sh)
    assert dump.sqlite is not None  # the model requires one kind
    database = f"{sqlite_dir}/{dump.sqlite.file.rsplit('/', 1)[1]}"
    # VACUUM INTO copies in one read transaction: consistent while the app writes (WAL mode included), and
    # it needs no lock that blocks the app's writers. The temp file exists empty, which VACUUM INTO accepts.
    return f"sqlite3 -bail -cmd '.timeout 60000' {database} \"VACUUM INTO '$tmp'\"", "sqlite3"


def render_mc_config(minio: MinioDump, access_key: str, secret_key: str) -> str:
    """mc's config.json with one alias, `src`, for the MinIO server the dump mirrors: read by mc from its config
    dir, so the keys are on no command line and in no environment."""
    for value in (access_key, secret_key):
        _refuse_line_breaks("a MinIO key", value)
    alias = {
        "url": minio_url(minio),
        "accessKey": access_key,
        "secretKey": secret_key,
        "api": "s3v4",
        "path": "auto",
    }
    return json.dumps({"version": "10", "aliases": {"src": alias}}, indent=2) + "\n"


def minio_url(minio: MinioDump) -> str:
    """MinIO's S3 API as the mirror reaches it: by container name, on MinIO's network."""
    return f"http://{minio.container}:{minio.port}"


def _minio_prelude(dump: Dump, dumps_dir: str, secrets_dir: str) -> str:
    assert dump.minio is not None
    buckets = dump.minio.buckets or []
    replacements = {
        "@NAME@": dump.name,
        "@CONTAINER@": minio_url(dump.minio),
        "@BUCKETS@": " ".join(buckets),
        "@BUCKETS_WHAT@": f"the buckets {', '.join(buckets)}" if buckets else "every bucket the keys list",
        "@STAGING@": f"{dumps_dir}/.{dump.name}.mirror",
        "@SECRETS_DIR@": secrets_dir,
        "@MC_CONFIG@": MC_CONFIG_FILE,
    }
    unquoted = (dumps_dir, secrets_dir, dump.name, *buckets)
    return "\n" + fill_template(DUMP_MINIO_TEMPLATE, replacements, unquoted=unquoted)


def render_dump_script(
    dump: Dump,
    interval_seconds: int,
    *,
    dumps_dir: str = DUMP_OUTPUT_DIR,
    secrets_dir: str = DUMP_SECRETS_DIR,
    sqlite_dir: str = DUMP_SQLITE_DIR,
) -> str:
    """The entrypoint of a dump's container (POSIX sh: the database image's shell). The directories are where
    the container mounts them; the tests point them at temp dirs to run the script for real."""
    command, client = _dump_command(dump, secrets_dir, sqlite_dir)
    minio = dump.minio is not None
    replacements = {
        "@NAME@": dump.name,
        "@KIND@": dump.kind,
        "@IMAGE_ROLE@": {
            "postgres": "the database container's own image",
            "sqlite": "an image with sqlite3",
            "minio": "a MinIO client image",
        }[dump.kind],
        "@WHAT@": "every object" if minio else "the database",
        "@TEMP_KIND@": "directory" if minio else "file",
        "@FILE@": dump.file_name,
        "@DUMPS_DIR@": dumps_dir,
        "@INTERVAL_SECONDS@": str(interval_seconds),
        "@LEAD_SECONDS@": str(dump.lead_seconds),
        "@PRELUDE@": _minio_prelude(dump, dumps_dir, secrets_dir) if minio else "",
        "@MKTEMP_FLAGS@": "-d " if minio else "",
        "@DUMP_COMMAND@": command,
        "@PUBLISH@": 'publish "$tmp"' if minio else 'mv -f "$tmp" "$out"',
        "@SIZE@": '$mirrored, $(du -sk "$out" | cut -f 1) KiB' if minio else "$(wc -c < \"$out\" | tr -d ' ') bytes",
        "@CLIENT@": client,
        "@STATUS_FUNCTIONS@": status_functions(),
    }
    if dump.postgres is not None:
        database: tuple[str, ...] = (dump.postgres.container, dump.postgres.user, dump.postgres.database)
    elif dump.minio is not None:
        database = (dump.minio.container,)
    else:
        assert dump.sqlite is not None  # the model requires one kind
        database = (dump.sqlite.file,)
    unquoted = (dumps_dir, secrets_dir, sqlite_dir, dump.name, dump.file_name, *database)
    return fill_template(DUMP_LOOP_TEMPLATE, replacements, unquoted=unquoted)


STATUS_FUNCTIONS_TEMPLATE = TEMPLATES / "status-line.sh"


def status_functions() -> str:
    """The shell functions that write a dump's or a pause's status line and its failure marker: one home, embedded
    by the dump loop and the pauser (they expect `$status`, `$marker` and `log`)."""
    return STATUS_FUNCTIONS_TEMPLATE.read_text().rstrip("\n")


# ---------------------------------------------------------------- pauses (docs/decisions.md, "Live data")

PAUSE_ACTION_TEMPLATE = TEMPLATES / "pause-action.sh"
PAUSER_TEMPLATE = TEMPLATES / "pauser.sh"
#: Where the pause requests and answers are, in the Kopia container and the pauser alike (`<kopiaDataDir>/pause`).
PAUSE_DIR = "/app/pause"
#: In the pauser: each paused source's .dumps directory, at /sources/<its index in kopia.sources>.
PAUSER_SOURCES_DIR = "/sources"
#: The Docker engine's socket on the host, mounted into the pauser alone.
DOCKER_SOCKET = "/var/run/docker.sock"
#: How long the before action waits for the pauser's answer, and Kopia's limit on each action run (the default
#: would be 3 minutes: snapshot/upload/upload_actions.go @ v0.22.3).
PAUSE_ANSWER_SECONDS = 60
PAUSE_ACTION_TIMEOUT_SECONDS = 90


def paused_sources(sources: Sequence[BackupSource]) -> list[tuple[int, BackupSource, Pause]]:
    """(index in kopia.sources, source, its pause) of each source that declares a pause: the index is its key in
    the requests, the answers and the pauser's mounts."""
    return [(i, source, source.pause) for i, source in enumerate(sources) if source.pause is not None]


def render_pause_action(
    host_identity: str, sources: Sequence[BackupSource], pauser: str, *, pause_dir: str = PAUSE_DIR
) -> str:
    """Kopia's before- and after-snapshot-root action (one script, told apart by $KOPIA_ACTION): it asks the
    pauser to pause or resume the source's containers and waits for its answer."""
    cases = []
    for i, source, pause in paused_sources(sources):
        containers = " ".join(pause.containers)
        cases.append(f"{shell_quote(source.path)}) key={i} containers={shell_quote(containers)} ;;")
    replacements = {
        "@IDENTITY@": host_identity,
        "@PAUSE_DIR@": pause_dir,
        "@PAUSER@": pauser,
        "@CASES@": "\n".join(cases),
        "@ANSWER_SECONDS@": str(PAUSE_ANSWER_SECONDS),
    }
    return fill_template(PAUSE_ACTION_TEMPLATE, replacements, unquoted=(host_identity, pause_dir, pauser))


def pause_policy_entries(host_identity: str, sources: Sequence[BackupSource], pauser: str) -> dict[str, dict]:
    """This host's `user@host` policy entry, which every source of the host inherits, with the pause action
    before and after each snapshot root; none when no source pauses. Only this host writes that entry (no fight
    between hosts); a stale one left after the pauses are removed is not run: the start script then connects
    without --enable-actions."""
    if not paused_sources(sources):
        return {}
    script = render_pause_action(host_identity, sources, pauser)
    action = {"script": script, "timeout": PAUSE_ACTION_TIMEOUT_SECONDS, "mode": "essential"}
    return {host_identity: {"actions": {"beforeSnapshotRoot": action, "afterSnapshotRoot": action}}}


def render_pauser_script(
    host_identity: str,
    sources: Sequence[BackupSource],
    *,
    pause_dir: str = PAUSE_DIR,
    sources_dir: str = PAUSER_SOURCES_DIR,
    socket: str = DOCKER_SOCKET,
) -> str:
    """The pauser's entrypoint (POSIX sh with curl: it runs from the Kopia image). The directories and the socket
    are where its container mounts them; the tests point them at temp dirs and a fake engine."""
    paused = paused_sources(sources)
    lines = [f"{i} {pause.max_seconds} {sources_dir}/{i} {' '.join(pause.containers)}" for i, _, pause in paused]
    replacements = {
        "@IDENTITY@": host_identity,
        "@PAUSE_DIR@": pause_dir,
        "@SOCKET@": socket,
        "@PAUSES@": "\n".join(lines),
        "@STATUS_NAME@": PAUSE_STATUS_NAME,
        "@STATUS_FUNCTIONS@": status_functions(),
    }
    containers = [name for _, _, pause in paused for name in pause.containers]
    unquoted = (host_identity, pause_dir, sources_dir, socket, *containers)
    return fill_template(PAUSER_TEMPLATE, replacements, unquoted=unquoted)


# ---------------------------------------------------------------- labels


def homepage_labels(group: str | None, name: str, icon: str, description: str) -> dict[str, str]:
    """Labels for the homepage dashboard; none when the host sets no homepageGroup."""
    if group is None:
        return {}
    return {
        "homepage.group": group,
        "homepage.name": name,
        "homepage.icon": icon,
        "homepage.description": description,
    }


# ---------------------------------------------------------------- Docker durations


def go_duration(seconds: int) -> str:
    """A duration as the Docker provider reads it back (Go's time.Duration.String: 1m0s, 1h0m0s, 15s), so a
    declared value equals the refreshed one and `pulumi refresh` shows no drift
    (docs/upstream-behaviour.md#health-check-durations-read-back-as-1m0s)."""
    if seconds < 0:
        raise ValueError("a duration must not be negative")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# ---------------------------------------------------------------- TLS and change detection


def pem_sha256_fingerprint(cert_pem: str) -> str:
    """SHA-256 of the certificate's DER bytes, lowercase hex: what `kopia server start` prints
    ("SERVER CERT SHA256: ...") and clients pass as --server-cert-fingerprint."""
    lines = [line.strip() for line in cert_pem.strip().splitlines()]
    try:
        begin = lines.index("-----BEGIN CERTIFICATE-----")
        end = lines.index("-----END CERTIFICATE-----", begin)
    except ValueError:
        raise ValueError("not a PEM certificate") from None
    der = base64.b64decode("".join(lines[begin + 1 : end]), validate=True)
    return hashlib.sha256(der).hexdigest()


def content_digest(files: Mapping[str, str], key: str) -> str:
    """HMAC-SHA256 over named file contents, keyed by a secret: a container label, so any change of a
    file replaces the container.

    The label is plain text (`docker inspect`, Pulumi previews), and the files hold
    passwords: keyed by a secret (secrets.env), the digest reveals nothing about them,
    so it need not be a Pulumi secret, and a preview shows it beside the other labels.
    """
    digest = hmac.new(key.encode(), digestmod=hashlib.sha256)
    for name in sorted(files):
        digest.update(name.encode() + b"\x00" + files[name].encode() + b"\x00")
    return digest.hexdigest()
