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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from components.config import (
    DEFAULT_CONTENT_CACHE_MB,
    DEFAULT_METADATA_CACHE_MB,
    DEFAULT_PACK_SIZE_MB,
    OPENLIST_EMPTY_FOLDER_MARKER,
    SEVERITIES,
    NotificationProfile,
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
#: The files that hold secrets: their content and digest stay Pulumi secrets in state.
SECRET_FILES = frozenset({REPOSITORY_CONFIG, STORAGE_TOKEN, SECRETS_ENV, TLS_KEY})

# Kopia 0.22.3 messages the start script tells apart (repo/connect.go, cli/command_repository_create.go).
MSG_NOT_INITIALIZED = "repository not initialized in the provided storage"
MSG_EXISTING_DATA = "found existing data in storage location"


# ---------------------------------------------------------------- policy.json


def policy_document(policy: Policy, schedule: Schedule) -> dict[str, dict]:
    """One fully qualified entry per source (`user@host:/path`).

    Fully qualified keys only: `(global)` and `@host` entries are shared with
    whatever else uses the repository, and importing them from two hosts would
    fight. Unset retention values inherit from `(global)`.
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
    return {str(source): entry for source in sorted(policy.sources, key=str)}


def render_policy_json(policy: Policy, schedule: Schedule) -> str:
    """policy.json for `kopia policy import`: byte-identical on every host (it depends on project config only)."""
    return json.dumps(policy_document(policy, schedule), indent=2, sort_keys=True) + "\n"


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

    @property
    def identity(self) -> str:
        return identity(self.username, self.hostname)

    @property
    def is_maintenance_owner(self) -> bool:
        return is_maintenance_owner(self.maintenance_owner, self.identity)


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
    )


#: The start script's template: a shell file (lintable with shellcheck), its @MARKERS@ filled in below.
TEMPLATES = Path(__file__).resolve().parent / "templates"
START_SCRIPT_TEMPLATE = TEMPLATES / "kopia-start.sh"


def fill_template(template: Path, replacements: Mapping[str, str]) -> str:
    """The template with every @MARKER@ replaced, in one pass: a value holding a marker is not substituted
    again, and a marker without a value is a KeyError, not a silent leftover."""
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
        "@MAY_CREATE@": "yes" if params.is_maintenance_owner else "no",
        "@HOSTNAME@": params.hostname,
        "@USERNAME@": params.username,
        "@REQUIRED_FILES@": " ".join(required),
        "@REPOSITORY_CONFIG@": REPOSITORY_CONFIG,
        "@STORAGE_TOKEN@": STORAGE_TOKEN,
        "@POLICY_JSON@": POLICY_JSON,
        "@SECRETS_ENV@": SECRETS_ENV,
        "@MSG_NOT_INITIALIZED@": MSG_NOT_INITIALIZED,
        "@MSG_EXISTING_DATA@": MSG_EXISTING_DATA,
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
        "@DRILL_PERCENT@": f"{params.drill_files_percent:g}",
        "@DRILL_SOURCES@": " ".join(f"--sources={s}" for s in params.sources),
        "@NOTIFICATION_FILES@": notification_file("*"),
        "@PROFILE_PREFIX@": KOPIA_PROFILE_PREFIX,
        "@NOTIFY_RETRY@": "30",
        "@UI_API@": render_ui_api(params),
        "@CACHE_FLAGS@": f"--content-cache-size-mb={params.content_cache_mb} "
        f"--metadata-cache-size-mb={params.metadata_cache_mb}",
        "@PACK_SIZE_MB@": str(params.pack_size_mb),
        "@PACK_SIZE_BYTES@": str(params.pack_size_mb << 20),
        "@MAINTENANCE_FLAGS@": f"--quick-interval={params.quick_maintenance_interval} "
        f"--full-interval={params.full_maintenance_interval}",
        **_own_server(params),
    }
    unquoted = (
        params.hostname,
        params.username,
        params.maintenance_owner,
        params.refresh_interval,
        params.quick_maintenance_interval,
        params.full_maintenance_interval,
        *params.sources,
    )
    for value in (*unquoted, params.deploy_dir, params.state_dir, params.cache_dir):
        if shlex.quote(value) != value:
            raise ValueError(f"{value!r} cannot be placed in the start script unquoted")
    return fill_template(START_SCRIPT_TEMPLATE, replacements)


DRILL_VERDICT_TEMPLATE = TEMPLATES / "kopia-drill-verdict.sh"


def render_drill_verdict(state_dir: str, max_drill_age_seconds: int) -> str:
    """The restore drill's verdict as a sh snippet: one line, exit 1 when the last drill failed or is overdue.
    The health check embeds it (the container's state dir); `scripts/status` runs it over SSH against the
    host's copy (`<kopiaDataDir>/state`). One home for the rule."""
    replacements = {"@STATE_DIR@": state_dir, "@MAX_DRILL_AGE_SECONDS@": str(max_drill_age_seconds)}
    return fill_template(DRILL_VERDICT_TEMPLATE, replacements)


def _own_server(params: StartScriptParams) -> dict[str, str]:
    """How the scripts inside the container reach their own server: on loopback, trusting only the
    certificate Pulumi wrote (curl's --cacert), or plain HTTP when the stack opted out of TLS."""
    scheme = "https" if params.tls else "http"
    return {
        "@SERVER_URL@": f"{scheme}://127.0.0.1:{params.port}",
        "@CURL_TLS@": f"--cacert {params.deploy_dir}/{TLS_CERT}" if params.tls else "",
    }


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
    return fill_template(UI_API_TEMPLATE, _own_server(params)).rstrip("\n")


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
        "@UI_API@": render_ui_api(params),
        "@ATTEMPTS_AWK@": awk_program(ATTEMPTS_AWK),
        "@DRILL_VERDICT@": render_drill_verdict(params.state_dir, params.max_drill_age_seconds).rstrip("\n"),
        "@SOURCES@": " ".join(params.sources),
        "@HEARTBEAT_URL_VARIABLE@": HEARTBEAT_URL_VARIABLE,
        "@VERDICT_AWK@": awk_program(VERDICT_AWK),
    }
    return fill_template(HEALTHCHECK_TEMPLATE, replacements)


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
