"""Pauses (issue 19): an app with no dump, frozen with `docker pause` for the length of each snapshot of its source.

A writer (the "ledger" app: a shell loop in the suite's Debian image) rewrites a counter in sakamoto's compose
source every 50 ms and logs each value with its time outside every source. sakamoto's stack declares a pause of it
on that source. Proven on the real parts (Kopia's own snapshot actions, the pauser container on the real Docker
socket, the real engine's pause and unpause):
- the counter a snapshot holds is a value next to a gap in the writer's log: the app stood still
  while Kopia read the source, and runs again after it; the same writer on a source without a pause (the negative
  control) shows no such gap, which is reported;
- Kopia stored `enableActions` and ran the actions (it logs no "Not executing ... disabled for this client");
- the pauser unpauses the app when it starts, and ends a pause that outlives maxSeconds with a failed status;
  the request that starts that pause is written into the pause directory by the test, as the before action
  writes it, and then no resume follows: a stand-in for a Kopia stopped mid-snapshot (it runs no after action);
- a snapshot that Kopia reports as failed after the pause was made still resumes the app (its after action);
- a pause that cannot be made (the app's container is gone) fails the snapshot: the source turns unhealthy with
  the reason (`scripts/status` shows it on the engine tier), the heartbeat stops, and Kopia's notification
  profiles alert the suite's receiver.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from components import render
from components.config import DUMPS_DIR, PAUSE_STATUS_NAME, pauser_container_name
from testbed import infra
from testbed.mocks import stack_config
from testbed.postgres import docker
from testbed.system import BASE, KOPIA, KOPIA_DATA_DIR, SOURCES, System, say, wait_for
from tests.dump_status import kopia_epoch, status_line

COMPOSE, UNPAUSED = "/backup/compose", "/backup/minio"
SOURCE = f"shelken@sakamoto:{COMPOSE}"
LEDGER = f"{infra.NAME_PREFIX}ledger"  # the paused app
CONTROL = f"{infra.NAME_PREFIX}ledger-unpaused"  # the same app on a source without a pause (negative control)
PAUSER = pauser_container_name(KOPIA["sakamoto"])
MAX_SECONDS = 30  # the model's least
PAUSE_STATUS = SOURCES["sakamoto"][COMPOSE] / DUMPS_DIR / f"{PAUSE_STATUS_NAME}.status"
PAUSE_DIR = KOPIA_DATA_DIR["sakamoto"] / "pause"
WRITE_EVERY = 0.05  # seconds between two values of the counter

# The app: a counter rewritten (whole, by rename) every 50 ms, each value logged with its time once it is in place.
LEDGER_LOOP = f"""n=0
while :; do
    n=$((n + 1))
    echo "$n" > /data/counter.tmp && mv /data/counter.tmp /data/counter && echo "$n $(date +%s.%N)" >> /log/written
    sleep {WRITE_EVERY}
