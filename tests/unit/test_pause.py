"""Pauses (issue 19): `kopia.sources[].pause`, its refusals, what it renders and what the program declares, Kopia's
snapshot action run for real under `sh -e` as Kopia runs it, and the pauser run for real under `sh` against a fake
Docker engine on a unix socket."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import re
import secrets
import signal
import socketserver
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from components import dumps, render
from components.config import DUMPS_DIR, BackupSource, StackConfig, load_stack_config
from components.dumps import RunningContainer
from testbed import infra
from testbed.mocks import stack_config, unwrap_all
from tests.dump_status import status_line
from tests.shell_lint import assert_posix_sh_and_shellcheck_clean
from tests.unit.conftest import run_committed_stack
from tests.unit.test_config import SAKAMOTO, VPS, assert_only_problem, mutated, setter
from tests.unit.test_dumps import COMPOSE, CONTAINER, SQLITE, fake_host
from tests.unit.test_program import env_of, file_content, image_name, labels_of, volumes_of
from tests.unit.test_render import GOLDEN
from tests.unit.test_start_script import (  # noqa: F401 (env_dirs: a fixture)
    calls,
    env_dirs,
    fatal_lines,
    params_for,
    run_script,
)

PAUSE = {"containers": ["paperless", "paperless-redis"]}
PAUSER = "kopia-pauser"  # config.pauser_container_name("kopia")
COMPOSE_SOURCE = "/backup/compose"  # sakamoto's kopia.sources[1], whose host path is COMPOSE
KEY = "1"  # its index in kopia.sources: its requests, answers and pauser mount are named by it
PAUSER_TYPE = "homelab:index:ContainerPauser"


def pausing(base: dict, pause: object = PAUSE, index: int = 1) -> dict:
    """A committed stack's config (test_config's form) with `pause` on kopia.sources[index]."""
    return mutated(base, setter(f"kopia.sources.{index}.pause", pause))


def sakamoto_pausing(pause: object = PAUSE) -> StackConfig:
    return load_stack_config(pausing(SAKAMOTO, pause))


def snapshot_id() -> str:
    """A snapshot id as Kopia gives its actions (KOPIA_SNAPSHOT_ID: 8 random bytes in hex,
    snapshot/upload/upload_actions.go @ v0.22.3)."""
    return secrets.token_hex(8)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def wait_until(what: str, condition: Callable[[], object], timeout: float = 15) -> None:
    """The suite's own poll (testbed.infra.wait_until), at the pace of scripts that act within a second."""
    infra.wait_until(what, condition, timeout, interval=0.05)


# ---------------------------------------------------------------- config


def test_a_pause_is_accepted_with_its_default_max_seconds():
    config = sakamoto_pausing()
    pause = config.kopia.sources[1].pause
    assert pause is not None
    assert (pause.containers, pause.max_seconds) == (["paperless", "paperless-redis"], 1800)
    assert config.kopia.sources[0].pause is None
    assert sakamoto_pausing({**PAUSE, "maxSeconds": 30}).kopia.sources[1].pause.max_seconds == 30


@pytest.mark.parametrize(
    ("pause", "key", "words"),
    [
        ({"containers": []}, "pause.containers", "at least 1 item"),
        ({"containers": ["paperless", "paperless"]}, "pause.containers", "names a container twice"),
        ({"containers": ["paperless; docker rm -f x"]}, "pause.containers[0]", "should match pattern"),
        ({"containers": ["paperless", "-x"]}, "pause.containers[1]", "should match pattern"),
        ({"containers": ["p"]}, "pause.containers[0]", "should match pattern"),  # Docker's names have 2 characters
        ({**PAUSE, "maxSeconds": 29}, "pause.maxSeconds", "greater than or equal to 30"),
        ({**PAUSE, "maxSeconds": "60"}, "pause.maxSeconds", "valid integer"),
        ({}, "pause.containers", "required"),
        ({**PAUSE, "seconds": 60}, "pause.seconds", "unknown key"),
    ],
)  # fmt: skip
def test_a_misdeclared_pause_is_refused_naming_its_key(pause, key, words):
    assert_only_problem(pausing(SAKAMOTO, pause), f"kopia.sources[1].{key}", words)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("kopia", "'kopia' is the Kopia container: pausing it would stop the backup itself"),
        (PAUSER, f"{PAUSER!r} is the pauser itself"),
        ("kopia-dump-vault", "'kopia-dump-vault' is dump vault's container"),
    ],
)
def test_pausing_a_container_the_backup_runs_in_is_refused(name, words):
    values = mutated(pausing(SAKAMOTO, {"containers": ["paperless", name]}), setter("kopia.sources.1.dumps", [SQLITE]))
    assert_only_problem(values, "kopia.sources[1].pause.containers[1]", words)


def test_a_renamed_kopia_container_moves_the_refusals_with_it():
    values = mutated(
        pausing(SAKAMOTO, {"containers": ["kopia", "backup-pauser"]}), setter("kopia.containerName", "backup")
    )
    assert_only_problem(values, "kopia.sources[1].pause.containers[1]", "is the pauser itself")
    assert load_stack_config(mutated(values, setter("kopia.sources.1.pause.containers", ["kopia"])))


