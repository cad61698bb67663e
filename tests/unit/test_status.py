"""`scripts/status`: verdicts by the health check's own rules, the table, exit codes, and a pinned TLS server.

The server side is a local HTTPS server with a real self-signed certificate standing in for
Kopia's control API (answers in Kopia's layout, tests/kopia_answers.py); the e2e suite runs
the command against real Kopia servers on the engine tier.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import http.server
import itertools
import json
import random
import re
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scripts import status
from tests.kopia_answers import NOW, answer, source_status

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("shelken@vps:/backup/data",)
PASSWORD = "control-pw"


def host(url: str, fingerprint: str | None, password: str = PASSWORD) -> status.Host:
    return status.Host(
        "vps",
        url,
        fingerprint,
        SOURCES,
        max_age_seconds=3600,
        upload_allowance_seconds=86400,
        control_password=password,
    )


# ---------------------------------------------------------------- verdicts and rows


@pytest.fixture(autouse=True)
def judged_at_now(monkeypatch):
    """The answers are dated from NOW (taken at import): every run of `status.main` is judged at that same
    instant, however long the suite has been running."""
    monkeypatch.setattr(status, "clock", lambda: int(NOW.timestamp()))


def test_rows_carry_what_the_table_shows_and_the_verdict_of_the_shared_rules():
    body = answer(source_status(SOURCES[0], errors=2))
    (row,) = status.rows_for(host("https://x:1", None), body, int(NOW.timestamp()))
    assert row.source == SOURCES[0]
    assert row.age_seconds == 300
    assert row.size_bytes == 10 and row.files == 1 and row.errors == 2
    assert row.last_snapshot == (NOW - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row.next_snapshot == (NOW + datetime.timedelta(minutes=55)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row.verdict == "last snapshot had 2 errors"


def test_a_source_never_snapshotted_is_not_ok_from_the_operators_side():
    body = answer(source_status(SOURCES[0], no_snapshot=True))
    (row,) = status.rows_for(host("https://x:1", None), body, int(NOW.timestamp()))
    assert row.verdict == "no snapshot yet"
    assert row.last_snapshot is None and row.age_seconds is None


def test_a_snapshot_dated_in_the_future_is_reported_by_the_shared_rule():
    ahead = source_status(SOURCES[0], last=NOW + datetime.timedelta(hours=2))
    (row,) = status.rows_for(host("https://x:1", None), answer(ahead), int(NOW.timestamp()))
    assert row.age_seconds == -7200
    assert row.verdict == (
        f"last snapshot is dated 7200s in the future (more than {status.render.CLOCK_SKEW_SECONDS}s ahead): "
        "check the host clock"
    )


def test_a_source_missing_from_the_server_is_reported():
    (row,) = status.rows_for(host("https://x:1", None), answer(), int(NOW.timestamp()))
    assert row.verdict == "not scheduled by the server"


def test_table_has_one_line_per_source_and_names_unreachable_hosts():
    (row,) = status.rows_for(host("https://x:1", None), answer(source_status(SOURCES[0])), int(NOW.timestamp()))
    text = status.table([row], {"sakamoto": "https://10.0.0.3:51515: timed out"})
    lines = text.splitlines()
    assert lines[0].split() == [
        "HOST",
        "SOURCE",
        "LAST",
        "SNAPSHOT",
        "AGE",
        "SIZE",
        "FILES",
        "LAST",
        "ERROR",
        "NEXT",
        "DRILL",
        "VERDICT",
    ]
    assert lines[1].startswith("vps  ") and SOURCES[0] in lines[1] and lines[1].endswith("ok")
    assert "5m00s" in lines[1] and "10 B" in lines[1]
    assert lines[2].startswith("sakamoto") and "UNREACHABLE: https://10.0.0.3:51515: timed out" in lines[2]


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (42, "42s"), (300, "5m00s"), (7260, "2h01m"), (90000, "1d01h")]
)
def test_human_age(seconds, text):
    assert status.human_age(seconds) == text


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("answers", "failing", "expected"),
    [
        ({"vps": answer(source_status(SOURCES[0]))}, {}, status.EXIT_OK),
        ({"vps": answer(source_status(SOURCES[0], status="PAUSED"))}, {}, status.EXIT_FAILING),
        ({"vps": answer(source_status(SOURCES[0]))}, {"sakamoto": "refused"}, status.EXIT_UNREACHABLE),
    ],
)
def test_exit_codes_for_cron_and_monitors(monkeypatch, capsys, answers, failing, expected):
    def fake_host(stack: str, workdir: Path) -> status.Host:
        if stack in failing:
            raise status.StatusError(failing[stack])
        return host(f"https://{stack}:51515", "ab")

    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: fake_host(stack, workdir))
    monkeypatch.setattr(status, "fetch_sources", lambda h, timeout: answers[h.stack])
    monkeypatch.setattr(status, "read_drill", lambda h, timeout: status.Drill(True, "restore drill passed at x"))
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: '{"tasks": []}')
    stacks = ["vps", *failing]
    code = status.main([arg for s in stacks for arg in ("--stack", s)] + ["--json"])
    assert code == expected
    report = json.loads(capsys.readouterr().out)
    assert [r["host"] for r in report["sources"]] == ["vps"], "one failing host does not hide the others"
    assert report["unreachable"] == failing


# ---------------------------------------------------------------- the pinned TLS connection


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[str, str, list[dict]]]:
    """An HTTPS server with a self-signed certificate: (url, its SHA-256 fingerprint, requests seen)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    seen: list[dict] = []
    body = answer(source_status(SOURCES[0])).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            expected = "Basic " + base64.b64encode(f"server-control:{PASSWORD}".encode()).decode()
            ok = self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    yield f"https://127.0.0.1:{server.server_address[1]}", fingerprint, seen
    server.shutdown()


