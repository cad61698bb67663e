"""The start script's control flow, run for real with `sh` against a fake `kopia` on PATH.

The fake records its arguments (and which secrets reached it through the
environment) and answers with Kopia 0.22.3's real exit codes and messages, as
printed by the real binary (cli/command_repository_*.go; see
docs/upstream-behaviour.md#not-initialized-and-existing-data-messages).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from components import config, render
from tests.shell_lint import assert_posix_sh_and_shellcheck_clean

FAKE_KOPIA = r"""#!/bin/sh
# Fake kopia 0.22.3. Scenario in $FAKE_SCENARIO; state in $FAKE_STATE.
printf '%s\n' "$*" >> "$FAKE_STATE/calls"
[ -n "${KOPIA_PASSWORD:-}" ] && echo "password-in-env $1 $2" >> "$FAKE_STATE/env"
case "$1 $2" in
"repository connect")
    case "$FAKE_SCENARIO" in
    empty|empty-folder-marker|created-by-the-owner-later)
        # The owner (another host) creates the repository once this host has asked FAKE_CREATED_AFTER times.
        echo x >> "$FAKE_STATE/connects"
        asked=$(wc -l < "$FAKE_STATE/connects")
        if [ "$asked" -gt "${FAKE_CREATED_AFTER:-999}" ]; then touch "$FAKE_STATE/created"; fi
        if [ -e "$FAKE_STATE/created" ]; then echo "Connected to repository."; exit 0; fi
        echo "error connecting to repository: repository not initialized in the provided storage" >&2; exit 1 ;;
    wrong-password)
        echo "failed to open repository: unable to create format manager: invalid repository password" >&2
        echo "error connecting to repository: unable to create format manager: invalid repository password" >&2
        exit 1 ;;
    endpoint-down)
        printf '%s%s\n' "can't connect to storage: error retrieving storage config from bucket \"kopia\": " \
            'Get "http://openlist:5246/kopia/?location=": dial tcp: lookup openlist on 127.0.0.11:53: no such host' >&2
        exit 1 ;;
    existing) echo "Connected to repository."; exit 0 ;;
    password)
        # The repository opens with the password in $FAKE_STATE/repo-password only. The owner (another host)
        # changes it to this host's once this host has asked FAKE_CHANGED_AFTER times.
        printf 'connect %s\n' "${KOPIA_PASSWORD:-}" >> "$FAKE_STATE/passwords"
        asked=$(grep -c '^connect ' "$FAKE_STATE/passwords")
        [ "$asked" -le "${FAKE_CHANGED_AFTER:-999}" ] || printf '%s' "$KOPIA_PASSWORD" > "$FAKE_STATE/repo-password"
        if [ "${KOPIA_PASSWORD:-}" = "$(cat "$FAKE_STATE/repo-password")" ]; then
            echo "Connected to repository."; exit 0
        fi
        echo "error connecting to repository: unable to create format manager: invalid repository password" >&2
        exit 1 ;;
    esac ;;
"repository change-password")
    # cli/command_repository_change_password.go @ v0.22.3: opens with KOPIA_PASSWORD, sets KOPIA_NEW_PASSWORD.
    printf 'change-password %s -> %s\n' "${KOPIA_PASSWORD:-}" "${KOPIA_NEW_PASSWORD:-}" >> "$FAKE_STATE/passwords"
    if [ "${KOPIA_PASSWORD:-}" != "$(cat "$FAKE_STATE/repo-password")" ]; then
        echo "unable to create format manager: invalid repository password" >&2; exit 1
    fi
    [ -n "${FAKE_CHANGE_IGNORED:-}" ] || printf '%s' "$KOPIA_NEW_PASSWORD" > "$FAKE_STATE/repo-password"
    echo "NOTE: Repository password has been changed."; exit 0 ;;
"repository create")
    if [ "$FAKE_SCENARIO" = empty-folder-marker ]; then
        echo "unable to get repository storage: found existing data in storage location" >&2; exit 1
    fi
    touch "$FAKE_STATE/created"; echo "Initializing repository with:"; echo "Connected to repository."; exit 0 ;;
"maintenance set") exit 0 ;;
"repository status")
    # Compact JSON as `kopia repository status --json` prints it (cli/json_output.go): the format's mutable
    # parameters sit inside contentFormat; Kopia's default pack size unless the repository was changed.
    printf '{"configFile":"x","contentFormat":{"hash":"BLAKE2B-256-128","version":3,"maxPackSize":%s,' \
        "${FAKE_PACK_SIZE:-20971520}"
    echo '"indexVersion":2,"epochParameters":{}},"objectFormat":{"splitter":"DYNAMIC-4M-BUZHASH"}}'
    exit 0 ;;
