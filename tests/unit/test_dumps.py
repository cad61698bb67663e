"""Database dumps (issue 19): the config and its refusals, what the program declares, the dump script run for
real under `sh` against fake clients, and the one rule on their results (health check and scripts/status)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pulumi
import pytest

from components import dumps, render
from components.config import DUMPS_DIR, ConfigError, Dump, load_namespace
from scripts import status
from testbed.mocks import RecordingMocks, run_program, stack_config, unwrap_all
from tests.kopia_answers import NOW, answer, source_status
from tests.shell_lint import assert_posix_sh_and_shellcheck_clean
from tests.unit.conftest import AZURE_TOKEN, run_committed_stack
from tests.unit.test_healthcheck import SOURCES, env_dirs, params_for  # noqa: F401 (env_dirs: a fixture)

CONTAINER = "docker:index/container:Container"
REMOTE_FILE = "pulumi-python:dynamic/homelab:RemoteFile"
DB_PASSWORD = "db-pass:with\\colon-Tq8"
COMPOSE = "/opt/docker-data"  # sakamoto's compose source, as its stack file's example says


def sakamoto_with(*source_dumps: dict) -> dict:
    """sakamoto's `kopia` key with `source_dumps` declared on its compose source."""
    kopia = stack_config("sakamoto")["homelab-backup:kopia"]
    sources = [
        {**source, "dumps": list(source_dumps)} if source["path"] == "/backup/compose" else source
        for source in kopia["sources"]
    ]
    return {"homelab-backup:kopia": {**kopia, "sources": sources}}


POSTGRES = {
    "name": "immich",
    "postgres": {"container": "immich-db", "database": "immich", "user": "app", "password": "config:immichDb"},
}
SQLITE = {"name": "vault", "sqlite": {"file": f"{COMPOSE}/vault/db.sqlite3", "image": "keinos/sqlite3:3.47.2"}}


# `docker inspect --type container --format ... <name>` as the Docker CLI answers it (28.2 and 20.10 alike): the
# formatted line for a container it finds; for one it does not, an EMPTY line on stdout, the error on stderr, exit 1.
FAKE_DOCKER = """#!/bin/sh
for name; do :; done
line=$(sed -n "s/^$name=//p" "$FAKE_CONTAINERS")
if [ -z "$line" ]; then echo; echo "Error response from daemon: No such container: $name" >&2; exit 1; fi
echo "$line"
"""


def fake_host(monkeypatch, containers: dict[str, str], tmp_dir: Path | None = None) -> list[str]:
    """The host of `dumps.inspect_containers`: its script runs under sh here, against a stand-in `docker` that answers
    `docker inspect` as the real CLI does (FAKE_DOCKER); `containers`: name -> the formatted line."""
    asked: list[str] = []
    bin_dir = Path(tempfile.mkdtemp(prefix="fake-docker-", dir=tmp_dir))
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (bin_dir / "containers").write_text("".join(f"{name}={line}\n" for name, line in containers.items()))

    def run_on_host(_ssh, script, _what, stdin=None):
        asked.append(script)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_CONTAINERS": str(bin_dir / "containers")}
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout

    monkeypatch.setattr(dumps, "run_on_host", run_on_host)
    return asked


def run_sakamoto(key_vault, *source_dumps: dict):
    return run_committed_stack("sakamoto", key_vault, secrets={"immichDb": DB_PASSWORD}, **sakamoto_with(*source_dumps))


# ---------------------------------------------------------------- config


def config_problems(*source_dumps: dict, schedule: int | None = None) -> list[tuple[str, str]]:
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in stack_config("sakamoto").items()}
    values.update({k: json.dumps(v) for k, v in sakamoto_with(*source_dumps).items()})
    if schedule is not None:
        values["homelab-backup:schedule"] = json.dumps({"intervalSeconds": schedule})
    values["homelab-backup:immichDb"] = "x"
    try:
        load_namespace(values, stack="sakamoto", secret_keys={"homelab-backup:immichDb"})
    except ConfigError as error:
        return error.problems
    return []


def test_a_dump_of_each_kind_is_accepted():
    assert config_problems(POSTGRES, SQLITE) == []


