"""The file and directory providers, run for real against this machine through a fake `ssh`.

The fake `ssh` on PATH runs the remote command with `sh -c` here (what sshd would do on the host), so
the providers' own shell commands write, read and delete real files; the e2e suite runs them over a
real sshd.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from components.host_files import (
    OwnedDirectoryProvider,
    RemoteError,
    RemoteFileProvider,
    read_directory_command,
)

FAKE_SSH = r"""#!/bin/sh
# Fake ssh: drop the options and the destination, run what follows `--` here, as the host would.
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
if [ -n "${FAKE_MV_FAILS:-}" ]; then  # a failure at the last step of a write
    mkdir -p "$FAKE_BIN_DIR"; printf '#!/bin/sh\necho "mv: cannot move: No space left on device" >&2; exit 1\n' \
        > "$FAKE_BIN_DIR/mv"; chmod +x "$FAKE_BIN_DIR/mv"; PATH="$FAKE_BIN_DIR:$PATH"
fi
exec sh -c "$1"
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BIN_DIR", str(tmp_path / "failing-bin"))
    return ["ssh", "-o", "BatchMode=yes", "-p", "22", "me@host"]


def file_props(ssh: list[str], path: Path, content: str) -> dict:
    return {"ssh": ssh, "target": "me@host:22", "path": str(path), "content": content}


def test_create_writes_the_content_0600_in_a_new_dir_and_reports_its_digest(fake_ssh, tmp_path):
    path = tmp_path / "config" / "secrets.env"
    result = RemoteFileProvider().create(file_props(fake_ssh, path, "export A='1'\n"))
    assert path.read_text() == "export A='1'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert result.id == f"me@host:22:{path}"
    assert result.outs["sha256"] == hashlib.sha256(b"export A='1'\n").hexdigest()
    assert "content" not in result.outs, "no content in the outputs: the digest is enough to see drift"
    assert [p.name for p in path.parent.iterdir()] == ["secrets.env"], "no temp file left behind"


def test_read_reports_a_deleted_file_as_gone_and_an_edited_one_by_its_digest_and_mode(fake_ssh, tmp_path):
    provider, path = RemoteFileProvider(), tmp_path / "policy.json"
    outs = provider.create(file_props(fake_ssh, path, "{}\n")).outs
    assert provider.read("id", outs).outs["sha256"] == outs["sha256"]
    path.write_text('{"x": 1}\n')
    path.chmod(0o644)
    edited = provider.read("id", outs)
    assert edited.id == "id"
    assert edited.outs["sha256"] == hashlib.sha256(b'{"x": 1}\n').hexdigest()
    assert edited.outs["mode"] == "644"
    # ...which the next diff turns into an update that writes the declared content again
    diff = provider.diff("id", edited.outs, file_props(fake_ssh, path, "{}\n"))
    assert diff.changes and not diff.replaces
    path.unlink()
    assert provider.read("id", outs).id == ""


def test_a_secret_file_made_readable_by_others_with_the_same_content_is_seen_and_made_0600_again(fake_ssh, tmp_path):
    provider, path = RemoteFileProvider(), tmp_path / "config" / "secrets.env"
    declared = file_props(fake_ssh, path, "export KOPIA_PASSWORD='pw'\n")
    outs = provider.create(declared).outs
    path.chmod(0o644)  # `chmod 644` by hand: the content is as declared, the secret readable by all
    refreshed = provider.read("id", outs).outs
    assert (refreshed["sha256"], refreshed["mode"]) == (outs["sha256"], "644")
    diff = provider.diff("id", refreshed, declared)
    assert diff.changes and not diff.replaces, "a mode alone is drift that `up` repairs in place"
    repaired = provider.update("id", refreshed, declared).outs
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == declared["content"]
    assert not provider.diff("id", provider.read("id", repaired).outs, declared).changes


def test_diff_updates_in_place_for_content_and_replaces_delete_first_for_another_path(fake_ssh, tmp_path):
    provider = RemoteFileProvider()
    outs = provider.create(file_props(fake_ssh, tmp_path / "a", "one\n")).outs
    assert not provider.diff("id", outs, file_props(fake_ssh, tmp_path / "a", "one\n")).changes
    changed = provider.diff("id", outs, file_props(fake_ssh, tmp_path / "a", "two\n"))
    assert changed.changes and changed.replaces == []
    moved = provider.diff("id", outs, file_props(fake_ssh, tmp_path / "b", "one\n"))
    assert moved.replaces == ["path"] and moved.delete_before_replace is True
    unknown = provider.diff("id", outs, {**file_props(fake_ssh, tmp_path / "a", "one\n"), "content": object()})
    assert unknown.changes, "content not known yet (preview): a change"


def test_a_failed_write_leaves_the_old_file_intact_and_no_temp_file(fake_ssh, tmp_path, monkeypatch):
    provider, path = RemoteFileProvider(), tmp_path / "config" / "repository.config"
    outs = provider.create(file_props(fake_ssh, path, "old\n")).outs
    monkeypatch.setenv("FAKE_MV_FAILS", "1")
    with pytest.raises(RemoteError, match=r"writing .*repository\.config failed on me@host \(exit 1\): mv: cannot"):
        provider.update("id", outs, file_props(fake_ssh, path, "new secret\n"))
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == ["repository.config"], "the temp file was removed"


def test_delete_removes_the_file_and_the_emptied_dir_but_nothing_else(fake_ssh, tmp_path):
    provider = RemoteFileProvider()
    config = tmp_path / "config"
    one = provider.create(file_props(fake_ssh, config / "one", "1\n")).outs
    two = provider.create(file_props(fake_ssh, config / "two", "2\n")).outs
    provider.delete("id", one)
    assert sorted(p.name for p in config.iterdir()) == ["two"]
    provider.delete("id", two)
    assert not config.exists()


def test_an_unreachable_host_fails_with_sshs_message(tmp_path):
    bad = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-p", "9", "nobody@127.0.0.1"]
    with pytest.raises(RemoteError, match=r"failed on nobody@127\.0\.0\.1 \(exit 255\)"):
        RemoteFileProvider().create(file_props(bad, tmp_path / "x", "x\n"))


def test_owned_directory_reads_back_owner_and_mode_and_delete_keeps_the_data(fake_ssh, tmp_path):
    provider = OwnedDirectoryProvider()
    data = tmp_path / "openlist"
    data.mkdir(mode=0o755)
    (data / "data.db").write_text("db")
    props = {"ssh": fake_ssh, "target": "me@host:22", "path": str(data), "uid": os.getuid(), "mode": "700"}
    read = provider.read("id", props)
    assert read.outs["owner"] == os.getuid() and read.outs["actualMode"] == "755"
    drift = provider.diff("id", read.outs, props)
    assert drift.changes and not drift.replaces, "another mode is drift that `up` fixes in place"
    provider.delete("id", props)
    assert (data / "data.db").read_text() == "db"
    assert provider.read("id", {**props, "path": str(tmp_path / "missing")}).id == ""
    assert "stat -c '%u %a'" in read_directory_command(str(data))