done
"""


def sources_with_pause() -> list[dict]:
    kopia = stack_config("e2e-sakamoto")["homelab-backup:kopia"]
    pause = {"containers": [LEDGER], "maxSeconds": MAX_SECONDS}
    return [{**s, "pause": pause} if s["path"] == COMPOSE else s for s in kopia["sources"]]


PAUSED_KEY = next(i for i, s in enumerate(sources_with_pause()) if "pause" in s)  # its requests' name


class Ledger:
    """One writer container: its data dir in a source, its log outside every source."""

    def __init__(self, name: str, source: str, image: str):
        self.name, self.image = name, image
        self.data = SOURCES["sakamoto"][source] / "ledger"
        self.log = BASE / f"{name}-log"

    def start(self) -> None:
        self.data.mkdir(exist_ok=True)
        self.log.mkdir(exist_ok=True)
        docker(
            "run", "-d", "--name", self.name, "--network", "none", "--label", f"{infra.RESOURCE_LABEL}=1",
            "-v", f"{self.data}:/data", "-v", f"{self.log}:/log", "--entrypoint", "sh", self.image, "-c", LEDGER_LOOP,
        )  # fmt: skip
        wait_for(f"{self.name}'s first values", lambda: len(self.written()) > 10, 60, interval=1)

    def written(self) -> dict[int, float]:
        """Counter value -> when it was in place."""
        path = self.log / "written"
        lines = path.read_text().splitlines() if path.exists() else []
        return {int(n): float(t) for n, t in (line.split() for line in lines if len(line.split()) == 2)}

    def gap_around(self, value: int) -> float:
        """The longer of the two gaps in the log around `value`: the app stood still either after logging it (the
        pause came during its sleep) or between renaming it into place and logging it (then its logged time is
        after the pause); either way `value` was in the file for that long. Without a pause both are ~50 ms."""
        written = self.written()
        return max(written[value] - written[value - 1], written[value + 1] - written[value])

    def paused(self) -> bool:
        return docker("inspect", "--format", "{{.State.Paused}}", self.name).stdout.strip() == "true"

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)


class App:
    def __init__(self, system: System):
        self.system = system
        self.ledger = Ledger(LEDGER, COMPOSE, infra.KOPIA_IMAGE)
        self.control = Ledger(CONTROL, UNPAUSED, infra.KOPIA_IMAGE)

    def up_sakamoto(self, *, create_repository: bool = False) -> None:
        kopia = stack_config("e2e-sakamoto")["homelab-backup:kopia"]
        create = {"createRepository": True} if create_repository else {}
        self.system.up("sakamoto", **{"homelab-backup:kopia": {**kopia, "sources": sources_with_pause(), **create}})


@pytest.fixture(scope="module")
def app(parts, request) -> App:
    system = parts.system()
    app = App(system)
    request.addfinalizer(system.destroy)
    request.addfinalizer(app.control.stop)
    request.addfinalizer(app.ledger.stop)  # before the stacks go: their files are in a source
    system.prepare_host()
    system.start_receivers()
    system.up("vps")
    app.ledger.start()
    app.control.start()
    app.up_sakamoto(create_repository=True)  # the first deploy (README "First deploy", step 5)
    system.take_back_the_create_request(up_owner=app.up_sakamoto)
    system.renew_oracle()
    return app


def fresh_pause_status(since: float, timeout: float = 150) -> tuple[str, int, str]:
    """The first pause status line written after `since`."""

    def written() -> tuple[str, int, str] | None:
        line = status_line(PAUSE_STATUS) if PAUSE_STATUS.exists() else None
        return line if line and line[1] >= since else None

    return wait_for("a pause status line", written, timeout, interval=1)


def alerts_on_the_paused_source(system: System, since: float) -> list:
    """Webhook alerts since then on the snapshot of the paused source itself: not on its `.dumps` directory, which
    Kopia's server snapshots as a source of its own (a path policy makes one) and which may fail on its own."""
    assert system.receiver is not None
    return [
        a for a in system.receiver.alerts_since(since) if f"of {COMPOSE} on sakamoto" in a.headers.get("Subject", "")
    ]


def restored_counter(system: System, snapshot: dict, tmp_path: Path, name: str) -> int:
    assert system.oracle is not None
    target = tmp_path / name
    system.oracle.run("snapshot", "restore", f"{snapshot['rootEntry']['obj']}/ledger", str(target))
    return int((target / "counter").read_text())


def test_kopia_runs_the_actions_and_the_pauser_alone_holds_the_socket(app: App):
    system = app.system
    kopia = KOPIA["sakamoto"]
    stored = system.docker("exec", kopia, "cat", render.KOPIA_CONFIG_PATH).stdout
    assert '"enableActions": true' in stored, "the start script connected with --enable-actions"
    logs = system.logs(kopia)
    assert "snapshot actions enabled" in logs
    assert "because it's been disabled for this client" not in logs
    pauser = system.inspect(PAUSER)
    assert pauser["HostConfig"]["NetworkMode"] == "none"
    mounts = {m["Destination"]: m["Source"] for m in pauser["Mounts"]}
    assert mounts == {
        render.DOCKER_SOCKET: render.DOCKER_SOCKET,
        render.PAUSE_DIR: str(PAUSE_DIR),
        f"{render.PAUSER_SOURCES_DIR}/{PAUSED_KEY}": str(SOURCES["sakamoto"][COMPOSE] / DUMPS_DIR),
    }
    assert all(m["Destination"] != render.DOCKER_SOCKET for m in system.inspect(kopia)["Mounts"])