def test_pausing_the_openlist_this_stack_deploys_is_refused_but_not_a_gateway_it_only_configures():
    """vps deploys OpenList (Kopia writes through it); sakamoto only configures the cluster's, which runs
    elsewhere: a container of that name on sakamoto is some app's."""
    assert_only_problem(
        pausing(VPS, {"containers": ["openlist"]}, index=0),
        "kopia.sources[0].pause.containers[0]",
        "'openlist' is the OpenList gateway Kopia writes through",
    )
    assert sakamoto_pausing({"containers": ["openlist"]}).kopia.sources[1].pause is not None


def test_a_container_paused_by_two_sources_is_refused_at_the_second():
    values = pausing(pausing(SAKAMOTO, {"containers": ["minio", "paperless"]}, index=0), PAUSE)
    assert_only_problem(
        values, "kopia.sources[1].pause.containers[0]", "'paperless' is also paused by kopia.sources[0].pause"
    )


def test_a_dump_may_not_take_the_name_the_pause_reports_under():
    """Even on a source without a pause: .dumps/pause.status is the pause's status line."""
    values = mutated(SAKAMOTO, setter("kopia.sources.1.dumps", [{**SQLITE, "name": "pause"}]))
    assert_only_problem(values, "kopia.sources[1].dumps[0].name", "'pause' is reserved", ".dumps/pause.status")


def test_the_paused_containers_are_inspected_once_each_with_the_dumps_databases():
    values = mutated(
        pausing(pausing(SAKAMOTO, {"containers": ["minio"]}, index=0), PAUSE),
        setter("kopia.sources.1.dumps", [{"name": "docs", "postgres": {"container": "paperless", "database": "p",
                                                                       "user": "p", "password": "config:pg"}}]),
    )  # fmt: skip
    assert dumps.inspected_containers(load_stack_config(values)) == ["paperless", "minio", "paperless-redis"]
    assert dumps.inspected_containers(load_stack_config(SAKAMOTO)) == []


def test_a_paused_container_that_is_not_on_the_host_is_refused_naming_its_key():
    config = sakamoto_pausing()
    running = RunningContainer("ghcr.io/paperless-ngx/paperless-ngx:2.14", ("paperless_default",))
    assert dumps.container_problems(config, {"paperless": running, "paperless-redis": running}) == []
    problems = dumps.container_problems(config, {"paperless": running, "paperless-redis": None})
    assert problems == [
        (
            "homelab-backup:kopia.sources[1].pause.containers[1]",
            "no container 'paperless-redis' on host sakamoto (docker inspect finds none): start the app first, or"
            " correct the name",
        )
    ]
    assert [k for k, _ in dumps.container_problems(config, {})] == [
        "homelab-backup:kopia.sources[1].pause.containers[0]",
        "homelab-backup:kopia.sources[1].pause.containers[1]",
    ]


# ---------------------------------------------------------------- what it renders


@pytest.mark.parametrize("stack", ["vps", "sakamoto"])
def test_without_a_pause_there_is_no_host_entry_and_policy_json_is_todays(stack):
    config = load_stack_config(VPS if stack == "vps" else SAKAMOTO)
    sources = config.kopia.sources
    assert render.paused_sources(sources) == []
    assert render.pause_policy_entries(config.identity, sources, PAUSER) == {}
    policy = render.render_policy_json(
        config.policy,
        config.schedule,
        render.dump_dir_targets(config.identity, sources),
        render.mirror_dir_targets(config.identity, sources),
        render.pause_policy_entries(config.identity, sources, PAUSER),
    )
    assert policy.encode() == (GOLDEN / "policy.json").read_bytes()
    assert render.start_script_params(config).enable_actions is False


def test_a_pause_adds_one_host_entry_running_the_action_before_and_after_each_snapshot_root():
    config = sakamoto_pausing()
    sources = config.kopia.sources
    assert [(i, s.path, p) for i, s, p in render.paused_sources(sources)] == [(1, COMPOSE_SOURCE, sources[1].pause)]
    entries = render.pause_policy_entries(config.identity, sources, PAUSER)
    action = {
        "script": render.render_pause_action(config.identity, sources, PAUSER),
        "timeout": 90,
        "mode": "essential",
    }
    assert entries == {"shelken@sakamoto": {"actions": {"beforeSnapshotRoot": action, "afterSnapshotRoot": action}}}
    # Kopia kills an action at its timeout: the script's own wait (and its "resume" on no answer) must end first.
    assert render.PAUSE_ACTION_TIMEOUT_SECONDS > render.PAUSE_ANSWER_SECONDS
    without = json.loads(render.render_policy_json(config.policy, config.schedule))
    document = json.loads(
        render.render_policy_json(
            config.policy, config.schedule, render.dump_dir_targets(config.identity, sources), (), entries
        )
    )
    assert sorted(set(document) - set(without)) == ["shelken@sakamoto", "shelken@sakamoto:/backup/compose/.dumps"]
    assert {k: document[k] for k in without} == without
    # The pause's status line is in .dumps: a failure's named pipe there counts as an error of the next snapshot.
    assert document["shelken@sakamoto:/backup/compose/.dumps"] == {"errorHandling": {"ignoreUnknownTypes": False}}
    assert render.dump_dir_targets(config.identity, sources) == ("shelken@sakamoto:/backup/compose/.dumps",)
    assert render.start_script_params(config).enable_actions is True


