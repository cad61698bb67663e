"""OpenList: its admin API, a launcher for the smoke tests, and its S3 endpoint."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import openlist_config
from components.host_files import own_directory_command
from components.openlist import container_env
from testbed.infra.gate import E2EError
from testbed.infra.pins import (
    OPENLIST_DATA_DIR,
    OPENLIST_HTTP_PORT,
    OPENLIST_IMAGE,
    OPENLIST_S3_PORT,
    OPENLIST_UID,
    RESOURCE_LABEL,
)
from testbed.infra.process import DockerRunner, docker, free_port, run, timed, wait_until

# ---------------------------------------------------------------- OpenList


class OpenListError(E2EError):
    """OpenList answered with a JSON `code` other than 200 (its HTTP status is 200 either way)."""


class OpenListAdmin:
    """OpenList's admin HTTP API, stdlib only: the calls the program's OpenListSettings makes, for the suite's own look.

    Every answer is HTTP 200 with a JSON `{code, message, data}`; a `code` other than 200 raises
    `OpenListError` with the message. The token from `login()` goes in the raw `Authorization`
    header (no `Bearer`).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be http(s)://..., got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- plumbing

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310 (http(s) checked)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", self.token)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http(s) checked)
            raw = resp.read()
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError as e:
            raise OpenListError(f"{method} {path}: not JSON: {raw[:200]!r}") from e
        if answer.get("code") != 200:
            raise OpenListError(f"{method} {path}: code {answer.get('code')}: {answer.get('message')}")
        return answer.get("data")

    # -- API

    def ping(self) -> bool:
        """True when `GET /ping` answers `pong`."""
        try:
            req = urllib.request.Request(self.base_url + "/ping")  # noqa: S310 (http(s) checked)
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (http(s) checked)
                return resp.read().strip() == b"pong"
        except (OSError, urllib.error.URLError):
            return False

    def wait_ping(self, timeout: float = 60) -> None:
        """Wait until OpenList serves HTTP (its database and storages are loaded by then)."""
        wait_until(f"OpenList at {self.base_url}/ping", self.ping, timeout)

    @staticmethod
    def set_admin_password(container_name: str, password: str, runner: DockerRunner = docker) -> None:
        """`./openlist admin set --no-prefix -- <pw>` in the container (cmd/admin.go at v4.2.5).

        `--no-prefix` makes the CLI read the container's HTTP_PORT like the server does, so its
        call to the running server's `/api/admin/user/del_cache` reaches it and a cached admin
        user with the old password is dropped. `--` lets a password start with `-`.
        """
        cmd = ["exec", container_name, "./openlist", "admin", "set", "--no-prefix", "--", password]
        result = runner(*cmd, check=False)
        if result.returncode != 0 or "admin user has been updated" not in result.stdout:
            raise OpenListError(f"openlist admin set failed in {container_name}:\n{result.stdout}\n{result.stderr}")

    def login(self, password: str, username: str = "admin") -> str:
        """`POST /api/auth/login`; keeps the token for the next calls and returns it."""
        data = self._request("POST", "/api/auth/login", {"username": username, "password": password})
        self.token = str(data["token"])
        return self.token

    def create_local_storage(self, mount_path: str, root_folder_path: str, **fields: Any) -> int:
        """Mount a `Local` storage (a dir inside the container) at `mount_path`; returns its id.

        The dir must exist and be writable by uid 1001. `fields` override storage fields
        (e.g. `web_proxy=True`); Local's own options default as the web UI would set them.
        """
        addition = {
            "root_folder_path": root_folder_path,
            "directory_size": False,
            "thumbnail": False,
            "thumb_concurrency": "16",
            "video_thumb_pos": "20%",
            "show_hidden": True,
            "mkdir_perm": "777",
            "recycle_bin_path": "delete permanently",
        }
        storage = {
            **openlist_config.STORAGE_DEFAULTS,  # the program's own form of a new storage
            "mount_path": mount_path,
            "driver": "Local",
            "cache_expiration": 0,
            "remark": "homelab-backup e2e",
            "addition": json.dumps(addition),
            "web_proxy": False,
            **fields,
        }
        data = self._request("POST", "/api/admin/storage/create", storage)
        return int(data["id"])

    def storage(self, mount_path: str) -> dict[str, Any]:
        """The storage mounted at `mount_path`, as `GET /api/admin/storage/list` gives it."""
        listed = self._request("GET", "/api/admin/storage/list")["content"]
        return next(s for s in listed if s["mount_path"] == mount_path)

    def disable_storage(self, mount_path: str) -> None:
        """`POST /api/admin/storage/disable`: OpenList drops the storage, and every path under it is gone (its S3
        server then answers 404 and empty listings, as for a failing drive; docs/upstream-behaviour.md)."""
        self._request("POST", f"/api/admin/storage/disable?id={self.storage(mount_path)['id']}")

    def enable_storage(self, mount_path: str) -> None:
        """`POST /api/admin/storage/enable`: the storage is loaded again, as it is saved."""
        self._request("POST", f"/api/admin/storage/enable?id={self.storage(mount_path)['id']}")

    def s3_rows(self) -> dict[str, dict[str, Any]]:
        """The S3 settings group as full rows, by key."""
        return {row["key"]: row for row in self.list_settings(group=openlist_config.S3_GROUP)}

    def public_settings(self) -> str:
        """`/api/public/settings` as anyone on the network reads it: no login."""
        with urllib.request.urlopen(self.base_url + "/api/public/settings", timeout=10) as answer:  # noqa: S310
            return answer.read().decode()

    def list_settings(self, group: int | None = None) -> list[dict[str, Any]]:
        """`GET /api/admin/setting/list` (all groups, or one): full setting items."""
        query = "" if group is None else f"?group={group}"
        return list(self._request("GET", f"/api/admin/setting/list{query}") or [])

    def save_s3_settings(self, values: Mapping[str, str]) -> None:
        """Change the S3 settings by key, as the program does (`components.openlist_config.s3_rows`): FULL
        private rows, since `POST /api/admin/setting/save` stores what it is sent."""
        try:  # the program's own rule: whole rows, private
            items = openlist_config.s3_rows(self.list_settings(), values)
        except openlist_config.OpenListApiError as error:
            raise OpenListError(str(error)) from None
        if items:
            self._request("POST", "/api/admin/setting/save", items)

    def configure_s3(
        self, access_key_id: str, secret_access_key: str, buckets: Sequence[Mapping[str, str]] | None = None
    ) -> None:
        """Set the S3 keys and buckets (`[{"name": "kopia", "path": "/189/kopia"}]` by default).

        OpenList reads the keys ONCE, when its S3 server starts: restart the container after
        this (`docker restart <name>`), or its S3 port keeps serving without authentication.
        """
        if buckets is None:
            buckets = [{"name": "kopia", "path": "/189/kopia"}]
        self.save_s3_settings(
            {
                "s3_access_key_id": access_key_id,
                "s3_secret_access_key": secret_access_key,
                "s3_buckets": json.dumps([dict(b) for b in buckets]),
            }
        )


