"""Every stack on real Kopia, real OpenList, a real Docker engine reached over a real SSH host.

The container and file specs come from the program itself (the committed test
stacks Pulumi.e2e-vps.yaml and Pulumi.e2e-sakamoto.yaml, run under mocks) and
are applied by testbed/adapter.py. Kopia's own commands are the oracle.

The tests share one deployment (module scope) and run in file order: first
boot, then what a running system must survive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from components import render
from scripts import status
from testbed import engine, infra
from testbed.mocks import project_config, stack_config
from testbed.system import (
    ADDRESS,
    ALL_SOURCES,
    BASE,
    BUCKET_ON_HOST,
    CONFIG_DIR,
    DRIVE_IN_CONTAINER,
    DRIVE_MOUNT,
    KOPIA,
    KOPIA_DATA_DIR,
    OPENLIST,
    OPENLIST_DATA_ON_HOST,
    REPOSITORY_ON_HOST,
    SOURCES,
    System,
    say,
    server_status,
    source_name,
    tree_digest,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


def snapshot_sources(system: System) -> set[str]:
    return {source_name(s) for s in system.oracle.snapshots()}


def fatal_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "kopia-start: FATAL:" in line]


def self_signed_context() -> ssl.SSLContext:
    """TLS without CA checks: the Kopia servers' certificates are self-signed; trust is the pinned fingerprint."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def server_answers(address: str, port: int = 51515) -> bool:
    """Whether a Kopia server answers HTTP at all (any status). A bare TCP connect is not enough:
    Docker's userland proxy keeps the published port open while the container restarts."""
    try:
        with urllib.request.urlopen(f"https://{address}:{port}/", context=self_signed_context(), timeout=3):
            return True
    except urllib.error.HTTPError:
        return True  # e.g. 401: a server is there
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


# ---------------------------------------------------------------- 1. first boot on an empty bucket


def test_first_boot_creates_once_and_both_hosts_snapshot_on_schedule(system: System):
    # sakamoto is the maintenance owner: its first up asks for the repository (kopia.createRepository) and it
    # creates it; vps waits and then connects. The deploy then took the request back (`pulumi config rm`, `up`).
    wait_for("the repository to exist", lambda: system.oracle.connect().returncode == 0, 240, interval=5)
    assert "creating it as shelken@sakamoto" in system.creation_log
    reminder = render.create_repository_reminder("e2e-sakamoto")
    assert system.health_while_create_was_set.startswith(reminder), "the request left set was not loud"
    vps_log = system.logs(KOPIA["vps"])
    assert "creating it" not in vps_log, "only the owner may create the repository"
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack])
    # The container that runs now, without the key, connected to that repository and asks for nothing.
    sakamoto_log = system.logs(KOPIA["sakamoto"])
    assert "kopia-start: connected" in sakamoto_log and "creating it" not in sakamoto_log
    assert "kopia.createRepository" not in system.health_output(KOPIA["sakamoto"])
    wait_for(
        "scheduled snapshots of all three sources",
        lambda: set(ALL_SOURCES) <= snapshot_sources(system),
        300,
        interval=10,
    )
    for source in ALL_SOURCES:
        snapshot = system.oracle.snapshots_of(source)[-1]
        assert snapshot["stats"]["errorCount"] == 0
        assert not snapshot.get("incomplete")
    # policy show reflects policy.json
    for source in ALL_SOURCES:
        shown = system.oracle.json("policy", "show", source)
        assert shown["retention"]["keepHourly"] == 24
        assert shown["retention"]["keepDaily"] == 7
        assert shown["compression"]["compressorName"] == "zstd-fastest"
        assert shown["scheduling"]["intervalSeconds"] == 60
    maintenance = system.oracle.run("maintenance", "info").stdout
    assert "Owner: shelken@sakamoto" in maintenance


# ---------------------------------------------------------------- 5. server access


@pytest.mark.parametrize("stack", ["vps", "sakamoto"])
def test_server_requires_credentials_and_serves_the_declared_certificate(system: System, stack: str):
    address = ADDRESS[stack]
    outputs = system.deployments[stack].outputs

    def status(path: str, user: str | None = None, password: str | None = None) -> int:
        return server_status(stack, path, user, password)  # trust is the pinned fingerprint, checked below

    ui_user, ui_password = system.secrets["serverUsername"], system.secrets["serverPassword"]
    control_password = system.secrets["serverControlPassword"]
    # The UI (it can browse and restore every file): login required.
    assert status("/") == 401
    assert status("/", ui_user, "not-the-password") == 401
    assert status("/", ui_user, ui_password) == 200
    # The control API (health checks): its own credentials, not the UI's.
    assert status("/api/v1/control/sources") == 401
    assert status("/api/v1/control/sources", ui_user, ui_password) in (401, 403)
    assert status("/api/v1/control/sources", render.SERVER_CONTROL_USER, control_password) == 200

    served = ssl.get_server_certificate((address, 51515))
    assert render.pem_sha256_fingerprint(served) == outputs["kopia_tls_fingerprint"]


# ---------------------------------------------------------------- 7. restore


def test_restore_latest_snapshot_of_each_source_byte_for_byte(system: System, tmp_path: Path):
    for stack, sources in SOURCES.items():
        for path, host_dir in sources.items():
            source = f"shelken@{stack}:{path}"
            latest = system.oracle.snapshots_of(source)[-1]
            target = tmp_path / stack / path.strip("/").replace("/", "-")
            system.oracle.run("snapshot", "restore", latest["id"], str(target))
            restored, original = tree_digest(target), tree_digest(host_dir)
            assert restored == original, f"{source}: restored tree differs"
            assert len(original) >= 10