@pytest.mark.parametrize(
    ("dump", "key", "words"),
    [
        ({"name": "x"}, "dumps[0]", "exactly one of postgres, sqlite or minio"),
        ({**POSTGRES, "sqlite": SQLITE["sqlite"]}, "dumps[0]", "exactly one of postgres, sqlite or minio"),
        ({**SQLITE, "sqlite": {**SQLITE["sqlite"], "file": "/srv/other/db.sqlite3"}}, "dumps[0].sqlite.file",
         "outside this source"),
        ({**SQLITE, "sqlite": {**SQLITE["sqlite"], "file": f"{COMPOSE}/{DUMPS_DIR}/x.sqlite"}},
         "dumps[0].sqlite.file", "where the dumps are written"),
        ({**POSTGRES, "postgres": {**POSTGRES["postgres"], "password": "hunter2"}}, "dumps[0].postgres.password",
         "must be a secret reference"),
        ({**POSTGRES, "postgres": {**POSTGRES["postgres"], "user": "app; rm -rf /"}}, "dumps[0].postgres.user",
         "should match pattern"),
        ({**POSTGRES, "leadSeconds": 3600}, "dumps[0].leadSeconds", "not shorter than schedule.intervalSeconds"),
        ({**SQLITE, "sqlite": {**SQLITE["sqlite"], "image": "keinos/sqlite3:latest"}}, "dumps[0].sqlite.image",
         "':latest'"),
    ],
)  # fmt: skip
def test_a_misdeclared_dump_is_refused_naming_its_key(dump, key, words):
    problems = config_problems(dump)
    assert [k for k, _ in problems] == [f"homelab-backup:kopia.sources[1].{key}"], problems
    assert words in problems[0][1]


def test_two_dumps_of_one_name_are_refused():
    problems = config_problems(POSTGRES, {**SQLITE, "name": "immich"})
    assert problems == [
        ("homelab-backup:kopia.sources[1].dumps[1].name", "'immich' is also kopia.sources[1].dumps[0].name: give each"
         " dump its own name")
    ]  # fmt: skip


# ---------------------------------------------------------------- refused before any resource


def refused_run(key_vault, *source_dumps: dict) -> str:
    mocks = RecordingMocks({"azure-native:authorization:getClientToken": {"token": AZURE_TOKEN}})
    overrides = {"homelab-backup:keyVault": {"urlTemplate": key_vault.url_template}, **sakamoto_with(*source_dumps)}
    with pytest.raises(pulumi.RunError) as error:
        run_program("sakamoto", overrides=overrides, secrets={"immichDb": DB_PASSWORD}, mocks=mocks)
    assert mocks.resources == [], f"declared before failing: {[r.name for r in mocks.resources]}"
    assert DB_PASSWORD not in str(error.value)
    return str(error.value)


def test_an_unknown_database_container_is_refused_before_any_resource(key_vault, monkeypatch):
    asked = fake_host(monkeypatch, {})
    message = refused_run(key_vault, POSTGRES)
    assert "homelab-backup:kopia.sources[1].dumps[0].postgres.container: no container 'immich-db' on host" in message
    assert "docker inspect" in asked[0]


def test_a_container_on_several_networks_needs_the_network_named(key_vault, monkeypatch):
    fake_host(monkeypatch, {"immich-db": "postgres:16 front immich_default"})
    message = refused_run(key_vault, POSTGRES)
    assert "homelab-backup:kopia.sources[1].dumps[0].postgres.network: is required" in message
    named = {**POSTGRES, "postgres": {**POSTGRES["postgres"], "network": "elsewhere"}}
    message = refused_run(key_vault, named)
    assert "is not on network 'elsewhere' (it is on: front, immich_default)" in message


def test_a_host_that_ssh_cannot_reach_stops_the_run_in_one_line(key_vault, monkeypatch):
    from components.host_files import RemoteError

    def unreachable(*_args, **_kwargs):
        raise RemoteError("looking up the database containers failed on shelken@sakamoto.lan (exit 255): timeout")

    monkeypatch.setattr(dumps, "run_on_host", unreachable)
    assert "looking up the database containers failed" in refused_run(key_vault, POSTGRES)