@dataclass(frozen=True)
class OpenListContainer:
    """A running OpenList container with its web and S3 ports published on 127.0.0.1."""

    name: str
    network: str
    data_dir: Path
    web_port: int  # on 127.0.0.1
    s3_port: int  # on 127.0.0.1

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def s3_endpoint(self) -> str:
        """`127.0.0.1:PORT`, what kopia's `--endpoint` wants (with `--disable-tls`)."""
        return f"127.0.0.1:{self.s3_port}"

    @property
    def s3_url(self) -> str:
        return f"http://{self.s3_endpoint}"

    @property
    def internal_s3_endpoint(self) -> str:
        """`<name>:5246`, how a container on the same network reaches it (the program's internal_s3_endpoint)."""
        return f"{self.name}:{OPENLIST_S3_PORT}"


def container_logs(name: str, runner: DockerRunner = docker, lines: int = 60) -> str:
    result = runner("logs", "--tail", str(lines), name, check=False)
    return (result.stdout + result.stderr).strip()


def start_openlist(
    name: str,
    network: str,
    data_dir: Path,
    *,
    image: str = OPENLIST_IMAGE,
    timezone: str = "UTC",
    owner_uid: int | None = OPENLIST_UID,
    web_port: int | None = None,
    s3_port: int | None = None,
    runner: DockerRunner = docker,
    wait: bool = True,
    timeout: float = 60,
) -> OpenListContainer:
    """`docker run` OpenList with the program's own environment (components/openlist.py `container_env`)
    and data-dir preparation (components/host_files.py `own_directory_command`), on `network`, web and S3
    ports published on 127.0.0.1.

    The host ports are free ones picked here (or given) and published explicitly: with
    `-p 127.0.0.1::80` docker would pick new ones at every `docker restart`, and the
    S3 keys only apply after a restart. `owner_uid` prepares `data_dir` as the program does;
    None leaves it as it is, to see the image refuse a dir it cannot write. `wait` waits for /ping.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if owner_uid is not None:
        run(["sh", "-c", own_directory_command(str(data_dir), image, owner_uid, "700")])
    web_port = web_port or free_port()
    s3_port = s3_port or free_port()
    runner(
        "run", "-d", "--name", name, "--network", network,
        "--label", f"{RESOURCE_LABEL}=1",
        *[arg for k, v in container_env(timezone, OPENLIST_S3_PORT).items() for arg in ("-e", f"{k}={v}")],
        "-p", f"127.0.0.1:{web_port}:{OPENLIST_HTTP_PORT}", "-p", f"127.0.0.1:{s3_port}:{OPENLIST_S3_PORT}",
        "-v", f"{data_dir}:{OPENLIST_DATA_DIR}",
        image,
    )  # fmt: skip
    container = OpenListContainer(name=name, network=network, data_dir=data_dir, web_port=web_port, s3_port=s3_port)
    if wait:
        wait_openlist(container, runner=runner, timeout=timeout)
    return container


def wait_openlist(container: OpenListContainer, *, runner: DockerRunner = docker, timeout: float = 60) -> None:
    """Wait for /ping; fail early, with the container's log, if the container stops."""
    admin = OpenListAdmin(container.web_url)

    def ready() -> bool:
        state = runner("inspect", "--format", "{{.State.Running}}", container.name, check=False).stdout.strip()
        if state != "true":
            log = container_logs(container.name, runner)
            raise E2EError(f"OpenList container {container.name} is not running; log:\n{log}")
        return admin.ping()

    try:
        wait_until(f"OpenList {container.name} to answer /ping", ready, timeout)
    except E2EError as e:
        if "not running" in str(e):
            raise
        raise E2EError(f"{e}; log:\n{container_logs(container.name, runner)}") from None


