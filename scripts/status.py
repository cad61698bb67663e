"""Backup status of every host, from the operator's machine: each host's Kopia control API and its last drill.

For each stack: its outputs (server URL, TLS fingerprint, sources) and its config come
from Pulumi (Automation API, the same backend and passphrase as `pulumi up`); the
server-control password is read through the stack's own secret reference (Key Vault via
the Azure CLI's token, or `config:`). Each server is asked over TLS pinned to the
fingerprint; each source is judged by the same rules as the container's health check
(components/templates/kopia-verdict.awk, run with the local `awk`). The host's last
restore drill is judged by the health check's drill rule (kopia-drill-verdict.sh), run
over SSH with the stack's own pinned settings against the host's state dir.

The server's task list (the UI API, with the UI login) tells whether each source's last
snapshot attempt failed (kopia-attempts.awk). A source's database dumps are judged by the
health check's dump rule (dump-verdict.sh), run over SSH against their status files.
`--drill` also restores one sampled file of each source's latest snapshot through the
server's API into a private temp dir on this machine, and checks its size against the
snapshot; Kopia checks every content's hash as it reads. The server's file names are shown,
never used as paths on this machine.

Every answer is checked against the fields this script reads (a wrong one is reported as
what is wrong with it); text from a server is shown with its control characters escaped.
Each request gets --timeout seconds in all, and the whole run --deadline seconds, after
which the hosts still being asked are reported as timed out and the command exits.

Exit status: 0 every source is backing up; 1 a source is stale or failing, or a drill
failed; 2 a host could not be asked (config, credentials, network, SSH, a wrong answer, or
the deadline).
Run: ./scripts/status [--stack S] [--json] [--drill] [--timeout S] [--deadline S].
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from components import hosts, render
from components.config import PROJECT, ConfigError, SecretRef, load_namespace
from components.secrets import KEY_VAULT_RESOURCE, SecretReadError, read_secret

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILING, EXIT_UNREACHABLE = 0, 1, 2
PULUMI_READ_SECONDS = 120  # reading a stack's outputs and config through the Pulumi CLI


class StatusError(Exception):
    """A host that could not be asked; the message says why and what to do."""


@dataclass(frozen=True)
class Host:
    stack: str
    url: str
    fingerprint: str | None
    sources: tuple[str, ...]
    max_age_seconds: int
    upload_allowance_seconds: int
    control_password: str = field(repr=False)
    #: how to run a command on the host, and where its Kopia keeps the drill's result there
    ssh: tuple[str, ...] = ()
    state_dir: str = ""
    max_drill_age_seconds: int = 0
    #: the UI login: the task list and browsing snapshots (`--drill`) are the UI user's right
    ui_login: tuple[str, str] | None = field(default=None, repr=False)
    #: the stack still sets kopia.createRepository: the health check's own line saying so, else ""
    create_repository_reminder: str = ""
    #: the database dumps' rule (kopia-health.sh's own, components/templates/dump-verdict.sh) on the host's
    #: paths; empty when the host has no dumps
    dump_verdict: str = ""


@dataclass
class SourceRow:
    host: str
    source: str
    last_snapshot: str | None  # RFC 3339, UTC
    age_seconds: int | None
    size_bytes: int | None
    files: int | None
    errors: int | None
    last_error: str
    next_snapshot: str | None
    verdict: str  # "ok" or the problems
    drill: str = ""  # the host's last restore drill, as its verdict line says it
    sample: str = ""  # --drill: the file restored and checked, or why that failed


@dataclass(frozen=True)
class Drill:
    passed: bool | None  # None: its result could not be read
    line: str


# ---------------------------------------------------------------- from Pulumi: where the hosts are


def azure_cli_token() -> str:
    """A Key Vault data-plane token from the Azure CLI (`az login`), as azure-native would use the same login."""
    az = shutil.which("az")
    if az is None:
        raise SecretReadError("reading Key Vault needs the Azure CLI: install it and run 'az login'")
    result = subprocess.run(
        [az, "account", "get-access-token", "--resource", KEY_VAULT_RESOURCE, "--query", "accessToken", "-o", "tsv"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise SecretReadError(f"'az account get-access-token' failed: {result.stderr.strip()}; run 'az login'")
    return result.stdout.strip()


def host_from_stack(stack_name: str, workdir: Path, key_vault_token: Callable[[], str] = azure_cli_token) -> Host:
    """The stack's outputs, its control password and its UI login (through the stack's own secret references)."""
    from pulumi import automation as auto

    try:
        stack = auto.select_stack(stack_name=stack_name, work_dir=str(workdir))
        outputs = {k: v.value for k, v in stack.outputs().items()}
        all_config = stack.get_all_config()
        values = {k: v.value for k, v in all_config.items()}
        secret_keys = {k for k, v in all_config.items() if v.secret}
    except Exception as error:  # the CLI's own message says what is wrong (login, passphrase, stack name)
        raise StatusError(f"cannot read stack {stack_name} from Pulumi: {str(error).strip()[-400:]}") from None
    if "kopia_server_url" not in outputs:
        raise StatusError(f"stack {stack_name} has no kopia_server_url output: run 'pulumi up --stack {stack_name}'")
    try:
        config = load_namespace(values, stack=stack_name.rsplit("/", 1)[-1], secret_keys=secret_keys)
        kopia_secrets = config.kopia.secrets

        def secret(ref: SecretRef) -> str:
            def config_value(key: str) -> str:
                value = values.get(f"{PROJECT}:{key}")
                if not isinstance(value, str) or not value:
                    raise SecretReadError(f"{ref}: no config value {PROJECT}:{key} in stack {stack_name}")
                return value

            return read_secret(
                ref,
                config_value=config_value,
                key_vault_token=key_vault_token,
                url_template=config.key_vault.url_template,
                api_version=config.key_vault.api_version,
            )

        password = secret(kopia_secrets.server_control_password)
        login = (secret(kopia_secrets.server_username), secret(kopia_secrets.server_password))
    except (ConfigError, SecretReadError) as error:
        raise StatusError(f"stack {stack_name}: {error}") from None
    return Host(
        stack=stack_name,
        url=outputs["kopia_server_url"],
        fingerprint=outputs.get("kopia_tls_fingerprint"),
        sources=tuple(outputs.get("backup_sources") or ()),
        max_age_seconds=config.max_snapshot_age_seconds,
        upload_allowance_seconds=config.kopia.health.upload_allowance_seconds,
        control_password=password,
        ssh=tuple(hosts.ssh_command(config.host)),
        state_dir=f"{config.host.kopia_dir}/state",
        max_drill_age_seconds=config.max_drill_age_seconds,
        ui_login=login,
        create_repository_reminder=render.create_repository_reminder(config.host.stack)
        if config.kopia.create_repository
        else "",
        dump_verdict=render.render_dump_verdict(
            render.dump_checks(config, on_host=True), f"{config.host.kopia_dir}/state", config.max_snapshot_age_seconds
        ),
    )


# ---------------------------------------------------------------- Kopia's answers, checked

#: Control characters (C0, DEL, C1) and the invisible marks that reorder text (bidi embeddings, overrides,
#: isolates): a file name or an error holding them would act on the operator's terminal instead of showing.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with every control character shown as its escape (`\\x1b`, `\\n`, `\\u202e`): names and errors
    from a server reach the terminal as text, never as an escape sequence."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 time as Kopia writes it (nanoseconds; Python reads microseconds), in UTC."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.UTC)
    except ValueError:
        raise ValueError("not an RFC 3339 time") from None


def _kopia_time(text: str) -> str:
    _parse_time(text)
    return text


KopiaTime = Annotated[str, AfterValidator(_kopia_time)]


class KopiaAnswer(BaseModel):
    """The fields of a Kopia API answer that this script reads, by Kopia's own names
    (internal/serverapi, snapshot/manifest.go @ v0.22.3); anything else is ignored. Strict: a number where a
    time or a name was expected is a wrong answer, not something to convert."""

    model_config = ConfigDict(alias_generator=to_camel, extra="ignore", frozen=True, strict=True)


class SourceInfo(KopiaAnswer):
    user_name: str = ""
    host: str = ""
    path: str = ""

    def __str__(self) -> str:
        return f"{self.user_name}@{self.host}:{self.path}"


class SnapshotStats(KopiaAnswer):
    total_size: int | None = None
    error_count: int | None = None


class EntryError(KopiaAnswer):
    error: str = ""


class DirectorySummary(KopiaAnswer):
    files: int | None = None
    errors: list[EntryError] | None = None


class RootEntry(KopiaAnswer):
    summ: DirectorySummary | None = None


class LastSnapshot(KopiaAnswer):
    start_time: KopiaTime | None = None
    stats: SnapshotStats | None = None
    root_entry: RootEntry | None = None


class SourceStatus(KopiaAnswer):
    source: SourceInfo = SourceInfo()
    status: str = ""
    last_snapshot: LastSnapshot | None = None
    next_snapshot_time: KopiaTime | None = None


class SourcesAnswer(KopiaAnswer):
    """GET /api/v1/control/sources (serverapi.SourcesResponse)."""

    sources: list[SourceStatus] | None = None


class TaskInfo(KopiaAnswer):
    kind: str = ""
    description: str = ""
    status: str = ""
    error_message: str = ""


class TasksAnswer(KopiaAnswer):
    """GET /api/v1/tasks (serverapi.TaskListResponse)."""

    tasks: list[TaskInfo] | None = None


class SnapshotManifest(KopiaAnswer):
    id: str
    start_time: KopiaTime
    root_id: str = Field(alias="rootID")


class SnapshotsAnswer(KopiaAnswer):
    """GET /api/v1/snapshots?userName=&host=&path= (serverapi.SnapshotsResponse)."""

    snapshots: list[SnapshotManifest] | None = None


class DirectoryEntry(KopiaAnswer):
    name: str
    type: str = ""
    obj: str = ""
    size: int | None = None


class DirectoryAnswer(KopiaAnswer):
    """GET /api/v1/objects/<directory object> (a directory is a JSON object in Kopia)."""

    entries: list[DirectoryEntry] | None = None


Answer = TypeVar("Answer", bound=KopiaAnswer)


def parse_answer(model: type[Answer], body: bytes | str, what: str) -> Answer:
    """Kopia's answer read as `model`, or a StatusError saying what is wrong with it: not JSON (an HTML page
    from something else at that address), or a field of the wrong type, by its place in the answer."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False)[:3]:
            where = ".".join(str(part) for part in problem["loc"])
            if problem["type"] == "json_invalid":
                start = (body.decode(errors="replace") if isinstance(body, bytes) else body).lstrip()[:60]
                problems.append(f"{'an HTML page' if start.startswith('<') else 'not JSON'}: {start!r}")
            elif isinstance(problem["input"], dict | list):
                problems.append(f"{where or 'the answer'}: {problem['msg']}")
            else:
                shown = json.dumps(problem["input"])[:60]
                problems.append(f"{where or 'the answer'}: {problem['msg']}, got {shown}")
        raise StatusError(f"{what}: not an answer Kopia gives: {'; '.join(problems)}") from None


