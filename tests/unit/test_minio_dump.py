"""MinIO dumps (issue 19): the config and its refusals, what the program declares, and the mirror script run for
real under `sh` against a fake `mc` that serves buckets from a directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from components import render
from components.config import DUMPS_DIR, Dump
from testbed.mocks import plain_strings, unwrap_all
from tests.shell_lint import assert_posix_sh_and_shellcheck_clean
from tests.unit.conftest import run_committed_stack
from tests.unit.test_dumps import (
    COMPOSE,
    CONTAINER,
    FAKE_SLEEP,
    REMOTE_FILE,
    config_problems,
    fake_host,
    refused_run,
    sakamoto_with,
)

ACCESS_KEY = "backup-reader"
SECRET_KEY = "mc-secret-Zq9/with+chars"
MINIO = {
    "name": "store",
    "minio": {
        "container": "minio",
        "accessKey": "config:minioAccessKey",
        "secretKey": "config:minioSecretKey",
        "image": "minio/mc:RELEASE.2025-03-12T17-29-24Z",
    },
}


def with_minio(**fields) -> dict:
    return {**MINIO, "minio": {**MINIO["minio"], **fields}}


def minio_problems(dump: dict) -> list[tuple[str, str]]:
    return config_problems(dump)


# ---------------------------------------------------------------- config


def test_a_minio_dump_is_accepted_with_every_bucket_or_a_list():
    assert minio_problems(MINIO) == []
    assert minio_problems(with_minio(buckets=["photos", "docs.2026"], port=9100, network="minio_net")) == []


@pytest.mark.parametrize(
    ("fields", "key", "words"),
    [
        ({"buckets": ["Photos"]}, "minio.buckets[0]", "should match pattern"),
        ({"buckets": ["a;b"]}, "minio.buckets[0]", "should match pattern"),
        ({"buckets": []}, "minio.buckets", "at least 1 item"),
        ({"buckets": ["photos", "photos"]}, "minio.buckets", "names a bucket twice"),
        ({"secretKey": "hunter2"}, "minio.secretKey", "must be a secret reference"),
        ({"accessKey": "AKIA0000"}, "minio.accessKey", "must be a secret reference"),
        ({"image": "minio/mc:latest"}, "minio.image", "':latest'"),
        ({"image": "minio/mc"}, "minio.image", "explicit tag"),
        ({"container": "minio; rm -rf /"}, "minio.container", "should match pattern"),
        ({"port": 0}, "minio.port", "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_a_misdeclared_minio_dump_is_refused_naming_its_key(fields, key, words):
    problems = minio_problems(with_minio(**fields))
    assert [k for k, _ in problems] == [f"homelab-backup:kopia.sources[1].dumps[0].{key}"], problems
    assert words in problems[0][1]


def test_a_dump_with_minio_and_another_kind_is_refused():
    problems = minio_problems({**MINIO, "postgres": {"container": "db", "database": "d", "user": "u",
                                                     "password": "config:x"}})  # fmt: skip
    assert problems == [("homelab-backup:kopia.sources[1].dumps[0]", "give exactly one of postgres, sqlite or minio")]


def test_a_minio_container_that_is_not_on_the_host_is_refused_before_any_resource(key_vault, monkeypatch):
    asked = fake_host(monkeypatch, {})
    message = refused_run(key_vault, MINIO)
    assert "homelab-backup:kopia.sources[1].dumps[0].minio.container: no container 'minio' on host" in message
    assert "start MinIO first" in message
    assert "docker inspect" in asked[0] and "}}' minio 2>/dev/null" in asked[0]


def test_a_minio_container_on_several_networks_needs_the_network_named(key_vault, monkeypatch):
    fake_host(monkeypatch, {"minio": "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z front minio_default"})
    message = refused_run(key_vault, MINIO)
    assert "homelab-backup:kopia.sources[1].dumps[0].minio.network: is required" in message
    message = refused_run(key_vault, with_minio(network="elsewhere"))
    assert "is not on network 'elsewhere' (it is on: front, minio_default)" in message


# ---------------------------------------------------------------- what the program declares


def run_with_minio(key_vault, dump: dict = MINIO):
    keys = {"minioAccessKey": ACCESS_KEY, "minioSecretKey": SECRET_KEY, "immichDb": "x"}
    return run_committed_stack("sakamoto", key_vault, secrets=keys, **sakamoto_with(dump))


def test_a_minio_dump_runs_from_the_declared_mc_image_on_minios_network_with_its_keys_in_a_file(key_vault, monkeypatch):
    fake_host(monkeypatch, {"minio": "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z minio_default"})
    run = run_with_minio(key_vault, with_minio(buckets=["photos", "docs"]))
    spec = unwrap_all(run.one(CONTAINER, "dump-store-container").inputs)
    assert spec["name"] == "kopia-dump-store"
    images = {r.outputs["imageId"]: r.inputs["name"] for r in run.by_type("docker:index/remoteImage:RemoteImage")}
    assert images[spec["image"]] == "minio/mc:RELEASE.2025-03-12T17-29-24Z"  # the declared one, not MinIO's
    assert spec["networksAdvanced"] == [{"name": "minio_default"}]
    volumes = {v["containerPath"]: (v["hostPath"], v.get("readOnly", False)) for v in spec["volumes"]}
    assert volumes == {
        render.DUMP_OUTPUT_DIR: (f"{COMPOSE}/{DUMPS_DIR}", False),
        render.DUMP_SECRETS_DIR: ("/opt/compose/sakamoto/kopia/dumps/store", True),
    }
    labels = {label["label"]: label["value"] for label in spec["labels"]}
    assert labels["homelab-backup.dump"] == "minio"
    assert labels["homelab-backup.dump-of"] == "http://minio:9000 (photos, docs)"
    assert labels["homelab-backup.dump-file"] == f"{COMPOSE}/{DUMPS_DIR}/store"
    script = spec["entrypoints"][2]
    assert 'declared_buckets="photos docs"' in script and "mirror --overwrite --remove" in script
    # The keys: a 0600 file in state as a secret, never in the container's spec (env, labels, script).
    assert ACCESS_KEY not in json.dumps(spec) and SECRET_KEY not in json.dumps(spec)
    config_file = run.one(REMOTE_FILE, "dump-store-mc-config")
    assert config_file.inputs["path"] == f"/opt/compose/sakamoto/kopia/dumps/store/{render.MC_CONFIG_FILE}"
    assert not any(SECRET_KEY in text for text in plain_strings(config_file.inputs))  # a secret in state
    alias = json.loads(unwrap_all(config_file.inputs["content"]))["aliases"]["src"]
    assert alias == {
        "url": "http://minio:9000",
        "accessKey": ACCESS_KEY,
        "secretKey": SECRET_KEY,
        "api": "s3v4",
        "path": "auto",
    }
    assert run.outputs["database_dumps"] == {
        "store": f"minio -> {COMPOSE}/{DUMPS_DIR}/store, 300s before each snapshot"
    }


def test_the_policy_leaves_the_mirrors_staging_out_of_snapshots_only_where_a_mirror_writes(key_vault, monkeypatch):
    fake_host(monkeypatch, {"minio": "minio/minio:x minio_default"})
    run = run_with_minio(key_vault)
    policy = json.loads(unwrap_all(run.one(REMOTE_FILE, "kopia-config-policy-json").inputs["content"]))
    assert policy["shelken@sakamoto:/backup/compose/.dumps"] == {
        "errorHandling": {"ignoreUnknownTypes": False},
        "files": {"ignore": ["/.*"]},
    }
    health = run.one(CONTAINER, "kopia-container").inputs["healthcheck"]["tests"][1]
    assert "/backup/compose/.dumps/store.status" in health  # the one rule on every dump's status line
    plain = json.loads(render.render_policy_json(*_policy_inputs(), ("u@h:/backup/compose/.dumps",)))
    assert plain["u@h:/backup/compose/.dumps"] == {"errorHandling": {"ignoreUnknownTypes": False}}


def _policy_inputs():
    from tests.unit.test_render import SAKAMOTO

    return SAKAMOTO.policy, SAKAMOTO.schedule


# ---------------------------------------------------------------- the mirror script, run for real

#: A fake mc: serves the buckets under $FAKE/server (one directory a bucket), records its argv and environment and
#: the config it was given, and writes as mc does (a new file renamed over the old). FAKE_FAIL fails it like mc.
FAKE_MC = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE/argv"; env > "$FAKE/env"
[ "$1" = --config-dir ] || { echo "mc: no --config-dir" >&2; exit 2; }
cat "$2/config.json" > "$FAKE/config-seen"; ls -ld "$2" > "$FAKE/config-dir"
shift 2
while [ "${1#--}" != "$1" ]; do shift; done
if [ -n "${FAKE_FAIL:-}" ]; then
    echo 'mc: <ERROR> Unable to list folder. The Access Key Id you provided does not exist in our records.' >&2
    exit 1
fi
copy() {  # $1 source file, $2 target file: a temp file renamed over the target
    mkdir -p "$(dirname "$2")" && cp "$1" "$2.part.fake" && mv -f "$2.part.fake" "$2"
}
case "$1" in
ls)
    for b in "$FAKE/server"/*; do printf '[2026-12-03 05:22:49 UTC]     0B %s/\n' "${b##*/}"; done ;;
mirror)
    shift; while [ "${1#--}" != "$1" ]; do shift; done
    src="$FAKE/server/${1#src/}"; dst=$2
    [ -d "$src" ] || { echo "mc: <ERROR> Unable to stat source \`$1\`." >&2; exit 1; }
    (cd "$src" && find . -type f) | while read -r f; do
        cmp -s "$src/$f" "$dst/$f" || copy "$src/$f" "$dst/$f"
    done
    (cd "$dst" && find . -type f) | while read -r f; do [ -f "$src/$f" ] || rm -f "$dst/$f"; done ;;
cp)
    shift; while [ "${1#--}" != "$1" ]; do shift; done
    src="$FAKE/server/${1#src/}"; dst=$2
    (cd "$src" && find . -type f) | while read -r f; do copy "$src/$f" "$dst/$f"; done ;;
*) echo "mc: unexpected $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def mirror_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("dumps", "secrets", "bin", "fake", "tmp")}
    for d in dirs.values():
        d.mkdir()
    for name, text in {"mc": FAKE_MC, "sleep": FAKE_SLEEP}.items():
        (dirs["bin"] / name).write_text(text)
        (dirs["bin"] / name).chmod(0o755)
    dump = Dump.model_validate(MINIO)
    assert dump.minio is not None
    (dirs["secrets"] / render.MC_CONFIG_FILE).write_text(render.render_mc_config(dump.minio, ACCESS_KEY, SECRET_KEY))
    server = dirs["fake"] / "server"
    for path, text in {
        "photos/2026/a.jpg": "aaa",
        "photos/b.jpg": "bb",
        "docs/.hidden": "h",
        "docs/x/y.txt": "y",
    }.items():
        (server / path).parent.mkdir(parents=True, exist_ok=True)
        (server / path).write_text(text)
    return dirs


def run_mirror_script(dirs: dict[str, Path], dump: dict = MINIO, **env: str) -> subprocess.CompletedProcess:
    script = render.render_dump_script(
        Dump.model_validate(dump), 3600, dumps_dir=str(dirs["dumps"]), secrets_dir=str(dirs["secrets"])
    )
    environment = {
        "PATH": f"{dirs['bin']}:{os.environ['PATH']}",
        "FAKE": str(dirs["fake"]),
        "TMPDIR": str(dirs["tmp"]),
        **env,
    }
    result = subprocess.run(["sh", "-c", script], env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), result.stderr
    return result


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def status_of(dirs: dict[str, Path], name: str = "store") -> tuple[str, str]:
    outcome, _at, details = (dirs["dumps"] / f"{name}.status").read_text().split(" ", 2)
    return outcome, details.strip()


def test_every_bucket_lands_whole_in_the_dumps_directory_with_an_ok_status(mirror_dirs):
    run_mirror_script(mirror_dirs)
    out = mirror_dirs["dumps"] / "store"
    assert tree(out) == tree(mirror_dirs["fake"] / "server")
    outcome, details = status_of(mirror_dirs)
    assert outcome == "ok" and "2 bucket(s)" in details and "KiB" in details, details
    assert not (mirror_dirs["dumps"] / "store.failed").exists()
    # Left beside it: the staging copy and when the last mirror began, both dot entries (out of snapshots); no temp.
    dot_entries = sorted(p.name for p in mirror_dirs["dumps"].iterdir() if p.name.startswith("."))
    assert dot_entries == [".store.mirror", ".store.mirror-started"]
    # Published by hard links to the staging copy: no second copy of the bytes.
    assert (out / "photos/b.jpg").stat().st_ino == (mirror_dirs["dumps"] / ".store.mirror/photos/b.jpg").stat().st_ino
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # every object: for root (Kopia) only


def test_the_keys_reach_mc_only_through_its_config_file_in_a_private_dir_removed_after_the_run(mirror_dirs):
    run_mirror_script(mirror_dirs)
    argv = (mirror_dirs["fake"] / "argv").read_text()
    environment = (mirror_dirs["fake"] / "env").read_text()
    for key in (ACCESS_KEY, SECRET_KEY):
        assert key not in argv and key not in environment
    assert json.loads((mirror_dirs["fake"] / "config-seen").read_text())["aliases"]["src"]["secretKey"] == SECRET_KEY
    assert (mirror_dirs["fake"] / "config-dir").read_text().startswith("drwx------")
    assert list(mirror_dirs["tmp"].iterdir()) == []  # the copy of the config, and every temp file, is gone
    lines = argv.splitlines()
    assert lines[0].endswith(" ls src")  # every bucket: listed at each run
    assert [line.split(" --quiet ", 1)[1] for line in lines[1:]] == [
        f"mirror --overwrite --remove src/docs {mirror_dirs['dumps']}/.store.mirror/docs",
        f"mirror --overwrite --remove src/photos {mirror_dirs['dumps']}/.store.mirror/photos",
    ]


def test_a_second_run_follows_changes_and_deletions_and_copies_again_what_was_written_since_the_last(mirror_dirs):
    run_mirror_script(mirror_dirs)
    server = mirror_dirs["fake"] / "server"
    first = mirror_dirs["dumps"] / "store" / "photos/b.jpg"
    first_inode = first.stat().st_ino
    (server / "photos/b.jpg").write_text("BB")  # same size: mc's size check alone would not see it
    (server / "photos/2026/a.jpg").unlink()
    shutil.rmtree(server / "docs")  # a bucket deleted
    (mirror_dirs["fake"] / "argv").unlink()
    run_mirror_script(mirror_dirs)
    out = mirror_dirs["dumps"] / "store"
    assert tree(out) == {"photos/b.jpg": "BB"}
    assert status_of(mirror_dirs)[0] == "ok"
    assert first.stat().st_ino != first_inode  # a new file, so the last published copy never changed in place
    recopy = [line for line in (mirror_dirs["fake"] / "argv").read_text().splitlines() if " cp " in line]
    assert len(recopy) == 1 and "cp --recursive --newer-than " in recopy[0], recopy
    age = int(recopy[0].split("--newer-than ")[1].split("s ")[0])
    assert 3600 <= age <= 3600 + 30  # since the first run began, plus the margin for uploads under way
    assert not (mirror_dirs["dumps"] / ".store.old").exists()


def test_declared_buckets_are_the_only_ones_mirrored_and_none_is_listed(mirror_dirs):
    run_mirror_script(mirror_dirs, with_minio(buckets=["photos"]))
    assert sorted(p.name for p in (mirror_dirs["dumps"] / "store").iterdir()) == ["photos"]
    assert " ls " not in (mirror_dirs["fake"] / "argv").read_text()
    assert "1 bucket(s)" in status_of(mirror_dirs)[1]


def test_a_failed_mirror_keeps_the_last_whole_copy_and_leaves_a_pipe_that_kopia_counts_as_an_error(mirror_dirs):
    run_mirror_script(mirror_dirs)
    good = tree(mirror_dirs["dumps"] / "store")
    (mirror_dirs["fake"] / "server" / "photos" / "new.jpg").write_text("new")
    run_mirror_script(mirror_dirs, FAKE_FAIL="1")
    assert tree(mirror_dirs["dumps"] / "store") == good
    assert stat.S_ISFIFO((mirror_dirs["dumps"] / "store.failed").lstat().st_mode)
    outcome, reason = status_of(mirror_dirs)
    assert outcome == "failed"
    assert reason.startswith("mc exited 1: mc: <ERROR> Unable to list folder. The Access Key Id"), reason
    assert sorted(p.name for p in mirror_dirs["dumps"].iterdir() if p.name.startswith(".store.")) == [
        ".store.mirror",
        ".store.mirror-started",
    ]  # the failed run's temp directory is gone
    assert list(mirror_dirs["tmp"].iterdir()) == []
    run_mirror_script(mirror_dirs)  # the next good mirror clears the marker
    assert not (mirror_dirs["dumps"] / "store.failed").exists()
    assert (mirror_dirs["dumps"] / "store" / "photos" / "new.jpg").read_text() == "new"


def test_a_missing_declared_bucket_fails_the_mirror_with_mcs_reason(mirror_dirs):
    run_mirror_script(mirror_dirs, with_minio(buckets=["photos", "gone"]))
    outcome, reason = status_of(mirror_dirs)
    assert outcome == "failed" and "Unable to stat source `src/gone`" in reason, reason
    assert not (mirror_dirs["dumps"] / "store").exists()  # nothing published: no half of a mirror


def test_the_mirror_script_is_posix_sh_and_passes_shellcheck():
    assert_posix_sh_and_shellcheck_clean(
        [render.render_dump_script(Dump.model_validate(d), 3600) for d in (MINIO, with_minio(buckets=["a-b"]))]
    )


def test_a_key_on_two_lines_is_refused_when_the_config_file_is_rendered():
    dump = Dump.model_validate(MINIO)
    assert dump.minio is not None
    with pytest.raises(ValueError, match="one line"):
        render.render_mc_config(dump.minio, ACCESS_KEY, "a\nb")