def test_a_restore_from_the_servers_ui_lands_in_the_restore_dir_on_the_host(system: System):
    """The UI's restore (its API, as the browser calls it: UI login, session cookie, CSRF token) into the
    writable restore target; the sources themselves are mounted read-only."""
    stack, path = "sakamoto", "/backup/minio"
    outputs = system.deployments[stack].outputs
    host = status.Host(
        stack, outputs["kopia_server_url"], outputs["kopia_tls_fingerprint"], (), 0, 0, control_password="",
        ui_login=(system.secrets["serverUsername"], system.secrets["serverPassword"]),
    )  # fmt: skip
    session = status.UiSession(host, timeout=30)
    query = urllib.parse.urlencode({"userName": "shelken", "host": stack, "path": path})
    snapshots = session.answer(status.SnapshotsAnswer, f"/api/v1/snapshots?{query}").snapshots or []
    latest = max(snapshots, key=lambda s: s.start_time)
    target = f"{render.RESTORE_DIR}/from-the-ui"
    # As the UI sends it: a full restore (restoreDirEntryAtDepth 0 would leave only placeholder entries).
    options = {"parallel": 8, "restoreDirEntryAtDepth": 1000, "minSizeForPlaceholder": 0}
    request = {"root": latest.root_id, "fsOutput": {"targetPath": target}, "options": options}
    session.get("/api/v1/restore", "POST", request)
    on_host = KOPIA_DATA_DIR[stack] / "restore" / "from-the-ui"
    expected = tree_digest(SOURCES[stack][path])
    wait_for("the UI restore to finish on the host", lambda: tree_digest(on_host) == expected, 120, interval=2)


# ---------------------------------------------------------------- 8. secrets


def test_no_secret_in_inspect_logs_processes_or_readable_files(system: System):
    values = system.secret_values
    containers = [KOPIA["vps"], KOPIA["sakamoto"], OPENLIST]
    for container in containers:
        inspect = system.docker("inspect", container).stdout
        logs = system.logs(container)
        for value in values:
            assert value not in inspect, f"secret in docker inspect {container}"
            assert value not in logs, f"secret in docker logs {container}"
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    for value in values:
        assert value not in processes, "secret on a command line"
    for stack in ("vps", "sakamoto"):
        # Every process's command line, read from /proc (the upstream image has no `ps` either).
        cmdlines = 'for f in /proc/[0-9]*/cmdline; do tr "\\000" " " < "$f"; echo; done'
        in_container = system.docker("exec", KOPIA[stack], "sh", "-c", cmdlines).stdout
        assert "kopia server start" in in_container
        for value in values:
            assert value not in in_container
    # Every file on the host that holds a secret is 0600.
    holders = []
    for path in BASE.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
            data = path.read_bytes()
            if any(v.encode() in data for v in values):
                holders.append(path)
                assert path.stat().st_mode & 0o077 == 0, f"{path} holds a secret and is mode {oct(path.stat().st_mode)}"
    config_dirs = set(CONFIG_DIR.values())
    assert {p.parent for p in holders} >= config_dirs, "the secret files are where Pulumi writes them"
    for config_dir in config_dirs:
        for path in config_dir.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, f"{path} is {oct(path.stat().st_mode)}"
    # Kopia's own connection file inside the container holds the S3 keys: 0600 as well.
    for stack in ("vps", "sakamoto"):
        mode = system.docker("exec", KOPIA[stack], "stat", "-c", "%a", render.KOPIA_CONFIG_PATH).stdout.strip()
        assert mode == "600"


def test_container_env_is_documented_in_the_architecture(system: System):
    readme = (ROOT / "docs" / "architecture.md").read_text()
    for container in (KOPIA["vps"], KOPIA["sakamoto"], OPENLIST):
        config = system.inspect(container)["Config"]
        names = {e.split("=", 1)[0] for e in config["Env"]}
        image = json.loads(system.docker("image", "inspect", config["Image"]).stdout)[0]
        image_defaults = {e.split("=", 1)[0] for e in image["Config"]["Env"]}  # the image's, not ours
        declared = {
            e.split("=", 1)[0] for d in system.deployments.values() for c in d.declared_containers for e in c["envs"]
        }
        assert names - image_defaults <= declared
        for name in declared & names:
            assert f"`{name}`" in readme, f"container env {name} of {container} is not listed in docs/architecture.md"


# ---------------------------------------------------------------- 9. OpenList's S3 quirks, checked


def test_openlist_uploads_carry_real_modification_times(system: System):
    """v4.1.8 stored a zero time unless the client sent one; Kopia's maintenance trusts blob times."""
    keys = system.s3().list_keys("kopia", "main/")
    assert keys, "the repository has blobs"
    years = {modified[:4] for _, modified in keys}
    assert years <= {time.strftime("%Y")}, f"blob times are not current: {sorted(years)}"
    listed = system.oracle.run("blob", "list", "--prefix=kopia.repository").stdout
    assert time.strftime("%Y-") in listed


def test_openlist_etag_is_empty_and_kopia_works_anyway(system: System):
    head = system.s3().request("HEAD", "/kopia/main/kopia.repository")
    assert head.status == 200
    assert head.headers.get("ETag", head.headers.get("Etag")) in ('""', "", None)
    # ...which Kopia tolerates: the whole suite's snapshots went through it.


def test_openlist_empty_folder_is_listed_as_a_fake_object_and_breaks_create(system: System, tmp_path: Path):
    system.docker("exec", OPENLIST, "mkdir", "-p", f"{DRIVE_IN_CONTAINER}/kopia/emptyfolder")
    listed = [key for key, _ in system.s3().list_keys("kopia", "emptyfolder/")]
    assert any("ThisIsAnEmptyFolderInTheS3Bucket" in key for key in listed), listed
    probe = dataclasses.replace(system.oracle, config_dir=tmp_path)
    created = probe.run(
        "repository",
        "create",
        "s3",
        "--bucket=kopia",
        "--prefix=emptyfolder/",
        "--endpoint=127.0.0.2:5246",
        "--disable-tls",
        check=False,
    )
    assert created.returncode != 0
    assert render.MSG_EXISTING_DATA in created.stderr
    # A prefix naming a folder that does not exist yet lists as empty: creation works there.
    fresh = probe.run(
        "repository", "create", "s3", "--bucket=kopia", "--prefix=notyet/", "--endpoint=127.0.0.2:5246", "--disable-tls"
    )
    assert fresh.returncode == 0


# ---------------------------------------------------------------- 2. restart


