"""The health check's verdicts, run for real with `sh` against a fake `curl` answering like Kopia's control API.

The fake prints a `/api/v1/control/sources` answer in Kopia's own layout (pretty-printed
JSON, `serverapi.SourcesResponse`), records its arguments and the header it read on stdin.
Each awk this machine has (the Debian image's mawk, busybox's) runs the same cases.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components import render
from tests.kopia_answers import NOW, answer, source_status

SOURCES = ("shelken@sakamoto:/backup/minio", "shelken@sakamoto:/backup/compose")
MAX_AGE = 2 * 3600 + 600
MAX_DRILL_AGE = 2 * 86400 + 600
HEARTBEAT = 'https://hc.example/ping/abc-token?x="q"\\'
SECRETS = render.kopia_secret_variables("repo-pw", "ui-user", "ui-pw", "control-pw'\"$x", HEARTBEAT)

FAKE_CURL = r"""#!/bin/sh
case " $* " in *" -K - "*)  # the heartbeat ping: its URL comes as a config line on stdin
    printf '%s\n' "$@" > "$FAKE_STATE/ping-argv"; cat >> "$FAKE_STATE/pings"
    if [ -n "${FAKE_PING_FAILS:-}" ]; then echo "curl: (22) The requested URL returned error: 503" >&2; exit 22; fi
    exit 0 ;;
esac
if [ -n "${FAKE_CURL_FAILS:-}" ]; then echo "curl: (7) Failed to connect to 127.0.0.1 port 51515" >&2; exit 7; fi
for last; do :; done  # the URL comes last
case "$last" in
*/api/v1/control/sources)  # the control API: the server-control login on stdin
    printf '%s\n' "$@" > "$FAKE_STATE/argv"
    cat > "$FAKE_STATE/stdin"
    cat "$FAKE_STATE/answer.json" ;;
*/api/v1/tasks)  # the UI API: the UI login, the session cookie and its CSRF token on stdin
    cat > "$FAKE_STATE/ui-stdin"
    grep -qx 'X-Kopia-Csrf-Token: 70ce' "$FAKE_STATE/ui-stdin" || { echo "curl: (22) error: 401" >&2; exit 22; }
    cat "$FAKE_STATE/tasks.json" 2>/dev/null || echo '{"tasks": []}' ;;
*/)
    cat > /dev/null
    echo '<html><head><meta name="kopia-csrf-token" content="70ce" /></head></html>' ;;