def test_the_pause_is_judged_like_a_dump_from_its_status_line():
    config = sakamoto_pausing()
    pause = render.DumpCheck(
        "shelken@sakamoto:/backup/compose", "paperless,paperless-redis", f"{COMPOSE}/{DUMPS_DIR}/pause.status", "pause"
    )
    assert render.dump_checks(config, on_host=True) == (pause,)
    assert render.dump_checks(config, on_host=False) == (
        dataclasses.replace(pause, status_file=f"{COMPOSE_SOURCE}/{DUMPS_DIR}/pause.status"),
    )
    with_dump = load_stack_config(mutated(pausing(SAKAMOTO), setter("kopia.sources.1.dumps", [SQLITE])))
    assert [(c.what, c.name) for c in render.dump_checks(with_dump, on_host=True)] == [
        ("dump", "vault"),
        ("pause", "paperless,paperless-redis"),
    ]


def test_a_failed_pause_is_named_as_a_pause_by_the_dump_verdict(tmp_path):
    now = int(time.time())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "first-start").write_text(f"{now - 60}\n")
    status = tmp_path / "pause.status"
    [check] = render.dump_checks(sakamoto_pausing(), on_host=True)
    script = render.render_dump_verdict(
        (dataclasses.replace(check, status_file=str(status)),), str(tmp_path / "state"), 7800
    )

    def verdict() -> tuple[int, str]:
        result = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30, check=False)
        return result.returncode, result.stdout

    assert verdict() == (0, "")  # none yet, within the bound after the start
    status.write_text(f"failed {now - 30} cannot pause paperless paperless-redis: HTTP 404\n")
    code, out = verdict()
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith("shelken@sakamoto:/backup/compose: pause paperless,paperless-redis failed at ")
    assert line.endswith(": cannot pause paperless paperless-redis: HTTP 404")
    status.write_text(f"ok {now - 30} paused paperless paperless-redis for 12s for the snapshot 0a1b\n")
    assert verdict() == (0, "")


# ---------------------------------------------------------------- Kopia's action, run as Kopia runs it


@pytest.fixture
def pause_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pause"
    path.mkdir()
    return path


