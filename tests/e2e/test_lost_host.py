"""The home server died (issue 18, part 3): docs/operations.md's runbook, run as the user would, on real parts.

sakamoto's disk is gone: its container, config dir, sources and `kopiaDataDir` are deleted. Then, in the doc's
order:
1. From another machine (this test machine's own Kopia, with a home of its own and only the repository password
   and the VPS gateway's S3 keys) every sakamoto source is restored into a new dir, byte for byte, with the
   commands of "A whole source, from any machine" read from the doc and run as written, on a terminal (Kopia
   asks for the password there), only their placeholders filled in (testbed/runbook.py).
2. A host with nothing on it: an empty host dir, the restored data copied in as its sources.
4. `pulumi up` of the same stack, without `kopia.createRepository`: it connects to the same repository and
   creates nothing, keeps the identity shelken@sakamoto, and takes the maintenance back.
5. Its first snapshot of the restored data uploads almost nothing, and the source's history holds the old
   snapshots and the new one; `scripts/status` shows every source ok (engine tier).
A failed check prints the step's own text from the doc: what to do next, in the doc's words.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed import engine, infra, runbook
from testbed.runbook import what_to_do
from testbed.system import (
    ADDRESS,
    HOST_DIR,
    KOPIA,
    KOPIA_DATA_DIR,
    REPOSITORY_ON_HOST,
    S3_ENDPOINT,
    SOURCES,
    System,
    say,
    source_name,
    tree_digest,
    wait_for,
)

LOST = "sakamoto"
LOST_SOURCES = {f"shelken@{LOST}:{path}": host_dir for path, host_dir in SOURCES[LOST].items()}
FORMAT_BLOB = REPOSITORY_ON_HOST / "kopia.repository"
#: what "almost nothing" means: the new data of the first snapshot after the restore, against the source's size
ALMOST_NOTHING = 0.05


def started_at(snapshot: dict) -> float:
    """A snapshot's start (`kopia snapshot list --json`), in seconds since the epoch (to the second)."""
    return datetime.strptime(snapshot["startTime"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


def format_blob_now() -> tuple[int, str]:
    return FORMAT_BLOB.stat().st_mtime_ns, hashlib.sha256(FORMAT_BLOB.read_bytes()).hexdigest()


def blob_sizes() -> dict[str, int]:
    """Every blob of the repository in the drive's folder, by name."""
    return {
        str(p.relative_to(REPOSITORY_ON_HOST)): p.stat().st_size for p in REPOSITORY_ON_HOST.rglob("*") if p.is_file()
    }


@dataclass
class Laptop:
    """Another machine: this host's own kopia binary as `kopia` on PATH, a home of its own (Kopia's config and cache
    go there), and nothing of the lost host but the repository password and one gateway's S3 keys."""

    home: Path
    kopia_binary: Path
    password: str
    s3_keys: dict[str, str]

    def __post_init__(self) -> None:
        self.home.mkdir(mode=0o700)
        (self.home / "bin").mkdir()
        (self.home / "bin" / "kopia").symlink_to(self.kopia_binary)

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.home / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": "operator",
            "LANG": "C.UTF-8",
            # This machine reaches no release server; a laptop's Kopia would check for a new version.
            "KOPIA_CHECK_FOR_UPDATES": "false",
        }

    def shell(self, *commands: str) -> subprocess.CompletedProcess[str]:
        """One shell session on a terminal: `export` of the S3 keys (the doc's line, filled in), then `commands`;
        Kopia's password prompt is answered as a user types it. The session's script holds the keys: it is
        private to this user and deleted after the run, as the keys are never on a command line."""
        export = runbook.fill_export(runbook.any_machine_commands().export, self.s3_keys)
        script = self.home / "session.sh"
        script.touch(mode=0o600)
        script.write_text("set -e\n" + "\n".join([export, *commands]) + "\n")
        try:
            result = infra.run_in_terminal(
                ["sh", str(script)], answers={runbook.PASSWORD_PROMPT: self.password}, env=self.env, timeout=300
            )
        finally:
            script.unlink()
        assert self.password not in result.stdout, "the typed password shows on the screen"
        return result


@dataclass
class LostHost:
    """What the tests below share: the host as it was, and what the restore made."""

    digests: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> its files' sha256 before the loss
    old_snapshots: dict[str, set[str]] = field(default_factory=dict)  # source -> snapshot IDs before the loss
    repository_id: str = ""
    format_blob: tuple[int, str] = (0, "")
    restored: dict[str, Path] = field(default_factory=dict)  # source -> the dir the laptop restored it into
    redeployed_at: float = 0.0


@pytest.fixture(scope="module")
def lost_host() -> LostHost:
    return LostHost()


def test_the_lost_hosts_sources_are_restored_byte_for_byte_from_another_machine_with_the_docs_commands(
    system: System, lost_host: LostHost, tmp_path_factory: pytest.TempPathFactory
):
    assert system.oracle is not None
    system.wait_healthy(KOPIA[LOST], timeout=300)
    system.oracle.connect()

    def every_source_snapshotted() -> bool:
        return all(s and not s[-1]["stats"]["errorCount"] for s in map(system.oracle.snapshots_of, LOST_SOURCES))

    wait_for(f"a snapshot of each {LOST} source", every_source_snapshotted, 300, interval=5)
    lost_host.repository_id = system.oracle.repository_id()
    lost_host.format_blob = format_blob_now()
    for source, host_dir in LOST_SOURCES.items():
        lost_host.digests[source] = tree_digest(host_dir)
        lost_host.old_snapshots[source] = {s["id"] for s in system.oracle.snapshots_of(source)}
    say(f"before the loss: {', '.join(f'{s}: {len(ids)} snapshot(s)' for s, ids in lost_host.old_snapshots.items())}")

    # The disk is gone: the container, and the host's dir with its config dir, sources and Kopia's cache and state.
    system.docker("rm", "-f", KOPIA[LOST])
    shutil.rmtree(HOST_DIR[LOST])

    laptop = Laptop(
        tmp_path_factory.mktemp("laptop") / "home",
        system.kopia_binary,
        system.secrets["repoPassword"],
        {
            "AWS_ACCESS_KEY_ID": system.secrets["s3AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": system.secrets["s3SecretAccessKey"],
        },
    )
    doc = runbook.any_machine_commands()
    connect = runbook.fill(doc.connect, {"<vps deployAddress>": ADDRESS["vps"]})
    assert f"--endpoint={S3_ENDPOINT} " in connect, f"the doc's endpoint is not the VPS gateway's S3 port {S3_ENDPOINT}"
    listed = laptop.shell(connect, doc.list_snapshots)
    assert listed.returncode == 0, f"{listed.stdout}\n{what_to_do(1)}"
    assert "Connected to repository" in listed.stdout, listed.stdout
    newest = {
        source: root for source, root in runbook.newest_snapshot_ids(listed.stdout).items() if f"@{LOST}:" in source
    }
    assert sorted(newest) == sorted(LOST_SOURCES), f"{listed.stdout}\n{what_to_do(1)}"

    restores = []
    for source, root in newest.items():
        lost_host.restored[source] = laptop.home / "restored" / source.rpartition("/")[2]
        restores.append(
            runbook.fill(doc.restore, {"<snapshot-id>": root, "/restore/here": str(lost_host.restored[source])})
        )
    restored = laptop.shell(*restores, doc.disconnect)
    assert restored.returncode == 0, f"{restored.stdout}\n{what_to_do(1)}"
    for source, target in lost_host.restored.items():
        assert tree_digest(target) == lost_host.digests[source], f"{source}: restored tree differs\n{what_to_do(1)}"
        assert len(lost_host.digests[source]) >= 10
    # `disconnect` took back what `connect` saved: the connection and the password (the doc says so).
    assert not list((laptop.home / ".config" / "kopia").glob("repository.config*"))
    say(f"restored on the laptop: {', '.join(f'{s} ({len(d)} files)' for s, d in lost_host.digests.items())}")


def test_a_redeploy_onto_an_empty_host_connects_keeps_identity_history_and_maintenance_and_uploads_almost_nothing(
    system: System, lost_host: LostHost
):
    if not lost_host.restored:
        pytest.skip("needs the restore of the test before it (run the whole module)")
    assert system.oracle is not None
    # Whoever holds the maintenance while the owner is away (here the suite's oracle, so that the change shows),
    # the rebuilt owner takes it back when it starts.
    system.oracle.run("maintenance", "set", "--owner=me")
    assert "Owner: tester@e2e-oracle" in system.oracle.run("maintenance", "info").stdout

    # Step 2: a host with nothing on it but the writable parent, and the restored data copied in as its sources.
    system.make_host_dir(LOST)
    for source, host_dir in LOST_SOURCES.items():
        host_dir.mkdir()
        subprocess.run(["cp", "-a", f"{lost_host.restored[source]}/.", f"{host_dir}/"], check=True)
        assert tree_digest(host_dir) == lost_host.digests[source]

    # Step 4: `pulumi up` of the same stack, without kopia.createRepository.
    blobs_before = blob_sizes()
    lost_host.redeployed_at = datetime.now(UTC).timestamp()
    system.up(LOST)
    container = KOPIA[LOST]
    system.wait_healthy(container, timeout=300)
    log = system.logs(container)
    assert "kopia-start: connected" in log, f"{log[-2000:]}\n{what_to_do(4)}"
    assert "creating it" not in log and "created the repository" not in log, f"{log}\n{what_to_do(4)}"
    assert "kopia-start: FATAL" not in log, f"{log}\n{what_to_do(4)}"
    assert f"shelken@{LOST} owns maintenance" in log, f"{log}\n{what_to_do(4)}"
    assert format_blob_now() == lost_host.format_blob, f"kopia.repository was written\n{what_to_do(4)}"
    assert system.oracle.repository_id() == lost_host.repository_id, f"another repository\n{what_to_do(4)}"
    maintenance = system.kopia(LOST, "maintenance info").stdout
    assert f"Owner: shelken@{LOST}" in maintenance, f"{maintenance}\n{what_to_do(4)}"

    # Step 5: its first snapshot of each source, in the same history as the old ones, and what it added.
    def new_snapshots() -> dict[str, list[dict]]:
        found = {}
        for source in LOST_SOURCES:
            found[source] = [
                s for s in system.oracle.snapshots_of(source) if started_at(s) >= int(lost_host.redeployed_at)
            ]
        return found if all(found.values()) else {}

    wait_for(f"a snapshot of each {LOST} source by the new host", new_snapshots, 240, interval=5)
    blobs_after = blob_sizes()
    for source in LOST_SOURCES:
        # The doc's command in the container ("Kopia commands inside a container"), with --json for the test.
        history = system.kopia(LOST, f"snapshot list --storage-stats --json {shlex.quote(source)}").stdout
        snapshots = json.loads(history)
        assert {source_name(s) for s in snapshots} == {source}
        ids = {s["id"] for s in snapshots}
        assert lost_host.old_snapshots[source] <= ids, f"the old snapshots are not in the history\n{what_to_do(5)}"
        new = [s for s in snapshots if started_at(s) >= int(lost_host.redeployed_at)]
        assert new, f"no new snapshot in the history of {source}\n{what_to_do(5)}"
        first = new[0]
        assert first["stats"]["errorCount"] == 0, first
        new_data = first["storageStats"]["newData"]["packedContentBytes"]
        size = first["stats"]["totalSize"]
        say(
            f"{source}: {len(lost_host.old_snapshots[source])} snapshot(s) before the loss, {len(new)} after, one "
            f"history; the first after the restore: {size} B of files, {new_data} B of new data "
            f"({first['stats']['cachedFiles']} files unchanged since the old snapshot, not read again)"
        )
        assert new_data <= ALMOST_NOTHING * size, f"{source}: {new_data} B new for {size} B\n{what_to_do(5)}"
    added = {name: size for name, size in blobs_after.items() if blobs_before.get(name) != size}
    data_packs = sum(size for name, size in added.items() if name.startswith("p"))
    restored_bytes = sum(p.stat().st_size for d in LOST_SOURCES.values() for p in d.rglob("*") if p.is_file())
    say(
        f"the bucket while the new host connected and snapshotted (the VPS snapshotting too): {len(added)} blobs "
        f"written, {sum(added.values())} B, of which {data_packs} B in data packs (p*); restored: {restored_bytes} B"
    )
    # An upper bound from the storage's side: every data pack anyone wrote meanwhile.
    assert data_packs <= ALMOST_NOTHING * restored_bytes, f"{data_packs} B of data packs written\n{what_to_do(5)}"


def test_status_shows_each_source_of_the_rebuilt_host_ok_with_its_new_snapshot(system: System, lost_host: LostHost):
    if system.tier != "engine":
        pytest.skip(
            "scripts/status reads the stacks from Pulumi: engine tier only "
            f"(this run: {system.tier}; {engine.unavailable_reason()})"
        )
    if not lost_host.redeployed_at:
        pytest.skip("needs the redeploy of the test before it (run the whole module)")
    system.wait_healthy(KOPIA[LOST], timeout=300)
    drill = KOPIA_DATA_DIR[LOST] / "state" / "restore-drill"
    wait_for(f"a restore drill on the new {LOST}", lambda: drill.read_text().startswith("ok "), 180, interval=5)
    result = system.run_status("--json")
    report = json.loads(result.stdout)
    rows = {r["source"]: r for r in report["sources"]}
    for source in LOST_SOURCES:
        row = rows[source]
        assert row["verdict"] == "ok", f"{row}\n{what_to_do(5)}"
        last = datetime.strptime(row["last_snapshot"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        assert last >= int(lost_host.redeployed_at), row
    assert result.returncode == 0, result.stdout + result.stderr