def test_fetch_asks_the_control_api_as_server_control_over_the_pinned_certificate(tls_server):
    url, fingerprint, seen = tls_server
    body = status.fetch_sources(host(url, fingerprint), timeout=5)
    assert json.loads(body)["sources"][0]["status"] == "IDLE"
    assert seen[-1]["path"] == "/api/v1/control/sources"


def test_a_different_certificate_gets_no_credentials(tls_server):
    url, _, seen = tls_server
    before = len(seen)
    with pytest.raises(status.StatusError, match="not sending credentials"):
        status.fetch_sources(host(url, "00" * 32), timeout=5)
    assert len(seen) == before, "no request was made"


def test_a_refused_password_says_what_to_do(tls_server):
    url, fingerprint, _ = tls_server
    with pytest.raises(status.StatusError, match=r"server-control password was refused.*pulumi up"):
        status.fetch_sources(host(url, fingerprint, password="wrong"), timeout=5)


def test_an_unreachable_host_is_a_status_error_naming_it():
    with pytest.raises(status.StatusError, match=r"127\.0\.0\.1:9.*reachable"):
        status.fetch_sources(host("https://127.0.0.1:9", "ab"), timeout=2)


def test_rules_that_do_not_run_are_an_error_not_an_ok(monkeypatch, tmp_path):
    """A broken awk prints no problem lines: that must not read as "every source ok"."""
    fake = tmp_path / "awk"
    fake.write_text("#!/bin/sh\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(status.StatusError, match="the health rules did not run"):
        status.rows_for(host("https://x:1", None), answer(source_status(SOURCES[0], errors=5)), int(NOW.timestamp()))


def test_an_unexpected_error_for_one_host_is_reported_for_that_host_only(monkeypatch, capsys):
    def fake_host(stack: str, workdir: Path) -> status.Host:
        if stack == "sakamoto":
            raise ValueError("Invalid isoformat string")
        return host(f"https://{stack}:51515", "ab")

    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: fake_host(stack, workdir))
    monkeypatch.setattr(status, "fetch_sources", lambda h, timeout: answer(source_status(SOURCES[0])))
    monkeypatch.setattr(status, "read_drill", lambda h, timeout: status.Drill(True, "restore drill passed at x"))
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: '{"tasks": []}')
    assert status.main(["--stack", "vps", "--stack", "sakamoto", "--json"]) == status.EXIT_UNREACHABLE
    report = json.loads(capsys.readouterr().out)
    assert [r["host"] for r in report["sources"]] == ["vps"]
    assert report["unreachable"] == {"sakamoto": "ValueError: Invalid isoformat string"}