def test_restart_reconnects_without_a_second_repository_or_policy_changes(system: System):
    repository_id = system.oracle.repository_id()
    policies_before = system.oracle.json("policy", "list")
    restarted_at = time.time()
    system.docker("restart", OPENLIST)
    for stack in ("vps", "sakamoto"):
        system.docker("restart", KOPIA[stack])
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack])
        assert "creating it" not in system.logs(KOPIA[stack]).split("kopia-start: connecting")[-1]
    system.oracle.run("repository", "disconnect", check=False)
    system.oracle.connect()
    assert system.oracle.repository_id() == repository_id
    policies_after = system.oracle.json("policy", "list")
    key = lambda p: json.dumps(p["target"], sort_keys=True)  # noqa: E731
    assert sorted(map(key, policies_after)) == sorted(map(key, policies_before))
    system.wait_for_snapshots_since(restarted_at)


# ---------------------------------------------------------------- 11. health that tells the truth, and the heartbeat


def control(system: System, stack: str, *args: str) -> None:
    """`kopia server <args>` against the host's own server, as the server-control user, inside its container."""
    fingerprint = system.deployments[stack].outputs["kopia_tls_fingerprint"]
    script = (
        f". {render.DEPLOY_DIR}/{render.SECRETS_ENV} && KOPIA_SERVER_USERNAME=$KOPIA_SERVER_CONTROL_USER "
        "KOPIA_SERVER_PASSWORD=$KOPIA_SERVER_CONTROL_PASSWORD exec kopia server "
        f"{' '.join(args)} --address=https://127.0.0.1:51515 --server-cert-fingerprint={fingerprint}"
    )
    system.docker("exec", KOPIA[stack], "sh", "-c", script)


def run_status(system: System, *args: str) -> subprocess.CompletedProcess:
    system.engine_deployment("vps")  # skips on the adapter tier, saying why
    return system.run_status(*args)