def run_action(
    tmp_path: Path, pause_dir: Path, action: str, source: str, snapshot: str, timeout: float = 30
) -> subprocess.CompletedProcess:
    """The action as Kopia 0.22.3 runs a policy's inline script without `#!`: written to <workdir>/<action>.sh
    (mode 0700) and run as `sh -e <file>` in that directory, the snapshot's facts in the environment
    (snapshot/upload/upload_actions.go)."""
    config = sakamoto_pausing()
    script = render.render_pause_action(config.identity, config.kopia.sources, PAUSER, pause_dir=str(pause_dir))
    workdir = tmp_path / f"kopia-action-{action}"
    workdir.mkdir(exist_ok=True)
    path = workdir / f"{action}.sh"
    path.write_text(script)
    path.chmod(0o700)
    env = {
        "PATH": os.environ["PATH"],
        "KOPIA_ACTION": action,
        "KOPIA_SNAPSHOT_ID": snapshot,
        "KOPIA_SOURCE_PATH": source,
        "KOPIA_SNAPSHOT_PATH": source,
        "KOPIA_VERSION": "0.22.3",
    }
    return subprocess.run(
        ["sh", "-e", str(path)], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def answering(pause_dir: Path, answer: Callable[[str, str], str], delay: float = 0.5) -> Iterator[list[str]]:
    """Stands in for the pauser: takes each request of source 1 as it does (reads it, removes it) and, `delay`
    later (the pauser looks once a second), writes `answer(verb, id)` as its answer line. Yields the requests."""
    requests: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        request = pause_dir / f"{KEY}.request"
        while not stop.is_set():
            if request.exists():
                text = request.read_text()
                request.unlink()
                requests.append(text)
                verb, snapshot = text.split()
                time.sleep(delay)
                write_atomically(pause_dir / f"{KEY}.answer", answer(verb, snapshot) + "\n")
            time.sleep(0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        stop.set()
        thread.join(5)


def test_the_action_does_nothing_for_a_source_without_a_pause(tmp_path, pause_dir):
    started = time.monotonic()
    result = run_action(tmp_path, pause_dir, "before-snapshot-root", "/backup/minio", snapshot_id())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert time.monotonic() - started < 2
    assert list(pause_dir.iterdir()) == []


def test_the_before_action_asks_for_the_pause_and_succeeds_once_it_is_confirmed(tmp_path, pause_dir):
    snapshot = snapshot_id()
    with answering(pause_dir, lambda verb, sid: f"paused {sid} ") as requests:
        result = run_action(tmp_path, pause_dir, "before-snapshot-root", COMPOSE_SOURCE, snapshot)
    assert result.returncode == 0, result.stderr
    assert requests == [f"pause {snapshot}\n"]
    assert result.stdout == ""  # Kopia reads the action's stdout for KOPIA_SNAPSHOT_PATH=: nothing there
    assert [p.name for p in pause_dir.iterdir() if p.name.startswith(".request")] == []  # no temp left


def test_waiting_for_the_first_answer_puts_nothing_in_kopias_log(tmp_path, pause_dir):
    """Kopia copies an action's stderr into its own log: a pause that succeeds says nothing there, also on a fresh
    host, where the answer file does not exist yet while the action waits for it."""
    snapshot = snapshot_id()
    with answering(pause_dir, lambda verb, sid: f"paused {sid} ", delay=1.5):
        result = run_action(tmp_path, pause_dir, "before-snapshot-root", COMPOSE_SOURCE, snapshot)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_after_action_waits_for_resumed_not_the_pause_answer_of_the_same_snapshot(tmp_path, pause_dir):
    """Kopia gives the before and the after action of one snapshot the same KOPIA_SNAPSHOT_ID: when the after
    action starts, the answer file still says "paused <that id>" until the pauser (once a second) answers the
    resume. That stale answer is not the resume's."""
    snapshot = snapshot_id()
    write_atomically(pause_dir / f"{KEY}.answer", f"paused {snapshot} \n")
    with answering(pause_dir, lambda verb, sid: f"resumed {sid} ", delay=1.0) as requests:
        result = run_action(tmp_path, pause_dir, "after-snapshot-root", COMPOSE_SOURCE, snapshot)
    assert result.returncode == 0, result.stderr
    assert requests == [f"resume {snapshot}\n"]


def test_a_failed_pause_fails_the_action_with_the_pausers_reason(tmp_path, pause_dir):
    snapshot = snapshot_id()
    reason = 'docker pause paperless-redis answered HTTP 404: {"message":"No such container: paperless-redis"}'
    with answering(pause_dir, lambda verb, sid: f"failed {sid} {reason}"):
        result = run_action(tmp_path, pause_dir, "before-snapshot-root", COMPOSE_SOURCE, snapshot)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        f"homelab-pause: pause of paperless paperless-redis for {COMPOSE_SOURCE} failed: {reason}"
    )


@pytest.mark.parametrize("stale", [None, "paused {other}", "failed {other} an older snapshot's"])
def test_without_an_answer_for_its_snapshot_the_before_action_fails_and_asks_for_the_resume(
    tmp_path, pause_dir, monkeypatch, stale
):
    """No pauser, or only the answer to another snapshot: the action gives up after PAUSE_ANSWER_SECONDS and
    leaves "resume <id>", since Kopia runs no after action once the before action failed."""
    monkeypatch.setattr(render, "PAUSE_ANSWER_SECONDS", 2)
    snapshot = snapshot_id()
    if stale is not None:
        write_atomically(pause_dir / f"{KEY}.answer", stale.format(other=snapshot_id()) + "\n")
    started = time.monotonic()
    result = run_action(tmp_path, pause_dir, "before-snapshot-root", COMPOSE_SOURCE, snapshot)
    assert result.returncode != 0
    assert 2 <= time.monotonic() - started < 10
    assert result.stderr.splitlines()[-1] == (
        f"homelab-pause: no answer from {PAUSER} within 2s to 'pause paperless paperless-redis' for {COMPOSE_SOURCE}:"
        f" is it running? (docker logs {PAUSER})"
    )
    assert (pause_dir / f"{KEY}.request").read_text() == f"resume {snapshot}\n"


# ---------------------------------------------------------------- the pauser, against a fake Docker engine


class FakeDockerEngine:
    """Stands in for dockerd: the Engine API's `_ping`, `POST /containers/<name>/pause` and `.../unpause` on a
    unix socket, answering 204 or an error with Docker's JSON message (404 no such container, 409 already paused
    or not running, 500 not paused). It records each POST's path. The e2e suite runs the pauser against the real
    engine; this one runs everywhere and can lose a container at a chosen moment."""

    def __init__(self, socket_path: Path, containers: Iterable[str], paused: Iterable[str] = ()):
        self.socket_path = socket_path
        self.containers = set(containers)
        self.paused = set(paused)
        self.stopped: set[str] = set()
        self.posts: list[str] = []
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/_ping":
                    self.answer(200, "OK", "text/plain")
                else:
                    self.answer(404, json.dumps({"message": "page not found"}))

            def do_POST(self) -> None:
                engine.posts.append(self.path)
                code, message = engine.act(self.path)
                self.answer(code, json.dumps({"message": message}) if message else "")

            def answer(self, code: int, body: str, content_type: str = "application/json") -> None:
                self.send_response(code)
                if code != 204:
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                if code != 204:
                    self.wfile.write(body.encode())

            def log_message(self, *_args) -> None:  # a unix socket has no client address to log
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(socket_path), Handler)

    def act(self, path: str) -> tuple[int, str]:
        match = re.fullmatch(r"/containers/([^/]+)/(pause|unpause)", path)
        if match is None:
            return 404, "page not found"
        name, verb = match.groups()
        if name not in self.containers:
            return 404, f"No such container: {name}"
        if verb == "pause":
            if name in self.stopped:
                return 409, f"container {name} is not running"
            if name in self.paused:
                return 409, f"container {name} is already paused"
            self.paused.add(name)
        else:
            if name not in self.paused:
                return 500, f"Container {name} is not paused"
            self.paused.discard(name)
        return 204, ""

    def pauses(self) -> list[str]:
        """The POSTs as "<verb> <name>"."""
        return [f"{p.rsplit('/', 1)[1]} {p.split('/')[2]}" for p in self.posts]

    def __enter__(self) -> FakeDockerEngine:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class Pauser:
    dirs: dict[str, Path]
    process: subprocess.Popen
    log: Path

    def ask(self, verb: str, snapshot: str) -> None:
        """What Kopia's action writes (atomically, as it does)."""
        write_atomically(self.dirs["pause"] / f"{KEY}.request", f"{verb} {snapshot}\n")

    def answer_to(self, snapshot: str, timeout: float = 15) -> list[str]:
        """The pauser's answer line for `snapshot`: [outcome, id, *reason words]."""
        path = self.dirs["pause"] / f"{KEY}.answer"
        wait_until(f"answer {snapshot}", lambda: path.exists() and path.read_text().split()[1:2] == [snapshot], timeout)
        return path.read_text().split()

    def status(self) -> tuple[str, int, str]:
        return status_line(self.dirs["sources"] / KEY / "pause.status")

    @property
    def failed_marker(self) -> Path:
        return self.dirs["sources"] / KEY / "pause.failed"