def test_engine_preview_shows_a_pause_and_refuses_a_container_the_host_does_not_run(app: App):
    """`pulumi preview` of a second pause (the control writer, on the minio source): the pauser's labels say what it
    will pause. A pause of a container the host does not run stops the preview with one message naming the key."""
    system = app.system
    deployment = system.engine_deployment("sakamoto")
    kopia = stack_config("e2e-sakamoto")["homelab-backup:kopia"]

    def with_sources(control_pause: list[str]) -> dict:
        sources = [
            {**s, "pause": {"containers": control_pause}} if s["path"] == UNPAUSED else s for s in sources_with_pause()
        ]
        return system.overrides("sakamoto", **{"homelab-backup:kopia": {**kopia, "sources": sources}})

    try:
        preview = deployment.preview(with_sources([CONTROL]), system.secrets, diff=True)
        text = preview.stdout
        assert "homelab:index:ContainerPauser" in text, text
        assert f"{UNPAUSED}: {CONTROL}" in text, text  # the new label: what the pauser may pause
        missing = f"{infra.NAME_PREFIX}no-such-app"
        with pytest.raises(infra.E2EError) as refused:
            deployment.preview(with_sources([missing]), system.secrets)
        message = str(refused.value)
        index = next(i for i, s in enumerate(kopia["sources"]) if s["path"] == UNPAUSED)
        assert f"homelab-backup:kopia.sources[{index}].pause.containers[0]" in message, message
        assert f"no container {missing!r} on host sakamoto" in message, message
        assert "Traceback" not in message
    finally:
        app.up_sakamoto()  # the config as it was (nothing was applied: previews only)


def test_the_app_stands_still_while_kopia_reads_its_source_and_runs_after_it(app: App, tmp_path: Path):
    system = app.system
    assert system.oracle is not None
    deployed = time.time()
    outcome, _, details = fresh_pause_status(deployed)
    assert outcome == "ok", details
    say(f"pause: {details}")

    # Two snapshots of each source taken after the deploy: each holds the counter's value just before a gap.
    def two_since_deploy(source: str) -> bool:
        assert system.oracle is not None
        return len([s for s in system.oracle.snapshots_of(source) if kopia_epoch(s["startTime"]) >= deployed]) >= 2

    for source in (SOURCE, f"shelken@sakamoto:{UNPAUSED}"):
        wait_for(f"two snapshots of {source} since the test began", lambda s=source: two_since_deploy(s), 200, 3)
    assert not app.ledger.paused(), "resumed after the snapshot"
    kopia_log = system.logs(KOPIA["sakamoto"])
    assert "-snapshot-root' action" not in kopia_log and "homelab-pause:" not in kopia_log, kopia_log[-1500:]
    paused_gaps, control_gaps = [], []
    for i, snapshot in enumerate(
        s for s in system.oracle.snapshots_of(SOURCE) if kopia_epoch(s["startTime"]) >= deployed
    ):
        value = restored_counter(system, snapshot, tmp_path, f"paused-{i}")
        paused_gaps.append(app.ledger.gap_around(value))
    control_source = f"shelken@sakamoto:{UNPAUSED}"
    for i, snapshot in enumerate(
        s for s in system.oracle.snapshots_of(control_source) if kopia_epoch(s["startTime"]) >= deployed
    ):
        value = restored_counter(system, snapshot, tmp_path, f"control-{i}")
        control_gaps.append(app.control.gap_around(value))
    say(f"paused app: the value each snapshot holds stood for {', '.join(f'{g:.2f}s' for g in paused_gaps)}")
    say(f"negative control (no pause): {', '.join(f'{g:.2f}s' for g in control_gaps)} (a value stands ~{WRITE_EVERY}s)")
    # Ten times a normal value's life: the writer stood still between that value and the next, while Kopia read.
    assert all(gap >= 10 * WRITE_EVERY for gap in paused_gaps), paused_gaps
    # And it writes on: the log grows after the last snapshot.
    count = len(app.ledger.written())
    wait_for("the app writing again", lambda: len(app.ledger.written()) > count + 10, 10, interval=0.5)


def test_the_pauser_unpauses_the_app_when_it_starts(app: App):
    fresh_pause_status(time.time())  # just after a snapshot: the next is about a minute away
    docker("pause", LEDGER)  # as a pauser that died mid-snapshot leaves it
    assert app.ledger.paused()
    docker("kill", PAUSER)  # SIGKILL: no chance to unpause on its way out
    docker("start", PAUSER)
    waited = time.monotonic()
    wait_for("the pauser to unpause the app", lambda: not app.ledger.paused(), 30, interval=0.5)
    say(f"unpaused {time.monotonic() - waited:.1f}s after the pauser's start")


