"""Two OpenList gateways in front of one drive that caches its listings the way 189 Cloud's does.

On the real hosts the VPS writes through its own OpenList and sakamoto through the cluster's; both
serve the same 189 drive and each caches the drive's folder listings for `cache_expiration` minutes
(op.List, internal/op/fs.go at v4.2.5). What one gateway writes, the other lists only once its cached
listing expires. The main e2e deployment cannot show that: its Local storage is never cached
(driver.Config.NoCache). Here:

- the drive is OpenList's SFTP driver pointed at the suite's own sshd (a folder on this machine), which
  caches like 189CloudPC;
- the VPS's OpenList is deployed and configured by `pulumi up --stack e2e-vps`, as always;
- the cluster's OpenList is a plain container started here (it stands in for the user's pod, which the
  program does not deploy); `pulumi up --stack e2e-sakamoto` configures it through `openlist.adminUrl`
  and restarts it with `openlist.restartCommand` (`docker restart`, where a user's would be `kubectl
  rollout restart`), since OpenList reads its S3 keys at start only; with `first_restart_fails`, the
  first such up is given a command that fails (the user's first try), and a second up the right one;
- sakamoto's Kopia writes through the cluster's gateway, the VPS's through its own.

`measure_visibility` times how long an object written through one gateway takes to show in the other's
listing; the e2e tests and `benchmarks/gateway_visibility.py` both use it.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from testbed import infra
from testbed.mocks import stack_config
from testbed.s3 import S3Client
from testbed.system import BASE, CREATE_REPOSITORY, NETWORK, System, say

#: the stand-in for the user's cluster OpenList: a fixed name, removed by the next run like every other
CLUSTER_OPENLIST = f"{infra.NAME_PREFIX}openlist-cluster"
#: the user's first, wrong restart command: it fails, after the up saved the S3 keys
BROKEN_RESTART_COMMAND = "docker restart no-such-openlist"
#: the drive both gateways serve: a folder on this machine, reached over SFTP (owned by the SSH user)
DRIVE = BASE / "drive-sftp"
#: where the cluster's OpenList keeps its database on this machine
CLUSTER_DATA = BASE / "cluster-openlist" / "data"
BUCKET = stack_config("e2e-vps")["homelab-backup:repository"]["bucket"]
PREFIX = stack_config("e2e-vps")["homelab-backup:repository"]["prefix"]


def sftp_storage(ssh_host: Any, cache_minutes: int) -> dict[str, Any]:
    """The stacks' `openlist.storage` for the SFTP drive (the same on both gateways, as the same 189 account
    is on both real ones); the private key is a secret reference like the 189 password."""
    declared = stack_config("e2e-vps")["homelab-backup:openlist"]["storage"]
    return {
        "driver": "SFTP",
        "mountPath": declared["mountPath"],
        "cacheExpirationMinutes": cache_minutes,
        "webProxy": True,
        "fields": {"address": ssh_host.sftp_endpoint, "username": ssh_host.user, "root_folder_path": str(DRIVE)},
        "secretFields": {"private_key": "config:sftpPrivateKey"},
    }


@dataclass
class TwoGateways:
    """Both test stacks deployed with one gateway each in front of the SFTP drive."""

    system: System
    cache_minutes: int
    cluster: infra.OpenListContainer | None = None
    cluster_first_start: str = ""  # when the cluster's OpenList started, before any `pulumi up` touched it
    #: with `deploy(first_restart_fails=True)`: how sakamoto's first up failed, and what the cluster's S3 port
    #: then answered an unsigned request (the gateway the failed up left behind)
    first_up_failure: str = ""
    unsigned_status_after_failed_up: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.system.ssh_host.sftp_endpoint, "the sshd must listen for containers (SshServer.start)"
        self.system.secrets.update(
            {
                "sftpPrivateKey": self.system.ssh_host.sftp_private_key_pem,
                "clusterAdminPassword": "olc-" + secrets.token_urlsafe(12),
                # sakamoto's S3 endpoint is the cluster's gateway (the real one comes from Key Vault)
                "s3Endpoint": f"http://{CLUSTER_OPENLIST}:{infra.OPENLIST_S3_PORT}",
            }
        )

    # ------------------------------------------------------------ deploy

    def deploy(self, first_restart_fails: bool = False) -> None:
        """`pulumi up` vps, start the cluster's OpenList (the user's, before any deploy), `pulumi up` sakamoto
        (first with a restart command that fails, if `first_restart_fails`: that up must fail) with
        kopia.createRepository, and once the repository exists, without it (README "First deploy")."""
        system = self.system
        system.prepare_host()  # takes the run lock; the fixed names below are ours now
        infra.docker("rm", "-f", CLUSTER_OPENLIST, check=False)
        DRIVE.mkdir(parents=True)
        shutil.chown(DRIVE, user=system.ssh_host.user, group=system.ssh_host.user)
        DRIVE.chmod(0o700)
        system.start_receivers()
        self.up("vps")
        with infra.timed("start the cluster's OpenList (the user's own, not deployed by the program)"):
            self.cluster = infra.start_openlist(CLUSTER_OPENLIST, NETWORK, CLUSTER_DATA)
            # The user's gateway has an admin password; the stack is given it (docs/openlist.md).
            infra.OpenListAdmin.set_admin_password(CLUSTER_OPENLIST, system.secrets["clusterAdminPassword"])
            self.cluster_first_start = self.cluster_started()
        if first_restart_fails:
            try:
                self.up("sakamoto", restart_command=BROKEN_RESTART_COMMAND, **CREATE_REPOSITORY)
            except Exception as error:  # either tier's failure: the test reads the message
                self.first_up_failure = str(error)
            else:
                raise infra.E2EError("sakamoto's up succeeded though its restart command restarts nothing")
            assert self.cluster is not None
            self.unsigned_status_after_failed_up = infra.s3_anonymous_get(f"{self.cluster.s3_url}/{BUCKET}/")[0]
            say(f"sakamoto's up with a failing restart command failed: {self.first_up_failure.splitlines()[0]}")
        self.up("sakamoto", **CREATE_REPOSITORY)  # the owner's first deploy asks for the repository
        system.take_back_the_create_request(lambda: self.up("sakamoto"))
        system._make_oracle()

    def up(self, stack: str, restart_command: str = f"docker restart {CLUSTER_OPENLIST}", **extra: Any) -> None:
        """`pulumi up` of one stack with its gateway on the SFTP drive (sakamoto's restarted by `restart_command`,
        run on sakamoto: this machine's sshd), and `extra` config keys as `System.up` takes them."""
        if stack == "vps":
            openlist = {
                **stack_config("e2e-vps")["homelab-backup:openlist"],
                "storage": sftp_storage(self.system.ssh_host, self.cache_minutes),
            }
        else:
            assert self.cluster is not None, "start the cluster's OpenList first"
            openlist = {
                "adminUrl": self.cluster.web_url,  # as sakamoto (this machine's sshd) reaches it
                "s3Url": self.cluster.s3_url,  # where each up sees its S3 keys in force
                "adminPassword": "config:clusterAdminPassword",
                "restartCommand": restart_command,
                "storage": sftp_storage(self.system.ssh_host, self.cache_minutes),
            }
        started = time.monotonic()
        self.system.up(stack, **{"homelab-backup:openlist": openlist, **extra})
        self.timings[f"up {stack}"] = round(time.monotonic() - started, 1)

    def set_cache(self, minutes: int) -> None:
        """Both gateways' `cacheExpirationMinutes` changed by `pulumi up` (no restart: a storage setting)."""
        self.cache_minutes = minutes
        self.up("vps")
        self.up("sakamoto")

    def cluster_started(self) -> str:
        """The cluster's OpenList's `State.StartedAt` (a restart changes it)."""
        return str(self.system.inspect(CLUSTER_OPENLIST)["State"]["StartedAt"])

    def destroy(self) -> None:
        # First: it is attached to the VPS stack's network, which `pulumi destroy` removes.
        infra.docker("rm", "-f", CLUSTER_OPENLIST, check=False)
        self.system.destroy()

    # ------------------------------------------------------------ the two gateways' S3 and admin API

    def vps_s3(self) -> S3Client:
        return self.system.s3()

    def cluster_s3(self) -> S3Client:
        assert self.cluster is not None
        keys = self.system.secrets["s3AccessKeyId"], self.system.secrets["s3SecretAccessKey"]
        return S3Client(self.cluster.s3_url, *keys)

    def cluster_admin(self) -> infra.OpenListAdmin:
        assert self.cluster is not None
        admin = infra.OpenListAdmin(self.cluster.web_url)
        admin.login(self.system.secrets["clusterAdminPassword"])
        return admin

    def gateway(self, stack: str) -> S3Client:
        """The gateway `stack`'s Kopia writes through."""
        return self.vps_s3() if stack == "vps" else self.cluster_s3()

    def blobs(self, stack: str) -> set[str]:
        """The repository's blobs as `stack`'s gateway lists them now (every page, as Kopia lists)."""
        return {key for key, _ in self.gateway(stack).list_keys(BUCKET, PREFIX, every_page=True)}


@dataclass(frozen=True)
class Visibility:
    """One measurement: an object put through `writer`, polled for in `reader`'s listing."""

    writer: str
    reader: str
    cache_minutes: int
    seconds: float | None  # None: not listed within the timeout
    listed_at_once: bool  # the first listing after the write already showed it (nothing was cached)

    def describe(self) -> str:
        seen = "not within the timeout" if self.seconds is None else f"after {self.seconds:.1f} s"
        return f"{self.writer} -> {self.reader} (cache {self.cache_minutes} min): listed {seen}"


def measure_visibility(
    writer: tuple[str, S3Client], reader: tuple[str, S3Client], cache_minutes: int, timeout: float, poll: float = 1.0
) -> Visibility:
    """The worst case: the reader lists a folder just before the writer puts an object into it, so the
    reader's cached listing is as fresh as it gets; then the reader's listing is polled until it shows the
    object. A folder of its own per measurement, outside Kopia's prefix; a seed object first, because
    OpenList caches only a listing that is not empty."""
    (writer_name, writer_s3), (reader_name, reader_s3) = writer, reader
    folder = f"visibility-probe/{secrets.token_hex(4)}/"
    reader_s3.put(BUCKET, f"{folder}seed", b"seed")
    reader_s3.list_keys(BUCKET, folder)  # the reader's listing is cached from now
    key = f"{folder}written-by-{writer_name}"
    writer_s3.put(BUCKET, key, b"probe")
    written = time.monotonic()
    listed_at_once = False
    seconds: float | None = None
    first, next_progress = True, 60.0
    while (waited := time.monotonic() - written) < timeout:
        if any(k == key for k, _ in reader_s3.list_keys(BUCKET, folder)):
            seconds = time.monotonic() - written  # until the listing that shows it has answered
            listed_at_once = first
            break
        if waited >= next_progress:  # a 30-minute cache is waited out in the benchmark
            say(f"visibility: {writer_name} -> {reader_name}: not listed yet after {waited:.0f} s")
            next_progress += 60
        first = False
        time.sleep(poll)
    result = Visibility(writer_name, reader_name, cache_minutes, seconds, listed_at_once)
    say(f"visibility: {result.describe()}")
    return result
