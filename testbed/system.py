"""The deployed system under test: both test stacks on real Docker, sshd, Kopia and OpenList.

`System.deploy()` does what an operator does on first deploy: `pulumi up` the
vps stack (OpenList, configured by the program, and Kopia), then `pulumi up` the
sakamoto stack with `kopia.createRepository` and, once its Kopia has created the
repository, `pulumi up` again without it (README "First deploy", step 5). No OpenList
step by hand: the suite only makes the directory that stands in for the 189 drive (a
real drive exists before any deploy).

Each stack is applied by one of two tiers, named in the output:
- `engine`: the real Pulumi CLI through the Automation API (testbed/engine.py);
- `adapter`: the program under mocks, its resources applied by testbed/adapter.py,
  where the engine's provider plugins are not installed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components import openlist as openlist_component
from components import render
from components.config import ConfigError, load_namespace, secret_references
from components.secrets import SecretReadError, SecretsError, read_secrets
from testbed import engine, infra
from testbed.adapter import Deployment
from testbed.mocks import stack_config
from testbed.s3 import S3Client

# Everything below comes from the test stack files (Pulumi.e2e-vps.yaml, Pulumi.e2e-sakamoto.yaml).
STACKS = ("vps", "sakamoto")
_CONFIG = {stack: stack_config(f"e2e-{stack}") for stack in STACKS}
_HOST = {stack: _CONFIG[stack]["homelab-backup:host"] for stack in STACKS}
_KOPIA = {stack: _CONFIG[stack]["homelab-backup:kopia"] for stack in STACKS}
_OPENLIST = _CONFIG["vps"]["homelab-backup:openlist"]

#: where the test stacks' host paths live (the parent of every stack's config dir)
BASE = Path(_HOST["vps"]["configDir"]).parent.parent
OPENLIST = _OPENLIST["containerName"]
NETWORK = _HOST["vps"]["network"]["name"]
KOPIA = {stack: _KOPIA[stack]["containerName"] for stack in STACKS}
ADDRESS = {stack: _HOST[stack]["deployAddress"] for stack in STACKS}
SERVER_PORT = {stack: load_namespace(_CONFIG[stack]).kopia.server.port for stack in STACKS}
SOURCES = {stack: {s["path"]: Path(s["hostPath"]) for s in _KOPIA[stack]["sources"]} for stack in STACKS}
ALL_SOURCES = list(_CONFIG["vps"]["homelab-backup:policy"]["sources"])
S3_ENDPOINT = f"{ADDRESS['vps']}:{_OPENLIST['s3Port']}"  # OpenList's S3 port as published on the VPS address
CONFIG_DIR = {stack: Path(_HOST[stack]["configDir"]) for stack in STACKS}  # where Pulumi writes Kopia's files
KOPIA_DATA_DIR = {stack: Path(_HOST[stack]["kopiaDataDir"]) for stack in STACKS}  # Kopia's cache, logs, state
#: each test host's own dir: its config dir, data dirs, `kopiaDataDir` and sources are all in it
HOST_DIR = {stack: BASE / stack for stack in STACKS}
for _stack in STACKS:
    for _path in (
        CONFIG_DIR[_stack],
        KOPIA_DATA_DIR[_stack],
        Path(_HOST[_stack]["dataDir"]),
        *SOURCES[_stack].values(),
    ):
        assert _path.is_relative_to(HOST_DIR[_stack]), f"e2e-{_stack}: {_path} is not under {HOST_DIR[_stack]}"
#: The Local storage that stands in for 189 Cloud, in OpenList's data dir: its path in the container and
#: on the host, and the folder bucket `kopia` maps to (where Kopia's blobs land).
DRIVE_IN_CONTAINER = _OPENLIST["storage"]["fields"]["root_folder_path"]
_VPS_CONFIG = load_namespace(_CONFIG["vps"])
OPENLIST_DATA_ON_HOST = Path(openlist_component.data_dir_on_host(_VPS_CONFIG.host))
assert _VPS_CONFIG.openlist is not None
#: where the VPS's OpenList mounts the drive (the storage its admin API names by this path)
DRIVE_MOUNT = _VPS_CONFIG.openlist.storage.mount_path
DRIVE_ON_HOST = OPENLIST_DATA_ON_HOST / Path(DRIVE_IN_CONTAINER).relative_to(infra.OPENLIST_DATA_DIR)
BUCKET_ON_HOST = DRIVE_ON_HOST / _CONFIG["vps"]["homelab-backup:repository"]["bucket"]
#: the repository's blobs (kopia.repository, packs, indexes): the bucket's folder for `repository.prefix`
REPOSITORY_ON_HOST = BUCKET_ON_HOST / _CONFIG["vps"]["homelab-backup:repository"]["prefix"].rstrip("/")
OPENLIST_WEB_URL = f"http://{ADDRESS['vps']}:{_OPENLIST['webPort']}"
#: what a shell in a Kopia container runs first to use the repository (docs/operations.md: in-container commands)
WITH_SECRETS = f". {render.DEPLOY_DIR}/{render.SECRETS_ENV} && "
#: the mail profiles' SMTP login with `System(smtp_login=True)` (a plain setting; the password is a secret)
SMTP_USERNAME = "kopia@homelab.test"
#: the stack of the maintenance owner, the one host that creates the repository
OWNER = _CONFIG["vps"]["homelab-backup:repository"]["maintenanceOwner"].partition("@")[2]
assert OWNER in STACKS, f"the maintenance owner {OWNER!r} is not a test stack"
#: what the owner's first `pulumi up` adds: `--config-path --config homelab-backup:kopia.createRepository=true`
CREATE_REPOSITORY = {"homelab-backup:kopia": {**_KOPIA[OWNER], "createRepository": True}}


say = infra.say


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll a check against the running system: any exception in it counts as "not yet"."""
    return infra.wait_until(what, check, timeout, interval, retry_on=(Exception,))


