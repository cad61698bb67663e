"""Proof that the e2e infrastructure is real: each test drives the real thing and can fail.

If one of these fails, the scenario tests' failures say nothing about the program: fix the
infrastructure (testbed/infra/, the images) first.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest

from testbed import infra

# ---------------------------------------------------------------- the gate


def test_require_mode_fails_and_auto_mode_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(infra.E2E_ENV, "require")
    with pytest.raises(pytest.fail.Exception, match="apt-get install nothing"):
        infra.require_or_skip("apt-get install nothing")
    monkeypatch.setenv(infra.E2E_ENV, "auto")
    with pytest.raises(pytest.skip.Exception, match="apt-get install nothing"):
        infra.require_or_skip("apt-get install nothing")
    monkeypatch.delenv(infra.E2E_ENV)
    with pytest.raises(pytest.skip.Exception):
        infra.require_or_skip("x")
    monkeypatch.setenv(infra.E2E_ENV, "sometimes")
    with pytest.raises(infra.E2EError, match="sometimes"):
        infra.require_or_skip("x")


def test_this_machine_has_every_prerequisite() -> None:
    # The autouse gate let this test run, so the list must be empty; a non-empty one means the gate is broken.
    assert infra.missing_prerequisites() == []


# ---------------------------------------------------------------- this machine, as containers reach it


def test_containers_on_a_test_network_reach_this_machine_at_its_bridge_address(
    images: infra.E2EImages, e2e_resources: infra.ResourceTracker
) -> None:
    # The receivers, the heartbeat and the SFTP drive listen on this address, and the test stacks are given
    # it. Debian's docker.io 20.10 names no Gateway for the default bridge; an empty address stopped every run.
    address = infra.bridge_gateway()
    assert address, "the bridge address is empty"
    receiver = infra.HttpReceiver()
    try:
        network = e2e_resources.network()
        name = e2e_resources.container(e2e_resources.name("reach"))
        result = infra.docker(
            "run", "--name", name, "--network", network, "--entrypoint", "curl", images.kopia,
            "-fsS", "--max-time", "10", receiver.ping_url(address), check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert [r.path for r in receiver.inbox.since(0)] == [receiver.ping_path]
    finally:
        receiver.stop()
    engine = infra.docker("version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})").stdout.strip()
    infra.progress(f"docker engine {engine}: this machine is {address} on the default bridge")


# ---------------------------------------------------------------- SSH and docker over SSH


def test_ssh_host_logs_in_with_the_pinned_key_as_a_docker_user(ssh_host: infra.SshHost) -> None:
    result = infra.ssh_run(ssh_host, "id -un; id -Gn; echo $HOME")
    user, groups, home = result.stdout.splitlines()
    assert user == infra.SSH_USER
    assert pwd.getpwnam(user).pw_uid != infra.OPENLIST_UID  # its files must not pass for OpenList's
    assert "docker" in groups.split()
    assert home.startswith("/home/")
    assert ssh_host.known_hosts_line == f"[127.0.0.1]:{ssh_host.port} {ssh_host.host_public_key}"
    assert ssh_host.host_public_key.startswith("ssh-ed25519 AAAA")
    assert ssh_host.private_key_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # stdin reaches the remote command as bytes, unchanged
    echoed = infra.ssh_run(ssh_host, "cat", stdin=b"\x00secret\xff")
    assert echoed.returncode == 0 and len(echoed.stdout) > 0


def test_ssh_offers_only_publickey_and_refuses_unknown_keys(ssh_host: infra.SshHost, tmp_path: Path) -> None:
    other_key = tmp_path / "other"
    infra.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_host.known_hosts_line + "\n")
    stranger = infra.SshHost(**{**ssh_host.__dict__, "private_key_path": other_key})
    result = infra.ssh_run(stranger, "true", ssh_opts=infra.pinned_ssh_opts(known_hosts), check=False)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr  # the only method sshd offers: no passwords


def test_docker_over_ssh_reaches_the_engine(ssh_docker: infra.SshDocker, ssh_host: infra.SshHost) -> None:
    assert ssh_docker.env["DOCKER_HOST"] == f"ssh://{infra.SSH_USER}@127.0.0.1:{ssh_host.port}"
    remote = ssh_docker.run("version", "--format", "{{.Server.Version}}").stdout.strip()
    local = infra.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert remote and remote == local
    # docker really ran our wrapper: it execs ssh with the pinned known_hosts and the session key
    wrapper = (ssh_docker.bindir / "ssh").read_text()
    assert "StrictHostKeyChecking=yes" in wrapper and str(ssh_host.private_key_path) in wrapper


def test_docker_over_ssh_fails_when_sshd_is_stopped() -> None:
    server = infra.SshServer()
    try:
        host = server.start()
        with infra.SshDocker(host) as client:
            assert client.run("version", "--format", "{{.Server.Version}}").stdout.strip()
            server.stop_process()
            result = client.run("version", "--format", "{{.Server.Version}}", check=False, timeout=120)
        assert result.returncode != 0
        assert "Connection refused" in result.stderr or "connection refused" in result.stderr.lower()
    finally:
        server.stop()
    assert not server.workdir.exists(), "keys must be deleted with the server"


def test_docker_over_ssh_refuses_a_wrong_pinned_host_key(ssh_host: infra.SshHost, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor_host_key"
    infra.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)])
    wrong_line = infra.known_hosts_line("127.0.0.1", ssh_host.port, infra.public_key(impostor.with_suffix(".pub")))
    assert wrong_line != ssh_host.known_hosts_line
    with infra.SshDocker(ssh_host, known_hosts_line=wrong_line) as client:
        result = client.run("version", check=False, timeout=120)
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr
    # and plain ssh with the same wrong pin
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(wrong_line + "\n")
    plain = infra.ssh_run(ssh_host, "true", ssh_opts=infra.pinned_ssh_opts(known_hosts), check=False)
    assert plain.returncode == 255 and "Host key verification failed" in plain.stderr


# ---------------------------------------------------------------- images


def _inspect(image: str) -> dict:
    return json.loads(infra.docker("image", "inspect", image).stdout)[0]["Config"]


def test_kopia_image_runs_kopia_and_sh(images: infra.E2EImages) -> None:
    assert images.kopia == "kopia/kopia:0.22.3"
    version = infra.docker("run", "--rm", images.kopia, "--version").stdout
    assert version.split()[0] == "0.22.3", version
    assert infra.docker("run", "--rm", "--entrypoint", "/bin/sh", images.kopia, "-c", "echo ok").stdout == "ok\n"
    config = _inspect(images.kopia)
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["KOPIA_CONFIG_PATH"] == "/app/config/repository.config"
    assert env["KOPIA_LOG_DIR"] == "/app/logs"
    assert env["KOPIA_CACHE_DIRECTORY"] == "/app/cache"
    assert env["RCLONE_CONFIG"] == "/app/rclone/rclone.conf"
    assert env["KOPIA_PERSIST_CREDENTIALS_ON_CONNECT"] == "false"
    assert env["KOPIA_CHECK_FOR_UPDATES"] == "false"
    assert config["WorkingDir"] == "/app"
    assert config["Entrypoint"] == ["/bin/kopia"]
    assert config["User"] in ("", "root", "0")
    assert config["Labels"][infra.VERSION_LABEL].startswith("0.22.3+")
    # what the program's start script and healthcheck lean on
    probe = "id -u; stat -c %a /tmp; TZ=Asia/Shanghai date +%Z; test -s /etc/ssl/certs/ca-certificates.crt"
    out = infra.docker("run", "--rm", "--entrypoint", "/bin/sh", images.kopia, "-c", probe).stdout.split()
    assert out == ["0", "1777", "CST"]


def test_host_kopia_binary_is_the_pinned_version(kopia_binary: Path) -> None:
    assert kopia_binary.name == "kopia-v0.22.3"
    out = infra.run([kopia_binary, "--version"]).stdout
    assert out.startswith("0.22.3 build: ")


def test_openlist_image_mirrors_upstream(images: infra.E2EImages) -> None:
    assert images.openlist == "ghcr.io/openlistteam/openlist-git:v4.2.5"
    config = _inspect(images.openlist)
    assert config["User"] == "openlist"
    assert config["WorkingDir"] == "/opt/openlist/"
    assert config["Cmd"] == ["/entrypoint.sh"]
    assert "UMASK=022" in config["Env"]
    assert "/opt/openlist/data/" in config["Volumes"]
    out = infra.docker("run", "--rm", images.openlist, "/entrypoint.sh", "version").stdout
    assert "Version: v4.2.5" in out
    ids = infra.docker(
        "run", "--rm", images.openlist, "sh", "-c",
        "id -u; id -g; stat -c '%u %a' /opt/openlist/openlist; stat -c %u /opt/openlist/data",
    ).stdout.split("\n")  # fmt: skip
    assert ids[:4] == ["1001", "1001", "1001 755", "0"]  # data is root's in the image, as upstream


def test_openlist_refuses_a_data_dir_it_cannot_write(
    images: infra.E2EImages, e2e_resources: infra.ResourceTracker
) -> None:
    # Upstream's entrypoint check, kept: this is what happens when the program forgets to chown.
    network = e2e_resources.network()
    name = e2e_resources.container(e2e_resources.name("openlist-rootdir"))
    data_dir = e2e_resources.mkdir("root-owned")  # root:root 0755
    infra.start_openlist(name, network, data_dir, image=images.openlist, owner_uid=None, wait=False)
    assert infra.docker("wait", name, timeout=60).stdout.strip() == "1"
    assert "does not have write and/or execute permissions" in infra.container_logs(name)


# ---------------------------------------------------------------- OpenList S3 + Kopia


def test_openlist_s3_serves_kopia_only_with_the_keys(
    images: infra.E2EImages, kopia_binary: Path, e2e_resources: infra.ResourceTracker
) -> None:
    network = e2e_resources.network()
    name = e2e_resources.container(e2e_resources.name("openlist"))
    data_dir = e2e_resources.mkdir("openlist") / "data"
    container = infra.start_openlist(name, network, data_dir, image=images.openlist)
    assert data_dir.stat().st_uid == infra.OPENLIST_UID
    assert (data_dir / "config.json").is_file() and (data_dir / "data.db").is_file()
    infra.wait_until("S3 port", lambda: infra.s3_port_answers(container), 30)
    # Before keys are set OpenList's S3 has no authentication: why it restarts after saving them (docs/openlist.md).
    status, _ = infra.s3_anonymous_get(container.s3_url + "/")
    assert status == 200

    s3 = infra.configure_openlist_s3(container)
    assert s3.bucket == "kopia" and s3.mount_path == "/189"
    assert s3.bucket_host_dir.is_dir()

    # the S3 settings are private: not in the public settings, flag 1 in the admin list
    admin = infra.OpenListAdmin(container.web_url)
    admin.login(s3.admin_password)
    public = json.dumps(infra.OpenListAdmin(container.web_url)._request("GET", "/api/public/settings"))
    assert s3.secret_access_key not in public and s3.access_key_id not in public
    s3_items = {i["key"]: i for i in admin.list_settings(group=infra.OPENLIST_SETTING_GROUP_S3)}
    assert s3_items["s3_secret_access_key"]["value"] == s3.secret_access_key
    assert all(s3_items[k]["flag"] == 1 for k in ("s3_access_key_id", "s3_secret_access_key", "s3_buckets"))
    with pytest.raises(infra.OpenListError):
        infra.OpenListAdmin(container.web_url).login("not-the-password")

    # without the keys: refused
    for url in (s3.container.s3_url + "/", f"{s3.container.s3_url}/{s3.bucket}/"):
        status, body = infra.s3_anonymous_get(url)
        assert status == 403, (url, status, body)
        assert "<Code>InvalidAccessKeyId</Code>" in body, body  # gofakes3: an unsigned request has no key id

    prefix = f"hle2e-{secrets.token_hex(4)}/"
    config_dir = e2e_resources.mkdir("kopia-host")
    kopia = infra.KopiaCli(
        binary=kopia_binary,
        config_dir=config_dir,
        password="repo-" + secrets.token_hex(8),
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )
    wrong = infra.KopiaCli(
        binary=kopia_binary,
        config_dir=e2e_resources.mkdir("kopia-wrong"),
        password=kopia.password,
        access_key_id=s3.access_key_id,
        secret_access_key="wrong-" + s3.secret_access_key,
    )
    overrides = ["--override-hostname=x", "--override-username=y"]
    refused = wrong.run("repository", "create", "s3", *wrong.s3_args(s3, prefix), *overrides, check=False)
    assert refused.returncode != 0
    assert "signature we calculated does not match" in refused.stderr

    created = kopia.run("repository", "create", "s3", *kopia.s3_args(s3, prefix), *overrides)
    assert s3.secret_access_key not in " ".join(created.args)  # keys only in the environment
    source = e2e_resources.mkdir("source")
    (source / "hello.txt").write_text("hello from the e2e smoke test\n")
    (source / "sub").mkdir()
    (source / "sub" / "data.bin").write_bytes(os.urandom(64 * 1024))
    kopia.run("snapshot", "create", str(source))
    listed = json.loads(kopia.run("snapshot", "list", "--all", "--json").stdout)
    assert [(s["source"]["host"], s["source"]["userName"], s["source"]["path"]) for s in listed] == [
        ("x", "y", str(source))
    ]
    assert "x" in kopia.run("snapshot", "list", "--all").stdout
    # the repository really is in OpenList's Local storage, under the bucket's path
    blobs = [p for p in (s3.bucket_host_dir / prefix.rstrip("/")).rglob("*") if p.is_file()]
    assert any(p.name == "kopia.repository" for p in blobs), blobs[:10]
    assert len(blobs) > 3


def test_kopia_container_reaches_openlist_by_name_on_the_network(
    images: infra.E2EImages, openlist_s3: infra.OpenListS3, e2e_resources: infra.ResourceTracker
) -> None:
    # How the program wires it: Kopia's container reaches OpenList at <container>:5246 on a shared network.
    env = dict(
        os.environ,
        KOPIA_PASSWORD="repo-" + secrets.token_hex(8),
        AWS_ACCESS_KEY_ID=openlist_s3.access_key_id,
        AWS_SECRET_ACCESS_KEY=openlist_s3.secret_access_key,
    )
    name = e2e_resources.container(e2e_resources.name("kopia"))
    cmd = [
        "docker", "run", "--name", name, "--network", openlist_s3.container.network,
        "-e", "KOPIA_PASSWORD", "-e", "AWS_ACCESS_KEY_ID", "-e", "AWS_SECRET_ACCESS_KEY",  # values from env
        images.kopia, "repository", "create", "s3", f"--bucket={openlist_s3.bucket}",
        f"--endpoint={openlist_s3.internal_endpoint}", "--disable-tls", "--prefix=in-network/",
    ]  # fmt: skip
    result = infra.run(cmd, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert (openlist_s3.bucket_host_dir / "in-network" / "kopia.repository").is_file()
    inspect = infra.docker("inspect", "--format", "{{json .Config.Env}}", name).stdout
    assert openlist_s3.secret_access_key in inspect  # docker keeps -e values; they were only off the command line
    assert openlist_s3.secret_access_key not in " ".join(cmd)


def test_cleanup_removes_containers_networks_and_dirs(images: infra.E2EImages, e2e_workdir: Path) -> None:
    tracker = infra.ResourceTracker(workdir=e2e_workdir)
    network = tracker.network()
    name = tracker.container(tracker.name("sleeper"))
    infra.docker("run", "-d", "--name", name, "--network", network, "--entrypoint", "/bin/sleep", images.kopia, "300")
    path = tracker.mkdir("scratch", owner=infra.OPENLIST_UID)
    assert path.stat().st_uid == infra.OPENLIST_UID
    assert tracker.cleanup() == []
    assert infra.docker("inspect", name, check=False).returncode != 0
    assert infra.docker("network", "inspect", network, check=False).returncode != 0
    assert not path.exists()


def test_the_containers_that_mount_a_dir_are_found_to_be_removed_before_it_is_deleted(
    images: infra.E2EImages, e2e_workdir: Path
) -> None:
    """What `System.prepare_host` removes before it deletes the host dirs: an interrupted run's containers (a
    dump's, a test's writer) that still mount them, found by their mounts since their names are not fixed."""
    tracker = infra.ResourceTracker(workdir=e2e_workdir)
    root = tracker.mkdir("host")
    (root / "deep" / "source").mkdir(parents=True)
    beside = tracker.mkdir("beside")
    inside = tracker.container(tracker.name("writer"))
    outside = tracker.container(tracker.name("other"))
    try:
        for name, mount in ((inside, root / "deep" / "source"), (outside, beside)):
            infra.docker(
                "create", "--name", name, "-v", f"{mount}:/data", "--entrypoint", "/bin/sleep", images.kopia, "300"
            )
        found = infra.containers_mounting(root)
        assert inside in found
        assert outside not in found
    finally:
        assert tracker.cleanup() == []


def test_command_error_shows_stderr() -> None:
    with pytest.raises(infra.CommandError) as info:
        infra.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert info.value.returncode == 3
    assert "boom" in str(info.value)
    assert isinstance(info.value, subprocess.CalledProcessError)