# ---------------------------------------------------------------- kopia.createRepository left set


@dataclasses.dataclass
class _Value:
    value: object
    secret: bool = False


class _FakeStack:
    """What `pulumi.automation.select_stack` answers for the e2e-sakamoto stack as deployed."""

    def __init__(self, config: dict[str, object], secrets: dict[str, str]) -> None:
        self.config = {k: _Value(v) for k, v in config.items()} | {k: _Value(v, True) for k, v in secrets.items()}

    def outputs(self) -> dict[str, _Value]:
        return {"kopia_server_url": _Value("https://127.0.0.3:51515"), "backup_sources": _Value(["x"])}

    def get_all_config(self) -> dict[str, _Value]:
        return self.config


@pytest.mark.parametrize("create", [False, True])
def test_a_stack_that_still_sets_create_repository_fails_its_sources_with_the_health_checks_line(monkeypatch, create):
    from pulumi import automation

    from components import render
    from testbed.mocks import stack_config

    config = stack_config("e2e-sakamoto")
    config["homelab-backup:kopia"] = {**config["homelab-backup:kopia"], "createRepository": create}
    secrets = {f"homelab-backup:{k}": "x" for k in ("serverControlPassword", "serverUsername", "serverPassword")}
    monkeypatch.setattr(automation, "select_stack", lambda stack_name, work_dir: _FakeStack(config, secrets))
    sakamoto = status.host_from_stack("e2e-sakamoto", Path("."))
    reminder = render.create_repository_reminder("e2e-sakamoto")
    assert sakamoto.create_repository_reminder == (reminder if create else "")
    sakamoto = dataclasses.replace(sakamoto, sources=SOURCES, max_age_seconds=3600)  # the answer's clock
    (row,) = status.rows_for(sakamoto, answer(source_status(SOURCES[0])), int(NOW.timestamp()))
    assert row.verdict == (reminder if create else "ok")


# ---------------------------------------------------------------- the restore drill


def drill_host(state_dir: Path, ssh: tuple[str, ...] = ()) -> status.Host:
    """No ssh prefix: the drill rule runs under the local `sh`, against a local state dir."""
    return dataclasses.replace(
        host("https://x:1", None), ssh=ssh, state_dir=str(state_dir), max_drill_age_seconds=2 * 86400 + 600
    )


@pytest.mark.parametrize(
    ("line", "passed", "shown"),
    [
        ("ok {now} 2026-11-27T10:00:00Z", True, "restore drill passed at 2026-11-27T10:00:00Z"),
        ("failed {now} 2026-11-27T10:00:00Z BLOB not found", False, "restore drill failed at 2026-11-27T10:00:00Z:"),
        ("ok {old} 2026-11-20T10:00:00Z", False, "restore drill overdue"),
    ],
)
def test_the_drill_is_judged_by_the_health_checks_own_rule(tmp_path, line, passed, shown):
    now = int(time.time())
    (tmp_path / "restore-drill").write_text(line.format(now=now, old=now - 7 * 86400) + "\n")
    drill = status.read_drill(drill_host(tmp_path), timeout=10)
    assert drill.passed is passed and drill.line.startswith(shown), drill
    (row,) = status.rows_for(host("https://x:1", None), answer(source_status(SOURCES[0])), now, drill)
    assert (row.verdict == "ok") is passed, row.verdict
    assert row.drill == drill.line.removeprefix("restore drill ")


def test_a_drill_that_cannot_be_read_is_unknown_not_passed(tmp_path):
    drill = status.read_drill(drill_host(tmp_path, ssh=("sh", "-c", "echo 'ssh: connect refused' >&2; exit 255")), 10)
    assert drill.passed is None and "exit 255" in drill.line and "connect refused" in drill.line