def test_a_pause_that_outlives_max_seconds_is_ended_and_reported(app: App):
    fresh_pause_status(time.time())  # just after a snapshot: the next is about a minute away
    # As the before action writes it; no resume follows, as when Kopia stops mid-snapshot.
    request_id = secrets.token_hex(8)
    (PAUSE_DIR / f".request.{request_id}").write_text(f"pause {request_id}\n")
    (PAUSE_DIR / f".request.{request_id}").rename(PAUSE_DIR / f"{PAUSED_KEY}.request")
    asked = time.time()
    wait_for("the app to be paused", app.ledger.paused, 10, interval=0.5)
    outcome, _, details = fresh_pause_status(asked, timeout=MAX_SECONDS + 20)
    assert outcome == "failed" and "outlived maxSeconds" in details, details
    assert not app.ledger.paused()
    say(f"ended {time.time() - asked:.0f}s after the pause (maxSeconds {MAX_SECONDS}): {details[:160]}")
    outcome, _, details = fresh_pause_status(time.time())  # the next snapshot pauses and resumes again
    assert outcome == "ok", details


def test_a_snapshot_that_fails_after_the_pause_still_resumes_the_app(app: App):
    """An entry Kopia cannot read in the source (a named pipe in its .dumps directory, whose policy counts such an
    entry as an error) fails the next snapshot after the pause was made: Kopia reports the snapshot as failed, and
    its after action still asks for the resume, long before maxSeconds."""
    system = app.system
    assert system.receiver is not None
    fresh_pause_status(time.time())  # just after a snapshot: the next is about a minute away
    unreadable = SOURCES["sakamoto"][COMPOSE] / DUMPS_DIR / "test-unreadable"
    os.mkfifo(unreadable)
    made = time.time()
    try:
        outcome, _, details = fresh_pause_status(made)  # written at the resume, after the walk met the pipe
        assert outcome == "ok" and "paused" in details, details
        assert not app.ledger.paused()

        (alert, *_) = wait_for(
            "Kopia's report of the paused source's failed snapshot",
            lambda: alerts_on_the_paused_source(system, made),
            120,
            3,
        )
        say(f"failed snapshot reported ({alert.headers.get('Subject')!r}); the app was resumed after it: {details}")
    finally:
        unreadable.unlink()
    system.wait_health(KOPIA["sakamoto"], "healthy", 240)


def test_a_pause_that_cannot_be_made_fails_the_snapshot_and_alerts(app: App):
    system = app.system
    assert system.receiver is not None
    container = KOPIA["sakamoto"]
    system.wait_healthy(container, 300)
    since = time.time()
    app.ledger.stop()  # the app's container is gone: nothing to pause
    try:
        outcome, _, details = fresh_pause_status(since)
        assert outcome == "failed" and "No such container" in details, details
        system.wait_health(container, "unhealthy", 90)

        def pause_in_health() -> str | None:
            verdict = system.health_output(container)
            return verdict if f"{SOURCE}: pause {LEDGER} failed at" in verdict else None

        try:  # the check runs every 10 s: the one that made the container unhealthy may predate the failed pause
            verdict = wait_for("the health check to name the failed pause", pause_in_health, 60, interval=2)
        except infra.E2EError as error:
            history = [entry.get("Output", "") for entry in system.inspect(container)["State"]["Health"]["Log"]]
            raise AssertionError(f"{error}; health log: {history}; {PAUSE_STATUS.read_text()!r}") from None
        say(f"health: {verdict.splitlines()[0][:200]}")

        (alert, *_) = wait_for(
            "a webhook alert on the paused source's snapshot",
            lambda: alerts_on_the_paused_source(system, since),
            180,
            3,
        )
        say(f"alert {alert.at - since:.0f}s after the app went: {alert.headers.get('Subject')!r}")
        if system.tier == "engine":  # scripts/status reads the stacks from Pulumi
            shown = system.run_status().stdout
            assert f"pause {LEDGER} failed at" in shown, shown
        system.assert_heartbeat_stays_quiet("no heartbeat while the pause fails")
    finally:
        docker("rm", "-f", LEDGER, check=False)
        app.ledger.start()
    outcome, _, details = fresh_pause_status(time.time())
    assert outcome == "ok", details
    system.wait_health(container, "healthy", 300)