def test_status_shows_every_source_of_every_host_from_the_operators_machine(system: System):
    system.engine_deployment("vps")  # skips on the adapter tier, saying why
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack])
        wait_for(f"a restore drill on {stack}", lambda s=stack: drill_result(s).startswith("ok "), 180, interval=5)
    result = run_status(system)
    # Kept for docs/operations.md's example (real output of a run): <cache>/logs/status-output.txt
    (infra.cache_dir() / "logs" / "status-output.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "SOURCE"]
    for source in ALL_SOURCES:
        (row,) = [line for line in lines if source in line]
        assert row.endswith("  ok"), row
    assert "[status] e2e-vps: answered" in result.stderr, "progress while it waits"
    report = json.loads(run_status(system, "--json").stdout)
    assert sorted(r["source"] for r in report["sources"]) == sorted(ALL_SOURCES)
    assert all(r["verdict"] == "ok" and r["age_seconds"] is not None for r in report["sources"])
    # The host's last restore drill, read over SSH with the stack's pinned settings.
    assert all(r["drill"].startswith("passed at ") for r in report["sources"]), report["sources"]
    # --drill: one sampled file of each source restored here through the server's API, and checked.
    drilled = run_status(system, "--drill")
    (infra.cache_dir() / "logs" / "status-drill-output.txt").write_text(drilled.stdout + drilled.stderr)
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert "RESTORED NOW" in drilled.stdout.splitlines()[0]
    for source in ALL_SOURCES:
        (row,) = [line for line in drilled.stdout.splitlines() if source in line]
        assert re.search(r"/dir\d/file\d+\.(txt|bin) \([0-9.]+ (B|KiB)\) from \S+Z: ok", row), row
    for secret in system.secret_values:
        assert secret not in result.stdout + result.stderr + drilled.stdout + drilled.stderr


def test_heartbeat_is_pinged_while_healthy(system: System):
    assert system.receiver is not None
    system.wait_healthy(KOPIA["sakamoto"])
    since = time.time()
    wait_for("two heartbeat pings", lambda: system.receiver.pings_since(since) >= 2, 60, interval=2)
    assert system.health_output(KOPIA["sakamoto"]).startswith("healthy: 2 sources backing up")


def test_a_paused_source_turns_the_host_unhealthy_stops_the_heartbeat_and_recovers(system: System):
    container, source = KOPIA["sakamoto"], "shelken@sakamoto:/backup/minio"
    system.wait_healthy(container)
    control(system, "sakamoto", "pause", "/backup/minio")  # kopia server pause takes the path
    try:
        system.wait_health(container, "unhealthy", 90)  # 3 failed checks, 10 s apart
        # Kopia 0.22.3 leaves a paused source's status at IDLE and drops its next snapshot time.
        verdict = system.health_output(container)
        assert f"{source}: paused" in verdict or f"{source}: no next snapshot scheduled (paused" in verdict, verdict
        quiet_since = time.time() + 12  # a check already running may still ping once
        time.sleep(30)
        assert system.receiver is not None and system.receiver.pings_since(quiet_since) == 0
        if system.tier == "engine":  # the operator's view: scripts/status reads the stacks from Pulumi
            result = run_status(system)
            assert result.returncode == 1, result.stdout + result.stderr
            paused_row = next(line for line in result.stdout.splitlines() if source in line)
            assert "paused" in paused_row, paused_row
    finally:
        control(system, "sakamoto", "resume", "/backup/minio")
    system.wait_health(container, "healthy", 120)
    since = time.time()
    wait_for("the heartbeat to resume", lambda: system.receiver.pings_since(since) >= 1, 60, interval=2)


def test_endpoint_stopped_while_the_server_runs_turns_hosts_unhealthy_within_the_bound_then_recovers(system: System):
    container = KOPIA["sakamoto"]
    system.wait_healthy(container)
    bound = 2 * 60 + 30  # the e2e stacks: two 60 s intervals + a 30 s margin
    system.docker("stop", OPENLIST)
    stopped = time.monotonic()
    try:
        # stale after `bound` at most since the last good snapshot, then 3 failed checks 10 s apart
        system.wait_health(container, "unhealthy", bound + 3 * 10 + 30)
        assert time.monotonic() - stopped <= bound + 3 * 10 + 30
        # Kopia's control API itself stalls while its storage is gone: either way the check names the cause.
        verdict = system.health_output(container)
        causes = ("last snapshot", "kopia server not answering", "kopia server's task list not answering")
        assert any(cause in verdict for cause in causes), verdict
        assert system.inspect(container)["State"]["Running"], "the server keeps running: only the backups fail"
    finally:
        system.docker("start", OPENLIST)
    system.wait_health(container, "healthy", 240)  # the next scheduled snapshot succeeds: healthy by itself
    since = time.time()
    assert system.receiver is not None
    wait_for("the heartbeat to resume", lambda: system.receiver.pings_since(since) >= 1, 60, interval=2)


# ---------------------------------------------------------------- 12. alerts: Kopia's notification profiles


def notification_result(stack: str) -> str:
    path = KOPIA_DATA_DIR[stack] / "state" / "notification-profiles"
    return path.read_text() if path.exists() else ""


def test_the_declared_notification_profiles_are_in_the_repository_once_with_minimum_severity_warning(system):
    for stack in ("vps", "sakamoto"):
        wait_for(f"e2e-{stack} to apply its notification profiles", lambda s=stack: notification_result(s), 120)
        assert notification_result(stack).startswith("ok "), notification_result(stack)
        assert "notification profiles: saved:" in system.logs(KOPIA[stack])
    assert system.oracle is not None
    profiles = system.oracle.json("notification", "profile", "list")
    assert sorted(p["profile"] for p in profiles) == ["homelab-alerts", "homelab-mail"]
    assert {p["minSeverity"] for p in profiles} == {10}  # warning, not Kopia's default (every report)
    # Applied at every start, idempotently: a restart finds them byte for byte and saves nothing.
    first = notification_result("vps")
    system.docker("restart", KOPIA["vps"])
    again = wait_for("the restarted e2e-vps to apply them", lambda: notification_result("vps") not in ("", first), 180)
    again = notification_result("vps")
    # vps is not the maintenance owner: the shared profiles' deletions are sakamoto's (docs/decisions.md).
    assert again.split(" ", 3)[3].strip() == (
        "saved: none; unchanged: homelab-alerts homelab-mail; deleted: none (left to shelken@sakamoto)"
    )
    assert len(system.oracle.json("notification", "profile", "list")) == 2


def test_a_failing_snapshot_alerts_by_webhook_and_mail_naming_host_and_source_a_good_one_does_not(system):
    """The bucket folder made read-only for OpenList (a drive that refuses writes): the next scheduled
    snapshots of sakamoto fail, and Kopia's server sends its report at severity error to both profiles."""
    assert system.receiver is not None and system.mail is not None
    container = KOPIA["sakamoto"]
    system.wait_healthy(container)
    writable = REPOSITORY_ON_HOST
    mode = writable.stat().st_mode & 0o7777
    since = time.time()
    writable.chmod(0o555)  # OpenList runs as an unprivileged user: its uploads now fail
    try:

        def alerted() -> list:
            return [a for a in system.receiver.alerts_since(since) if "sakamoto" in a.headers.get("Subject", "")]

        (alert, *_) = wait_for("a webhook alert from sakamoto", alerted, 300, interval=3)
        say(f"alert after {alert.at - since:.0f}s: {alert.headers.get('Subject')!r}")
        assert "/backup/minio" in alert.body or "/backup/compose" in alert.body, alert.body
        assert "Error" in alert.body or "error" in alert.body.lower(), alert.body

        # The health check reads the failed attempt from the server's task list: unhealthy at the next three
        # checks (10 s apart), long before the last good snapshot goes stale (150 s).
        failed_at = time.monotonic()
        system.wait_health(container, "unhealthy", 90)
        verdict = system.health_output(container)
        assert "last snapshot attempt failed at" in verdict, verdict
        say(f"unhealthy {time.monotonic() - failed_at:.0f}s after the alert: {verdict.splitlines()[0][:160]}")

        def mailed() -> list:
            return [m for m in system.mail.mail_since(since) if "sakamoto" in m.headers.get("Subject", "")]

        (mail, *_) = wait_for("a mail alert from sakamoto", mailed, 60, interval=2)
        assert "/backup/minio" in mail.body or "/backup/compose" in mail.body, mail.body
        assert mail.path == "operator@homelab.test"
    finally:
        writable.chmod(mode)
    # Recovered: once snapshots succeed again, successful reports stay below "warning": no message.
    # (vps writes to the same bucket, so its snapshots failed too.)
    system.wait_health(container, "healthy", 300)
    system.wait_healthy(KOPIA["vps"], 300)
    quiet_since = time.time() + 5  # a report already on its way may still arrive
    assert system.oracle is not None
    before = {source_name(s) for s in system.oracle.snapshots() if source_name(s).startswith("shelken@sakamoto")}
    done = len(system.oracle.snapshots())

    def more_snapshots() -> bool:
        return len(system.oracle.snapshots()) >= done + len(before)

    wait_for("another round of successful snapshots", more_snapshots, 180, interval=5)
    time.sleep(10)
    assert system.receiver.alerts_since(quiet_since) == [], "a successful snapshot sends nothing at 'warning'"
    assert system.mail.mail_since(quiet_since) == []


# ---------------------------------------------------------------- 6. config change


def test_policy_change_is_applied_by_pulumi_up_alone(system: System):
    before = {s: system.inspect(KOPIA[s])["Id"] for s in ("vps", "sakamoto")}
    policy = dict(_policy(system))
    policy["retention"] = {"keepHourly": 12, "keepDaily": 5}
    for stack in ("vps", "sakamoto"):
        system.up(stack, **{"homelab-backup:policy": policy})
    for stack in ("vps", "sakamoto"):
        assert system.inspect(KOPIA[stack])["Id"] != before[stack], "the container was replaced"
        system.wait_healthy(KOPIA[stack])
    for source in ALL_SOURCES:
        shown = system.oracle.json("policy", "show", source)
        assert shown["retention"]["keepHourly"] == 12
        assert shown["retention"]["keepDaily"] == 5
    for stack in ("vps", "sakamoto"):  # the declared policy again: the next tests start from the stack files
        system.up(stack)
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack])


def _policy(system: System) -> dict:
    return stack_config("e2e-vps")["homelab-backup:policy"]


# ---------------------------------------------------------------- 10. the engine: drift, repair, state
# These run only on the engine tier: the adapter has no state, refresh or preview to test.


def config_file(stack: str, name: str) -> Path:
    return CONFIG_DIR[stack] / name


def test_engine_refresh_sees_no_drift_after_a_clean_deploy_nor_while_a_host_waits(system: System):
    system.engine_deployment("vps")
    assert system.drift_while_waiting == "", (
        f"drift while e2e-vps waited for the repository: {system.drift_while_waiting}"
    )
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack])
        # `pulumi refresh --preview-only --expect-no-changes`: non-zero (an exception here) on any drift.
        system.deployments[stack].preview_refresh(expect_no_changes=True)