# ---------------------------------------------------------------- what the program declares


def test_a_postgres_dump_runs_from_the_databases_own_image_on_its_network(key_vault, monkeypatch):
    fake_host(monkeypatch, {"immich-db": "postgres:16.4 immich_default"})
    run = run_sakamoto(key_vault, POSTGRES)
    container = run.one(CONTAINER, "dump-immich-container")
    spec = unwrap_all(container.inputs)
    assert spec["name"] == "kopia-dump-immich"
    images = {r.outputs["imageId"]: r.inputs["name"] for r in run.by_type("docker:index/remoteImage:RemoteImage")}
    assert images[spec["image"]] == "postgres:16.4"
    assert spec["networksAdvanced"] == [{"name": "immich_default"}]
    assert spec["restart"] == "always"
    volumes = {v["containerPath"]: (v["hostPath"], v.get("readOnly", False)) for v in spec["volumes"]}
    assert volumes == {
        render.DUMP_OUTPUT_DIR: (f"{COMPOSE}/{DUMPS_DIR}", False),
        render.DUMP_SECRETS_DIR: ("/opt/compose/sakamoto/kopia/dumps/immich", True),
    }
    script = spec["entrypoints"][2]
    assert "pg_dump --host=immich-db --port=5432 --username=app --dbname=immich --no-password" in script
    # The password: a 0600 file in state as a secret, never in the container's spec (env, labels, script).
    assert DB_PASSWORD not in json.dumps(spec)
    pgpass = run.one(REMOTE_FILE, "dump-immich-pgpass")
    assert unwrap_all(pgpass.inputs["content"]) == "*:*:*:*:db-pass\\:with\\\\colon-Tq8\n"
    assert pgpass.inputs["path"] == "/opt/compose/sakamoto/kopia/dumps/immich/pgpass"
    assert DB_PASSWORD not in str(pgpass.inputs["content"])  # wrapped as a secret, not plain
    assert run.outputs["database_dumps"] == {
        "immich": f"postgres -> {COMPOSE}/{DUMPS_DIR}/immich.sql, 300s before each snapshot"
    }


def test_an_sqlite_dump_has_no_network_and_sees_only_the_databases_directory(key_vault, monkeypatch):
    asked = fake_host(monkeypatch, {})
    run = run_sakamoto(key_vault, SQLITE)
    assert asked == []  # nothing to ask the host: no PostgreSQL dump
    spec = unwrap_all(run.one(CONTAINER, "dump-vault-container").inputs)
    assert spec["networkMode"] == "none" and not spec.get("networksAdvanced")
    volumes = {v["containerPath"]: v["hostPath"] for v in spec["volumes"]}
    assert volumes == {render.DUMP_OUTPUT_DIR: f"{COMPOSE}/{DUMPS_DIR}", render.DUMP_SQLITE_DIR: f"{COMPOSE}/vault"}
    assert "VACUUM INTO" in spec["entrypoints"][2]
    assert run.by_type(REMOTE_FILE) and not [r for r in run.by_type(REMOTE_FILE) if "pgpass" in r.name]


def test_the_dumps_directory_counts_unknown_entries_as_errors_in_the_policy(key_vault, monkeypatch):
    fake_host(monkeypatch, {"immich-db": "postgres:16.4 immich_default"})
    run = run_sakamoto(key_vault, POSTGRES)
    content = unwrap_all(run.one(REMOTE_FILE, "kopia-config-policy-json").inputs["content"])
    policy = json.loads(content)
    assert policy["shelken@sakamoto:/backup/compose/.dumps"] == {"errorHandling": {"ignoreUnknownTypes": False}}
    assert "shelken@sakamoto:/backup/minio/.dumps" not in policy  # only sources with dumps
    health = run.one(CONTAINER, "kopia-container").inputs["healthcheck"]["tests"][1]
    assert "/backup/compose/.dumps/immich.status" in health


# ---------------------------------------------------------------- the dump script, run for real


