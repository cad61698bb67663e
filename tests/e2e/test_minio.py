"""Live data (issue 19, MinIO): a real MinIO under a steady upload load, mirrored through its S3 API by the program's
MinIO dump before each scheduled snapshot.

MinIO and mc are built from the Go module proxy at the versions the wrapper modules pin (testbed/images/minio,
testbed/images/mc) and run from images built here, on the Kopia image's Debian root. MinIO's data dir is
sakamoto's `/backup/minio` source itself, as on the real host, so the dump's `.dumps` directory lies inside it.
A writer container uploads objects of mixed sizes one after another (some inline in `xl.meta`, most in part files)
and overwrites a few keys again and again, logging each upload's SHA-256 once `mc` has returned. Proven here: the
latest snapshot restores a mirror that loads into a fresh MinIO (`mc mirror` back, as docs/operations.md says),
every object completed before the dump began reads back from it with its checksum, an overwritten key holds a
version no older than the last one completed before the dump began, and no object holds bytes that were never
uploaded; the staging copy stays out of the snapshot. The raw data dir copied by the same snapshots (the negative
control) is started as a MinIO too, and how many objects read back intact from it is reported, not asserted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components import render
from components.config import DUMPS_DIR, dump_container_name
from testbed import infra
from testbed.mocks import stack_config
from testbed.system import BASE, KOPIA, NETWORK, SOURCES, System, say, wait_for
from tests.dump_status import kopia_epoch, status_line

STORE = "/backup/minio"
SOURCE = f"shelken@sakamoto:{STORE}"
SOURCE_DIR = SOURCES["sakamoto"][STORE]  # MinIO's data dir, as sakamoto's real one is its /backup/minio source
MINIO = f"{infra.NAME_PREFIX}minio"
FRESH = f"{infra.NAME_PREFIX}minio-fresh"
RAW = f"{infra.NAME_PREFIX}minio-raw"
WRITER = f"{infra.NAME_PREFIX}minio-writer"
DUMP = "store"
DUMP_STATUS = SOURCE_DIR / DUMPS_DIR / f"{DUMP}.status"
BUCKET = "live"
HOT_KEYS = 4  # keys overwritten again and again, always with the same size (what mc's size check cannot see)
WRITER_LOG = BASE / "minio-writer"  # outside every source: what the writer saw completed, with the time
ROOT_USER = "root-" + secrets.token_hex(4)
ROOT_PASSWORD = "root-" + secrets.token_urlsafe(16)
READER = "backup-reader"
READER_SECRET = "reader-" + secrets.token_urlsafe(16)
#: What the dump's keys may do: list the buckets and read their objects, nothing else (docs/operations.md).
READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::*/*"]},
    ],
}

# Uploads one after another: new keys of 1 KB to ~600 KB (MinIO inlines objects under 128 KiB in xl.meta, larger
# ones go to part files), and every third upload overwrites a hot key with as many bytes as before. A line per
# upload once `mc` has returned: "<time> <key> <sha256>".
WRITER_LOOP = f"""i=0
while :; do
    if [ $((i % 3)) -eq 0 ]; then key=hot-$((i / 3 % {HOT_KEYS})); size=300000
    else key=obj-$i; size=$(( (i % 5) * 150000 + 1000 )); fi
    head -c "$size" /dev/urandom > /tmp/object
    sum=$(sha256sum /tmp/object | cut -d ' ' -f 1)
    if mc --config-dir /mc --quiet cp /tmp/object "src/{BUCKET}/$key" > /dev/null; then
        echo "$(date +%s.%N) $key $sum" >> /log/completed
    fi
    i=$((i + 1))
    sleep 0.1
done
"""


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return infra.run(["docker", *args], check=check, timeout=timeout)


def container_ip(name: str) -> str:
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout.strip()


class Mc:
    """This machine's mc (the binary in the suite's mc image) with its own config dir: aliases by name."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary, self.config_dir = binary, workdir
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.chmod(0o700)

    def alias(self, name: str, url: str, access_key: str, secret_key: str) -> None:
        path = self.config_dir / "config.json"
        config = json.loads(path.read_text()) if path.exists() else {"version": "10", "aliases": {}}
        config["aliases"][name] = {"url": url, "accessKey": access_key, "secretKey": secret_key, "api": "s3v4",
                                   "path": "auto"}  # fmt: skip
        path.write_text(json.dumps(config))
        path.chmod(0o600)

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        command = [str(self.binary), "--config-dir", str(self.config_dir), "--no-color", "--quiet", *args]
        return infra.run(command, check=check, timeout=timeout)