def source_name(snapshot: dict) -> str:
    """`user@host:/path` of a snapshot from `kopia snapshot list --json`."""
    source = snapshot["source"]
    return f"{source['userName']}@{source['host']}:{source['path']}"


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under root."""
    digests = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def write_test_data(root: Path, seed: str, files: int = 12) -> None:
    """A small mixed tree: nested dirs, compressible text, random bytes, an empty file."""
    rng = hashlib.sha256(seed.encode()).digest()
    for i in range(files):
        path = root / f"dir{i % 3}" / f"file{i}.{'txt' if i % 2 else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            path.write_text(f"{seed} line {i}\n" * (200 * (i + 1)))
        else:
            path.write_bytes(os.urandom(4096 * (i + 1)) + rng)
    (root / "empty.txt").write_bytes(b"")


def server_status(stack: str, path: str, user: str | None = None, password: str | None = None) -> int:
    """The HTTP status a host's Kopia server answers for `path`, with a login or without. No CA check: the
    certificate is self-signed, and trust is its pinned fingerprint (checked where a test needs it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    url = f"https://{ADDRESS[stack]}:{SERVER_PORT[stack]}{path}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310 (the test host)
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def check_injected_config(stack: str, overrides: dict[str, Any], secret_values: dict[str, str]) -> None:
    """The test stack as this run is about to deploy it, checked by the program's own config and secret rules
    before any `up`: a value the testbed injects (this machine's bridge address, sshd port, receiver URLs)
    that the program would refuse names itself here, as the testbed's problem, instead of surfacing as the
    program's refusal in the middle of a deploy."""

    def config_secret(key: str) -> str:
        if key not in secret_values:
            raise SecretReadError(f"config:{key}: the testbed sets no secret {key!r}")
        return secret_values[key]

    def no_key_vault() -> str:
        raise SecretReadError("the test stacks read no Key Vault secret")

    try:
        config = load_namespace(stack_config(f"e2e-{stack}", overrides), stack=f"e2e-{stack}")
        read_secrets(secret_references(config), config_secret=config_secret, key_vault_token=no_key_vault)
    except (ConfigError, SecretsError) as error:
        raise infra.E2EError(
            f"the values this testbed injects into e2e-{stack} (this machine's addresses, ports and receivers)"
            f" are refused by the program's own rules, before any deploy: {error}"
        ) from None


@dataclass
class Kopia(infra.KopiaCli):
    """The real kopia binary on the test machine as the oracle: Kopia's own answers about the repository."""

    def connect(self, prefix: str = "main/", *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(
            "repository",
            "connect",
            "s3",
            "--bucket=kopia",
            f"--prefix={prefix}",
            f"--endpoint={S3_ENDPOINT}",
            "--disable-tls",
            "--override-hostname=e2e-oracle",
            "--override-username=tester",
            *extra,
            check=check,
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def snapshots(self) -> list[dict]:
        return self.json("snapshot", "list", "--all")

    def snapshots_of(self, source: str) -> list[dict]:
        return [s for s in self.snapshots() if source_name(s) == source]

    def repository_id(self) -> str:
        status = self.json("repository", "status")
        return status["uniqueIDHex"]


@dataclass
class System:
    ssh_host: Any  # infra.SshHost
    kopia_binary: Path
    #: "engine" (the real Pulumi CLI; needs `engine_cli` and `ssh_auth_sock`) or "adapter"
    tier: str = "adapter"
    engine_cli: Path | None = None
    ssh_auth_sock: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    deployments: dict[str, Any] = field(default_factory=dict)  # Deployment or engine.EngineDeployment
    oracle: Kopia | None = None
    #: engine tier: what `pulumi refresh --preview-only --expect-no-changes` said on e2e-vps while its Kopia
    #: waited for sakamoto to create the repository ("" = no drift; else the error)
    drift_while_waiting: str | None = None
    #: e2e-sakamoto pings it after every healthy check; both hosts' Kopia post alerts to it (a webhook)
    receiver: infra.HttpReceiver | None = None
    mail: infra.SmtpReceiver | None = None  # both hosts' Kopia mail alerts to it
    #: the mail profiles log in (username SMTP_USERNAME, password `config:smtpPassword`) at a receiver that
    #: requires it, reached at 127.0.0.1 inside each Kopia container (`mail_reaches`)
    smtp_login: bool = False
    _lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _locked: bool = False
    receiver_address: str = ""
    _overridden: dict[str, set[str]] = field(default_factory=dict)  # per stack: the keys its last up set
    #: the first deploy: the owner's Kopia log from the start that created the repository, and what its health
    #: check said while the stack still set kopia.createRepository (`take_back_the_create_request`)
    creation_log: str = ""
    health_while_create_was_set: str = ""
    _made_networks: list[str] = field(default_factory=list)
    _workdir: Path | None = None

    def __post_init__(self) -> None:
        self.secrets = {
            "repoPassword": "repo-" + secrets.token_urlsafe(18),
            "serverUsername": "admin-" + secrets.token_hex(4),
            "serverPassword": "ui-" + secrets.token_urlsafe(18),
            "serverControlPassword": "ctl-" + secrets.token_urlsafe(18),
            "s3AccessKeyId": "AK" + secrets.token_hex(8).upper(),
            "s3SecretAccessKey": "sk-" + secrets.token_urlsafe(24),
            "s3Endpoint": f"http://{OPENLIST}:5246",
            "openlistAdminPassword": "ol-" + secrets.token_urlsafe(12),
        }
        if self.tier == "engine":
            assert self.engine_cli is not None and self.ssh_auth_sock, "the engine tier needs the CLI and an agent"
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{infra.NAME_PREFIX}engine-"))
        for stack in ("vps", "sakamoto"):
            if self.tier == "engine":
                assert self._workdir is not None and self.engine_cli is not None
                self.deployments[stack] = engine.EngineDeployment(
                    f"e2e-{stack}",
                    self.ssh_host,
                    cli_root=self.engine_cli,
                    workspace_dir=self._workdir / "workspace",
                    backend_dir=self._make_backend_dir(),
                    ssh_auth_sock=self.ssh_auth_sock,
                )
            else:
                self.deployments[stack] = Deployment(f"e2e-{stack}", self.ssh_host)
        say(f"tier: {self.tier} ({self.tier_description})")

    def engine_deployment(self, stack: str) -> engine.EngineDeployment:
        """The stack's deployment, for a test that runs only on the engine tier (state, refresh, preview): skipped
        on the adapter tier, saying why."""
        if self.tier != "engine":
            pytest.skip(f"engine tier only (this run: {self.tier}; {engine.unavailable_reason()})")
        deployment = self.deployments[stack]
        assert isinstance(deployment, engine.EngineDeployment)
        return deployment

    @property
    def tier_description(self) -> str:
        if self.tier == "engine":
            return f"the real Pulumi CLI {infra.PULUMI_VERSION} through the Automation API"
        return "the program under mocks, applied by testbed/adapter.py"

    def _make_backend_dir(self) -> Path:
        assert self._workdir is not None
        backend = self._workdir / "state"
        backend.mkdir(exist_ok=True)
        return backend

    @property
    def secret_values(self) -> list[str]:
        return [v for k, v in self.secrets.items() if k not in ("s3Endpoint", "serverUsername")]

    # ------------------------------------------------------------ pulumi up

    def overrides(self, stack: str, **extra: Any) -> dict[str, Any]:
        """What an operator sets with `pulumi config set` to point the test stack at this machine's sshd and
        its mail alerts at this machine's SMTP receiver."""
        config = stack_config(f"e2e-{stack}")
        host = extra.pop("homelab-backup:host", None) or config["homelab-backup:host"]
        ssh = {
            **host["ssh"],
            "address": self.ssh_host.address,
            "port": self.ssh_host.port,
            "user": self.ssh_host.user,
            "hostKey": self.ssh_host.host_public_key,
        }
        assert self.mail is not None, "start_receivers() first"
        where = {"smtpServer": self.receiver_address, "smtpPort": self.mail.port}
        if self.smtp_login:  # Kopia's sender sends a password only over TLS or to localhost
            where = {**where, "smtpServer": "127.0.0.1", "username": SMTP_USERNAME, "password": "config:smtpPassword"}
        notifications = [
            {**p, "email": {**p["email"], **where}} if "email" in p else p
            for p in config["homelab-backup:notifications"]
        ]
        return {"homelab-backup:host": {**host, "ssh": ssh}, "homelab-backup:notifications": notifications, **extra}

    def openlist_admin(self) -> Any:
        """OpenList's admin API on the VPS (the test's own client), logged in with the declared password."""
        admin = infra.OpenListAdmin(OPENLIST_WEB_URL)
        admin.login(self.secrets["openlistAdminPassword"])
        return admin

    def up(self, stack: str, secrets_override: dict[str, str] | None = None, **extra: Any) -> None:
        started = time.monotonic()
        deployment = self.deployments[stack]
        overrides = self.overrides(stack, **extra)
        # The engine keeps what `pulumi config set` stored: a key an earlier up overrode goes back to the
        # stack file's value unless this up overrides it too (the adapter starts from the file every time).
        declared = stack_config(f"e2e-{stack}")
        for key in self._overridden.get(stack, set()) - set(overrides):
            if key in declared:
                overrides[key] = declared[key]
        self._overridden[stack] = set(overrides)
        deployment.up(overrides, {**self.secrets, **(secrets_override or {})})
        took = time.monotonic() - started
        say(f"pulumi up e2e-{stack} [{self.tier}]: {took:.1f}s ({', '.join(deployment.log[-4:])})")

    def run_status(self, *args: str) -> subprocess.CompletedProcess:
        """`./scripts/status` for both stacks, as the operator runs it (engine tier: it reads Pulumi's stacks)."""
        assert self.tier == "engine", "scripts/status reads the stacks from Pulumi: engine tier only"
        deployment = self.deployments["vps"]
        stacks = [arg for stack in STACKS for arg in ("--stack", f"e2e-{stack}")]
        return subprocess.run(
            [str(engine.ROOT / "scripts" / "status"), *stacks, "--workdir", str(deployment.workspace_dir), *args],
            env={**os.environ, **deployment.env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def kopia(self, stack: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """`kopia <command>` inside the host's container, its secrets sourced first, as the runbook's commands do."""
        return self.docker("exec", KOPIA[stack], "sh", "-c", f"{WITH_SECRETS}kopia {command}", check=check)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.deployments["vps"].docker(*args, check=check)

    def inspect(self, container: str) -> dict:
        return json.loads(self.docker("inspect", container).stdout)[0]

    def runs_image(self, container: str, image: str) -> bool:
        """Whether the container runs that image. Compared by ID: Pulumi's docker provider creates a container from
        its image's ID (`RemoteImage.image_id`), so `.Config.Image` is `sha256:...` under the engine and the name
        under the adapter."""
        image_id = self.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        return self.inspect(container)["Image"] == image_id

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return state.get("Health", {}).get("Status", state["Status"])

    def health_output(self, container: str) -> str:
        """What the container's last health check printed (Docker keeps it in `docker inspect`)."""
        log = self.inspect(container)["State"].get("Health", {}).get("Log") or [{}]
        return str(log[-1].get("Output", ""))

    def wait_health(self, container: str, wanted: str, timeout: float) -> float:
        """Wait until Docker reports `wanted` (healthy/unhealthy); returns how long that took."""
        started = time.monotonic()
        wait_for(f"{container} to be {wanted}", lambda: self.health(container) == wanted, timeout, interval=2)
        return time.monotonic() - started

    def wait_healthy(self, container: str, timeout: float = 240) -> None:
        def healthy() -> bool:
            status = self.health(container)
            if status == "unhealthy":  # reported if it never recovers
                raise AssertionError(f"{container} unhealthy: {self.logs(container)[-800:]}")
            return status == "healthy"

        wait_for(f"{container} to be healthy", healthy, timeout, interval=3)

    def logs(self, container: str) -> str:
        result = self.docker("logs", container, check=False)
        return result.stdout + result.stderr

    # ------------------------------------------------------------ first deploy

    def prepare_host(self) -> None:
        """Fresh host dirs under BASE; holds the machine-wide run lock until `destroy()`."""
        if not self._locked:
            self._lock.enter_context(infra.exclusive_run(f"e2e stacks under {BASE}"))
            self._locked = True
        # The names are fixed and the lock is held: a container by these names, or one that mounts the dirs about
        # to be deleted (a dump's, a test's database or writer), is a crashed or interrupted run's. Left running it
        # would write into those dirs while they are deleted, and a new deploy would find it unchanged and keep it.
        leftovers = {*KOPIA.values(), OPENLIST, *infra.containers_mounting(BASE)}
        for container in sorted(leftovers):
            infra.docker("rm", "-f", container, check=False)
        infra.docker("network", "rm", NETWORK, check=False)
        if BASE.exists():
            shutil.rmtree(BASE)
        for stack in ("vps", "sakamoto"):
            self.make_host_dir(stack)
            for source_dir in SOURCES[stack].values():
                source_dir.mkdir(parents=True)
                write_test_data(source_dir, seed=str(source_dir))
        # The stand-in for the 189 drive: it exists before any deploy, as the drive does.
        DRIVE_ON_HOST.mkdir(parents=True)
        shutil.chown(DRIVE_ON_HOST, user=infra.OPENLIST_UID, group=infra.OPENLIST_UID)
        DRIVE_ON_HOST.chmod(0o700)
        BASE.chmod(0o755)

    def make_host_dir(self, stack: str) -> None:
        """The host's dir that holds its config dir, `kopiaDataDir` and sources, writable by the SSH user (README,
        prerequisites: "writable parents for the dirs the stack names"); empty."""
        HOST_DIR[stack].mkdir(parents=True)
        shutil.chown(HOST_DIR[stack], user=self.ssh_host.user)  # the SSH user writes the config dir here

    def deploy(self) -> None:
        """First deploy as the README gives it: `pulumi up` vps, then sakamoto. Nothing else."""
        self.prepare_host()
        self.start_receivers()
        self.up("vps")
        if self.tier == "engine":
            self.observe_drift_while_vps_waits()
        self.up(OWNER, **CREATE_REPOSITORY)
        self.take_back_the_create_request()
        self._make_oracle()

    def take_back_the_create_request(self, up_owner: Callable[[], None] | None = None) -> None:
        """Once the owner's Kopia has created the repository, the README's next step: `pulumi config rm
        homelab-backup:kopia.createRepository` and `pulumi up` (here: the owner's up without the key, by
        `up_owner` when the caller deploys it with more overrides). Keeps the creating start's log, and the
        health check's output while the key was still set, for the tests."""
        container = KOPIA[OWNER]
        wait_for(
            f"{container} to create the repository",
            lambda: "created the repository" in self.logs(container),
            300,
            interval=3,
        )
        wait_for(
            f"{container}'s health check to ask for kopia.createRepository to be removed",
            lambda: "kopia.createRepository is still set" in self.health_output(container),
            90,
            interval=2,
        )
        self.creation_log = self.logs(container)
        self.health_while_create_was_set = self.health_output(container)
        (up_owner or (lambda: self.up(OWNER)))()

    def deploy_in_reverse_order(self) -> None:
        """First deploy the other way round: sakamoto (the owner) before the VPS and its OpenList exist.

        sakamoto's network belongs to its own compose stack on a real host; here both hosts share one
        Docker engine, so the network is made first, by hand, and the VPS stack uses it as it is.
        """
        self.prepare_host()
        infra.docker("network", "create", NETWORK)
        self._made_networks.append(NETWORK)
        self.start_receivers()
        self.up(OWNER, **CREATE_REPOSITORY)  # its S3 endpoint does not exist yet: Kopia fails loudly and retries
        vps_host = {**_HOST["vps"], "network": {**_HOST["vps"]["network"], "create": False}}
        self.up("vps", **{"homelab-backup:host": vps_host})
        self.take_back_the_create_request()
        self._make_oracle()

    def _make_oracle(self) -> None:
        self.oracle = self.new_oracle()

    def new_oracle(self, password: str | None = None, **keys: str) -> Kopia:
        """A Kopia client on this machine with its own fresh config dir, not yet connected: the repository
        password and the S3 keys the stacks declare now, unless given (`access_key`, `secret_key`)."""
        workdir = Path(tempfile.mkdtemp(prefix="oracle-", dir=BASE))
        return Kopia(
            self.kopia_binary,
            workdir,
            self.secrets["repoPassword"] if password is None else password,
            keys.get("access_key", self.secrets["s3AccessKeyId"]),
            keys.get("secret_key", self.secrets["s3SecretAccessKey"]),
        )

    def renew_oracle(self) -> None:
        """The oracle again, connected with the repository password and S3 keys the stacks declare now (its
        connection keeps the S3 keys it was made with)."""
        self.oracle = self.new_oracle()
        wait_for("the declared secrets to open the repository", lambda: self.oracle.connect().returncode == 0, 60, 5)

    def wait_for_snapshots_since(self, moment: float, timeout: float = 240) -> None:
        """A snapshot of every source of both hosts that started at `moment` or later, without errors."""
        assert self.oracle is not None

        def started(snapshot: dict) -> float:
            return time.mktime(time.strptime(snapshot["startTime"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone

        def done() -> bool:
            for source in ALL_SOURCES:
                newest = self.oracle.snapshots_of(source)[-1]
                if started(newest) < moment - 1 or newest["stats"]["errorCount"]:
                    return False
            return True

        wait_for("a new snapshot of every source of both hosts", done, timeout, interval=10)

    def assert_heartbeat_stays_quiet(self, why: str) -> None:
        """No heartbeat ping for 30 s, counted from 15 s on (a ping already on its way may land): `why` says whose."""
        assert self.receiver is not None
        time.sleep(15)
        quiet = time.time()
        time.sleep(30)
        assert self.receiver.pings_since(quiet) == 0, why

    def start_receivers(self) -> None:
        """Local HTTP and SMTP receivers, and the heartbeat and alert URLs that point at them; then both stacks
        as they will be deployed (the owner's first up as well) are checked by the program's rules
        (`check_injected_config`)."""
        self.stop_receivers()
        login = None
        if self.smtp_login:
            login = (SMTP_USERNAME, self.secrets.setdefault("smtpPassword", "smtp-" + secrets.token_urlsafe(18)))
        self.receiver, self.mail = infra.HttpReceiver(), infra.SmtpReceiver(login=login)
        self.receiver_address = infra.bridge_gateway()  # this machine, as the test stacks' containers reach it
        self.secrets["heartbeatUrl"] = self.receiver.ping_url(self.receiver_address)
        self.secrets["alertWebhookUrl"] = self.receiver.webhook_url(self.receiver_address)
        for stack in STACKS:
            check_injected_config(stack, self.overrides(stack), self.secrets)
        check_injected_config(OWNER, self.overrides(OWNER, **CREATE_REPOSITORY), self.secrets)  # its first up

    def mail_reaches(self, stack: str) -> None:
        """With `smtp_login`: the SMTP receiver listens at 127.0.0.1 inside the host's Kopia container as it runs
        now (again after every up that replaced it)."""
        assert self.mail is not None and self.smtp_login
        self.mail.listen_in_network_of(self.inspect(KOPIA[stack])["State"]["Pid"])

    def stop_receivers(self) -> None:
        for receiver in (self.receiver, self.mail):
            if receiver is not None:
                receiver.stop()

    def observe_drift_while_vps_waits(self) -> None:
        """Before sakamoto exists, vps's Kopia waits for the repository; refresh must see no drift then."""

        def waiting() -> bool:
            return "waiting for that host" in self.logs(KOPIA["vps"]).split("kopia-start: connecting")[-1]

        wait_for("e2e-vps's Kopia to wait for the repository", waiting, 180, interval=3)
        try:
            self.deployments["vps"].preview_refresh(expect_no_changes=True)
            self.drift_while_waiting = ""
        except infra.E2EError as error:
            self.drift_while_waiting = str(error)

    def s3(self) -> S3Client:
        return S3Client(f"http://{S3_ENDPOINT}", self.secrets["s3AccessKeyId"], self.secrets["s3SecretAccessKey"])

    def destroy_stacks(self) -> None:
        """`pulumi destroy` of both stacks (what they declared; host data stays). Every step is tried."""
        errors = []
        for stack in ("sakamoto", "vps"):
            try:
                self.deployments[stack].destroy()
            except Exception as error:
                errors.append(str(error))
        if errors:
            raise RuntimeError("; ".join(errors))

    def destroy(self) -> None:
        """Everything the suite made, even after a failure."""
        try:
            self.destroy_stacks()
        finally:
            for network in self._made_networks:
                infra.docker("network", "rm", network, check=False)
            subprocess.run(["rm", "-rf", str(BASE)], check=False)
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self.stop_receivers()
            self._lock.close()


@dataclass(frozen=True)
class RealParts:
    images: Any  # infra.E2EImages
    ssh_host: Any  # infra.SshHost
    ssh_auth_sock: str
    tier: str
    engine_cli: Path | None

    def system(self) -> System:
        return System(
            ssh_host=self.ssh_host,
            kopia_binary=Path(self.images.kopia_binary),
            tier=self.tier,
            engine_cli=self.engine_cli,
            ssh_auth_sock=self.ssh_auth_sock,
        )


def choose_tier(cache: Path) -> tuple[str, Path | None]:
    """The engine where its plugins are installed (building the CLI if needed), else the adapter."""
    reason = engine.unavailable_reason()
    if reason is None:
        return "engine", engine.ensure_cli(cache)
    if engine.engine_mode() == "require":
        raise infra.E2EError(f"{engine.ENGINE_ENV}=require, but the engine tier cannot run: {reason}")
    say(f"engine tier skipped: {reason}; using the adapter tier")
    return "adapter", None


@contextlib.contextmanager
def real_parts() -> Iterator[RealParts]:
    """Docker engine, images, sshd, the operator's ssh-agent and the tier, outside pytest (demo, benchmark)."""
    infra.check_prerequisites()
    cache = infra.cache_dir()
    infra.ensure_docker_engine(cache)  # left running: another run may be waiting to use it
    sshd = infra.SshServer()
    try:
        images = infra.ensure_images(cache, infra.ensure_kopia_binary(cache), infra.ensure_openlist_binary(cache))
        tier, cli = choose_tier(cache)
        ssh_host = sshd.start(container_address=infra.bridge_gateway())
        with infra.operator_agent(ssh_host) as sock:
            yield RealParts(images, ssh_host, sock, tier, cli)
    finally:
        sshd.stop()