def test_engine_config_file_deleted_or_edited_on_the_host_is_seen_and_repaired_by_up(system: System):
    deployment = system.engine_deployment("vps")
    policy, cert = config_file("vps", render.POLICY_JSON), config_file("vps", render.TLS_CERT)
    expected = {policy: policy.read_bytes(), cert: cert.read_bytes()}
    container_before = system.inspect(KOPIA["vps"])["Id"]
    cert.unlink()
    policy.write_text(policy.read_text().replace('"keepDaily": 7', '"keepDaily": 1'))
    with pytest.raises(infra.E2EError) as drift:
        deployment.preview_refresh(expect_no_changes=True)
    assert "kopia-config-tls-crt" in str(drift.value) and "kopia-config-policy-json" in str(drift.value)
    # The runbook's drift procedure (docs/operations.md): `pulumi up` (Pulumi.yaml sets `refresh: always`).
    system.up("vps")
    for path, content in expected.items():
        assert path.read_bytes() == content, f"{path} not repaired"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert system.inspect(KOPIA["vps"])["Id"] == container_before, "same files again: no restart needed"
    deployment.preview_refresh(expect_no_changes=True)


def test_engine_replacing_a_file_resource_keeps_the_file(system: System):
    deployment = system.engine_deployment("sakamoto")
    path = config_file("sakamoto", render.SECRETS_ENV)
    content = path.read_bytes()
    urn = deployment.urn("homelab:RemoteFile", "kopia-config-secrets-env")
    result = deployment.up(system.overrides("sakamoto"), system.secrets, replace=[urn])
    assert result.summary.resource_changes.get("replace") == 1, result.summary.resource_changes
    assert path.read_bytes() == content, "the replacement left the file missing or changed"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    deployment.preview_refresh(expect_no_changes=True)


@pytest.mark.parametrize("how", ["removed", "stopped"])
def test_engine_container_removed_or_stopped_by_hand_is_seen_and_restored_by_up(system: System, how: str):
    deployment = system.engine_deployment("sakamoto")
    container = KOPIA["sakamoto"]
    system.docker("rm" if how == "removed" else "stop", *(["-f"] if how == "removed" else []), container)
    with pytest.raises(infra.E2EError) as drift:
        deployment.preview_refresh(expect_no_changes=True)
    assert "kopia-container" in str(drift.value)
    system.up("sakamoto")  # the runbook's drift procedure, as written
    system.wait_healthy(container)
    deployment.preview_refresh(expect_no_changes=True)


def test_engine_policy_change_preview_shows_which_values_and_labels_change(system: System):
    deployment = system.engine_deployment("vps")
    policy = {**_policy(system), "retention": {"keepHourly": 6, "keepDaily": 7}}
    overrides = system.overrides("vps", **{"homelab-backup:policy": policy})
    try:
        preview = deployment.preview(overrides, system.secrets, diff=True)
    finally:
        # as it was: the next test's baseline
        deployment.set_config(system.overrides("vps", **{"homelab-backup:policy": _policy(system)}), system.secrets)
    text = preview.stdout
    # policy.json's change, value by value (the file is plain; secret files would show [secret])
    assert re.search(r"keepHourly: \d+ => 6", text), text
    # the container is replaced because one plain label changed, and the preview says which
    assert "docker:index/container:Container: (replace)" in text and "~ labels: [" in text, text
    digests = re.findall(r'label\s*: "homelab-backup.config-sha256"\n\s+[-+] value\s*: "[0-9a-f]{64}"', text)
    assert len(digests) == 2, text
    assert "labels: [secret]" not in text
    for secret in system.secret_values:
        assert secret not in text


def _what_is_deployed(system: System, deployment: engine.EngineDeployment) -> dict[str, Any]:
    """The resources in the state, the containers on the host, and the config files' bytes. (Not the
    resources' inputs: `refresh: always` rewrites them from what it reads back.)"""
    return {
        "resources": [r["urn"] for r in deployment.resources()],
        "containers": {name: system.inspect(name)["Id"] for name in (KOPIA["vps"], OPENLIST)},
        "files": tree_digest(CONFIG_DIR["vps"]),
    }


def test_engine_bad_input_stops_up_before_any_resource_with_one_message(system: System):
    """`pulumi up` (the Automation API skips the preview): bad config, then a secret stored in plain text.
    Each stops the run with one message naming every problem's key, no traceback, and nothing changes."""
    deployment = system.engine_deployment("vps")
    before = _what_is_deployed(system, deployment)
    host = system.overrides("vps")["homelab-backup:host"]
    unknown = "homelab-backup:kopiaa"  # a misspelled top-level key
    plain_secrets = {k: v for k, v in system.secrets.items() if k != "repoPassword"}
    try:
        every_interface = "0.0.0.0"  # noqa: S104 (refused without the opt-in: that is the point)
        bad_config = {"homelab-backup:host": {**host, "deployAddress": every_interface}, unknown: {"x": 1}}
        with pytest.raises(infra.E2EError) as config_failed:
            deployment.up(system.overrides("vps", **bad_config), system.secrets)
        deployment.workspace_stack().remove_config(unknown)  # `config set` keeps it: only one problem next
        with pytest.raises(infra.E2EError) as secret_failed:  # `config set` without --secret
            deployment.up(system.overrides("vps", **{"homelab-backup:repoPassword": "plain-pw"}), plain_secrets)
    finally:
        with contextlib.suppress(Exception):  # already gone when the first up failed as it should
            deployment.workspace_stack().remove_config(unknown)
        deployment.set_config(system.overrides("vps"), system.secrets)
    config_message = str(config_failed.value)
    assert "invalid stack config (2 problems)" in config_message, config_message
    assert "homelab-backup:host.deployAddress" in config_message and unknown in config_message
    secret_message = str(secret_failed.value)
    assert "homelab-backup:kopia.secrets.repositoryPassword" in secret_message, secret_message
    assert "pulumi config set --secret repoPassword" in secret_message
    for message in (config_message, secret_message):
        assert "Traceback" not in message
        assert "plain-pw" not in message
        assert not [s for s in system.secret_values if s in message]
    assert _what_is_deployed(system, deployment) == before, "nothing was declared, so nothing changed"