# ---------------------------------------------------------------- asking a server


def request(
    host: Host, path: str, headers: dict[str, str], timeout: float, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """`method path` on the host's server: (status, headers, body). With TLS, the certificate is compared with
    the pinned fingerprint BEFORE any credential is sent."""
    scheme, _, rest = host.url.partition("://")
    address, _, port = rest.rstrip("/").rpartition(":")
    connection: http.client.HTTPConnection | None = None
    # The socket's timeout bounds each read; a server answering a byte at a time never trips it, so the
    # whole exchange gets `timeout` seconds, after which the connection is cut under the reading thread.
    cut = threading.Event()
    watchdog = threading.Timer(timeout, lambda: _cut(connection, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # trust is the pinned fingerprint, checked below
            connection = http.client.HTTPSConnection(address, int(port), timeout=timeout, context=context)
            connection.connect()
            der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            served = hashlib.sha256(der or b"").hexdigest()
            if served != (host.fingerprint or "").lower():
                connection.close()
                raise StatusError(
                    f"{host.url} serves a certificate with fingerprint {served}, not the stack's "
                    f"{host.fingerprint}: not sending credentials (another server at that address?)"
                )
        else:
            connection = http.client.HTTPConnection(address, int(port), timeout=timeout)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException, ssl.SSLError) as error:
        failure = f"{error or type(error).__name__} (is the host up and the port reachable?)"
    else:
        failure = ""
    finally:
        watchdog.cancel()
        if connection is not None:
            connection.close()
    if cut.is_set():  # whatever the read said when its socket was shut down
        raise StatusError(f"{host.url}{path.split('?')[0]}: no whole answer within {timeout:.0f}s (too slow)")
    if failure:
        raise StatusError(f"{host.url}: {failure}")
    return response.status, dict(response.getheaders()), answer


def _cut(connection: http.client.HTTPConnection | None, cut: threading.Event) -> None:
    """Shut the connection's socket down under a thread blocked reading it (through a duplicate of its file
    descriptor, so that a TLS socket is cut the same way)."""
    sock = connection.sock if connection is not None else None
    if sock is None:
        return
    cut.set()
    with contextlib.suppress(OSError):
        duplicate = socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))
        duplicate.shutdown(socket.SHUT_RDWR)
        duplicate.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fetch_sources(host: Host, timeout: float) -> str:
    """GET /api/v1/control/sources as the server-control user, over the pinned certificate."""
    headers = {"Authorization": basic(render.SERVER_CONTROL_USER, host.control_password)}
    status, _, body = request(host, "/api/v1/control/sources", headers, timeout)
    if status == 401:
        raise StatusError(f"{host.url}: the server-control password was refused (run 'pulumi up' for {host.stack})")
    if status != 200:
        raise StatusError(f"{host.url}: HTTP {status}: {body[:200].decode(errors='replace')}")
    parse_answer(SourcesAnswer, body, f"{host.url}/api/v1/control/sources")
    return body.decode(errors="replace")