"repository set-parameters") exit 0 ;;
"snapshot verify")
    printf '%s\n' "$*" >> "$FAKE_STATE/verify"
    if [ -n "${FAKE_VERIFY_FAILS:-}" ]; then
        echo "Processed 12 objects."; echo "error verifying k1234: unable to read object: BLOB not found" >&2; exit 1
    fi
    echo "Finished verifying 12 objects, found 0 errors."; exit 0 ;;
"policy import")
    if [ -n "${FAKE_POLICY_FAILS:-}" ] || [ ! -r "$4" ]; then
        echo "unable to import policy: invalid character 'x' looking for beginning of value" >&2; exit 1
    fi
    exit 0 ;;
"server start")
    for v in KOPIA_SERVER_USERNAME KOPIA_SERVER_PASSWORD KOPIA_SERVER_CONTROL_USER KOPIA_SERVER_CONTROL_PASSWORD \
        HOMELAB_PREVIOUS_REPOSITORY_PASSWORD KOPIA_NEW_PASSWORD; do
        eval "[ -n \"\${$v:-}\" ]" && echo "server-env $v" >> "$FAKE_STATE/env"
    done
    echo "SERVER CERT SHA256: fake"; exit 0 ;;
esac
echo "fake kopia: unexpected call: $*" >&2; exit 99
"""

# Fake curl: the server's UI API as Kopia 0.22.3 serves it (internal/server/server.go,
# api_notification_profile.go): the UI page carries the session's CSRF token; profiles are kept as the
# files they were posted from, in $FAKE_STATE/profiles. Headers arrive on stdin (`-H @-`) and are recorded.
FAKE_CURL = r"""#!/bin/sh
method=GET body='' url=''
while [ $# -gt 0 ]; do
    case "$1" in
    -X) method=$2; shift ;;
    --data-binary) body=${2#@}; shift ;;
    -w) [ -n "${FAKE_SERVER_DOWN:-}" ] && { printf 000; exit 7; }; printf 200; exit 0 ;;
    -H) [ "$2" = @- ] && cat >> "$FAKE_STATE/curl-headers"; shift ;;
    --cacert|--max-time|-o) shift ;;
    -*) ;;
    *) url=$1 ;;
    esac
    shift
done
printf '%s %s\n' "$method" "$url" >> "$FAKE_STATE/curl-calls"
fail() { echo "curl: (22) The requested URL returned error: $1" >&2; exit 22; }
[ -n "${FAKE_SERVER_DOWN:-}" ] && { echo "curl: (7) Failed to connect to 127.0.0.1 port 51515" >&2; exit 7; }
path=/${url#*://*/}
mkdir -p "$FAKE_STATE/profiles"
if [ "$path" != / ] && ! tail -n 3 "$FAKE_STATE/curl-headers" | grep -qx 'X-Kopia-Csrf-Token: 5eed'; then
    fail 401
fi
case "$method $path" in
"GET /") echo '<html><head><title>KopiaUI</title><meta name="kopia-csrf-token" content="5eed" /></head></html>' ;;
"GET /api/v1/notificationProfiles")
    echo '['; for f in "$FAKE_STATE"/profiles/*.json; do [ -e "$f" ] && cat "$f"; done; echo ']' ;;
"GET /api/v1/notificationProfiles/"*) cat "$FAKE_STATE/profiles/${path##*/}.json" 2>/dev/null || fail 500 ;;
"POST /api/v1/notificationProfiles")
    [ -n "${FAKE_SAVE_FAILS:-}" ] && fail 500
    name=$(sed -n 's/^  "profile": "\(.*\)",$/\1/p' "$body")
    cp "$body" "$FAKE_STATE/profiles/$name.json"; echo '{}' ;;