def test_engine_state_holds_no_secret_in_plain_text(system: System):
    for stack in ("vps", "sakamoto"):
        state = system.engine_deployment(stack).state_at_rest()
        for secret in system.secret_values:
            assert secret not in state, f"a secret of e2e-{stack} is in plain text in the state"
        assert '"ciphertext"' in state, "secrets are kept, encrypted"


# ---------------------------------------------------------------- 11. OpenList configured by `pulumi up`


def _openlist_started(system: System) -> tuple[str, str]:
    state = system.inspect(OPENLIST)
    return state["Id"], state["State"]["StartedAt"]


def _storage(admin) -> dict:
    return admin.storage(DRIVE_MOUNT)


def test_openlist_holds_the_declared_settings_with_no_step_by_hand(system: System):
    """The deploy ran `pulumi up` twice and nothing else: admin password, storage, bucket folder, S3 keys."""
    admin = system.openlist_admin()  # the declared password logs in
    storage = _storage(admin)
    assert (storage["driver"], storage["status"], storage["web_proxy"]) == ("Local", "work", True)
    assert json.loads(storage["addition"])["root_folder_path"] == DRIVE_IN_CONTAINER
    rows = admin.s3_rows()
    assert rows["s3_access_key_id"]["value"] == system.secrets["s3AccessKeyId"]
    assert rows["s3_buckets"]["value"] == '[{"name":"kopia","path":"/189/kopia"}]'
    assert {rows[k]["flag"] for k in ("s3_access_key_id", "s3_secret_access_key", "s3_buckets")} == {1}
    assert BUCKET_ON_HOST.is_dir()
    # The keys are in force (read at start: the program restarted OpenList after saving them).
    status, body = infra.s3_anonymous_get(f"http://{ADDRESS['vps']}:5246/kopia/")
    assert status == 403, body


def test_the_public_settings_show_no_key_token_or_password(system: System):
    """`/api/public/settings` answers without login: every secret row must be private."""
    public = infra.OpenListAdmin(f"http://{ADDRESS['vps']}:5244").public_settings()
    assert json.loads(public)["code"] == 200
    for value in system.secret_values:
        assert value not in public, "a secret is readable without login"
    for key in ("s3_access_key_id", "s3_secret_access_key", "s3_buckets", "token"):
        assert f'"{key}"' not in public


def test_a_second_up_changes_nothing_and_restarts_no_openlist(system: System):
    before = _openlist_started(system)
    modified = _storage(system.openlist_admin())["modified"]
    system.up("vps")
    assert _openlist_started(system) == before, "an unchanged config restarted OpenList"
    assert _storage(system.openlist_admin())["modified"] == modified, "an unchanged config rewrote the storage"
    if system.tier == "engine":
        system.deployments["vps"].preview_refresh(expect_no_changes=True)


def test_engine_storage_edited_in_the_ui_is_seen_on_refresh_and_put_back_by_up(system: System):
    deployment = system.engine_deployment("vps")
    admin = system.openlist_admin()
    storage = _storage(admin)
    edited = {k: v for k, v in storage.items() if k != "mount_details"}
    admin._request("POST", "/api/admin/storage/update", {**edited, "web_proxy": False, "cache_expiration": 5})
    rows = admin.s3_rows()
    admin._request("POST", "/api/admin/setting/save", [{**rows["s3_buckets"], "flag": 0}])  # made public
    before = _openlist_started(system)
    with pytest.raises(infra.E2EError) as drift:
        deployment.preview_refresh(expect_no_changes=True)
    assert "openlist-settings" in str(drift.value)
    for value in system.secret_values:
        assert value not in str(drift.value)
    system.up("vps")  # the runbook's drift procedure
    admin = system.openlist_admin()
    storage = _storage(admin)
    assert (storage["web_proxy"], storage["cache_expiration"]) == (True, 30)
    assert admin.s3_rows()["s3_buckets"]["flag"] == 1
    # Only the bucket row's flag was put back: the S3 port enforced the keys all along (the bucket map is read
    # per request), so nothing needed a restart.
    assert _openlist_started(system) == before, "the keys were in force: OpenList was restarted for nothing"
    deployment.preview_refresh(expect_no_changes=True)


def test_a_failed_admin_call_fails_the_up_with_openlists_message_and_the_setting(system: System):
    openlist = _declared_openlist()
    storage = {**openlist["storage"], "fields": {"root_folder_path": "/opt/openlist/data/no-such-drive"}}
    with pytest.raises(Exception) as failed:
        system.up("vps", **{"homelab-backup:openlist": {**openlist, "storage": storage}})
    message = str(failed.value)
    assert "updating storage /189 (Local)" in message, message
    assert "root folder /opt/openlist/data/no-such-drive not exists" in message, message  # OpenList's words
    for value in system.secret_values:
        assert value not in message
    system.up("vps")  # the declared drive again: refresh sees the broken storage, up repairs it
    assert _storage(system.openlist_admin())["status"] == "work"
    system.wait_healthy(KOPIA["vps"], timeout=300)


def _declared_openlist() -> dict:
    from testbed.mocks import stack_config

    return stack_config("e2e-vps")["homelab-backup:openlist"]


# ---------------------------------------------------------------- 3. wrong repository password