@pytest.fixture
def pauser_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {"pause": tmp_path / "pause", "sources": tmp_path / "sources", "socket": tmp_path / "docker.sock"}
    dirs["pause"].mkdir()
    (dirs["sources"] / KEY).mkdir(parents=True)  # the source's .dumps, as the pauser's container mounts it
    return dirs


@contextlib.contextmanager
def running_pauser(dirs: dict[str, Path], sources: list[BackupSource] | None = None) -> Iterator[Pauser]:
    """The rendered pauser under `sh`, in its own session, until the test ends; started once it serves."""
    sources = sources if sources is not None else list(sakamoto_pausing().kopia.sources)
    script = render.render_pauser_script(
        "shelken@sakamoto",
        sources,
        pause_dir=str(dirs["pause"]),
        sources_dir=str(dirs["sources"]),
        socket=str(dirs["socket"]),
    )
    log = dirs["pause"].parent / "pauser.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            ["sh", "-c", script, "pauser"],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_until(
            "the pauser to serve", lambda: "serving pause requests for" in log.read_text() or process.poll() is not None
        )
        assert process.poll() is None, log.read_text()
        yield Pauser(dirs, process, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_at_start_the_pauser_unpauses_every_container_it_may_pause(pauser_dirs):
    """A pause left by a crash (of the pauser, or of Kopia mid-snapshot) ends when the pauser starts."""
    with (
        FakeDockerEngine(
            pauser_dirs["socket"], {"paperless", "paperless-redis", "other"}, {"paperless", "other"}
        ) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        assert engine.pauses() == ["unpause paperless", "unpause paperless-redis"]
        assert engine.paused == {"other"}  # not its to touch
        assert "serving pause requests for: paperless paperless-redis;" in pauser.log.read_text()
    assert not (pauser_dirs["sources"] / KEY / "pause.status").exists()  # nothing went wrong: nothing to report


@pytest.mark.parametrize("age", [0, 120])
def test_at_start_a_request_kopia_still_waits_for_is_served_and_an_older_one_dropped(pauser_dirs, age):
    """Written while the pauser was down: a request under a minute old has its action still waiting for the
    answer; an older one has none (the action gave up after PAUSE_ANSWER_SECONDS), and a pause nobody resumes
    would last until maxSeconds."""
    snapshot = snapshot_id()
    request = pauser_dirs["pause"] / f"{KEY}.request"
    write_atomically(request, f"pause {snapshot}\n")
    os.utime(request, (time.time() - age, time.time() - age))
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        if age == 0:
            assert pauser.answer_to(snapshot) == ["paused", snapshot]
            assert engine.pauses() == [
                "unpause paperless", "unpause paperless-redis", "pause paperless", "pause paperless-redis"
            ]  # fmt: skip
        else:
            assert not request.exists()
            time.sleep(1.5)  # a serving round or two
            assert engine.pauses() == ["unpause paperless", "unpause paperless-redis"]
            assert not (pauser_dirs["pause"] / f"{KEY}.answer").exists()


def test_a_stopped_pauser_leaves_nothing_paused(pauser_dirs):
    """Docker stops a container with SIGTERM (a deploy that replaces or removes the pauser): what it froze for a
    snapshot is unpaused on the way out."""
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        pauser.ask("pause", snapshot)
        assert pauser.answer_to(snapshot)[0] == "paused"
        os.kill(pauser.process.pid, signal.SIGTERM)
        assert pauser.process.wait(15) == 0
        assert engine.paused == set()
        assert engine.pauses()[-2:] == ["unpause paperless", "unpause paperless-redis"]
        assert not (pauser_dirs["pause"] / f"{KEY}.since").exists()


def test_a_pause_then_a_resume_freeze_the_containers_in_order_and_leave_an_ok_status(pauser_dirs):
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        del engine.posts[:]
        pauser.ask("pause", snapshot)
        assert pauser.answer_to(snapshot) == ["paused", snapshot]
        assert engine.pauses() == ["pause paperless", "pause paperless-redis"]
        assert engine.paused == {"paperless", "paperless-redis"}
        assert not (pauser_dirs["pause"] / f"{KEY}.request").exists()  # taken
        time.sleep(1.2)
        pauser.ask("resume", snapshot)
        wait_until("resumed", lambda: pauser.answer_to(snapshot)[0] == "resumed")
        assert engine.paused == set()
        assert engine.pauses()[2:] == ["unpause paperless", "unpause paperless-redis"]
        outcome, at, details = pauser.status()
        assert outcome == "ok" and abs(at - time.time()) < 30
        match = re.fullmatch(rf"paused paperless paperless-redis for (\d+)s for the snapshot {snapshot}", details)
        assert match and 1 <= int(match.group(1)) <= 10, details
        status = pauser_dirs["sources"] / KEY / "pause.status"
        assert stat.S_IMODE(status.stat().st_mode) == 0o644  # scripts/status reads it over SSH
        assert not pauser.failed_marker.exists()


def test_a_pause_that_fails_midway_unpauses_what_it_paused_and_fails_the_snapshot(pauser_dirs):
    """A container removed since the deploy: the first is paused, the second is not there; the first is unpaused
    again, the action gets "failed" with Docker's message, and the status line and Kopia's next snapshot (the
    named pipe in .dumps) report it."""
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        engine.containers.discard("paperless-redis")
        del engine.posts[:]
        pauser.ask("pause", snapshot)
        outcome, answered, *reason = pauser.answer_to(snapshot)
        assert (outcome, answered) == ("failed", snapshot)
        assert "docker pause paperless-redis answered HTTP 404" in " ".join(reason)
        assert "No such container: paperless-redis" in " ".join(reason)
        assert engine.pauses() == ["pause paperless", "pause paperless-redis", "unpause paperless"]
        assert engine.paused == set()
        outcome, _at, details = pauser.status()
        assert outcome == "failed"
        assert details.startswith("cannot pause paperless paperless-redis for a snapshot of the source")
        assert "No such container: paperless-redis" in details
        assert stat.S_ISFIFO(pauser.failed_marker.lstat().st_mode)
        assert not (pauser_dirs["pause"] / f"{KEY}.since").exists()  # no pause to end later


def test_pausing_a_stopped_container_is_not_a_failure(pauser_dirs):
    """A stopped app's files are at rest: Docker's 409 "is not running" is no reason to fail the snapshot."""
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        engine.stopped.add("paperless-redis")
        pauser.ask("pause", snapshot)
        assert pauser.answer_to(snapshot) == ["paused", snapshot]
        assert engine.paused == {"paperless"}


def test_a_pause_that_outlives_max_seconds_is_ended_and_reported(pauser_dirs):
    """Kopia stopped mid-snapshot runs no after action: the pauser ends the pause itself. maxSeconds is at least 30
    in the config; here the source is copied with 3 so the test takes seconds."""
    sources = list(sakamoto_pausing().kopia.sources)
    pause = sources[1].pause
    assert pause is not None
    sources[1] = sources[1].model_copy(update={"pause": pause.model_copy(update={"max_seconds": 3})})
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs, sources) as pauser,
    ):
        pauser.ask("pause", snapshot)
        assert pauser.answer_to(snapshot)[0] == "paused"
        paused_at = time.monotonic()
        wait_until("the pause to be ended", lambda: not engine.paused)
        assert time.monotonic() - paused_at >= 1.5  # ended by maxSeconds, not at once
        assert engine.pauses()[-2:] == ["unpause paperless", "unpause paperless-redis"]
        wait_until("a status line", lambda: (pauser_dirs["sources"] / KEY / "pause.status").exists())
        outcome, _at, details = pauser.status()
        assert outcome == "failed"
        assert details.startswith("the pause of paperless paperless-redis outlived maxSeconds (3 s) and was ended")
        assert snapshot in details
        assert stat.S_ISFIFO(pauser.failed_marker.lstat().st_mode)
        # Kopia's late resume is answered, and does not turn the failure into a success.
        pauser.ask("resume", snapshot)
        wait_until("resumed", lambda: pauser.answer_to(snapshot)[0] == "resumed")
        assert pauser.status()[0] == "failed"