def start_minio(name: str, image: str, data_dir: Path | None, network: str = NETWORK) -> str:
    """A MinIO server container (root keys in its environment: the test's own server); its address."""
    volume = ["-v", f"{data_dir}:/data"] if data_dir is not None else []
    docker(
        "run", "-d", "--name", name, "--network", network, "--label", f"{infra.RESOURCE_LABEL}=1",
        "-e", f"MINIO_ROOT_USER={ROOT_USER}", "-e", f"MINIO_ROOT_PASSWORD={ROOT_PASSWORD}", *volume,
        image, "server", "/data",
    )  # fmt: skip
    url = f"http://{container_ip(name)}:9000"

    def live() -> bool:
        return infra.run(["curl", "-fsS", "-o", "/dev/null", f"{url}/minio/health/live"], check=False).returncode == 0

    wait_for(f"MinIO in {name}", live, 60, interval=1)
    return url


def kopia_with_mirror(mc_image: str, *, create: bool = False) -> dict:
    """sakamoto's `kopia` key with the MinIO dump declared on its /backup/minio source."""
    kopia = stack_config("e2e-sakamoto")["homelab-backup:kopia"]
    dump = {
        "name": DUMP,
        "leadSeconds": 20,
        "minio": {
            "container": MINIO,
            "accessKey": "config:minioAccessKey",
            "secretKey": "config:minioSecretKey",
            "image": mc_image,
        },
    }
    sources = [{**s, "dumps": [dump]} if s["path"] == STORE else s for s in kopia["sources"]]
    return {"homelab-backup:kopia": {**kopia, "sources": sources, **({"createRepository": True} if create else {})}}


def completed() -> list[tuple[float, str, str]]:
    """(time mc returned, key, sha256) of every upload the writer saw complete, in order."""
    path = WRITER_LOG / "completed"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(float(t), k, s) for t, k, s in (line.split() for line in lines if len(line.split()) == 3)]


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Store:
    """The MinIO server, its writer, and the sakamoto stack that mirrors it."""

    def __init__(self, system: System, images: infra.MinioImages, workdir: Path):
        self.system, self.images = system, images
        self.mc = Mc(images.mc_binary, workdir / "mc")
        self.secrets = {"minioAccessKey": READER, "minioSecretKey": READER_SECRET}

    def up_sakamoto(self, create: bool = False) -> None:
        self.system.up("sakamoto", self.secrets, **kopia_with_mirror(self.images.mc, create=create))

    def start(self) -> None:
        for entry in SOURCE_DIR.iterdir():  # the suite's sample files: MinIO wants its drive to itself
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        url = start_minio(MINIO, self.images.minio, SOURCE_DIR)
        self.mc.alias("src", url, ROOT_USER, ROOT_PASSWORD)
        self.mc("mb", f"src/{BUCKET}")
        policy = self.mc.config_dir / "read-policy.json"
        policy.write_text(json.dumps(READ_POLICY))
        self.mc("admin", "policy", "create", "src", "backup-read", str(policy))
        self.mc("admin", "user", "add", "src", READER, READER_SECRET)  # the keys reach the program as secrets
        self.mc("admin", "policy", "attach", "src", "backup-read", "--user", READER)
        writer_config = self.mc.config_dir.parent / "writer-mc"
        writer_config.mkdir(mode=0o700)
        shutil.copy2(self.mc.config_dir / "config.json", writer_config / "config.json")
        WRITER_LOG.mkdir()
        docker(
            "run", "-d", "--name", WRITER, "--network", NETWORK, "--label", f"{infra.RESOURCE_LABEL}=1",
            "-v", f"{writer_config}:/mc", "-v", f"{WRITER_LOG}:/log",
            "--entrypoint", "sh", self.images.mc, "-c", WRITER_LOOP,
        )  # fmt: skip
        wait_for("the writer's first uploads", lambda: len(completed()) > 20, 60, interval=1)

    def stop(self) -> None:
        for name in (WRITER, FRESH, RAW, MINIO):
            docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def store(parts, request) -> Store:
    images = infra.ensure_minio_images(infra.cache_dir())
    system = parts.system()
    workdir = Path(tempfile.mkdtemp(prefix=f"{infra.NAME_PREFIX}minio-"))
    store = Store(system, images, workdir)
    request.addfinalizer(lambda: shutil.rmtree(workdir, ignore_errors=True))
    request.addfinalizer(system.destroy)
    request.addfinalizer(store.stop)  # before the stacks go: MinIO's files are in a source
    system.prepare_host()
    system.start_receivers()
    system.up("vps")
    store.start()
    store.up_sakamoto(create=True)
    system.take_back_the_create_request(up_owner=store.up_sakamoto)
    system._make_oracle()
    assert system.oracle is not None
    oracle = system.oracle
    wait_for("the repository to exist", lambda: oracle.connect().returncode == 0, 240, interval=5)
    return store