"DELETE /api/v1/notificationProfiles/"*) rm -f "$FAKE_STATE/profiles/${path##*/}.json"; echo '{}' ;;
*) fail 404 ;;
esac
"""

SECRETS = render.kopia_secret_variables("repo-pw", "ui-user", "ui-pw", "control-pw")


@pytest.fixture
def env_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("deploy", "state", "cache", "bin", "fake")}
    for d in dirs.values():
        d.mkdir()
    for name, fake in (("kopia", FAKE_KOPIA), ("curl", FAKE_CURL)):
        (dirs["bin"] / name).write_text(fake)
        (dirs["bin"] / name).chmod(0o755)
    for name in (render.REPOSITORY_CONFIG, render.STORAGE_TOKEN, render.POLICY_JSON, render.TLS_CERT, render.TLS_KEY):
        (dirs["deploy"] / name).write_text("{}\n")
    (dirs["deploy"] / render.SECRETS_ENV).write_text(render.render_secrets_env(SECRETS))
    return dirs


def params_for(
    dirs: dict[str, Path],
    *,
    owner: bool = True,
    create: bool = False,
    tls: bool = True,
    wait_seconds: int = 30,
    drill_seconds: int = 86400,
) -> render.StartScriptParams:
    return render.StartScriptParams(
        hostname="sakamoto",
        username="shelken",
        maintenance_owner="shelken@sakamoto" if owner else "shelken@vps",
        port=51515,
        tls=tls,
        refresh_interval="5m",
        sources=("shelken@sakamoto:/backup/minio", "shelken@sakamoto:/backup/compose"),
        deploy_dir=str(dirs["deploy"]),
        state_dir=str(dirs["state"]),
        cache_dir=str(dirs["cache"]),
        repository_wait_seconds=wait_seconds,
        drill_interval_seconds=drill_seconds,
        drill_files_percent=2.5,
        create_repository=create,
    )


def run_script(
    dirs: dict[str, Path],
    scenario: str,
    params: render.StartScriptParams,
    *,
    wait_for_drill: bool = False,
    wait_for_notifications: bool = False,
    wait_for_fake: str | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess:
    env = {
        **extra_env,
        "PATH": f"{dirs['bin']}:{os.environ['PATH']}",
        "FAKE_SCENARIO": scenario,
        "FAKE_STATE": str(dirs["fake"]),
    }
    script = render.render_start_script(params)
    # Its own session: the restore drill it starts in the background is stopped with it (below).
    process = subprocess.Popen(
        ["sh", "-c", script, "kopia-start"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if wait_for_notifications:  # the background applier logs to stderr: read it once it is done
            wait_for_file(dirs["state"] / "notification-profiles")
            time.sleep(0.3)
            os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        if wait_for_drill:
            wait_for_file(dirs["state"] / "restore-drill")
        if wait_for_fake:  # a file a fake writes from the background
            wait_for_file(dirs["fake"] / wait_for_fake)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def calls(dirs: dict[str, Path]) -> list[str]:
    path = dirs["fake"] / "calls"
    return path.read_text().splitlines() if path.exists() else []


def verbs(dirs: dict[str, Path]) -> list[str]:
    return [" ".join(c.split()[:2]) for c in calls(dirs)]


def fatal_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "FATAL" in line]


def test_owner_without_create_repository_refuses_empty_storage_naming_what_to_check(env_dirs):
    """A rebuilt owner (no state dir) whose gateway answers "empty" (189 login expired, storage pointed at another
    folder): nothing is created, and the one line says where to look and, for a first deploy only, what to run."""
    result = run_script(env_dirs, "empty", params_for(env_dirs))
    assert result.returncode == 1
    assert verbs(env_dirs) == ["repository connect"]
    assert not (env_dirs["fake"] / "created").exists()
    (line,) = fatal_lines(result)
    assert "kopia.createRepository is not set: nothing was created" in line
    for what_to_check in ("the 189 login", "the folder the storage points at", "the openlist container's logs"):
        assert what_to_check in line
    assert line.endswith(
        "Only on the very first deploy, create the repository once: pulumi up --stack sakamoto --config-path"
        " --config homelab-backup:kopia.createRepository=true"
    )
    assert not (env_dirs["state"] / "repository-seen").exists()


def test_empty_storage_creates_then_imports_then_serves(env_dirs):
    result = run_script(env_dirs, "empty", params_for(env_dirs, create=True))
    assert result.returncode == 0, result.stderr
    assert verbs(env_dirs) == [
        "repository connect",
        "repository create",
        "maintenance set",
        "repository status",
        "repository set-parameters",
        "policy import",
        "server start",
    ]
    connect, create, maintenance, _, set_parameters, policy, server = calls(env_dirs)
    for call in (connect, create):
        # identity overrides on connect AND create: a repository created without them belongs to root@<container>
        assert "--override-hostname=sakamoto --override-username=shelken" in call
        assert "--no-check-for-updates" in call
        assert "--no-persist-credentials" in call
    assert f"--file {env_dirs['deploy']}/{render.REPOSITORY_CONFIG}" in connect
    assert f"--token-file {env_dirs['deploy']}/{render.STORAGE_TOKEN}" in create
    assert maintenance == "maintenance set --owner=me --quick-interval=1h --full-interval=24h"
    assert set_parameters == "repository set-parameters --max-pack-size-mb=64"
    for call in (connect, create):  # Kopia's cache limits are connect options (create connects too)
        assert "--content-cache-size-mb=2000 --metadata-cache-size-mb=5000" in call
    assert f"--from-file {env_dirs['deploy']}/{render.POLICY_JSON}" in policy
    assert "--tls-cert-file=" in server and "--tls-key-file=" in server and "--insecure" not in server
    assert "--refresh-interval=5m" in server
    assert "--address=0.0.0.0:51515" in server
    # No secret on any command line: they travel in the environment.
    for call in calls(env_dirs):
        for secret in SECRETS.values():
            if secret != render.SERVER_CONTROL_USER:
                assert secret not in call
    env_log = (env_dirs["fake"] / "env").read_text()
    assert "password-in-env repository connect" in env_log
    assert "password-in-env server start" in env_log
    for variable in ("KOPIA_SERVER_USERNAME", "KOPIA_SERVER_PASSWORD", "KOPIA_SERVER_CONTROL_PASSWORD"):
        assert f"server-env {variable}" in env_log
    assert (env_dirs["state"] / "repository-seen").exists()
    created = next(line for line in result.stderr.splitlines() if "created the repository" in line)
    assert created.endswith(render.create_repository_reminder("sakamoto")), "the request is to be taken back"


def test_create_repository_still_set_over_an_existing_repository_connects_warns_and_creates_nothing(env_dirs):
    result = run_script(env_dirs, "existing", params_for(env_dirs, create=True))
    assert result.returncode == 0, result.stderr
    assert "repository create" not in verbs(env_dirs)
    assert verbs(env_dirs)[-1] == "server start"
    (warning,) = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert "connected to it, created nothing" in warning
    assert warning.endswith(
        "kopia.createRepository is still set: remove it (pulumi config rm --stack sakamoto --path"
        " homelab-backup:kopia.createRepository) and run pulumi up --stack sakamoto"
    )


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("wrong-password", "invalid repository password"),
        ("endpoint-down", "no such host"),
    ],
)
def test_connect_failure_exits_with_one_fatal_line_and_never_creates_or_serves(env_dirs, scenario, expected):
    result = run_script(env_dirs, scenario, params_for(env_dirs))
    assert result.returncode == 1
    assert verbs(env_dirs) == ["repository connect"]
    (line,) = fatal_lines(result)
    assert line.startswith("kopia-start: FATAL: cannot connect to the repository")
    assert expected in line
    assert not (env_dirs["state"] / "repository-seen").exists()


# ---------------------------------------------------------------- changing the repository password

NEW_PASSWORD = SECRETS["KOPIA_PASSWORD"]  # what this host's secrets.env declares


def repository_opens_with(dirs: dict[str, Path], password: str) -> None:
    (dirs["fake"] / "repo-password").write_text(password)


def declare_previous_password(dirs: dict[str, Path], password: str) -> None:
    (dirs["deploy"] / render.PREVIOUS_PASSWORD_ENV).write_text(render.render_previous_password_env(password))


def password_calls(dirs: dict[str, Path]) -> list[str]:
    return (dirs["fake"] / "passwords").read_text().splitlines()


def test_the_owner_changes_the_repository_password_from_the_declared_previous_one(env_dirs):
    repository_opens_with(env_dirs, "old-pw")
    declare_previous_password(env_dirs, "old-pw")
    result = run_script(env_dirs, "password", params_for(env_dirs))
    assert result.returncode == 0, result.stderr
    assert fatal_lines(result) == []
    # The declared password fails, the previous one connects and changes it, the declared one then connects.
    assert password_calls(env_dirs) == [
        f"connect {NEW_PASSWORD}",
        "connect old-pw",
        f"change-password old-pw -> {NEW_PASSWORD}",
        f"connect {NEW_PASSWORD}",
    ]
    assert (env_dirs["fake"] / "repo-password").read_text() == NEW_PASSWORD
    assert verbs(env_dirs)[:4] == ["repository connect"] * 2 + ["repository change-password", "repository connect"]
    assert verbs(env_dirs)[-2:] == ["policy import", "server start"]
    assert "changed the repository password to kopia.secrets.repositoryPassword" in result.stderr
    assert "run pulumi up for every other host's stack" in result.stderr
    assert "still declared" not in result.stderr
    for call in calls(env_dirs):  # both passwords travel in the environment
        assert "old-pw" not in call and NEW_PASSWORD not in call
    env_log = (env_dirs["fake"] / "env").read_text()
    assert "server-env HOMELAB_PREVIOUS_REPOSITORY_PASSWORD" not in env_log, "the server never sees the old one"
    assert "server-env KOPIA_NEW_PASSWORD" not in env_log


def test_the_owner_without_a_previous_password_stops_saying_how_to_change_it(env_dirs):
    repository_opens_with(env_dirs, "old-pw")
    result = run_script(env_dirs, "password", params_for(env_dirs))
    assert result.returncode == 1
    assert verbs(env_dirs) == ["repository connect"]
    (line,) = fatal_lines(result)
    assert line.startswith("kopia-start: FATAL: cannot connect to the repository")
    assert "invalid repository password" in line
    assert "declare the one it opens with as kopia.secrets.previousRepositoryPassword" in line


def test_the_owner_stops_when_neither_password_opens_the_repository(env_dirs):
    repository_opens_with(env_dirs, "another-pw")
    declare_previous_password(env_dirs, "old-pw")
    result = run_script(env_dirs, "password", params_for(env_dirs))
    assert result.returncode == 1
    assert "repository change-password" not in verbs(env_dirs)
    (line,) = fatal_lines(result)
    assert "opens with neither kopia.secrets.repositoryPassword nor kopia.secrets.previousRepositoryPassword" in line
    assert (env_dirs["fake"] / "repo-password").read_text() == "another-pw"


def test_the_owner_changes_the_password_once_per_start_and_no_more(env_dirs):
    """A change that did not take (the declared password still fails) stops the start instead of looping."""
    repository_opens_with(env_dirs, "old-pw")
    declare_previous_password(env_dirs, "old-pw")
    result = run_script(env_dirs, "password", params_for(env_dirs), FAKE_CHANGE_IGNORED="1")
    assert result.returncode == 1
    assert verbs(env_dirs).count("repository change-password") == 1
    (line,) = fatal_lines(result)
    assert "does not open with kopia.secrets.repositoryPassword" in line


def test_the_owner_says_when_the_previous_password_can_go(env_dirs):
    repository_opens_with(env_dirs, NEW_PASSWORD)
    declare_previous_password(env_dirs, "old-pw")
    result = run_script(env_dirs, "password", params_for(env_dirs))
    assert result.returncode == 0, result.stderr
    assert password_calls(env_dirs) == [f"connect {NEW_PASSWORD}"]
    assert "kopia.secrets.previousRepositoryPassword is still declared" in result.stderr
    assert "remove it from this stack and run pulumi up" in result.stderr


def test_a_host_whose_password_no_longer_opens_the_repository_waits_loudly_instead_of_crash_looping(env_dirs):
    """Not the owner: its password and the repository's differ while the password changes, in either order of
    the stacks. It keeps running and says what to do, and connects by itself once the two agree."""
    repository_opens_with(env_dirs, "old-pw")
    declare_previous_password(env_dirs, "old-pw")  # ignored: only the owner changes the password
    params = params_for(env_dirs, owner=False, wait_seconds=0)
    result = run_script(env_dirs, "password", params, FAKE_CHANGED_AFTER="2")
    assert result.returncode == 0, result.stderr
    assert fatal_lines(result) == []
    assert "repository change-password" not in verbs(env_dirs)
    assert verbs(env_dirs) == ["repository connect"] * 3 + ["policy import", "server start"]
    waiting = [line for line in result.stderr.splitlines() if "the repository password changed" in line]
    assert len(waiting) == 2
    assert "run pulumi up for this host's stack with the new one" in waiting[0]
    assert "shelken@vps changes the repository's password to it at its next start" in waiting[0]
    assert "invalid repository password" in waiting[0]


def test_existing_repository_connects_without_create(env_dirs):
    result = run_script(env_dirs, "existing", params_for(env_dirs))
    assert result.returncode == 0, result.stderr
    assert verbs(env_dirs) == [
        "repository connect",
        "maintenance set",
        "repository status",
        "repository set-parameters",
        "policy import",
        "server start",
    ]


def test_the_owner_leaves_the_pack_size_alone_when_it_is_already_set(env_dirs):
    """The format blob is rewritten only when the value changes, not at every start."""
    result = run_script(env_dirs, "existing", params_for(env_dirs), FAKE_PACK_SIZE=str(64 << 20))
    assert result.returncode == 0, result.stderr
    assert "repository set-parameters" not in verbs(env_dirs)
    assert "repository status" in verbs(env_dirs)


def test_the_owner_applies_the_stacks_pack_size_cache_and_maintenance_schedule(env_dirs):
    params = dataclasses.replace(
        params_for(env_dirs),
        pack_size_mb=120,
        content_cache_mb=100,
        metadata_cache_mb=300,
        quick_maintenance_interval="4h",
        full_maintenance_interval="168h",
    )
    result = run_script(env_dirs, "existing", params, FAKE_PACK_SIZE=str(64 << 20))
    assert result.returncode == 0, result.stderr
    connect, maintenance, _, set_parameters, *_ = calls(env_dirs)
    assert "--content-cache-size-mb=100 --metadata-cache-size-mb=300" in connect
    assert maintenance == "maintenance set --owner=me --quick-interval=4h --full-interval=168h"
    assert set_parameters == "repository set-parameters --max-pack-size-mb=120"
    assert "maximum pack size set to 120 MiB" in result.stderr


def test_non_owner_host_never_creates_and_waits_running_for_the_owner(env_dirs):
    """First deploy in either order: the host that may not create waits in place (the container keeps
    running, so Docker keeps its ports and `pulumi refresh` sees no drift), then connects and serves."""
    params = params_for(env_dirs, owner=False, wait_seconds=0)
    result = run_script(env_dirs, "created-by-the-owner-later", params, FAKE_CREATED_AFTER="2")
    assert result.returncode == 0, result.stderr
    assert verbs(env_dirs) == ["repository connect"] * 3 + ["policy import", "server start"]
    assert fatal_lines(result) == []
    waiting = [line for line in result.stderr.splitlines() if "waiting for that host" in line]
    assert len(waiting) == 2
    assert "only shelken@vps creates it" in waiting[0]
    assert "If the repository exists, the S3 gateway answers empty: check its storage" in waiting[0]


def test_non_owner_host_does_not_touch_maintenance(env_dirs):
    result = run_script(env_dirs, "existing", params_for(env_dirs, owner=False))
    assert result.returncode == 0, result.stderr
    assert "maintenance set" not in verbs(env_dirs)


@pytest.mark.parametrize("create", [False, True])
def test_empty_answer_after_a_seen_repository_refuses_to_create(env_dirs, create):
    """A backend that fails with 404/empty listings (OpenList does) must not get a second repository, even
    while kopia.createRepository is (still) set."""
    (env_dirs["state"] / "repository-seen").write_text("2026-01-01T00:00:00Z\n")
    result = run_script(env_dirs, "empty", params_for(env_dirs, create=create))
    assert result.returncode == 1
    assert verbs(env_dirs) == ["repository connect"]
    (line,) = fatal_lines(result)
    assert "refusing to create a new repository" in line


def test_openlist_empty_folder_marker_is_explained(env_dirs):
    result = run_script(env_dirs, "empty-folder-marker", params_for(env_dirs, create=True))
    assert result.returncode == 1
    assert verbs(env_dirs) == ["repository connect", "repository create"]
    (line,) = fatal_lines(result)
    assert "ThisIsAnEmptyFolderInTheS3Bucket" in line


def test_missing_config_file_fails_before_any_kopia_call(env_dirs):
    (env_dirs["deploy"] / render.POLICY_JSON).unlink()
    result = run_script(env_dirs, "existing", params_for(env_dirs))
    assert result.returncode == 1
    assert calls(env_dirs) == []
    (line,) = fatal_lines(result)
    assert "policy.json" in line and "pulumi up" in line


def test_insecure_is_explicit_and_skips_tls_files(env_dirs):
    for name in (render.TLS_CERT, render.TLS_KEY):
        (env_dirs["deploy"] / name).unlink()
    result = run_script(env_dirs, "existing", params_for(env_dirs, tls=False))
    assert result.returncode == 0, result.stderr
    server = calls(env_dirs)[-1]
    assert "--insecure" in server and "--tls-cert-file" not in server


def test_policy_import_failure_stops_before_the_server(env_dirs):
    result = run_script(env_dirs, "existing", params_for(env_dirs), FAKE_POLICY_FAILS="1")
    assert result.returncode == 1
    assert "server start" not in verbs(env_dirs)
    (line,) = fatal_lines(result)
    assert "cannot import" in line and "invalid character" in line


@pytest.mark.parametrize(("tls", "create"), [(True, False), (False, False), (True, True)])
def test_rendered_scripts_are_valid_posix_sh_and_pass_shellcheck(tls, create):
    """The start script and the health check as the containers get them (dash upstream, busybox or dash here)."""

    owner = "shelken@vps" if create else "shelken@sakamoto"
    params = render.StartScriptParams(
        "vps", "shelken", owner, 51515, tls, "5m", ("shelken@vps:/x",), create_repository=create
    )
    scripts = (render.render_start_script(params), render.render_healthcheck(params))
    assert_posix_sh_and_shellcheck_clean(scripts)


@pytest.mark.parametrize("fails", [False, True])
def test_the_restore_drill_verifies_the_hosts_sources_and_leaves_one_result_line(env_dirs, fails):
    extra = {"FAKE_VERIFY_FAILS": "1"} if fails else {}
    result = run_script(env_dirs, "existing", params_for(env_dirs, drill_seconds=1), wait_for_drill=True, **extra)
    assert result.returncode == 0, result.stderr
    verify = (env_dirs["fake"] / "verify").read_text().splitlines()[0]
    assert verify.startswith("snapshot verify --verify-files-percent=2.5 ")
    assert "--sources=shelken@sakamoto:/backup/minio --sources=shelken@sakamoto:/backup/compose" in verify
    outcome, epoch, when, *message = (env_dirs["state"] / "restore-drill").read_text().rstrip("\n").split(" ", 3)
    assert outcome == ("failed" if fails else "ok")
    assert abs(int(epoch) - time.time()) < 30 and when.endswith("Z")
    if fails:
        assert message == ["error verifying k1234: unable to read object: BLOB not found"]
    assert "verifying" not in result.stdout + result.stderr, "the drill's own output stays out of the log"


DAY = 86400


@pytest.mark.parametrize(
    ("stored", "expected_wait"),
    [
        (None, 60),  # no drill yet: the first one a minute after the start
        ("ok {now_minus_interval_plus_500}", 500),  # the next one is due one interval after the last
        ("ok {two_days_ago}", 60),  # overdue: soon after the start
        ("failed {a_minute_ago}", 3600 - 60),  # after a failure, retried within the hour
        ("ok {a_day_ahead}", 60),  # dated in the future (a clock set right since): treated as none
    ],
)
def test_the_drill_after_a_restart_waits_by_the_stored_result(env_dirs, stored, expected_wait):
    """The wait survives restarts: it comes from the result file, not from when the container started."""
    real_sleep = shutil.which("sleep")
    (env_dirs["bin"] / "sleep").write_text(f'#!/bin/sh\necho "$1" >> "$FAKE_STATE/sleeps"\nexec {real_sleep} "$1"\n')
    (env_dirs["bin"] / "sleep").chmod(0o755)
    now = int(time.time())
    if stored is not None:
        moments = {"now_minus_interval_plus_500": now - DAY + 500, "two_days_ago": now - 2 * DAY,
                   "a_minute_ago": now - 60, "a_day_ahead": now + DAY}  # fmt: skip
        (env_dirs["state"] / "restore-drill").write_text(stored.format(**moments) + " 2026-11-27T10:00:00Z\n")
    result = run_script(env_dirs, "existing", params_for(env_dirs, drill_seconds=DAY), wait_for_fake="sleeps")
    assert result.returncode == 0, result.stderr
    waited = int((env_dirs["fake"] / "sleeps").read_text().split()[0])
    assert expected_wait - 10 <= waited <= expected_wait, waited


def test_first_start_is_written_once_and_kept_across_restarts(env_dirs):
    """The health check measures "no drill since the server started" from it: a restart must not move it."""
    first_start = env_dirs["state"] / "first-start"
    assert run_script(env_dirs, "existing", params_for(env_dirs)).returncode == 0
    assert abs(int(first_start.read_text()) - time.time()) < 30
    first_start.write_text("1700000000\n")  # long ago
    assert run_script(env_dirs, "existing", params_for(env_dirs)).returncode == 0
    assert first_start.read_text() == "1700000000\n"


# ---------------------------------------------------------------- notification profiles


def webhook_profile(name: str = "ops") -> config.NotificationProfile:
    return config.NotificationProfile.model_validate({"name": name, "webhook": {"url": "config:hook"}})


def declare(dirs: dict[str, Path], name: str, url: str = "https://ntfy.example/backups?auth=tok&x=1") -> Path:
    path = dirs["deploy"] / render.notification_file(name)
    path.write_text(render.render_notification_profile(webhook_profile(name), {"url": url}))
    return path


def profiles_held(dirs: dict[str, Path]) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((dirs["fake"] / "profiles").glob("*.json"))}


def notification_outcome(dirs: dict[str, Path]) -> list[str]:
    return (dirs["state"] / "notification-profiles").read_text().rstrip("\n").split(" ", 3)


def test_declared_profiles_are_saved_with_the_ui_login_and_csrf_token_and_stale_ones_deleted(env_dirs):
    declare(env_dirs, "ops")
    (env_dirs["fake"] / "profiles").mkdir()
    (env_dirs["fake"] / "profiles" / "homelab-gone.json").write_text('  "profile": "homelab-gone",\n')
    (env_dirs["fake"] / "profiles" / "by-hand.json").write_text('  "profile": "by-hand",\n')
    result = run_script(env_dirs, "existing", params_for(env_dirs), wait_for_notifications=True)
    outcome, _, _, summary = notification_outcome(env_dirs)
    assert (outcome, summary) == ("ok", "saved: homelab-ops; unchanged: none; deleted: homelab-gone")
    assert "kopia-start: notification profiles: saved: homelab-ops" in result.stderr
    held = profiles_held(env_dirs)
    assert held["homelab-ops"] == (env_dirs["deploy"] / render.notification_file("ops")).read_text()
    assert sorted(held) == ["by-hand", "homelab-ops"], "a profile made by hand is left alone"
    headers = (env_dirs["fake"] / "curl-headers").read_text()
    assert "Authorization: Basic " + base64.b64encode(b"ui-user:ui-pw").decode() in headers
    assert "Cookie: Kopia-Session-Cookie=" in headers
    for call in (env_dirs["fake"] / "curl-calls").read_text().splitlines():
        assert "tok" not in call and call.split()[1].startswith("https://127.0.0.1:51515/")


def _profiles_made_before(dirs: dict[str, Path]) -> None:
    """The repository's profiles as the other host left them: one of the program's, one made by hand."""
    (dirs["fake"] / "profiles").mkdir()
    (dirs["fake"] / "profiles" / "homelab-theirs.json").write_text('  "profile": "homelab-theirs",\n')
    (dirs["fake"] / "profiles" / "by-hand.json").write_text('  "profile": "by-hand",\n')


@pytest.mark.parametrize("declared", [[], ["ops"]])
def test_a_host_that_is_not_the_maintenance_owner_never_deletes_the_shared_profiles(env_dirs, declared):
    """Profiles live in the repository both hosts share: a host on older files (or none) keeps the other's."""
    for name in declared:
        declare(env_dirs, name)
    _profiles_made_before(env_dirs)
    run_script(env_dirs, "existing", params_for(env_dirs, owner=False), wait_for_notifications=True)
    outcome, _, _, summary = notification_outcome(env_dirs)
    assert outcome == "ok"
    assert summary.endswith("; deleted: none (left to shelken@vps)")
    assert {"homelab-theirs", "by-hand"} <= set(profiles_held(env_dirs))
    assert "DELETE" not in (env_dirs["fake"] / "curl-calls").read_text()