def test_the_action_and_the_pauser_together_pause_for_the_snapshot_and_resume_after_it(
    tmp_path, pauser_dirs, monkeypatch
):
    """The two scripts as Kopia and the pauser's container run them, through the shared directory: the before
    action returns once the containers are paused, the after action once they are resumed."""
    monkeypatch.setattr(render, "PAUSE_ANSWER_SECONDS", 10)
    snapshot = snapshot_id()
    with (
        FakeDockerEngine(pauser_dirs["socket"], {"paperless", "paperless-redis"}) as engine,
        running_pauser(pauser_dirs) as pauser,
    ):
        before = run_action(tmp_path, pauser_dirs["pause"], "before-snapshot-root", COMPOSE_SOURCE, snapshot)
        assert before.returncode == 0, before.stderr
        assert engine.paused == {"paperless", "paperless-redis"}
        after = run_action(tmp_path, pauser_dirs["pause"], "after-snapshot-root", COMPOSE_SOURCE, snapshot)
        assert after.returncode == 0, after.stderr
        assert engine.paused == set()
        assert pauser.status()[0] == "ok"


# ---------------------------------------------------------------- the start script: Kopia must run the actions


#: Kopia 0.22.3 keeps `--enable-actions` in the repository config it writes at connect (repo.ClientOptions,
#: `"enableActions": true|false`, indented JSON). Wrapped around test_start_script's fake; FAKE_IGNORES_ACTIONS
#: plays a Kopia that does not store it.
KOPIA_STORING_ACTIONS = r"""#!/bin/sh
case "$1 $2" in "repository connect" | "repository create")
    enabled=false
    for a; do [ "$a" = --enable-actions ] && [ -z "${FAKE_IGNORES_ACTIONS:-}" ] && enabled=true; done
    printf '{\n  "hostname": "sakamoto",\n  "enableActions": %s,\n  "formatBlobCacheDuration": 900000000000\n}\n' \
        "$enabled" > "$KOPIA_CONFIG_PATH" ;;
esac
exec "$0-fake" "$@"
"""