def test_wrong_password_fails_loudly_and_changes_nothing(system: System):
    repository_id = system.oracle.repository_id()
    snapshots_before = len(system.oracle.snapshots())
    blobs_before = system.oracle.run("blob", "list", "--prefix=kopia.").stdout
    system.up("sakamoto", secrets_override={"repoPassword": "definitely-wrong-password"})
    container = KOPIA["sakamoto"]

    def restarting_with_failure() -> bool:
        state = system.inspect(container)["State"]
        return state["ExitCode"] == 1 and system.inspect(container)["RestartCount"] >= 2

    wait_for("the container to exit 1 and be restarted by Docker", restarting_with_failure, 180, interval=3)
    quiet_since = time.time() + 12  # a check that ran before the first failed start may still ping once
    for _ in range(5):  # no server ever answers, however often it restarts
        assert not server_answers(ADDRESS["sakamoto"])
        time.sleep(1)
    time.sleep(15)
    assert system.receiver is not None
    assert system.receiver.pings_since(quiet_since) == 0, "a crash-looping host must not ping its heartbeat"
    if system.tier == "engine":  # the operator's view: one host down does not hide the other
        result = run_status(system)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "e2e-sakamoto" in result.stdout and "UNREACHABLE" in result.stdout
        assert "shelken@vps:/backup/data" in result.stdout
    lines = fatal_lines(system.logs(container))
    assert lines and all("invalid repository password" in line for line in lines)
    starts = system.logs(container).split("kopia-start: connecting")[1:][-3:]
    finished = starts[:-1]  # the last start may still be running
    assert len(finished) >= 2
    for start in finished:
        assert len(fatal_lines(start)) == 1, f"one clear line per failed start: {start}"
    for start in starts:
        assert "creating it" not in start and "created the repository" not in start
    assert system.oracle.repository_id() == repository_id
    assert system.oracle.run("blob", "list", "--prefix=kopia.").stdout == blobs_before
    assert len(system.oracle.snapshots()) >= snapshots_before
    system.up("sakamoto")  # the right password again
    system.wait_healthy(container)
    assert server_answers(ADDRESS["sakamoto"]), "the probe itself sees a running server"


# ---------------------------------------------------------------- 4. S3 endpoint down at start


def test_endpoint_down_at_start_fails_loudly_then_recovers_by_itself(system: System):
    container = KOPIA["vps"]
    system.docker("stop", OPENLIST)
    try:
        system.docker("restart", container)
        restarts_before = system.inspect(container)["RestartCount"]  # `docker restart` does not count

        def failing() -> bool:
            return bool(fatal_lines(system.logs(container).split("kopia-start: connecting")[-1]))

        def exited_by_itself() -> bool:
            # Exited 1, waiting to restart, or already restarted by the policy (a new start resets ExitCode).
            inspected = system.inspect(container)
            state = inspected["State"]
            return state["ExitCode"] == 1 or state["Restarting"] or inspected["RestartCount"] > restarts_before

        wait_for("the start to fail while OpenList is down", failing, 120, interval=2)
        wait_for("the failed start to end the container", exited_by_itself, 30, interval=0.5)
        assert not server_answers(ADDRESS["vps"])
        line = fatal_lines(system.logs(container))[-1]
        assert "cannot connect to the repository" in line
    finally:
        system.docker("start", OPENLIST)
    system.wait_healthy(container, timeout=300)  # Docker's restart policy brings it back, no one else
    assert server_answers(ADDRESS["vps"])
    assert "creating it" not in system.logs(container)


def snapshot_key(snapshot: dict) -> tuple[str, str, str]:
    """What tells a snapshot apart for as long as it exists (its ID changes when a pin rewrites its manifest)."""
    return source_name(snapshot), snapshot["startTime"], snapshot["rootEntry"]["obj"]


def system_repository_prefix() -> str:
    return project_config("repository")["prefix"].rstrip("/")


# -------------------------------------------------------- 4b. a rebuilt owner behind a gateway that answers empty