FAKE_PG_DUMP = r"""#!/bin/sh
# Records its argv and environment, then writes a dump or fails like pg_dump.
printf '%s\n' "$@" > "$FAKE/argv"; env > "$FAKE/env"; cat "$PGPASSFILE" > "$FAKE/pgpass-seen"
refused='pg_dump: error: connection to server at "immich-db" (172.18.0.2), port 5432 failed: FATAL:  '
retrieved='password retrieved from file "/run/homelab-dump/pgpass"'
[ -z "${FAKE_FAIL:-}" ] || { printf '%s\n%s\n' "${refused}password authentication failed for user \"app\"" \
    "$retrieved" >&2; exit 1; }
for a; do case "$a" in --file=*) file=${a#--file=} ;; esac; done
printf -- '-- PostgreSQL database dump\nCOPY accounts FROM stdin;\n' > "$file"
"""
#: `sleep` ends the loop after the first wait: the test sees the dump at start and the time it would wait.
FAKE_SLEEP = '#!/bin/sh\necho "$1" > "$FAKE/slept"\nkill -TERM "$PPID"\n'


@pytest.fixture
def dump_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("dumps", "secrets", "bin", "fake")}
    for d in dirs.values():
        d.mkdir()
    for name, text in {"pg_dump": FAKE_PG_DUMP, "sleep": FAKE_SLEEP}.items():
        (dirs["bin"] / name).write_text(text)
        (dirs["bin"] / name).chmod(0o755)
    (dirs["secrets"] / render.PGPASS_FILE).write_text(render.render_pgpass(DB_PASSWORD))
    return dirs


def run_dump_script(dirs: dict[str, Path], interval: int = 3600, **env: str) -> subprocess.CompletedProcess:
    dump = Dump.model_validate(POSTGRES | {"postgres": {**POSTGRES["postgres"], "password": "config:x"}})
    script = render.render_dump_script(dump, interval, dumps_dir=str(dirs["dumps"]), secrets_dir=str(dirs["secrets"]))
    environment = {"PATH": f"{dirs['bin']}:{os.environ['PATH']}", "FAKE": str(dirs["fake"]), **env}
    result = subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == -signal.SIGTERM or result.returncode == 128 + signal.SIGTERM, result.stderr
    return result


def test_a_dump_lands_whole_with_an_ok_status_and_no_secret_on_its_command_line(dump_dirs):
    run_dump_script(dump_dirs)
    out = dump_dirs["dumps"] / "immich.sql"
    assert out.read_text().startswith("-- PostgreSQL database dump")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # the whole database: for root (Kopia) only
    assert [p.name for p in dump_dirs["dumps"].iterdir() if p.name.startswith(".")] == []  # no temp left
    outcome, _at, details = (dump_dirs["dumps"] / "immich.status").read_text().split(" ", 2)
    assert outcome == "ok" and "bytes" in details
    assert stat.S_IMODE((dump_dirs["dumps"] / "immich.status").stat().st_mode) == 0o644
    argv = (dump_dirs["fake"] / "argv").read_text()
    assert DB_PASSWORD not in argv and DB_PASSWORD not in (dump_dirs["fake"] / "env").read_text()
    assert (dump_dirs["fake"] / "pgpass-seen").read_text() == render.render_pgpass(DB_PASSWORD)
    assert not (dump_dirs["dumps"] / "immich.failed").exists()


def test_a_failed_dump_keeps_the_last_whole_one_and_leaves_a_pipe_that_kopia_counts_as_an_error(dump_dirs):
    run_dump_script(dump_dirs)
    good = (dump_dirs["dumps"] / "immich.sql").read_text()
    run_dump_script(dump_dirs, FAKE_FAIL="1")
    assert (dump_dirs["dumps"] / "immich.sql").read_text() == good
    assert stat.S_ISFIFO((dump_dirs["dumps"] / "immich.failed").lstat().st_mode)
    outcome, _at, reason = (dump_dirs["dumps"] / "immich.status").read_text().split(" ", 2)
    assert outcome == "failed"
    assert reason.startswith("pg_dump exited 1: pg_dump: error: connection to server at")
    assert 'password authentication failed for user "app"' in reason
    run_dump_script(dump_dirs)  # the next good dump clears the marker
    assert not (dump_dirs["dumps"] / "immich.failed").exists()


