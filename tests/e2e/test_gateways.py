"""Two gateways, one repository: the cluster's OpenList configured by sakamoto's stack, and what the two
gateways' cached listings mean for Kopia (testbed/gateways.py has the setup and why).

The drive is OpenList's SFTP driver on the suite's own sshd, which caches listings like 189CloudPC; the
cache is 1 minute here so that its bound can be waited out (the committed stacks keep OpenList's 30).
`benchmarks/gateway_visibility.py` measures the same with 0, 1 and 30 minutes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from testbed import infra
from testbed.gateways import BUCKET, DRIVE, PREFIX, TwoGateways, measure_visibility
from testbed.system import KOPIA, SOURCES, STACKS, say, wait_for

CACHE_MINUTES = 1
CACHE_SECONDS = CACHE_MINUTES * 60
#: Kopia caches its own blob listings for 30 s (`repository connect --max-list-cache-duration`, its
#: default, cli/command_repository_connect.go at v0.22.3): on top of the gateway's cache.
KOPIA_LIST_CACHE_SECONDS = 30
POLL_SLACK_SECONDS = 15


@pytest.fixture(scope="module")
def gateways(parts, request) -> TwoGateways:
    two = TwoGateways(parts.system(), cache_minutes=CACHE_MINUTES)
    request.addfinalizer(two.destroy)
    started = time.monotonic()
    two.deploy(first_restart_fails=True)
    say(f"deployed both stacks with two gateways: {time.monotonic() - started:.1f}s")
    for stack in KOPIA:
        two.system.wait_healthy(KOPIA[stack], timeout=300)
    return two


def test_sakamotos_up_configures_the_cluster_gateway_it_does_not_deploy(gateways: TwoGateways):
    """`openlist.adminUrl`: the program configures an OpenList it does not run, through a tunnel to sakamoto."""
    system = gateways.system
    admin = gateways.cluster_admin()  # the given admin password logs in
    storage = admin.storage("/189")
    assert (storage["driver"], storage["status"], storage["web_proxy"]) == ("SFTP", "work", True)
    assert storage["cache_expiration"] == CACHE_MINUTES
    assert json.loads(storage["addition"])["private_key"] == system.secrets["sftpPrivateKey"]
    rows = admin.s3_rows()
    assert rows["s3_access_key_id"]["value"] == system.secrets["s3AccessKeyId"]
    assert rows["s3_buckets"]["value"] == f'[{{"name":"{BUCKET}","path":"/189/{BUCKET}"}}]'
    assert {rows[k]["flag"] for k in ("s3_access_key_id", "s3_secret_access_key", "s3_buckets")} == {1}
    public = admin.public_settings()
    for value in system.secret_values:
        assert value not in public, "a secret is readable without login"
    # sakamoto's up restarted it with openlist.restartCommand after saving the S3 keys: they are in force.
    assert gateways.cluster is not None
    assert gateways.cluster_started() != gateways.cluster_first_start, "sakamoto's up did not restart it"
    status, body = infra.s3_anonymous_get(f"{gateways.cluster.s3_url}/{BUCKET}/")
    assert status == 403, body
    # sakamoto's repository lives on the drive the gateway serves, and sakamoto snapshots through it.
    assert (DRIVE / BUCKET / PREFIX / "kopia.repository").is_file()
    assert any(key.startswith(f"{PREFIX}p") for key in gateways.blobs("sakamoto")), "no pack through the cluster"


def test_an_up_whose_restart_fails_fails_and_the_next_up_restarts_the_gateway(gateways: TwoGateways):
    """The first up's restart command fails after the S3 keys were saved: that up fails, naming the open S3
    port; the up after the fix finds the rows saved, and restarts the gateway all the same, because the S3
    port, not the saved rows, says whether the keys are in force. Then an unsigned request is refused."""
    failure = gateways.first_up_failure
    assert "OpenList: putting the S3 keys in force: its S3 port at " in failure, failure
    assert "it answers an unsigned request (HTTP 200): it runs without keys" in failure, failure
    assert "running openlist.restartCommand failed" in failure, failure
    for value in gateways.system.secret_values:
        assert value not in failure
    assert gateways.unsigned_status_after_failed_up == 200, "the failed up left the gateway open: it had to fail"
    assert gateways.cluster is not None
    assert gateways.cluster_started() != gateways.cluster_first_start, "the up after the fix did not restart it"
    status, body = infra.s3_anonymous_get(f"{gateways.cluster.s3_url}/{BUCKET}/")
    assert status == 403, body
    assert gateways.cluster_s3().list_keys(BUCKET, PREFIX), "Kopia's keys are taken"


def test_a_second_up_leaves_the_cluster_gateway_as_it_is(gateways: TwoGateways):
    modified = gateways.cluster_admin().storage("/189")["modified"]
    started = gateways.cluster_started()
    gateways.up("sakamoto")
    assert gateways.cluster_admin().storage("/189")["modified"] == modified, "an unchanged config rewrote it"
    assert gateways.cluster_started() == started, "an unchanged config restarted it"
    if gateways.system.tier == "engine":
        gateways.system.deployments["sakamoto"].preview_refresh(expect_no_changes=True)


def test_what_one_gateway_writes_the_other_lists_within_the_cache_expiration(gateways: TwoGateways):
    """Measured in the worst case (the reader's listing cached just before the write), both ways."""
    vps, cluster = ("vps", gateways.vps_s3()), ("cluster", gateways.cluster_s3())
    # Through one gateway a write is listed at once (OpenList updates its own cache): Kopia reads its writes.
    own = measure_visibility(cluster, cluster, CACHE_MINUTES, timeout=10)
    assert own.listed_at_once, own.describe()
    for writer, reader in ((vps, cluster), (cluster, vps)):
        measured = measure_visibility(writer, reader, CACHE_MINUTES, timeout=CACHE_SECONDS + 60)
        # The stand-in caches like 189 (otherwise this test would prove nothing) ...
        assert not measured.listed_at_once, f"{measured.describe()}: the drive's listing was not cached"
        # ... and never for longer than the cache expiration.
        assert measured.seconds is not None, measured.describe()
        assert measured.seconds <= CACHE_SECONDS + POLL_SLACK_SECONDS, measured.describe()


def _new_snapshot(gateways: TwoGateways, stack: str) -> str:
    """A snapshot of one of `stack`'s sources with a new file in it, made now in its container; its id."""
    source_path, host_dir = next(iter(SOURCES[stack].items()))
    (host_dir / f"new-{secrets.token_hex(4)}.bin").write_bytes(secrets.token_bytes(200_000))
    made = gateways.system.kopia(stack, f"snapshot create {source_path} --json")
    return json.loads(made.stdout)["id"]


def _snapshot_ids(gateways: TwoGateways, stack: str) -> set[str]:
    listed = gateways.system.kopia(stack, "snapshot list --all --json")
    return {snapshot["id"] for snapshot in json.loads(listed.stdout)}


@pytest.mark.parametrize(("writer", "reader"), [("vps", "sakamoto"), ("sakamoto", "vps")])
def test_each_hosts_new_snapshot_reaches_the_other_host_within_the_bound(
    gateways: TwoGateways, writer: str, reader: str
):
    """The bound docs/openlist.md states: the gateway's cache plus Kopia's own 30 s list cache."""
    snapshot = _new_snapshot(gateways, writer)
    written = time.monotonic()
    bound = CACHE_SECONDS + KOPIA_LIST_CACHE_SECONDS + POLL_SLACK_SECONDS
    wait_for(f"{writer}'s snapshot {snapshot} on {reader}", lambda: snapshot in _snapshot_ids(gateways, reader), bound)
    say(f"{writer}'s new snapshot listed on {reader} after {time.monotonic() - written:.1f} s (bound {bound} s)")


def test_maintenance_on_the_owner_through_a_stale_listing_keeps_what_the_other_host_just_wrote(
    gateways: TwoGateways,
):
    """sakamoto, the owner, runs full maintenance while its gateway does not yet list the blobs vps just
    wrote; afterwards both hosts' `kopia snapshot verify` reads every file of every snapshot.

    To start with as long a stale window as the cache gives, vps snapshots once and the test waits until
    sakamoto's gateway lists those blobs: its cached listing was just renewed. Then vps snapshots again and
    sakamoto's maintenance starts at once, from a listing without vps's new index. The listing may renew
    during the run: OpenList re-lists a folder when a blob written through that gateway is read back
    (docs/upstream-behaviour.md#listing-cache_expiration); the log line says whether it did."""
    system = gateways.system
    before = gateways.blobs("vps")
    _new_snapshot(gateways, "vps")
    renewed = gateways.blobs("vps") - before
    wait_for("sakamoto's gateway to renew its listing", lambda: renewed <= gateways.blobs("sakamoto"), 90, interval=1)
    renewed_at = time.monotonic()
    before = gateways.blobs("vps")
    snapshot = _new_snapshot(gateways, "vps")
    new_blobs = gateways.blobs("vps") - before
    assert any(key.startswith(f"{PREFIX}p") for key in new_blobs), new_blobs  # a pack of new content
    unseen = new_blobs - gateways.blobs("sakamoto")
    # The index blob is what tells a reader the new snapshot's contents exist: the owner opens the repository
    # (and plans its GC) from a listing without it.
    assert any(key.startswith(f"{PREFIX}x") for key in unseen), f"listed at once: {new_blobs - unseen}"
    started = time.monotonic()
    maintenance = system.kopia("sakamoto", "maintenance run --full", check=False)
    took = time.monotonic() - started
    still_unseen = unseen - gateways.blobs("sakamoto")
    say(
        f"full maintenance on sakamoto ({took:.1f} s, from {started - renewed_at:.1f} s after its gateway renewed "
        f"its listing) while that listing missed {len(unseen)} of vps's {len(new_blobs)} new blobs "
        f"({len(still_unseen)} still missing when it ended): exit {maintenance.returncode}"
    )
    assert maintenance.returncode == 0, maintenance.stdout + maintenance.stderr
    assert "Finished full maintenance" in maintenance.stderr, maintenance.stderr[-2000:]
    wait_for(
        "sakamoto's gateway to list vps's new blobs",
        lambda: not new_blobs - gateways.blobs("sakamoto"),
        CACHE_SECONDS + POLL_SLACK_SECONDS,
    )
    assert new_blobs <= gateways.blobs("vps"), "maintenance deleted a blob vps had just written"
    for stack in KOPIA:
        verified = system.kopia(stack, "snapshot verify --verify-files-percent=100", check=False)
        assert verified.returncode == 0, f"{stack}: {verified.stdout[-1500:]}{verified.stderr[-1500:]}"
    wait_for(
        f"vps's snapshot {snapshot} on sakamoto",
        lambda: snapshot in _snapshot_ids(gateways, "sakamoto"),
        KOPIA_LIST_CACHE_SECONDS + POLL_SLACK_SECONDS,
    )


def test_the_drives_credential_rotates_with_pulumi_up(gateways: TwoGateways):
    """The storage's secret field (`openlist.storage.secretFields`: here the SFTP driver's `private_key`, on the
    real hosts the 189 password) changed at the provider first, then in the stacks, as docs/operations.md says.

    The provider's change: the drive's sshd takes a new key for the SFTP login and no longer the old one. The
    gateways' open sessions are left as they are (ending them cuts off uploads in flight, and OpenList's SFTP
    driver leaves the cut-off blob under its final name: in one run an empty index blob broke the repository;
    docs/operations.md). `pulumi up` of each stack then gives its gateway the new key: the storage logs in
    again with it (a new session: the old key no longer logs in at the sshd), reads and writes, the snapshots
    run on both hosts, and Kopia alerts no failure."""
    system = gateways.system
    assert system.receiver is not None and system.ssh_host.sftp_endpoint
    host = system.ssh_host
    authorized = infra.authorized_keys_file(host)
    original = authorized.read_text()
    keys = Path(tempfile.mkdtemp(prefix=f"{infra.NAME_PREFIX}sftp-key-"))
    old_key = keys / "old_sftp_ed25519"
    with os.fdopen(os.open(old_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(host.sftp_private_key_pem)  # ssh reads a key from a file only
    new_key = infra.make_sftp_key(keys)
    try:
        assert infra.sftp_list(host, old_key, str(DRIVE)).returncode == 0, "the declared key logs in"
        since = time.time()

        # 1. At the provider: the new key in, the old one out.
        infra.replace_sftp_key(host, new_key.with_suffix(".pub"))
        denied = infra.sftp_list(host, old_key, str(DRIVE))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied.stderr

        # 2. `pulumi up` both stacks with the new key: each gateway's storage takes it and logs in again.
        system.secrets["sftpPrivateKey"] = new_key.read_text()
        gateways.up("vps")
        gateways.up("sakamoto")
        deployed = time.time()
        for admin in (system.openlist_admin(), gateways.cluster_admin()):
            storage = admin.storage("/189")
            assert storage["status"] == "work"
            assert json.loads(storage["addition"])["private_key"] == system.secrets["sftpPrivateKey"]
        for stack in STACKS:
            probe = f"rotation-probe/{stack}-{secrets.token_hex(4)}"
            gateways.gateway(stack).put(BUCKET, probe, b"probe")
            assert any(key == probe for key, _ in gateways.gateway(stack).list_keys(BUCKET, "rotation-probe/"))
            assert (DRIVE / BUCKET / probe).read_bytes() == b"probe"
        assert infra.sftp_list(host, new_key, str(DRIVE)).returncode == 0, "the new key logs in"
        assert infra.sftp_list(host, old_key, str(DRIVE)).returncode != 0, "the old key still logs in"

        # Snapshots run on both hosts; Kopia alerted no failure.
        system.renew_oracle()  # Kopia on this machine, connected through the VPS's gateway
        system.wait_for_snapshots_since(deployed, timeout=300)
        for stack in STACKS:
            system.wait_health(KOPIA[stack], "healthy", timeout=240)
        failed = [a for a in system.receiver.alerts_since(since) if not a.headers.get("Subject", "").startswith("Test")]
        say(f"drive credential: both ups {deployed - since:.0f}s after the change; failures alerted: {len(failed)}")
        assert failed == [], [a.headers.get("Subject") for a in failed]
    finally:
        authorized.write_text(original)  # the session's sshd serves the next module's drive with its own key
        shutil.rmtree(keys, ignore_errors=True)