def kopia_storing_actions(dirs: dict[str, Path]) -> dict[str, str]:
    (dirs["bin"] / "kopia").rename(dirs["bin"] / "kopia-fake")
    (dirs["bin"] / "kopia").write_text(KOPIA_STORING_ACTIONS)
    (dirs["bin"] / "kopia").chmod(0o755)
    return {"KOPIA_CONFIG_PATH": str(dirs["fake"] / "repository.config")}


def test_a_host_that_pauses_connects_with_actions_enabled_and_serves(env_dirs):  # noqa: F811
    env = kopia_storing_actions(env_dirs)
    params = dataclasses.replace(params_for(env_dirs), enable_actions=True)
    result = run_script(env_dirs, "existing", params, **env)
    assert result.returncode == 0, result.stderr
    connect = calls(env_dirs)[0]
    assert connect.startswith("repository connect") and connect.split().count("--enable-actions") == 1
    assert calls(env_dirs)[-1].startswith("server start")
    assert "snapshot actions enabled" in result.stderr
    assert fatal_lines(result) == []


def test_a_kopia_that_does_not_store_enable_actions_stops_the_start_before_serving(env_dirs):  # noqa: F811
    env = kopia_storing_actions(env_dirs)
    params = dataclasses.replace(params_for(env_dirs), enable_actions=True)
    result = run_script(env_dirs, "existing", params, FAKE_IGNORES_ACTIONS="1", **env)
    assert result.returncode == 1
    (line,) = fatal_lines(result)
    assert line.startswith("kopia-start: FATAL: kopia.sources declares a pause, but Kopia's config does not enable")
    assert "--enable-actions" in line
    assert not [c for c in calls(env_dirs) if c.startswith("server start")]
    assert not (env_dirs["state"] / "repository-seen").exists()


def test_a_host_without_pauses_neither_asks_for_actions_nor_needs_them(env_dirs):  # noqa: F811
    env = kopia_storing_actions(env_dirs)
    result = run_script(env_dirs, "existing", params_for(env_dirs), **env)
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls(env_dirs) if "--enable-actions" in c]
    assert '"enableActions": false' in (env_dirs["fake"] / "repository.config").read_text()
    assert "snapshot actions" not in result.stderr


# ---------------------------------------------------------------- shellcheck


def rendered_for_lint(script: str) -> str:
    """One script of a host whose two sources pause (one of them beside a dump)."""
    config = load_stack_config(
        mutated(
            pausing(pausing(SAKAMOTO, {"containers": ["minio"]}, index=0)), setter("kopia.sources.1.dumps", [SQLITE])
        )
    )
    sources = config.kopia.sources
    scripts = {
        # No `#!`: Kopia runs it with `sh -e` (snapshot/upload/upload_actions.go); the lint reads it as sh.
        "pause action": render.render_pause_action(config.identity, sources, PAUSER),
        "pauser": render.render_pauser_script(config.identity, sources),
        "dump loop": render.render_dump_script(sources[1].dumps[0], 3600),  # the status functions, shared
        "start script": render.render_start_script(render.start_script_params(config)),  # with --enable-actions
    }
    return scripts[script]


@pytest.mark.parametrize("script", ["pause action", "pauser", "dump loop", "start script"])
def test_the_pause_scripts_are_posix_sh_and_pass_shellcheck(script):
    text = rendered_for_lint(script)
    assert text.startswith("#!") is (script != "pause action")
    assert_posix_sh_and_shellcheck_clean([text])


# ---------------------------------------------------------------- what the program declares