def test_a_rebuilt_owner_behind_an_empty_gateway_creates_nothing_fails_loudly_and_reconnects_once_it_is_back(
    system: System,
):
    """Issue 18.1. sakamoto rebuilt (no container, no kopiaDataDir: no `repository-seen` marker) while its gateway
    answers "empty" for the same prefix (the drive's storage disabled in OpenList, as a failing 189 login does):
    `pulumi up` creates nothing, the owner's Kopia stops with the FATAL line that names what to check, no server
    runs, no heartbeat. Once the storage is back, the old repository connects by itself and verifies."""
    container = KOPIA["sakamoto"]
    format_blob = REPOSITORY_ON_HOST / "kopia.repository"

    def format_blob_now() -> tuple[int, str]:
        return format_blob.stat().st_mtime_ns, hashlib.sha256(format_blob.read_bytes()).hexdigest()

    before = format_blob_now()
    system.renew_oracle()  # connected here: the test may run alone
    repository_id = system.oracle.repository_id()
    sources = system.deployments["sakamoto"].outputs["backup_sources"]
    wait_for(
        "a snapshot of each of sakamoto's sources",
        lambda: all(system.oracle.snapshots_of(source) for source in sources),
        240,
        interval=10,
    )
    old_ids = sorted(s["id"] for source in sources for s in system.oracle.snapshots_of(source))
    # The retention policy (keepLatest 10, with a snapshot a minute here) expires old snapshots as the reconnected
    # host takes new ones; pinned, they stay, so the check below asks whether the rebuild lost any, not retention.
    # A pin rewrites the snapshot's manifest (a new ID): a snapshot is told by its source, start and root.
    system.oracle.run("snapshot", "pin", "--add=rebuild-check", *old_ids)
    sakamoto_snapshots = {snapshot_key(s) for source in sources for s in system.oracle.snapshots_of(source)}
    assert len(sakamoto_snapshots) == len(old_ids)
    prefix = f"{system_repository_prefix()}/"
    system.docker("rm", "-f", container)  # the rebuilt host: no container, and a new disk for Kopia's dir
    quiet_since = time.time() + 2  # the last ping of the removed container, if one was on its way
    shutil.rmtree(KOPIA_DATA_DIR["sakamoto"])
    admin = system.openlist_admin()
    admin.disable_storage(DRIVE_MOUNT)
    try:
        # Both answers Kopia could get say "empty": the format blob is not found, the prefix lists nothing.
        assert system.s3().request("HEAD", f"/kopia/{prefix}kopia.repository").status == 404
        assert system.s3().list_keys("kopia", prefix) == []
        system.up("sakamoto")  # a plain deploy of the rebuilt host, as the README gives it: no kopia.createRepository

        def failing_loudly() -> bool:
            state = system.inspect(container)
            return bool(fatal_lines(system.logs(container))) and state["RestartCount"] >= 1

        wait_for("the rebuilt owner's Kopia to stop with its FATAL line", failing_loudly, 180, interval=3)
        assert system.health(container) != "healthy"
        assert not server_answers(ADDRESS["sakamoto"])
        time.sleep(15)  # several health check intervals of e2e-sakamoto
        assert system.receiver is not None
        assert system.receiver.pings_since(quiet_since) == 0, "a host that cannot start must not ping its heartbeat"
        if system.tier == "engine":  # the operator's view
            result = run_status(system)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "e2e-sakamoto" in result.stdout and "UNREACHABLE" in result.stdout
        log = system.logs(container)
        lines = fatal_lines(log)
        assert lines and all("kopia.createRepository is not set: nothing was created" in line for line in lines), lines
        for what_to_check in ("the 189 login", "the folder the storage points at", "the openlist container's logs"):
            assert what_to_check in lines[-1]
        assert "creating it" not in log and "created the repository" not in log
        assert not (KOPIA_DATA_DIR["sakamoto"] / "state" / "repository-seen").exists()
    finally:
        admin.enable_storage(DRIVE_MOUNT)  # the gateway put back (the 189 login fixed)
    assert format_blob_now() == before, "kopia.repository was written while the gateway answered empty"
    system.wait_healthy(container, timeout=300)  # Docker's restart policy brings it back; no one else
    log = system.logs(container)
    assert "kopia-start: connected" in log and "creating it" not in log
    assert format_blob_now() == before
    system.oracle.run("repository", "disconnect", check=False)
    system.oracle.connect()
    assert system.oracle.repository_id() == repository_id, "the same repository, not a new one"
    now_listed = {snapshot_key(s): s["id"] for s in system.oracle.snapshots()}
    assert sakamoto_snapshots <= now_listed.keys(), "the old snapshots are all there"
    system.oracle.run("snapshot", "pin", "--remove=rebuild-check", *(now_listed[k] for k in sakamoto_snapshots))
    flags = " ".join(f"--sources={source}" for source in sources)
    verified = system.kopia("sakamoto", f"snapshot verify --verify-files-percent=100 {flags}", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    system.wait_healthy(KOPIA["vps"], timeout=300)  # its snapshots failed while the drive was away


def drill_result(stack: str) -> str:
    path = KOPIA_DATA_DIR[stack] / "state" / "restore-drill"
    return path.read_text() if path.exists() else ""


def test_the_restore_drill_passes_and_the_health_check_shows_it(system: System):
    for stack in ("vps", "sakamoto"):
        wait_for(f"a restore drill on {stack}", lambda s=stack: drill_result(s).startswith("ok "), 180, interval=5)
        wait_for(
            f"{stack}'s health check to report the drill",
            lambda s=stack: "restore drill passed at" in system.health_output(KOPIA[s]),
            60,
            interval=3,
        )
        assert system.health(KOPIA[stack]) == "healthy"


def test_a_missing_blob_fails_the_restore_drill_and_turns_the_host_unhealthy(system: System):
    """Run last before destroy: it damages the repository. Kopia's verify checks every content's pack
    blob against the storage's listing, so a deleted pack fails the drill whatever the local cache holds."""
    bucket = REPOSITORY_ON_HOST
    packs = sorted(bucket.glob("p*"))
    assert packs, f"no pack blobs under {bucket}"
    for pack in packs:
        pack.unlink()
    container = KOPIA["vps"]
    wait_for("a failed restore drill on vps", lambda: drill_result("vps").startswith("failed "), 180, interval=5)
    system.wait_health(container, "unhealthy", 90)
    verdict = system.health_output(container)
    assert "restore drill failed at " in verdict, verdict


def test_destroy_removes_what_the_stacks_declared_and_keeps_the_data(system: System):
    config_files = [path for config_dir in CONFIG_DIR.values() for path in config_dir.iterdir()]
    declared = stack_config("e2e-vps")["homelab-backup:notifications"]
    profiles = [render.notification_file(p["name"]) for p in declared]
    fixed = [render.REPOSITORY_CONFIG, render.STORAGE_TOKEN, render.POLICY_JSON, render.SECRETS_ENV]
    per_host = sorted([*fixed, render.TLS_CERT, render.TLS_KEY, *profiles])
    assert sorted(p.name for p in config_files) == sorted(per_host * len(CONFIG_DIR))
    system.destroy_stacks()
    for container in (*KOPIA.values(), OPENLIST):
        assert infra.docker("inspect", container, check=False).returncode != 0, f"{container} still exists"
    assert infra.docker("network", "inspect", "hle2e-homelab", check=False).returncode != 0
    assert [path for path in config_files if path.exists()] == []
    assert not CONFIG_DIR["vps"].exists(), "the emptied config dir goes too"
    # What is not Pulumi's to delete stays: OpenList's database, Kopia's cache, the backed-up data.
    assert (OPENLIST_DATA_ON_HOST / "data.db").exists()
    assert (KOPIA_DATA_DIR["sakamoto"] / "cache").exists()
    assert tree_digest(SOURCES["vps"]["/backup/data"])


def test_logs_name_what_to_do(system: System):
    """Failures point at the next step (docs/operations.md, "When Kopia does not start", has the same lines)."""
    readme = (ROOT / "docs" / "operations.md").read_text()
    phrases = (
        "invalid repository password",
        "only shelken@sakamoto creates it",
        "refusing to create",
        "kopia.createRepository is not set: nothing was created",
        render.create_repository_command("sakamoto"),
    )
    for phrase in phrases:
        assert phrase in readme
    assert re.search(r"kopia-start: FATAL", readme)


def test_first_deploy_in_the_other_order_converges(system: System):
    """`pulumi up --stack sakamoto` before the VPS and its OpenList exist: it succeeds, sakamoto's Kopia fails
    loudly until its endpoint answers, then creates the repository by itself once the VPS is up."""
    system.destroy_stacks()  # idempotent: the destroy test above already removed both stacks
    system.deploy_in_reverse_order()
    wait_for("the repository to exist", lambda: system.oracle.connect().returncode == 0, 300, interval=5)
    for stack in ("vps", "sakamoto"):
        system.wait_healthy(KOPIA[stack], timeout=300)
    sakamoto_log = system.creation_log  # the start that created it; the deploy then took the request back
    assert "cannot connect to the repository" in sakamoto_log, "it failed loudly while its endpoint was missing"
    assert "creating it as shelken@sakamoto" in sakamoto_log
    assert "creating it" not in system.logs(KOPIA["vps"])
    wait_for(
        "scheduled snapshots of all three sources",
        lambda: set(ALL_SOURCES) <= snapshot_sources(system),
        300,
        interval=10,
    )
    system.destroy_stacks()