def test_the_owner_declaring_no_profile_leaves_the_shared_ones_alone(env_dirs):
    """A stack that overrides `notifications` away, or files older than Pulumi.yaml: no alert vanishes."""
    _profiles_made_before(env_dirs)
    run_script(env_dirs, "existing", params_for(env_dirs), wait_for_notifications=True)
    outcome, _, _, summary = notification_outcome(env_dirs)
    assert (outcome, summary) == (
        "ok",
        "saved: none; unchanged: none; deleted: none (none declared: the homelab-* profiles are left alone)",
    )
    assert sorted(profiles_held(env_dirs)) == ["by-hand", "homelab-theirs"]


def test_an_unchanged_profile_is_not_saved_again(env_dirs):
    declare(env_dirs, "ops")
    run_script(env_dirs, "existing", params_for(env_dirs), wait_for_notifications=True)
    (env_dirs["state"] / "notification-profiles").unlink()
    (env_dirs["fake"] / "curl-calls").unlink()
    run_script(env_dirs, "existing", params_for(env_dirs), wait_for_notifications=True)
    assert notification_outcome(env_dirs)[3] == "saved: none; unchanged: homelab-ops; deleted: none"
    assert "POST" not in (env_dirs["fake"] / "curl-calls").read_text()


def test_a_failed_save_is_recorded_for_the_health_check_and_logged(env_dirs):
    declare(env_dirs, "ops")
    result = run_script(env_dirs, "existing", params_for(env_dirs), wait_for_notifications=True, FAKE_SAVE_FAILS="1")
    outcome, _, _, message = notification_outcome(env_dirs)
    assert outcome == "failed"
    assert message == "cannot save homelab-ops: curl: (22) The requested URL returned error: 500"
    assert "kopia-start: ERROR: cannot apply the notification profiles (next try in 30s)" in result.stderr
    assert fatal_lines(result) == [], "the server runs on: only the alerts are missing"