def test_an_unknown_drill_keeps_the_rows_and_exits_unreachable(monkeypatch, capsys):
    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: host("https://vps:1", "ab"))
    monkeypatch.setattr(status, "fetch_sources", lambda h, timeout: answer(source_status(SOURCES[0])))
    monkeypatch.setattr(status, "read_drill", lambda h, timeout: status.Drill(None, "no answer over SSH within 15s"))
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: '{"tasks": []}')
    assert status.main(["--stack", "vps", "--json"]) == status.EXIT_UNREACHABLE
    report = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in report["sources"]] == list(SOURCES)
    assert report["unreachable"] == {"vps": "restore drill: no answer over SSH within 15s"}


# ---------------------------------------------------------------- --drill: a file restored through the UI API


@pytest.fixture
def kopia_ui() -> Iterator[tuple[str, dict[str, bytes]]]:
    """Kopia's UI API as 0.22.3 serves it (plain HTTP here): the UI page with the session's CSRF token,
    /api/v1/snapshots and /api/v1/objects/<id> (directories are JSON). `objects` may be changed by a test."""
    file_bytes = b"restored bytes\n" * 100
    objects = {
        # An empty file beside the directory: the sample is a file with content, found by walking down.
        "kroot": json.dumps(
            {
                "entries": [
                    {"name": "empty.txt", "type": "f", "obj": "Iempty"},
                    {"name": "dir0", "type": "d", "obj": "kdir"},
                ]
            }
        ).encode(),
        "kdir": json.dumps(
            {"entries": [{"name": "file1.txt", "type": "f", "size": len(file_bytes), "obj": "Ifile"}]}
        ).encode(),
        "Ifile": file_bytes,
    }
    snapshots = {
        "snapshots": [
            {"id": "old", "startTime": "2026-11-26T10:00:00.1Z", "rootID": "kgone"},
            {"id": "new", "startTime": "2026-11-27T10:00:00.1Z", "rootID": "kroot"},
        ]
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            login_ok = self.headers.get("Authorization") == status.basic("ui-user", "ui-pw")
            cookie = self.headers.get("Cookie", "")
            body, code = b"", 200
            if not login_ok:
                code = 401
            elif self.path == "/":
                body = b'<html><head><meta name="kopia-csrf-token" content="t0k" /></head></html>'
            elif self.headers.get("X-Kopia-Csrf-Token") != "t0k" or "Kopia-Session-Cookie=" not in cookie:
                code = 401
            elif self.path.startswith("/api/v1/snapshots?"):
                query = urllib.parse.parse_qs(self.path.split("?", 1)[1])
                ok = query == {"userName": ["shelken"], "host": ["vps"], "path": ["/backup/data"]}
                body = json.dumps(snapshots if ok else {"snapshots": []}).encode()
            elif self.path.startswith("/api/v1/objects/") and self.path.rsplit("/", 1)[1] in objects:
                body = objects[self.path.rsplit("/", 1)[1]]
            else:
                code = 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", objects
    server.shutdown()


def test_drill_restores_a_sampled_file_of_the_latest_snapshot_and_checks_its_size(kopia_ui, tmp_path):
    url, objects = kopia_ui
    ui_host = dataclasses.replace(host(url, None), ui_login=("ui-user", "ui-pw"))
    session = status.UiSession(ui_host, timeout=5)
    checked = status.restore_sample(session, SOURCES[0], tmp_path, random.Random(1))
    assert checked == "/dir0/file1.txt (1.5 KiB) from 2026-11-27T10:00:00Z: ok"
    (written,) = tmp_path.iterdir()
    assert written.read_bytes() == objects["Ifile"] and written.stat().st_mode & 0o077 == 0
    objects["Ifile"] = objects["Ifile"][:-10]  # a short read: the content does not match the snapshot
    short = re.escape("restored 1490 bytes of /dir0/file1.txt, the snapshot says 1500")
    with pytest.raises(status.StatusError, match=short):
        status.restore_sample(session, SOURCES[0], tmp_path, random.Random(1))


def test_drill_with_a_wrong_ui_login_says_what_to_do(kopia_ui):
    url, _ = kopia_ui
    with pytest.raises(status.StatusError, match="the UI login was refused"):
        status.UiSession(dataclasses.replace(host(url, None), ui_login=("ui-user", "nope")), timeout=5)


def test_a_failed_last_attempt_in_the_task_list_fails_the_source_by_the_health_checks_rule():
    listed = [
        {"id": "2", "kind": "Snapshot", "description": f"{SOURCES[0]} at 2026-11-27T15:00:00Z", "status": "FAILED",
         "errorMessage": "snapshot task: BLOB not found"},
        {"id": "1", "kind": "Snapshot", "description": f"{SOURCES[0]} at 2026-11-27T14:00:00Z", "status": "SUCCESS"},
    ]  # fmt: skip
    body = answer(source_status(SOURCES[0]))
    answer_of = {"tasks": listed}  # serverapi.TaskListResponse
    (row,) = status.rows_for(host("https://x:1", None), body, int(NOW.timestamp()), tasks=json.dumps(answer_of))
    assert row.verdict == "last snapshot attempt failed at 2026-11-27T15:00:00Z: snapshot task: BLOB not found"
    answer_of = {"tasks": listed[1:]}
    (row,) = status.rows_for(host("https://x:1", None), body, int(NOW.timestamp()), tasks=json.dumps(answer_of))
    assert row.verdict == "ok"


@pytest.mark.parametrize(
    "name",
    ["../../../../escaped.txt", "..", "/ABSOLUTE/escaped.txt", "dir0/../../escaped.txt", "a\x00b", ""],
)
def test_drill_refuses_a_listed_name_that_is_not_a_plain_file_name_and_writes_nothing(kopia_ui, tmp_path, name):
    """The names come from the server: a hostile one must not choose where the sample lands."""
    url, objects = kopia_ui
    outside = tmp_path / "outside"
    into = tmp_path / "drill" / "private"
    into.mkdir(parents=True)
    name = name.replace("/ABSOLUTE", str(outside))
    objects["kdir"] = json.dumps({"entries": [{"name": name, "type": "f", "size": 1500, "obj": "Ifile"}]}).encode()
    session = status.UiSession(dataclasses.replace(host(url, None), ui_login=("ui-user", "ui-pw")), timeout=5)
    with pytest.raises(status.StatusError, match=r"lists an entry named .* in /dir0 .*not a plain file name"):
        status.restore_sample(session, SOURCES[0], into, random.Random(1))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written
    objects["kroot"] = json.dumps({"entries": [{"name": "..", "type": "d", "obj": "kdir"}]}).encode()
    with pytest.raises(status.StatusError, match=r"lists an entry named '\.\.' in / "):
        status.restore_sample(session, SOURCES[0], into, random.Random(1))


# ---------------------------------------------------------------- broken answers, control bytes, the deadline


def test_an_html_page_with_http_200_is_reported_as_such(monkeypatch):
    page = b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>"
    monkeypatch.setattr(status, "request", lambda *args, **kwargs: (200, {}, page))
    with pytest.raises(status.StatusError) as raised:
        status.fetch_sources(host("https://vps:1", "ab"), timeout=5)
    assert str(raised.value) == (
        "https://vps:1/api/v1/control/sources: not an answer Kopia gives: an HTML page: "
        "'<!DOCTYPE html><html><body>Welcome to nginx!</body></html>'"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("lastSnapshot", "startTime", 1764000), "lastSnapshot.startTime: Input should be a valid string, got 1764000"),
        (("lastSnapshot", "startTime", "yesterday"), "lastSnapshot.startTime: Value error, not an RFC 3339 time"),
        ((None, "nextSnapshotTime", 5), "nextSnapshotTime: Input should be a valid string, got 5"),
        (("lastSnapshot", "stats", "many"), 'lastSnapshot.stats: Input should be an object, got "many"'),
    ],
)  # fmt: skip
def test_a_wrong_field_in_the_answer_is_named_not_a_python_exception(monkeypatch, capsys, change, problem):
    problem = f"sources.0.{problem}"
    where, key, value = change
    entry = source_status(SOURCES[0])
    (entry[where] if where else entry)[key] = value
    broken = json.dumps({"sources": [entry]}, indent=2)
    with pytest.raises(status.StatusError, match=re.escape(problem)):
        status.rows_for(host("https://x:1", None), broken, int(NOW.timestamp()))
    # and through main, for that host only
    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: host("https://vps:1", "ab"))
    monkeypatch.setattr(status, "request", lambda *args, **kwargs: (200, {}, broken.encode()))
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: '{"tasks": []}')
    monkeypatch.setattr(status, "read_drill", lambda h, timeout: status.Drill(True, "restore drill passed at x"))
    assert status.main(["--stack", "vps", "--json"]) == status.EXIT_UNREACHABLE
    (reason,) = json.loads(capsys.readouterr().out)["unreachable"].values()
    assert problem in reason and "Error:" not in reason.replace("Value error", ""), reason