def s3_port_answers(container: OpenListContainer) -> bool:
    """True once the S3 port answers HTTP at all (it starts a moment after the web port)."""
    try:
        with urllib.request.urlopen(container.s3_url + "/", timeout=5):  # noqa: S310 (http only)
            return True
    except urllib.error.HTTPError:
        return True  # 403 AccessDenied is an answer
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class OpenListS3:
    """An OpenList configured as the program configures one (S3 keys, bucket folder), ready for Kopia."""

    container: OpenListContainer
    admin_password: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    mount_path: str
    storage_dir: str  # the Local storage's root, inside the container

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:PORT` for a Kopia on this machine."""
        return self.container.s3_endpoint

    @property
    def internal_endpoint(self) -> str:
        """`<container>:5246` for a Kopia container on the same docker network."""
        return self.container.internal_s3_endpoint

    @property
    def bucket_host_dir(self) -> Path:
        """Where the bucket's objects land on this machine (inside the bind-mounted data dir)."""
        relative = Path(self.storage_dir).relative_to(OPENLIST_DATA_DIR)
        return self.container.data_dir / relative / self.bucket


def configure_openlist_s3(
    container: OpenListContainer,
    *,
    admin_password: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    bucket: str = "kopia",
    mount_path: str = "/189",
    storage_dir: str = f"{OPENLIST_DATA_DIR}/storage-189",
    runner: DockerRunner = docker,
    timeout: float = 60,
) -> OpenListS3:
    """Admin password, a Local storage at `mount_path` (standing in for the 189 Cloud drive),
    S3 keys and a bucket `<bucket>` -> `<mount_path>/<bucket>`, then restart so the keys apply.

    Random password and keys unless given. Dirs are made with `docker exec` as the container's
    user, so they have the owner OpenList needs, also when `runner` goes through SSH.
    """
    admin_password = admin_password or secrets.token_urlsafe(12)
    access_key_id = access_key_id or f"hle2e{secrets.token_hex(6)}"
    secret_access_key = secret_access_key or secrets.token_urlsafe(24)
    admin = OpenListAdmin(container.web_url)
    with timed(f"configure OpenList {container.name}"):
        admin.wait_ping(timeout)
        OpenListAdmin.set_admin_password(container.name, admin_password, runner)
        admin.login(admin_password)
        runner("exec", container.name, "mkdir", "-p", f"{storage_dir}/{bucket}")
        admin.create_local_storage(mount_path, storage_dir)
        admin.configure_s3(
            access_key_id, secret_access_key, [{"name": bucket, "path": f"{mount_path.rstrip('/')}/{bucket}"}]
        )
        runner("restart", container.name)
        wait_openlist(container, runner=runner, timeout=timeout)
        wait_until(f"OpenList {container.name} S3 port", lambda: s3_port_answers(container), timeout)
    return OpenListS3(
        container=container,
        admin_password=admin_password,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        bucket=bucket,
        mount_path=mount_path,
        storage_dir=storage_dir,
    )


def s3_anonymous_get(url: str) -> tuple[int, str]:
    """An unsigned GET (no S3 keys): (HTTP status, body). For proving OpenList demands the keys."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (http only, built by tests)
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