def test_the_latest_snapshot_restores_a_mirror_that_loads_into_a_fresh_minio_with_every_object_intact(
    store: Store, tmp_path: Path
):
    system = store.system
    assert system.oracle is not None
    container = dump_container_name(KOPIA["sakamoto"], DUMP)
    assert system.runs_image(container, store.images.mc)

    def scheduled_dump() -> tuple[str, int, str] | None:
        line = status_line(DUMP_STATUS) if DUMP_STATUS.exists() else None
        return line if line and line[0] == "ok" and not line[2].endswith("due at 0") else None

    _, finished, details = wait_for("a scheduled mirror", scheduled_dump, 150, interval=2)
    say(f"mirror: {details}")

    def snapshot_after_it() -> dict | None:
        later = [s for s in system.oracle.snapshots_of(SOURCE) if kopia_epoch(s["startTime"]) >= finished]
        return later[-1] if later else None

    snapshot = wait_for("a snapshot after the mirror", snapshot_after_it, 150, interval=3)
    target = tmp_path / "restored"
    system.oracle.run("snapshot", "restore", snapshot["id"], str(target))
    outcome, at, restored_details = status_line(target / DUMPS_DIR / f"{DUMP}.status")
    assert outcome == "ok", restored_details
    began = int(restored_details.split()[1].rstrip(","))  # "started <epoch>, took ..."
    assert at <= kopia_epoch(snapshot["startTime"]), "the mirror finished before the snapshot began"
    assert not (target / DUMPS_DIR / f"{DUMP}.failed").exists()
    dot_entries = sorted(p.name for p in (target / DUMPS_DIR).iterdir() if p.name.startswith("."))
    assert dot_entries == [], f"the staging copy and temp dirs stay out of the snapshot: {dot_entries}"

    # Load it into a fresh MinIO (no data dir of the original), as docs/operations.md says, and read it back.
    url = start_minio(FRESH, store.images.minio, None)
    store.mc.alias("fresh", url, ROOT_USER, ROOT_PASSWORD)
    mirror = target / DUMPS_DIR / DUMP
    store.mc("mb", f"fresh/{BUCKET}")
    store.mc("mirror", str(mirror / BUCKET), f"fresh/{BUCKET}")
    readback = tmp_path / "readback"
    store.mc("mirror", f"fresh/{BUCKET}", str(readback))
    got = digests(readback)

    uploads = completed()
    versions: dict[str, list[tuple[float, str]]] = {}
    for t, key, digest in uploads:
        versions.setdefault(key, []).append((t, digest))
    before = {key: [v for v in vs if v[0] < began] for key, vs in versions.items()}
    expected = {key: vs for key, vs in before.items() if vs}
    missing = [key for key in expected if key not in got]
    assert not missing, f"{len(missing)} of {len(expected)} objects completed before the mirror began are missing"
    for key, vs in expected.items():
        last_before = vs[-1][0]
        allowed = {d for t, d in versions[key] if t >= last_before}  # that version, or one completed after it
        assert got[key] in allowed, f"{key}: its bytes are not the last version completed before the mirror began"
    unknown = [key for key, digest in got.items() if digest not in {d for _, d in versions.get(key, [])}]
    assert not unknown, f"objects holding bytes that were never uploaded: {unknown[:5]}"
    hot = [key for key in expected if key.startswith("hot-")]
    assert len(hot) == HOT_KEYS
    say(
        f"restored mirror: {len(got)} objects read back from a fresh MinIO, all {len(expected)} completed before"
        f" the mirror began intact ({len(hot)} of them overwritten {sum(len(versions[k]) for k in hot)} times in"
        f" all); {len(uploads)} uploads by now"
    )
    docker("rm", "-f", FRESH, check=False)

    negative_control(store, snapshot, target, uploads, tmp_path)