def test_text_from_kopia_reaches_the_terminal_with_its_control_bytes_escaped(monkeypatch, capsys):
    entry = source_status(SOURCES[0])
    entry["lastSnapshot"]["rootEntry"]["summ"]["errors"] = [
        {"path": "x", "error": "open \x1b[2J\x1b]0;pwned\x07: denied"}
    ]
    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: host("https://vps:1", "ab"))
    monkeypatch.setattr(status, "fetch_sources", lambda h, timeout: answer(entry))
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: '{"tasks": []}')
    monkeypatch.setattr(
        status, "read_drill", lambda h, timeout: status.Drill(False, "restore drill failed at x: \x9b31m\u202egnp.exe")
    )
    assert status.main(["--stack", "vps"]) == status.EXIT_FAILING
    out, err = capsys.readouterr()
    for text in (out, err):
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", text), repr(text)
    assert "open \\x1b[2J\\x1b]0;pwned\\x07: denied" in out
    assert "\\x9b31m\\u202egnp.exe" in out


@pytest.fixture
def byte_a_second() -> Iterator[str]:
    """A server that answers one byte of a valid HTTP status line every half second, for ever."""
    stop = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000):
                if stop.wait(0.5):
                    return
                try:
                    self.request.sendall(bytes([byte]))
                except OSError:
                    return

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()
    server.server_close()