def sakamoto_overrides(pause: object = PAUSE) -> dict:
    """sakamoto's `kopia` key with `pause` on its compose source (kopia.sources[1])."""
    kopia = stack_config("sakamoto")["homelab-backup:kopia"]
    sources = [
        {**source, "pause": pause} if source["path"] == COMPOSE_SOURCE else source for source in kopia["sources"]
    ]
    return {"homelab-backup:kopia": {**kopia, "sources": sources}}


def connect_flags(start_script: str) -> str:
    """The start script's line of flags for `kopia repository connect` (and create)."""
    [line] = [line for line in start_script.splitlines() if "--no-persist-credentials --cache-directory=" in line]
    return line.strip()


def test_a_pause_declares_one_pauser_holding_the_docker_socket_and_nothing_else(key_vault, monkeypatch):
    asked = fake_host(
        monkeypatch, {"paperless": "ghcr.io/paperless-ngx/paperless-ngx:2.14 paperless", "paperless-redis": "redis:7 x"}
    )
    run = run_committed_stack("sakamoto", key_vault, **sakamoto_overrides())
    assert "paperless-redis" in asked[0]  # asked before any resource: a missing one is refused (above)
    component = run.one(PAUSER_TYPE)
    assert component.name == "pauser"
    container = run.one(CONTAINER, "pauser-container")
    assert container.parent_name == "pauser"
    assert container.inputs["name"] == PAUSER
    assert image_name(run, container) == image_name(run, run.one(CONTAINER, "kopia-container"))  # already on the host
    assert container.inputs["networkMode"] == "none"
    assert container.inputs["restart"] == "always"
    assert volumes_of(container) == {
        render.DOCKER_SOCKET: ("/var/run/docker.sock", False),
        render.PAUSE_DIR: ("/opt/kopia/pause", False),
        f"{render.PAUSER_SOURCES_DIR}/1": (f"{COMPOSE}/{DUMPS_DIR}", False),
    }
    assert labels_of(container) == {"homelab-backup.pauses.1": "/backup/compose: paperless, paperless-redis"}
    # Its status line is where scripts/status looks on the host.
    [check] = render.dump_checks(sakamoto_pausing(), on_host=True)
    assert check.status_file == f"{volumes_of(container)[f'{render.PAUSER_SOURCES_DIR}/1'][0]}/pause.status"
    assert env_of(container) == {"TZ": "Asia/Shanghai"}
    entrypoint = container.inputs["entrypoints"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[3] == "pauser"
    assert "PAUSES='1 1800 /sources/1 paperless paperless-redis'" in entrypoint[2]
    # The socket is the pauser's alone.
    for other in run.by_type(CONTAINER):
        if other.name != "pauser-container":
            assert render.DOCKER_SOCKET not in json.dumps(unwrap_all(other.inputs)), other.name

    kopia = run.one(CONTAINER, "kopia-container")
    assert volumes_of(kopia)[render.PAUSE_DIR] == ("/opt/kopia/pause", False)
    script = kopia.inputs["entrypoints"][2]
    assert "ACTIONS_REQUIRED=yes" in script and connect_flags(script).endswith(" --enable-actions")
    assert f"{COMPOSE_SOURCE}/{DUMPS_DIR}/pause.status" in kopia.inputs["healthcheck"]["tests"][1]
    # Up before Kopia, whose first snapshots after a start ask it at once.
    kopia_node = run.one("homelab:index:KopiaNode", "kopia")
    assert any(d.endswith("::pauser-container") for d in kopia_node.options["depends_on"])
    policy = json.loads(file_content(run, render.POLICY_JSON))
    actions = policy["shelken@sakamoto"]["actions"]
    assert actions["beforeSnapshotRoot"]["mode"] == actions["afterSnapshotRoot"]["mode"] == "essential"
    assert (
        "'/backup/compose') key=1 containers='paperless paperless-redis' ;;" in actions["beforeSnapshotRoot"]["script"]
    )
    assert policy["shelken@sakamoto:/backup/compose/.dumps"] == {"errorHandling": {"ignoreUnknownTypes": False}}
    assert run.outputs["paused_containers"] == {
        COMPOSE_SOURCE: "paperless, paperless-redis, paused for each snapshot, 1800s at most"
    }


def test_without_a_pause_there_is_no_pauser_and_kopia_has_no_pause_dir(key_vault, monkeypatch):
    asked = fake_host(monkeypatch, {})
    run = run_committed_stack("sakamoto", key_vault)
    assert asked == []  # nothing to ask the host
    assert run.by_type(PAUSER_TYPE) == []
    assert [c.name for c in run.by_type(CONTAINER)] == ["kopia-container"]
    kopia = run.one(CONTAINER, "kopia-container")
    assert render.PAUSE_DIR not in volumes_of(kopia)
    script = kopia.inputs["entrypoints"][2]
    assert "ACTIONS_REQUIRED=no" in script and "--enable-actions" not in connect_flags(script)
    assert file_content(run, render.POLICY_JSON) == (GOLDEN / "policy.json").read_text()
    assert "paused_containers" not in run.outputs