def test_the_loop_waits_until_lead_seconds_before_kopias_next_scheduled_snapshot(dump_dirs):
    """Kopia snapshots at multiples of the interval counted from Go's zero time; the dump starts `leadSeconds`
    (300) before the next one."""
    now = int(subprocess.run(["date", "+%s"], capture_output=True, text=True, check=True).stdout)
    run_dump_script(dump_dirs, interval=3600)
    slept = int((dump_dirs["fake"] / "slept").read_text())
    go_zero = 62135596800
    due = ((now + go_zero) // 3600 + 1) * 3600 - go_zero
    if due - 300 <= now:  # too close to this one: the one after
        due += 3600
    assert abs((now + slept) - (due - 300)) <= 2
    assert 0 < slept <= 3600


# ---------------------------------------------------------------- the rule on their results


def write_status(path: Path, outcome: str, at: int, details: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{outcome} {at} {details}\n")


def checks_in(root: Path) -> tuple[render.DumpCheck, ...]:
    return (
        render.DumpCheck("shelken@sakamoto:/backup/compose", "immich", str(root / DUMPS_DIR / "immich.status")),
        render.DumpCheck("shelken@sakamoto:/backup/compose", "vault", str(root / DUMPS_DIR / "vault.status")),
    )


def verdict(root: Path, state: Path, max_age: int = 7800) -> subprocess.CompletedProcess:
    script = render.render_dump_verdict(checks_in(root), str(state), max_age)
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30)


def test_fresh_dumps_pass_and_failed_stale_or_missing_ones_are_named(tmp_path):
    now = int(time.time())  # the rule runs with the real `date`
    state = tmp_path / "state"
    state.mkdir()
    (state / "first-start").write_text(f"{now - 60}\n")
    write_status(tmp_path / DUMPS_DIR / "immich.status", "ok", now - 100, "took 3s, 100 bytes")
    result = verdict(tmp_path, state)  # vault has none yet, within the bound after the start: fine
    assert (result.returncode, result.stdout) == (0, "")

    (state / "first-start").write_text(f"{now - 9000}\n")
    write_status(tmp_path / DUMPS_DIR / "immich.status", "failed", now - 100, "pg_dump exited 1: refused")
    result = verdict(tmp_path, state)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("shelken@sakamoto:/backup/compose: dump immich failed at ")
    assert lines[0].endswith(": pg_dump exited 1: refused")
    assert lines[1].startswith("shelken@sakamoto:/backup/compose: dump vault: no result since the server started")

    write_status(tmp_path / DUMPS_DIR / "immich.status", "ok", now - 8000, "took 3s")
    write_status(tmp_path / DUMPS_DIR / "vault.status", "ok", now - 10, "took 1s")
    result = verdict(tmp_path, state)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith("shelken@sakamoto:/backup/compose: dump immich stale: the last one finished at ")
    assert "8000s ago (more than 7800s" in line


def test_a_failed_dump_makes_the_health_check_unhealthy_and_stops_the_heartbeat(env_dirs, tmp_path):  # noqa: F811
    now = int(NOW.timestamp())
    write_status(tmp_path / "src" / DUMPS_DIR / "immich.status", "failed", now - 30, "pg_dump exited 1: refused")
    write_status(tmp_path / "src" / DUMPS_DIR / "vault.status", "ok", now - 30, "took 1s")
    (env_dirs["state"] / "restore-drill").write_text(f"ok {now - 60} 2026-11-27T11:00:00Z verified\n")
    (env_dirs["fake"] / "answer.json").write_text(answer(*[source_status(s) for s in SOURCES]))
    params = dataclasses.replace(params_for(env_dirs), dumps=checks_in(tmp_path / "src"))
    environment = {
        "PATH": f"{env_dirs['bin']}:{os.environ['PATH']}",
        "FAKE_STATE": str(env_dirs["fake"]),
    }
    script = render.render_healthcheck(params)
    result = subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "shelken@sakamoto:/backup/compose: dump immich failed at" in result.stdout
    assert not (env_dirs["fake"] / "pings").exists()

    write_status(tmp_path / "src" / DUMPS_DIR / "immich.status", "ok", now - 30, "took 2s")
    result = subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout
    assert (env_dirs["fake"] / "pings").exists()


def test_status_shows_a_failed_dump_in_its_sources_row(tmp_path):
    now = int(time.time())
    (tmp_path / "state").mkdir()
    write_status(tmp_path / DUMPS_DIR / "immich.status", "failed", now - 30, "pg_dump exited 1: refused")
    write_status(tmp_path / DUMPS_DIR / "vault.status", "ok", now - 30, "took 1s")
    host = status.Host(
        stack="sakamoto",
        url="https://127.0.0.1:1",
        fingerprint=None,
        sources=SOURCES,
        max_age_seconds=7800,
        upload_allowance_seconds=86400,
        control_password="x",
        ssh=("env",),  # `env sh -s`: the rule runs here, as over SSH on the host
        dump_verdict=render.render_dump_verdict(checks_in(tmp_path), str(tmp_path / "state"), 7800),
    )
    problems = status.read_dumps(host, timeout=30)
    assert len(problems) == 1 and problems[0].startswith("shelken@sakamoto:/backup/compose: dump immich failed")
    rows = status.rows_for(host, answer(*[source_status(s) for s in SOURCES]), int(NOW.timestamp()), dumps=problems)
    verdicts = {r.source: r.verdict for r in rows}
    assert verdicts["shelken@sakamoto:/backup/minio"] == "ok"
    assert verdicts["shelken@sakamoto:/backup/compose"].startswith("dump immich failed at ")


def test_a_snapshot_error_from_a_failed_dump_is_shown_with_the_dumps_reason_first(env_dirs, tmp_path):  # noqa: F811
    """The failed dump's named pipe makes the next snapshot count an error: the check names the cause with it."""
    now = int(NOW.timestamp())
    write_status(tmp_path / "src" / DUMPS_DIR / "immich.status", "failed", now - 30, "pg_dump exited 1: refused")
    write_status(tmp_path / "src" / DUMPS_DIR / "vault.status", "ok", now - 30, "took 1s")
    minio, compose = SOURCES
    (env_dirs["fake"] / "answer.json").write_text(answer(source_status(minio), source_status(compose, errors=1)))
    params = dataclasses.replace(params_for(env_dirs), dumps=checks_in(tmp_path / "src"))
    environment = {"PATH": f"{env_dirs['bin']}:{os.environ['PATH']}", "FAKE_STATE": str(env_dirs["fake"])}
    script = render.render_healthcheck(params)
    result = subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{compose}: dump immich failed at ")
    assert lines[1] == f"{compose}: last snapshot had 1 errors"


def test_the_dump_script_and_a_health_check_with_dumps_are_posix_sh_and_pass_shellcheck(tmp_path):

    postgres = Dump.model_validate(POSTGRES | {"postgres": {**POSTGRES["postgres"], "password": "config:x"}})
    sqlite = Dump.model_validate(SQLITE)
    params = render.StartScriptParams(
        "sakamoto", "shelken", "shelken@sakamoto", 51515, True, "5m", SOURCES, dumps=checks_in(tmp_path)
    )
    scripts = (
        render.render_dump_script(postgres, 3600),
        render.render_dump_script(sqlite, 3600),
        render.render_healthcheck(params),
    )
    assert_posix_sh_and_shellcheck_clean(scripts)


def test_containers_found_and_missing_are_told_apart_whatever_order_they_are_asked_in(monkeypatch):
    """Docker prints an empty line for a container it does not find: each name still gets its own answer (a missing
    one used to shift the answers of the names after it, and an empty line stopped the program with a traceback)."""
    fake_host(monkeypatch, {"db": "postgres:16 net-a", "minio": "minio/minio:x net-b net-c"})
    found = dumps.inspect_containers(["ssh"], ["gone", "db", "also-gone", "minio"])
    assert found == {
        "gone": None,
        "db": dumps.RunningContainer("postgres:16", ("net-a",)),
        "also-gone": None,
        "minio": dumps.RunningContainer("minio/minio:x", ("net-b", "net-c")),
    }