def test_a_server_answering_a_byte_at_a_time_is_cut_at_the_timeout(byte_a_second):
    raised: list[BaseException] = []

    def ask() -> None:
        try:
            status.fetch_sources(host(byte_a_second, None), timeout=2)
        except BaseException as error:
            raised.append(error)

    asking = threading.Thread(target=ask, daemon=True)  # a hang must fail this test, not stop the suite
    asking.start()
    asking.join(timeout=10)
    assert not asking.is_alive(), "still reading a byte at a time after 10s"
    (error,) = raised
    assert isinstance(error, status.StatusError)
    assert str(error) == f"{byte_a_second}/api/v1/control/sources: no whole answer within 2s (too slow)"


@pytest.mark.parametrize(
    ("hang", "reason"),
    [
        ("slow-server", r"/api/v1/control/sources: no whole answer within 1s \(too slow\)"),
        ("pulumi", r"timed out: not done within the run's 3s, while reading its stack from Pulumi"),
    ],
)
def test_the_command_exits_by_its_deadline_naming_the_host_that_timed_out(byte_a_second, hang, reason):
    """Run as cron runs it: a process of its own, which must END (a thread still reading must not keep it)."""
    program = f"""
import sys, threading
from scripts import status
def host_from_stack(stack, workdir):
    if stack == "vps" and {hang!r} == "pulumi":
        threading.Event().wait()  # never returns
    return status.Host(stack, {byte_a_second!r} if stack == "vps" else "http://127.0.0.1:9", None, (),
                       max_age_seconds=3600, upload_allowance_seconds=86400, control_password="pw")
status.host_from_stack = host_from_stack
sys.exit(status.main(["--stack", "vps", "--stack", "sakamoto", "--timeout", "1", "--deadline", "3", "--json"]))
"""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert time.monotonic() - started < 20, "the process ended by its deadline"
    assert result.returncode == status.EXIT_UNREACHABLE, result.stderr
    unreachable = json.loads(result.stdout)["unreachable"]
    assert re.search(reason, unreachable["vps"]), unreachable
    assert "reachable" in unreachable["sakamoto"], "the other host is reported for itself"
    assert re.search(f"vps: .*{reason}", result.stderr), result.stderr