*) echo "fake curl: unexpected $last" >&2; exit 99 ;;
esac
"""


FAKE_DATE = f"""#!/bin/sh
if [ "$*" = "+%s" ]; then echo {int(NOW.timestamp())}; else exec {shutil.which("date")} "$@"; fi
"""


def awk_variants() -> list[str]:
    found = []
    for name in ("mawk", "gawk", "busybox"):
        if shutil.which(name):
            found.append(name)
    return found


@pytest.fixture(params=awk_variants())
def env_dirs(request, tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("deploy", "state", "bin", "fake")}
    for d in dirs.values():
        d.mkdir()
    (dirs["bin"] / "curl").write_text(FAKE_CURL)
    (dirs["bin"] / "curl").chmod(0o755)
    # The check's clock is the tests' NOW, however long after import the test runs (CI runs the e2e suite first).
    (dirs["bin"] / "date").write_text(FAKE_DATE)
    (dirs["bin"] / "date").chmod(0o755)
    awk = dirs["bin"] / "awk"
    if request.param == "busybox":
        awk.write_text(f'#!/bin/sh\nexec {shutil.which("busybox")} awk "$@"\n')
        awk.chmod(0o755)
    else:
        awk.symlink_to(shutil.which(request.param))
    (dirs["deploy"] / render.SECRETS_ENV).write_text(render.render_secrets_env(SECRETS))
    (dirs["deploy"] / render.TLS_CERT).write_text("cert\n")
    seen = dirs["state"] / "repository-seen"
    seen.write_text("x\n")
    started = (NOW - datetime.timedelta(days=1)).timestamp()
    os.utime(seen, (started, started))
    return dirs


def params_for(dirs: dict[str, Path], *, tls: bool = True, create: bool = False) -> render.StartScriptParams:
    return render.StartScriptParams(
        hostname="sakamoto",
        username="shelken",
        maintenance_owner="shelken@sakamoto",
        port=51515,
        tls=tls,
        refresh_interval="5m",
        sources=SOURCES,
        deploy_dir=str(dirs["deploy"]),
        state_dir=str(dirs["state"]),
        max_snapshot_age_seconds=MAX_AGE,
        max_drill_age_seconds=MAX_DRILL_AGE,
        create_repository=create,
        stack="e2e-sakamoto",
    )


def check(
    dirs: dict[str, Path], body: str, *, tls: bool = True, create: bool = False, **env: str
) -> subprocess.CompletedProcess:
    (dirs["fake"] / "answer.json").write_text(body)
    script = render.render_healthcheck(params_for(dirs, tls=tls, create=create))
    environment = {"PATH": f"{dirs['bin']}:{os.environ['PATH']}", "FAKE_STATE": str(dirs["fake"]), **env}
    # CMD-SHELL: Docker runs the check as `/bin/sh -c <script>`.
    return subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)


def test_every_source_fresh_and_scheduled_is_healthy(env_dirs):
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "healthy: 2 sources backing up",
        "no restore drill yet (the first one runs soon after the server starts)",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"last": NOW - datetime.timedelta(seconds=MAX_AGE + 60)}, "last snapshot"),
        ({"errors": 3}, "last snapshot had 3 errors"),
        ({"incomplete": True}, "last snapshot is incomplete"),
        ({"no_next": True}, "no next snapshot scheduled"),
    ],
)
def test_a_source_that_is_not_backing_up_makes_the_host_unhealthy(env_dirs, changes, expected):
    bad = source_status(SOURCES[0], **changes)
    result = check(env_dirs, answer(bad, source_status(SOURCES[1])))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{SOURCES[0]}: ") and expected in line


def test_stale_is_measured_against_the_bound_not_the_interval(env_dirs):
    just_inside = source_status(SOURCES[0], last=NOW - datetime.timedelta(seconds=MAX_AGE - 60))
    result = check(env_dirs, answer(just_inside, source_status(SOURCES[1])))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("status", ["IDLE", "UPLOADING"])
def test_a_snapshot_dated_in_the_future_is_a_clock_problem_not_fresh_for_ever(env_dirs, status):
    """A negative age is below every bound: a host clock that ran ahead would keep the source green."""
    ahead = source_status(SOURCES[0], status=status, last=NOW + datetime.timedelta(hours=1))
    result = check(env_dirs, answer(ahead, source_status(SOURCES[1])))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{SOURCES[0]}: last snapshot is dated 3600s in the future "
        f"(more than {render.CLOCK_SKEW_SECONDS}s ahead): check the host clock"
    ]
    within_skew = source_status(SOURCES[0], status=status, last=NOW + datetime.timedelta(seconds=60))
    assert check(env_dirs, answer(within_skew, source_status(SOURCES[1]))).returncode == 0


@pytest.mark.parametrize(("status", "expected"), [("PAUSED", "paused"), ("FAILED", "status FAILED")])
def test_paused_or_unknown_status_is_unhealthy(env_dirs, status, expected):
    result = check(env_dirs, answer(source_status(SOURCES[0], status=status), source_status(SOURCES[1])))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{SOURCES[0]}: {expected}"]


def test_a_source_the_server_does_not_list_is_unhealthy_and_other_hosts_do_not_count(env_dirs):
    other_host = source_status("shelken@vps:/backup/data", status="REMOTE")
    result = check(env_dirs, answer(source_status(SOURCES[1]), other_host))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{SOURCES[0]}: not scheduled by the server"]


def test_uploading_counts_as_backing_up_within_the_upload_allowance_only(env_dirs):
    allowance = 86400  # StartScriptParams' default, kopia.health.uploadAllowanceSeconds
    long_upload = source_status(
        SOURCES[0], status="UPLOADING", last=NOW - datetime.timedelta(seconds=MAX_AGE + allowance - 60)
    )
    result = check(env_dirs, answer(long_upload, source_status(SOURCES[1])))
    assert result.returncode == 0, result.stdout
    hung = source_status(
        SOURCES[0], status="UPLOADING", last=NOW - datetime.timedelta(seconds=MAX_AGE + allowance + 60)
    )
    result = check(env_dirs, answer(hung, source_status(SOURCES[1])))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{SOURCES[0]}: uploading, but no snapshot finished for ")


def test_no_snapshot_yet_is_healthy_only_within_the_bound_after_the_server_started(env_dirs):
    never = source_status(SOURCES[0], no_snapshot=True)
    body = answer(never, source_status(SOURCES[1]))
    result = check(env_dirs, body)
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{SOURCES[0]}: no snapshot since the server started 864"), line  # a day ago
    seen = env_dirs["state"] / "repository-seen"
    just_started = (NOW - datetime.timedelta(minutes=2)).timestamp()
    os.utime(seen, (just_started, just_started))
    assert check(env_dirs, body).returncode == 0


def test_server_not_answering_is_unhealthy_with_curls_message(env_dirs):
    result = check(env_dirs, answer(), FAKE_CURL_FAILS="1")
    assert result.returncode == 1
    assert result.stdout.startswith("kopia server not answering: curl: (7)")


def test_it_logs_in_as_server_control_on_stdin_and_trusts_only_its_own_certificate(env_dirs):
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 0, result.stdout + result.stderr
    argv = (env_dirs["fake"] / "argv").read_text().splitlines()
    assert "https://127.0.0.1:51515/api/v1/control/sources" in argv
    assert argv[argv.index("--cacert") + 1] == f"{env_dirs['deploy']}/{render.TLS_CERT}"
    assert not any("control-pw" in arg for arg in argv), "the password is never on a command line"
    login = f"{render.SERVER_CONTROL_USER}:{SECRETS['KOPIA_SERVER_CONTROL_PASSWORD']}".encode()
    header = (env_dirs["fake"] / "stdin").read_text().strip()
    assert header == f"Authorization: Basic {base64.b64encode(login).decode()}"


def test_insecure_server_is_asked_over_plain_http(env_dirs):
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]), tls=False)
    assert result.returncode == 0, result.stdout
    argv = (env_dirs["fake"] / "argv").read_text().splitlines()
    assert "http://127.0.0.1:51515/api/v1/control/sources" in argv
    assert "--cacert" not in argv


def test_a_healthy_check_pings_the_heartbeat_with_the_url_on_stdin(env_dirs):
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 0, result.stdout
    # curl's config syntax: the value quoted, with `"` and `\` escaped
    assert (env_dirs["fake"] / "pings").read_text() == 'url = "https://hc.example/ping/abc-token?x=\\"q\\"\\\\"\n'
    assert not any("abc-token" in arg for arg in (env_dirs["fake"] / "ping-argv").read_text().splitlines())


def test_an_unhealthy_check_does_not_ping(env_dirs):
    result = check(env_dirs, answer(source_status(SOURCES[0], status="PAUSED"), source_status(SOURCES[1])))
    assert result.returncode == 1
    assert not (env_dirs["fake"] / "pings").exists()
    result = check(env_dirs, answer(), FAKE_CURL_FAILS="1")
    assert result.returncode == 1
    assert not (env_dirs["fake"] / "pings").exists()


def test_a_failed_ping_is_reported_but_the_backups_stay_healthy(env_dirs):
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]), FAKE_PING_FAILS="1")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "healthy: 2 sources backing up",
        "no restore drill yet (the first one runs soon after the server starts)",
        "heartbeat ping failed (the backups are fine): curl: (22) The requested URL returned error: 503",
    ]


def test_create_repository_still_set_is_unhealthy_first_line_says_what_to_run_and_no_ping(env_dirs):
    """Left set, a later rebuild of the owner would create a repository over one the gateway fails to show."""
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]), create=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        "kopia.createRepository is still set: remove it (pulumi config rm --stack e2e-sakamoto --path"
        " homelab-backup:kopia.createRepository) and run pulumi up --stack e2e-sakamoto"
    )
    assert "healthy: 2 sources backing up" in result.stdout, "the sources are still judged and shown"
    assert not (env_dirs["fake"] / "pings").exists()
    # With another problem too, both are shown.
    result = check(env_dirs, answer(source_status(SOURCES[0], status="PAUSED"), source_status(SOURCES[1])), create=True)
    assert result.returncode == 1
    assert result.stdout.startswith("kopia.createRepository is still set") and "paused" in result.stdout


def test_no_heartbeat_configured_no_ping(env_dirs):
    variables = render.kopia_secret_variables("repo-pw", "ui-user", "ui-pw", "control-pw")
    (env_dirs["deploy"] / render.SECRETS_ENV).write_text(render.render_secrets_env(variables))
    assert check(env_dirs, answer(*[source_status(s) for s in SOURCES])).returncode == 0
    assert not (env_dirs["fake"] / "pings").exists()


# ------------------------------------------------------- the restore drill (its result, written by the start script)


def drill_result(dirs: dict[str, Path], outcome: str, age_seconds: int, message: str = "") -> None:
    moment = NOW - datetime.timedelta(seconds=age_seconds)
    line = f"{outcome} {int(moment.timestamp())} {moment.strftime('%Y-%m-%dT%H:%M:%SZ')} {message}".rstrip()
    (dirs["state"] / "restore-drill").write_text(line + "\n")


def test_a_passed_recent_drill_is_shown_and_healthy(env_dirs):
    drill_result(env_dirs, "ok", 3600)
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 0, result.stdout
    when = (NOW - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.stdout.splitlines()[:2] == ["healthy: 2 sources backing up", f"restore drill passed at {when}"]


def test_a_failed_drill_makes_the_host_unhealthy_with_kopias_message_and_stops_the_heartbeat(env_dirs):
    drill_result(env_dirs, "failed", 60, "error verifying k1234: unable to read object: BLOB not found")
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("restore drill failed at ")
    assert result.stdout.splitlines()[-1].endswith(": error verifying k1234: unable to read object: BLOB not found")
    assert not (env_dirs["fake"] / "pings").exists()


def test_an_overdue_drill_or_none_since_long_after_the_start_is_unhealthy(env_dirs):
    drill_result(env_dirs, "ok", MAX_DRILL_AGE + 60)
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 1 and "restore drill overdue" in result.stdout
    (env_dirs["state"] / "restore-drill").unlink()
    # first-start: when this host first served (the start script writes it once; restarts keep it)
    first_start = int((NOW - datetime.timedelta(seconds=MAX_DRILL_AGE + 60)).timestamp())
    (env_dirs["state"] / "first-start").write_text(f"{first_start}\n")
    fresh = [source_status(s) for s in SOURCES]
    result = check(env_dirs, answer(*fresh))
    assert result.returncode == 1 and result.stdout.splitlines()[-1] == "no restore drill since the server started"


def test_a_drill_result_dated_in_the_future_is_a_clock_problem_not_passed(env_dirs):
    drill_result(env_dirs, "ok", -86400)
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 1
    when = (NOW + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.stdout.splitlines()[-1] == (
        f"restore drill result is dated 86400s in the future (at {when}): check the host clock"
    )
    drill_result(env_dirs, "ok", -60)  # within the tolerated skew
    assert check(env_dirs, answer(*[source_status(s) for s in SOURCES])).returncode == 0


def test_notification_profiles_that_failed_to_apply_make_the_host_unhealthy(env_dirs):
    state = env_dirs["state"] / "notification-profiles"
    state.write_text("failed 1764000000 2025-11-24T16:00:00Z cannot save homelab-ntfy: curl: (22) error: 500\n")
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "notification profiles not applied (last try at 2025-11-24T16:00:00Z): "
        "cannot save homelab-ntfy: curl: (22) error: 500"
    )
    assert not (env_dirs["fake"] / "pings").exists()
    state.write_text("ok 1764000000 2025-11-24T16:00:00Z saved: homelab-ntfy; unchanged: none; deleted: none\n")
    assert check(env_dirs, answer(*[source_status(s) for s in SOURCES])).returncode == 0


# ------------------------------------------------------- the last snapshot attempt (the server's task list)


def tasks(*entries: tuple[str, str, str]) -> str:
    """Kopia's task list (GET /api/v1/tasks), most recent first, pretty-printed like the server:
    (source, status, error)."""
    listed = [
        {
            "id": str(100 - i),
            "startTime": "2026-11-27T10:00:00Z",
            "endTime": "2026-11-27T10:00:01Z",
            "kind": "Snapshot",
            "description": f"{source} at 2026-11-27T1{9 - i}:00:00Z",
            "status": status,
            "progressInfo": "",
            **({"errorMessage": error} if error else {}),
            "counters": {"Hashed Files": {"value": 1, "units": "", "level": ""}},
        }
        for i, (source, status, error) in enumerate(entries)
    ]
    listed.insert(1, {"id": "7", "kind": "Maintenance", "description": "Periodic maintenance", "status": "FAILED"})
    return json.dumps({"tasks": listed}, indent=2)  # serverapi.TaskListResponse


def test_a_failed_last_snapshot_attempt_is_unhealthy_with_kopias_error_until_one_succeeds(env_dirs):
    error = 'snapshot task: error flushing writer: unable to write session marker: "x": BLOB not found'
    (env_dirs["fake"] / "tasks.json").write_text(
        tasks((SOURCES[0], "FAILED", error), (SOURCES[1], "SUCCESS", ""), (SOURCES[0], "SUCCESS", ""))
    )
    result = check(env_dirs, answer(*[source_status(s) for s in SOURCES]))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{SOURCES[0]}: last snapshot attempt failed at 2026-11-27T19:00:00Z: "
        'snapshot task: error flushing writer: unable to write session marker: "x": BLOB not found'
    ]
    assert not (env_dirs["fake"] / "pings").exists()
    ui_stdin = (env_dirs["fake"] / "ui-stdin").read_text()
    assert "Authorization: Basic " + base64.b64encode(b"ui-user:ui-pw").decode() in ui_stdin
    # the next attempt succeeded: healthy again
    (env_dirs["fake"] / "tasks.json").write_text(tasks((SOURCES[0], "SUCCESS", ""), (SOURCES[0], "FAILED", error)))
    assert check(env_dirs, answer(*[source_status(s) for s in SOURCES])).returncode == 0


def test_a_failed_attempt_of_another_hosts_source_or_a_failed_maintenance_does_not_count(env_dirs):
    (env_dirs["fake"] / "tasks.json").write_text(tasks(("shelken@vps:/backup/data", "FAILED", "boom")))
    assert check(env_dirs, answer(*[source_status(s) for s in SOURCES])).returncode == 0