def negative_control(store: Store, latest: dict, restored: Path, uploads: list, tmp_path: Path) -> None:
    """MinIO started on the raw data dir that snapshots copied while the writer uploaded: how many objects completed
    before each snapshot began read back intact. Reported, not asserted: the issue asks what the raw copy gives."""
    system = store.system
    assert system.oracle is not None
    snapshots = [s for s in system.oracle.snapshots_of(SOURCE) if s["id"] != latest["id"]][-2:]
    tries = [(latest, restored)]
    for snapshot in snapshots:
        target = tmp_path / f"raw-{snapshot['id'][:8]}"
        system.oracle.run("snapshot", "restore", snapshot["id"], str(target))
        tries.append((snapshot, target))
    uploaded: dict[str, set[str]] = {}
    for _, key, digest in uploads:
        uploaded.setdefault(key, set()).add(digest)
    for snapshot, target in tries:
        start = kopia_epoch(snapshot["startTime"])
        last: dict[str, str] = {}
        for t, key, digest in uploads:
            if t < start:
                last[key] = digest
        shutil.rmtree(target / DUMPS_DIR, ignore_errors=True)  # the raw data dir alone, as a file-level backup has it
        docker("rm", "-f", RAW, check=False)
        try:
            url = start_minio(RAW, store.images.minio, target, network="bridge")
            store.mc.alias("raw", url, ROOT_USER, ROOT_PASSWORD)
            readback = tmp_path / f"raw-readback-{snapshot['id'][:8]}"
            result = store.mc("mirror", f"raw/{BUCKET}", str(readback), check=False)
            got = digests(readback) if readback.exists() else {}
            intact = [key for key, digest in last.items() if got.get(key) == digest]
            missing = [key for key in last if key not in got]
            other = [key for key in last if key in got and got[key] != last[key] and got[key] in uploaded[key]]
            torn = [key for key, digest in got.items() if digest not in uploaded.get(key, set())]
            errors = (result.stderr.strip().splitlines() or [""])[-1][:200]
            say(
                f"negative control (raw data dir, snapshot {snapshot['id'][:8]} at {snapshot['startTime']}):"
                f" {len(intact)} of {len(last)} objects completed before it began read back intact; missing or"
                f" unreadable {len(missing)} {missing[:3]}; another uploaded version {len(other)} {other[:3]};"
                f" bytes never uploaded {len(torn)} {torn[:3]}; {len(got)} read back in all;"
                f" mc exit {result.returncode} {errors}"
            )
        except Exception as error:  # reported, not asserted
            say(f"negative control (snapshot {snapshot['id'][:8]}): MinIO did not serve it: {str(error)[-300:]}")
        finally:
            docker("rm", "-f", RAW, check=False)
    say(f"negative control: {len(tries)} tries (snapshots taken during uploads)")


def test_the_mirror_container_holds_no_key_in_its_spec_and_its_config_file_is_private(store: Store):
    spec = store.system.inspect(dump_container_name(KOPIA["sakamoto"], DUMP))
    text = json.dumps(spec["Config"]) + json.dumps(spec["HostConfig"])
    assert READER_SECRET not in text and READER not in text
    mounts = {m["Destination"]: m for m in spec["Mounts"]}
    assert mounts[render.DUMP_SECRETS_DIR]["RW"] is False
    config_file = Path(mounts[render.DUMP_SECRETS_DIR]["Source"]) / render.MC_CONFIG_FILE
    assert oct(config_file.stat().st_mode & 0o777) == oct(0o600)
    logs = store.system.logs(dump_container_name(KOPIA["sakamoto"], DUMP))
    assert READER_SECRET not in logs