# ---------------------------------------------------------------- the restore drill


def run_rule_over_ssh(host: Host, script: str, timeout: float) -> subprocess.CompletedProcess | str:
    """One of the health check's sh rules, run on the host with the stack's pinned SSH settings (script on
    stdin); the finished process, or why it could not run."""
    try:
        return subprocess.run(
            [*host.ssh, "sh", "-s"], input=script, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no answer over SSH within {timeout:.0f}s"
    except OSError as error:
        return f"cannot run ssh: {error}"


def read_drill(host: Host, timeout: float) -> Drill:
    """The host's last restore drill, judged by the health check's own rule (kopia-drill-verdict.sh), run over
    SSH with the stack's pinned settings against the host's copy of Kopia's state dir."""
    result = run_rule_over_ssh(host, render.render_drill_verdict(host.state_dir, host.max_drill_age_seconds), timeout)
    if isinstance(result, str):
        return Drill(None, result)
    lines = result.stdout.strip().splitlines()
    if result.returncode in (0, 1) and lines:
        return Drill(result.returncode == 0, lines[-1])
    return Drill(None, f"cannot read it over SSH (exit {result.returncode}): {result.stderr.strip()[-300:]}")


def read_dumps(host: Host, timeout: float) -> list[str]:
    """The problems of the host's database dumps ("<source>: dump <name> ..."), judged by the health check's own
    rule (dump-verdict.sh) over SSH against the status files in the sources; StatusError when it cannot run."""
    if not host.dump_verdict:
        return []
    result = run_rule_over_ssh(host, host.dump_verdict, timeout)
    if isinstance(result, str):
        raise StatusError(f"database dumps: {result}")
    if result.returncode not in (0, 1) or (result.returncode == 1 and not result.stdout.strip()):
        raise StatusError(
            f"database dumps: cannot read them over SSH (exit {result.returncode}): {result.stderr.strip()[-300:]}"
        )
    return result.stdout.strip().splitlines()


class UiSession:
    """Kopia's UI API as the UI user: a session cookie, and the CSRF token the UI page carries for it
    (internal/server/server.go, server_authz_checks.go @ v0.22.3)."""

    def __init__(self, host: Host, timeout: float) -> None:
        if host.ui_login is None:
            raise StatusError(f"{host.stack}: no UI login read")
        self.host, self.timeout = host, timeout
        self.headers = {"Authorization": basic(*host.ui_login), "Cookie": f"Kopia-Session-Cookie={uuid.uuid4()}"}
        page = self.get("/").decode(errors="replace")
        marker = 'name="kopia-csrf-token" content="'
        if marker not in page:
            raise StatusError(f"{host.url}: the UI page carries no CSRF token")
        self.headers["X-Kopia-Csrf-Token"] = page.split(marker, 1)[1].split('"', 1)[0]

    def get(self, path: str, method: str = "GET", payload: dict | None = None, timeout: float | None = None) -> bytes:
        headers, body = self.headers, None
        if payload is not None:
            headers, body = {**headers, "Content-Type": "application/json"}, json.dumps(payload).encode()
        status, _, body = request(self.host, path, headers, timeout or self.timeout, method, body)
        if status in (401, 403):
            raise StatusError(f"{self.host.url}: the UI login was refused (run 'pulumi up' for {self.host.stack})")
        if status != 200:
            answer = body[:200].decode(errors="replace")
            raise StatusError(f"{self.host.url}{path.split('?')[0]}: HTTP {status}: {answer}")
        return body

    def answer(self, model: type[Answer], path: str) -> Answer:
        return parse_answer(model, self.get(path), f"{self.host.url}{path.split('?')[0]}")


def fetch_tasks(host: Host, timeout: float) -> str:
    """The server's task list (GET /api/v1/tasks, the UI API): each source's last snapshot attempt."""
    body = UiSession(host, timeout).get("/api/v1/tasks")
    parse_answer(TasksAnswer, body, f"{host.url}/api/v1/tasks")
    return body.decode(errors="replace")


def restore_sample(
    session: UiSession, source: str, into: Path, rng: random.Random, download_seconds: float | None = None
) -> str:
    """Restore one sampled file of the source's latest snapshot into a new file of `into`, and check its size
    against the snapshot's directory entry. Returns what was checked; raises StatusError naming what failed.
    The file's content may take `download_seconds` (default: the session's timeout), for a large sample.

    The names in the server's listings are shown, never used as a path here: the sample is written to a file
    this function names, so a listing cannot place it outside `into`. A listing holding a name that is not a
    plain file name (`..`, a `/`) is refused: no Kopia server lists one."""
    user, rest = source.split("@", 1)
    hostname, path = rest.split(":", 1)
    query = urllib.parse.urlencode({"userName": user, "host": hostname, "path": path})
    snapshots = session.answer(SnapshotsAnswer, f"/api/v1/snapshots?{query}").snapshots or []
    if not snapshots:
        raise StatusError(f"{source}: no snapshot to restore from")
    latest = max(snapshots, key=lambda s: _parse_time(s.start_time))
    object_id, relative = latest.root_id, []
    for _ in range(64):  # walk down at random until a file with content (directories are JSON objects in Kopia)
        where = "/" + "/".join(relative)
        entries = session.answer(DirectoryAnswer, _object_path(object_id)).entries or []
        for listed in entries:
            if listed.name in ("", ".", "..") or "/" in listed.name or "\x00" in listed.name:
                raise StatusError(
                    f"{source}: the server lists an entry named {listed.name!r} in {where} of snapshot "
                    f"{latest.id}: not a plain file name (a broken or hostile server?); nothing restored"
                )
        files = [e for e in entries if e.type == "f"]
        choices = [e for e in files if e.size] + [e for e in entries if e.type == "d"]
        if not choices and files:
            choices = files  # only empty files here
        if not choices:
            raise StatusError(f"{source}: the latest snapshot ({latest.id}) holds no file under {where}")
        entry = rng.choice(choices)
        if entry.type == "f":
            break
        relative.append(entry.name)
        object_id = entry.obj
    else:
        raise StatusError(f"{source}: no file found within 64 directory levels")
    relative.append(entry.name)
    shown = "/" + "/".join(relative)
    content = session.get(_object_path(entry.obj), timeout=download_seconds)
    try:
        with tempfile.NamedTemporaryFile(dir=into, prefix="sample-", delete=False) as sample:  # mode 0600
            sample.write(content)
    except OSError as error:  # `into` is gone once the run's deadline has passed
        raise StatusError(f"{source}: cannot write the restored sample: {error}") from None
    expected = entry.size or 0
    if len(content) != expected:
        raise StatusError(f"{source}: restored {len(content)} bytes of {shown}, the snapshot says {expected}")
    return f"{shown} ({human_size(expected)}) from {latest.start_time[:19]}Z: ok"


def _object_path(object_id: str) -> str:
    return f"/api/v1/objects/{urllib.parse.quote(object_id, safe='')}"


# ---------------------------------------------------------------- judging and showing


def run_awk(program: Path, variables: dict[str, object], answer: str) -> subprocess.CompletedProcess:
    """One of the health check's awk programs, on Kopia's answer pretty-printed as the server writes it."""
    awk = shutil.which("awk")
    if awk is None:
        raise StatusError("awk is not installed (it runs the health check's rules)")
    pretty = json.dumps(json.loads(answer), indent=2)  # the rules read one key per line
    assignments = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
    result = subprocess.run(
        [awk, *assignments, render.awk_program(program)],
        input=pretty, capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if result.returncode not in (0, 1) or result.stderr.strip():
        raise StatusError(f"the health rules did not run ({awk} exited {result.returncode}: {result.stderr.strip()})")
    return result


def verdicts(
    answer: str, host: Host, now: int, tasks: str | None = None, dumps: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Each source's problems by the health check's own rules: kopia-verdict.awk on the control API's
    answer, kopia-attempts.awk on the server's task list when given, and the dumps' problem lines
    (`read_dumps`); [] means backing up."""
    sources = " ".join(host.sources)
    variables = {"now": now, "started": "", "max_age": host.max_age_seconds,
                 "upload_allowance": host.upload_allowance_seconds, "skew": render.CLOCK_SKEW_SECONDS,
                 "expected": sources}  # fmt: skip
    result = run_awk(render.VERDICT_AWK, variables, answer)
    # The rules end with "healthy: ..." (exit 0) or problem lines (exit 1); anything else is not a verdict.
    healthy = result.returncode == 0 and result.stdout.startswith("healthy: ")
    if not healthy and (result.returncode != 1 or not result.stdout.strip()):
        raise StatusError(f"the health rules gave no verdict (awk exited {result.returncode})")
    lines = result.stdout.splitlines()
    if tasks is not None:
        lines += run_awk(render.ATTEMPTS_AWK, {"expected": sources}, tasks).stdout.splitlines()
    lines += dumps
    problems: dict[str, list[str]] = {source: [] for source in host.sources}
    for line in lines:
        source, sep, problem = line.partition(": ")
        if sep and source in problems:
            problems[source].append(problem)
    return problems


def rows_for(
    host: Host,
    answer: str,
    now: int,
    drill: Drill | None = None,
    tasks: str | None = None,
    dumps: Sequence[str] = (),
) -> list[SourceRow]:
    data = parse_answer(SourcesAnswer, answer, f"{host.url}/api/v1/control/sources")
    if tasks is not None:
        parse_answer(TasksAnswer, tasks, f"{host.url}/api/v1/tasks")
    by_source = {str(entry.source): entry for entry in data.sources or []}
    judged = verdicts(answer, host, now, tasks, dumps)
    # Every source's problems: a failed or overdue drill covers the host's sources together, and a stack that still
    # asks to create the repository is the host's (the health check fails on both too).
    host_problems = [
        *([drill.line] if drill and drill.passed is False else []),
        *([host.create_repository_reminder] if host.create_repository_reminder else []),
    ]
    rows = []
    for source in host.sources:
        entry = by_source.get(source) or SourceStatus()
        last = entry.last_snapshot or LastSnapshot()
        stats = last.stats or SnapshotStats()
        summary = (last.root_entry or RootEntry()).summ or DirectorySummary()
        first_error = next(iter(summary.errors or []), EntryError())
        started = last.start_time
        age = now - int(_parse_time(started).timestamp()) if started else None
        rows.append(
            SourceRow(
                host=host.stack,
                source=source,
                last_snapshot=_utc(started),
                age_seconds=age,
                size_bytes=stats.total_size,
                files=summary.files,
                errors=stats.error_count,
                last_error=first_error.error,
                next_snapshot=_utc(entry.next_snapshot_time),
                verdict="; ".join([*judged[source], *host_problems]) or "ok",
                drill=drill.line.removeprefix("restore drill ") if drill else "",
            )
        )
    return rows


def _utc(text: str | None) -> str | None:
    return _parse_time(text).strftime("%Y-%m-%dT%H:%M:%SZ") if text else None


def human_age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def table(rows: Sequence[SourceRow], unreachable: dict[str, str]) -> str:
    samples = any(r.sample for r in rows)
    header = ("HOST", "SOURCE", "LAST SNAPSHOT", "AGE", "SIZE", "FILES", "LAST ERROR", "NEXT", "DRILL")
    header += ("RESTORED NOW", "VERDICT") if samples else ("VERDICT",)
    lines = [header]
    for r in rows:
        error = r.last_error or (f"{r.errors} errors" if r.errors else "-")
        lines.append(
            (r.host, r.source, r.last_snapshot or "-", human_age(r.age_seconds), human_size(r.size_bytes),
             "-" if r.files is None else str(r.files), error, r.next_snapshot or "-", r.drill or "-",
             *((r.sample or "-",) if samples else ()), r.verdict)
        )  # fmt: skip
    for stack, reason in unreachable.items():
        lines.append((stack, *["-"] * (len(header) - 2), f"UNREACHABLE: {reason}"))
    lines = [tuple(terminal_safe(cell) for cell in line) for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in lines
    )


# ---------------------------------------------------------------- main


def default_stacks(workdir: Path) -> list[str]:
    """Every stack of this project in the current backend (`pulumi stack ls`)."""
    from pulumi import automation as auto

    workspace = auto.LocalWorkspace(work_dir=str(workdir))
    return sorted(s.name.rsplit("/", 1)[-1] for s in workspace.list_stacks())


_PROGRESS = threading.Lock()


def progress(message: str) -> None:
    """One whole line on stderr: the hosts are asked in parallel threads."""
    with _PROGRESS:
        sys.stderr.write(f"[status] {terminal_safe(message)}\n")
        sys.stderr.flush()


Result = TypeVar("Result")


def in_background(function: Callable[[str], Result], argument: str) -> concurrent.futures.Future[Result]:
    """`function(argument)` on a daemon thread: a host that never finishes answering must not keep the process
    from exiting at the run's deadline (a ThreadPoolExecutor's threads are joined at exit)."""
    future: concurrent.futures.Future[Result] = concurrent.futures.Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(function(argument))
        except BaseException as error:  # handed to the main thread, which reports it for this host
            future.set_exception(error)

    threading.Thread(target=run, name=f"status-{argument}", daemon=True).start()
    return future


def clock() -> int:
    """Now, in epoch seconds: the one instant every row of a run is judged against."""
    return int(time.time())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="append", help="a stack to ask (repeatable); default: every stack")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument(
        "--timeout", type=float, default=15, help="seconds each request to a host may take in all (default 15)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        help="seconds the whole run may take; then the hosts still being asked are reported as timed out and the "
        f"command exits (default: {PULUMI_READ_SECONDS}s for reading Pulumi, plus --timeout)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT, help="the Pulumi project dir (default: this repo)")
    parser.add_argument(
        "--drill",
        action="store_true",
        help="also restore one sampled file of each source's latest snapshot to a temp dir here, and check it",
    )
    args = parser.parse_args(argv)

    stacks = args.stack or default_stacks(args.workdir)
    if not stacks:
        progress("no stacks found: run 'pulumi stack ls' in the project dir, or pass --stack")
        return EXIT_UNREACHABLE
    now = clock()
    rows: list[SourceRow] = []
    unreachable: dict[str, str] = {}
    unknown_drills: dict[str, str] = {}  # hosts whose rows are shown, but whose drill result could not be read

    drill_dir = Path(tempfile.mkdtemp(prefix="homelab-drill-")) if args.drill else None  # mode 0700

    doing: dict[str, str] = {}  # what each host's thread is at: named when the run's deadline passes

    def ask(stack: str) -> list[SourceRow]:
        started = time.monotonic()
        doing[stack] = "reading its stack from Pulumi"
        host = host_from_stack(stack, args.workdir)
        progress(f"{stack}: asking {host.url}")
        doing[stack] = f"asking {host.url}"
        answer = fetch_sources(host, args.timeout)
        tasks = fetch_tasks(host, args.timeout)
        doing[stack] = "reading its restore drill over SSH"
        drill = read_drill(host, args.timeout)
        if drill.passed is None:
            unknown_drills[stack] = f"restore drill: {drill.line}"
        doing[stack] = "reading its database dumps over SSH"
        dumps = read_dumps(host, args.timeout)
        progress(f"{stack}: answered in {time.monotonic() - started:.1f}s")
        rows = rows_for(host, answer, now, drill, tasks, dumps)
        if drill_dir is not None:
            session = UiSession(host, args.timeout)
            for row in rows:
                progress(f"{stack}: restoring a sample of {row.source}")
                doing[stack] = f"restoring a sample of {row.source}"
                try:
                    # A large sample may take what is left of the run, not one request's timeout.
                    left = max(args.timeout, deadline - time.monotonic())
                    row.sample = restore_sample(session, row.source, drill_dir, random.SystemRandom(), left)
                except StatusError as error:
                    row.sample = f"FAILED: {error}"
                    row.verdict = row.sample if row.verdict == "ok" else f"{row.verdict}; {row.sample}"
        return rows

    progress(f"asking {len(stacks)} host(s): {', '.join(stacks)} (timeout {args.timeout:.0f}s each)")
    # One deadline for the whole run, all hosts asked at once: by default reading Pulumi's state, then the
    # server's own timeout. A cron job must end even when a host never finishes answering.
    budget = args.deadline if args.deadline is not None else args.timeout + PULUMI_READ_SECONDS
    deadline = time.monotonic() + budget
    futures = {stack: in_background(ask, stack) for stack in stacks}
    for stack, future in futures.items():
        try:
            rows.extend(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except StatusError as error:
            unreachable[stack] = str(error)
        except (TimeoutError, concurrent.futures.TimeoutError):
            unreachable[stack] = f"timed out: not done within the run's {budget:.0f}s, while {doing.get(stack)}"
        except Exception as error:  # one host's surprise must not hide the others' rows
            unreachable[stack] = f"{type(error).__name__}: {error}"
        if stack in unreachable:
            progress(f"{stack}: {unreachable[stack]}")
    if drill_dir is not None:
        shutil.rmtree(drill_dir, ignore_errors=True)  # restored files may be private: checked, then removed
    for stack, reason in unknown_drills.items():
        unreachable.setdefault(stack, reason)
    if args.json:
        print(json.dumps({"hosts": stacks, "sources": [asdict(r) for r in rows], "unreachable": unreachable}, indent=2))
    else:
        print(table(rows, unreachable))
    if unreachable:
        return EXIT_UNREACHABLE
    return EXIT_FAILING if any(r.verdict != "ok" for r in rows) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