# ---------------------------------------------------------------- main: exit codes of whole runs


def fake_hosts(monkeypatch, hosts: dict[str, status.Host], answers: dict[str, str], tasks: str = '{"tasks": []}'):
    monkeypatch.setattr(status, "host_from_stack", lambda stack, workdir: hosts[stack])
    monkeypatch.setattr(status, "fetch_sources", lambda h, timeout: answers[h.stack])
    monkeypatch.setattr(status, "fetch_tasks", lambda h, timeout: tasks)
    monkeypatch.setattr(status, "read_drill", lambda h, timeout: status.Drill(True, "restore drill passed at x"))


def test_some_sources_failing_and_others_passing_exits_failing_with_each_verdict(monkeypatch, capsys):
    two = ("shelken@vps:/backup/data", "shelken@vps:/backup/db")
    vps = dataclasses.replace(host("https://vps:1", "ab"), sources=two)
    stale = source_status(two[1], last=NOW - datetime.timedelta(hours=3))
    fake_hosts(monkeypatch, {"vps": vps}, {"vps": answer(source_status(two[0]), stale)})
    assert status.main(["--stack", "vps", "--json"]) == status.EXIT_FAILING
    verdicts = {r["source"]: r["verdict"] for r in json.loads(capsys.readouterr().out)["sources"]}
    assert verdicts[two[0]] == "ok"
    assert verdicts[two[1]].startswith("last snapshot 10")


def test_the_task_list_reaches_the_verdict_and_the_exit_code(monkeypatch, capsys):
    failed = {"tasks": [{"id": "2", "kind": "Snapshot", "description": f"{SOURCES[0]} at 2026-11-27T15:00:00Z",
                         "status": "FAILED", "errorMessage": "BLOB not found"}]}  # fmt: skip
    vps = host("https://vps:1", "ab")
    fake_hosts(monkeypatch, {"vps": vps}, {"vps": answer(source_status(SOURCES[0]))}, tasks=json.dumps(failed))
    assert status.main(["--stack", "vps", "--json"]) == status.EXIT_FAILING
    (row,) = json.loads(capsys.readouterr().out)["sources"]
    assert row["verdict"] == "last snapshot attempt failed at 2026-11-27T15:00:00Z: BLOB not found"


@pytest.mark.parametrize("short_read", [False, True])
def test_a_drill_run_restores_through_main_and_a_failed_restore_fails_the_source(
    kopia_ui, monkeypatch, capsys, short_read
):
    url, objects = kopia_ui
    if short_read:
        objects["Ifile"] = objects["Ifile"][:-10]
    vps = dataclasses.replace(host(url, None), ui_login=("ui-user", "ui-pw"))
    fake_hosts(monkeypatch, {"vps": vps}, {"vps": answer(source_status(SOURCES[0]))})
    code = status.main(["--stack", "vps", "--json", "--drill"])
    (row,) = json.loads(capsys.readouterr().out)["sources"]
    if short_read:
        assert code == status.EXIT_FAILING
        expected = f"FAILED: {SOURCES[0]}: restored 1490 bytes of /dir0/file1.txt, the snapshot says 1500"
        assert row["sample"] == row["verdict"] == expected
    else:
        assert code == status.EXIT_OK
        assert row["sample"] == "/dir0/file1.txt (1.5 KiB) from 2026-11-27T10:00:00Z: ok" and row["verdict"] == "ok"
