"""OpenList's own settings, applied through its admin HTTP API on every `pulumi up`.

`OpenListSettings` is a Python dynamic resource (like `components/host_files.py`) that makes an OpenList
hold what the stack declares, and nothing is left to its web UI:

- the admin password (a secret reference). On an OpenList this stack deploys, a password that does not
  log in (the random one of a first start, or one changed by hand) is reset with the container's own
  `./openlist admin random`, whose answer comes back on SSH's stdout, then set through `/api/me/update`:
  the wanted password never appears on a command line;
- one storage (driver, mount path, `cache_expiration`, `web_proxy`, the driver's fields; secret fields from
  references), created like the web UI does (the driver's defaults from `/api/admin/driver/info`);
- the bucket folder `<mountPath>/<bucket>`, and never the prefix folder below it: an empty folder lists
  OpenList's fake `ThisIsAnEmptyFolderInTheS3Bucket` object, which makes `kopia repository create` fail;
- the S3 keys and the bucket map, saved as FULL setting rows with `flag: 1` (private): a bare key/value
  row is saved as public and shows at `/api/public/settings` without login. OpenList reads the keys at start
  only, so whether they are in force is asked of its S3 port itself on every `up` and refresh: an unsigned
  request must be refused and one signed with the declared keys accepted (and one signed with the keys they
  replace refused). When that is not so, OpenList is restarted (the container this stack deploys, or another
  with the stack's `openlist.restartCommand`; without one the `up` stops and says so), and the restart counts
  as done only once the S3 port says so: a `/ping` is answered by an old instance too, and a restart command
  may return before the restart happened (`kubectl rollout restart`). So a restart that failed, or one the
  user was asked for and did not do, is due again at the next `up`, however the rows were saved.

`read` logs in and reports what OpenList holds (the storage's declared fields and status, the folder,
the S3 rows and their flags, whether its S3 port enforces the keys; secret values only as a digest kept
secret in state), so `pulumi refresh`
shows an edit made in the UI and `pulumi up` puts the declared values back. Unchanged config: no write.

The admin API and the S3 port are reached through one SSH tunnel to the stack's host, with the same `ssh`
command line (pinned host key, the operator's agent) as every other resource: the ports are published on
the host's deploy address, which the operator's machine may not route to. The tunnel's local ends are Unix
sockets in a private temp dir, so no other local user can use them. Every failed call names the setting it was making
and carries OpenList's own message. Upstream behaviour: docs/upstream-behaviour.md#the-admin-api.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import shlex
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.host_files import RemoteError, run_on_host
from components.s3_signature import sign

PRIVATE = 1  # model.PRIVATE (internal/model/setting.go): never in /api/public/settings
S3_GROUP = 9  # model.S3: the settings group of the S3 server
S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_BUCKETS = "s3_access_key_id", "s3_secret_access_key", "s3_buckets"
STORAGE_WORKS = "work"  # op.WORK: a storage whose driver initialised
#: Addition fields a driver rewrites itself (189CloudPC saves its rotated tokens and clears the captcha
#: code, drivers/189pc/utils.go): written when their declared value changes, never compared with the live one.
DRIVER_MANAGED_FIELDS = {"189CloudPC": ("access_token", "refresh_token", "validate_code")}
TUNNEL_TIMEOUT_SECONDS = 20
HTTP_TIMEOUT_SECONDS = 60
RESTART_TIMEOUT_SECONDS = 120
POLL_SECONDS = 1
#: Consecutive answers of the S3 port that confirm the keys are in force: during a rolling restart a
#: service may still send a request to the old instance after the new one answered.
KEYS_CONFIRMATIONS = 3
# What `./openlist admin random` prints last (cmd/admin.go).
_RANDOM_PASSWORD = re.compile(r"^password: (\S+)$", re.MULTILINE)


class OpenListApiError(Exception):
    """An admin call failed; the message says what it was doing and what OpenList answered."""

    def __init__(self, what: str, message: str, code: int | None = None):
        self.code = code
        super().__init__(f"OpenList: {what}: {message}" + (f" (code {code})" if code is not None else ""))


# ---------------------------------------------------------------- pure: what to send, what to compare


def integral(value: Any) -> Any:
    """`value` with whole floats as ints: Pulumi hands every number to a dynamic provider as a float, and
    OpenList's JSON decoder refuses `1.0` for an int field."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def digest(value: Any) -> str:
    """sha256 of a JSON value (sorted keys): how secret values are compared without being kept."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def bucket_map(bucket: str, folder: str) -> str:
    """The `s3_buckets` value: one bucket mapped to its folder, compact as the web UI saves it."""
    return json.dumps([{"name": bucket, "path": folder}], separators=(",", ":"))


def managed_fields(driver: str) -> tuple[str, ...]:
    return DRIVER_MANAGED_FIELDS.get(driver, ())


def compared_secret_fields(props: Mapping[str, Any]) -> dict[str, str]:
    """The declared secret fields whose live value must match (the driver-managed ones aside)."""
    managed = managed_fields(props["storage"]["driver"])
    return {k: v for k, v in (props.get("storageSecrets") or {}).items() if k not in managed}


def written_fields(props: Mapping[str, Any]) -> dict[str, str]:
    """The declared driver-managed fields: compared with what was last written, not with OpenList."""
    managed = managed_fields(props["storage"]["driver"])
    return {k: v for k, v in (props.get("storageSecrets") or {}).items() if k in managed}


def desired_state(props: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """What `read` must find when OpenList holds the declared settings: (plain view, digest of the secrets)."""
    storage = props["storage"]
    plain = {
        "adminLogin": True,
        "storage": {
            "driver": storage["driver"],
            "mountPath": storage["mountPath"],
            "cacheExpiration": storage["cacheExpiration"],
            "webProxy": storage["webProxy"],
            "disabled": False,
            "status": STORAGE_WORKS,
            "fields": dict(storage["fields"]),
        },
        "bucketFolder": True,
        "s3Buckets": bucket_map(props["bucket"]["name"], props["bucket"]["folder"]),
        "s3Private": True,
        "s3KeysInForce": True,
    }
    secrets = {
        S3_ACCESS_KEY_ID: props["s3Keys"]["accessKeyId"],
        S3_SECRET_ACCESS_KEY: props["s3Keys"]["secretAccessKey"],
        "fields": compared_secret_fields(props),
    }
    return plain, digest(secrets)


def storage_view(live: Mapping[str, Any], props: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A live storage (model.Storage as the admin API lists it) seen like `desired_state`: (plain, secret fields)."""
    addition = _addition(live)
    plain = {
        "driver": live.get("driver"),
        "mountPath": live.get("mount_path"),
        "cacheExpiration": live.get("cache_expiration"),
        "webProxy": live.get("web_proxy"),
        "disabled": live.get("disabled"),
        "status": live.get("status"),
        "fields": {k: addition.get(k) for k in props["storage"]["fields"]},
    }
    return plain, {k: addition.get(k) for k in compared_secret_fields(props)}


def _addition(storage: Mapping[str, Any]) -> dict[str, Any]:
    try:
        addition = json.loads(storage.get("addition") or "{}")
    except json.JSONDecodeError:
        return {}
    return addition if isinstance(addition, dict) else {}


def driver_defaults(info: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's fields with their defaults, typed, as the web UI fills a new storage's form."""

    def typed(item: Mapping[str, Any]) -> Any:
        default = item.get("default") or ""
        if item.get("type") == "bool":
            return default == "true"
        if item.get("type") == "number":
            return int(default) if default.lstrip("-").isdigit() else 0
        return default

    return {item["name"]: typed(item) for item in info.get("additional") or []}


def storage_body(
    props: Mapping[str, Any], *, live: Mapping[str, Any] | None, defaults: Mapping[str, Any], write_managed: bool
) -> dict[str, Any]:
    """The model.Storage to send: the live one (or the driver's defaults) with the declared values on top.

    `addition` is a JSON string of the driver's fields. A live storage keeps every field not declared (the
    tokens 189CloudPC rotated, for one); a driver-managed field is sent only when `write_managed`.
    """
    storage = props["storage"]
    managed = written_fields(props) if write_managed or live is None else {}
    addition = {**(_addition(live) if live else defaults), **storage["fields"], **compared_secret_fields(props)}
    addition.update(managed)
    base = {k: v for k, v in (live or STORAGE_DEFAULTS).items() if k != "mount_details"}
    return {
        **base,
        "mount_path": storage["mountPath"],
        "driver": storage["driver"],
        "cache_expiration": storage["cacheExpiration"],
        "web_proxy": storage["webProxy"],
        "disabled": False,
        "addition": json.dumps(addition),
    }


#: A new storage's common fields, as the web UI's form sends them (model.Storage).
STORAGE_DEFAULTS: dict[str, Any] = {
    "order": 0,
    "remark": "managed by homelab-backup (pulumi up puts it back)",
    "webdav_policy": "native_proxy",
    "down_proxy_url": "",
    "order_by": "name",
    "order_direction": "asc",
    "extract_folder": "front",
    "disable_index": False,
    "enable_sign": False,
}


def s3_rows(current: Sequence[Mapping[str, Any]], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """The full setting rows to save so that OpenList holds `values`, private; [] when it already does.

    Whole rows, as `/api/admin/setting/save` stores what it is sent: a row without its type, group and
    `flag: 1` would be saved public.
    """
    by_key = {row["key"]: row for row in current}
    missing = sorted(set(values) - set(by_key))
    if missing:
        raise OpenListApiError(f"saving the S3 settings {', '.join(values)}", f"no such settings: {missing}")
    return [
        {**by_key[key], "value": value, "flag": PRIVATE}
        for key, value in values.items()
        if by_key[key].get("value") != value or by_key[key].get("flag") != PRIVATE
    ]


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret value replaced: an error message must never carry one."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "[secret]")
    return text


def secret_values(props: Mapping[str, Any]) -> list[str]:
    return [
        props.get("adminPassword") or "",
        *(props.get("s3Keys") or {}).values(),
        *(props.get("storageSecrets") or {}).values(),
    ]


# ---------------------------------------------------------------- transport: a tunnel and the JSON API


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP (or TLS) over the tunnel's Unix socket; the Host header and TLS name are the target's."""

    def __init__(self, socket_path: str, host: str, port: int, tls: bool):
        super().__init__(host, port, timeout=HTTP_TIMEOUT_SECONDS)
        self._socket_path, self._tls = socket_path, tls

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        if self._tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def tunnel_command(ssh: Sequence[str], forwards: Mapping[str, tuple[str, int]]) -> list[str]:
    """`ssh <options> -N -L <socket>:<host>:<port>... user@host`: forwards local sockets to OpenList's ports."""
    *options, destination = ssh
    forward = [arg for path, (host, port) in forwards.items() for arg in ("-L", f"{path}:{_bracketed(host)}:{port}")]
    return [*options, "-N", "-o", "ExitOnForwardFailure=yes", *forward, destination]


def _bracketed(host: str) -> str:
    """ssh reads an IPv6 address in a forward's target only between brackets."""
    return f"[{host}]" if ":" in host else host


@contextlib.contextmanager
def ssh_tunnel(ssh: Sequence[str], targets: Sequence[tuple[str, int]]) -> Iterator[list[str]]:
    """One Unix socket per `(host, port)` (in a 0700 temp dir), each reaching it as the stack's host sees it."""
    with tempfile.TemporaryDirectory(prefix="homelab-openlist-") as directory:
        forwards = {str(Path(directory) / f"port-{i}.sock"): target for i, target in enumerate(targets)}
        where = ", ".join(f"{host}:{port}" for host, port in targets)
        process = subprocess.Popen(
            tunnel_command(ssh, forwards),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + TUNNEL_TIMEOUT_SECONDS
            while not all(Path(path).exists() for path in forwards):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    error = process.communicate()[1].decode(errors="replace").strip()
                    raise OpenListApiError(
                        f"opening an SSH tunnel to {where} through {ssh[-1]}",
                        error or f"no tunnel within {TUNNEL_TIMEOUT_SECONDS}s",
                    )
                time.sleep(0.1)
            yield list(forwards)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


class AdminApi:
    """OpenList's admin API: every answer is HTTP 200 with `{code, message, data}`; the token is sent raw
    in `Authorization` (server/common/common.go, server/middlewares/auth.go)."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], secrets: Sequence[str] = ()):
        self._connect, self._secrets, self.token = connect, list(secrets), ""

    def call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        connection = self._connect()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = self.token
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise OpenListApiError(what, f"no answer ({error})") from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            # Never the body: a proxy's or a broken server's page can echo the request, the password included.
            raise OpenListApiError(
                what, f"HTTP {response.status}, not JSON ({_content_kind(response, len(raw))})"
            ) from None
        if not isinstance(answer, dict) or answer.get("code") != 200:
            message = scrub(str(answer.get("message") if isinstance(answer, dict) else answer), self._secrets)
            raise OpenListApiError(what, message, answer.get("code") if isinstance(answer, dict) else None)
        return answer.get("data")

    def ping(self) -> bool:
        connection = self._connect()
        try:
            connection.request("GET", "/ping")
            return connection.getresponse().read().strip() == b"pong"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def login(self, username: str, password: str) -> None:
        self.token = ""
        data = self.call("POST", "/api/auth/login", "logging in", {"username": username, "password": password})
        self.token = str(data["token"])


class S3Port:
    """OpenList's S3 port, asked whether the keys it took at start are the declared ones.

    A HEAD of the bucket: gofakes3 checks the signature of every request once it has keys, and answers any
    request when it has none; the bucket is looked up in the settings, without a call to the drive."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], netloc: str):
        self._connect, self.netloc = connect, netloc

    def status(self, bucket: str, keys: Mapping[str, str] | None) -> int | None:
        """The HTTP status of a HEAD of `bucket`, signed with `keys` or unsigned; None when nothing answers."""
        path, headers = f"/{bucket}", {}
        if keys is not None:
            signed = sign("HEAD", self.netloc, path, access_key=keys["accessKeyId"], secret_key=keys["secretAccessKey"])
            path, headers = signed.target, signed.headers
        connection = self._connect()
        try:
            connection.request("HEAD", path, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def keys_not_in_force(self, bucket: str, keys: Mapping[str, str], replaced: Mapping[str, str] | None) -> str | None:
        """None when the S3 port enforces `keys` (and refuses the `replaced` ones); otherwise what it does."""
        return keys_verdict(
            self.status(bucket, None),
            self.status(bucket, keys),
            self.status(bucket, replaced) if replaced and dict(replaced) != dict(keys) else None,
        )


def keys_verdict(unsigned: int | None, signed: int | None, replaced: int | None) -> str | None:
    """Whether the S3 port's answers show the declared keys in force: None, or what it does instead."""
    if unsigned is None or signed is None:
        return "it does not answer"
    if unsigned < 400:
        return f"it answers an unsigned request (HTTP {unsigned}): it runs without keys"
    if signed != 200:
        other = " (it runs with other keys)" if signed == 403 else ""
        return f"a request signed with the declared keys gets HTTP {signed}{other}"
    if replaced is not None and replaced < 400:
        return f"it still accepts the keys they replace (HTTP {replaced})"
    return None


class OpenListPorts:
    """The admin API and the S3 port of one OpenList, each through its socket of the tunnel."""

    def __init__(self, props: Mapping[str, Any], admin_socket: str, s3_socket: str):
        endpoint, s3 = props["endpoint"], props["s3Endpoint"]

        def connect(socket_path: str, target: Mapping[str, Any]) -> Callable[[], http.client.HTTPConnection]:
            return lambda: _UnixHTTPConnection(socket_path, target["host"], int(target["port"]), target["tls"])

        self.api = AdminApi(connect(admin_socket, endpoint), secret_values(props))
        self.s3 = S3Port(connect(s3_socket, s3), netloc(s3["host"], int(s3["port"])))
        self.s3_where = f"{s3['host']}:{s3['port']}"


def netloc(host: str, port: int) -> str:
    """`host:port` as the Host header (and so the signature) carries it."""
    return f"{_bracketed(host)}:{port}"


def _content_kind(response: http.client.HTTPResponse, size: int) -> str:
    """'<media type>, <n> bytes' of an answer: nothing the server could have put free text in."""
    media_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
    shown = media_type if re.fullmatch(r"[A-Za-z0-9.+-]{1,64}/[A-Za-z0-9.+-]{1,64}", media_type) else "no media type"
    return f"{shown}, {size} bytes"


@contextlib.contextmanager
def openlist_ports(props: Mapping[str, Any]) -> Iterator[OpenListPorts]:
    """The admin API and the S3 port of the OpenList at `props['endpoint']`/`['s3Endpoint']`, through the tunnel."""
    targets = [(props[key]["host"], int(props[key]["port"])) for key in ("endpoint", "s3Endpoint")]
    with ssh_tunnel(props["ssh"], targets) as (admin_socket, s3_socket):
        yield OpenListPorts(props, admin_socket, s3_socket)


# ---------------------------------------------------------------- the steps


def log_in(api: AdminApi, props: Mapping[str, Any]) -> None:
    """Log in with the declared password; on an OpenList this stack deploys, make it the password first."""
    username, password, container = props["adminUsername"], props["adminPassword"], props.get("container")
    try:
        api.login(username, password)
        return
    except OpenListApiError as error:
        if not container:
            raise OpenListApiError(
                f"logging in as {username} with openlist.adminPassword",
                f"{error} (this OpenList is not deployed by this stack: set its admin password to that secret)",
            ) from None
    temporary = reset_admin_password(props["ssh"], container)
    api.login(username, temporary)
    api.call("POST", "/api/me/update", "setting the admin password", {"username": username, "password": password})
    api.login(username, password)


def reset_admin_password(ssh: Sequence[str], container: str) -> str:
    """`./openlist admin random` in the container: a random password, read from its stdout over SSH (it is
    replaced at once); `--no-prefix` reads the container's environment like the server does."""
    command = f"docker exec {shlex.quote(container)} ./openlist admin random --no-prefix"
    try:
        output = run_on_host(ssh, command, f"resetting OpenList's admin password in {container}")
    except RemoteError as error:
        raise OpenListApiError("setting the admin password", str(error)) from None
    found = _RANDOM_PASSWORD.findall(output)
    if not found:
        raise OpenListApiError("setting the admin password", "`openlist admin random` printed no password")
    return found[-1]


def find_storage(api: AdminApi, mount_path: str) -> dict[str, Any] | None:
    data = api.call("GET", "/api/admin/storage/list?page=1&per_page=1000", "listing the storages") or {}
    found = [s for s in data.get("content") or [] if s.get("mount_path") == mount_path]
    return found[0] if found else None


def apply_storage(api: AdminApi, props: Mapping[str, Any], write_managed: bool) -> None:
    storage = props["storage"]
    label = f"storage {storage['mountPath']} ({storage['driver']})"
    live = find_storage(api, storage["mountPath"])
    if live is None:
        query = urllib.parse.urlencode({"driver": storage["driver"]})  # a name may hold a space ("115 Cloud")
        info = api.call("GET", f"/api/admin/driver/info?{query}", f"{label}: the driver's fields")
        body = storage_body(props, live=None, defaults=driver_defaults(info or {}), write_managed=True)
        api.call("POST", "/api/admin/storage/create", f"creating {label}", body)
        return
    plain, secrets = storage_view(live, props)
    wanted, _ = desired_state(props)
    if plain == wanted["storage"] and secrets == compared_secret_fields(props) and not write_managed:
        return
    body = storage_body(props, live=live, defaults={}, write_managed=write_managed)
    api.call("POST", "/api/admin/storage/update", f"updating {label}", body)


def apply_s3_settings(api: AdminApi, props: Mapping[str, Any]) -> bool:
    """Save the S3 rows that differ (private); True when something was saved. Whether a restart is due is
    the S3 port's to say (`put_keys_in_force`): the bucket map is read per request, the keys at start."""
    values = {
        S3_ACCESS_KEY_ID: props["s3Keys"]["accessKeyId"],
        S3_SECRET_ACCESS_KEY: props["s3Keys"]["secretAccessKey"],
        S3_BUCKETS: bucket_map(props["bucket"]["name"], props["bucket"]["folder"]),
    }
    current = api.call("GET", f"/api/admin/setting/list?group={S3_GROUP}", "reading the S3 settings") or []
    rows = s3_rows(current, values)
    if rows:
        keys = ", ".join(row["key"] for row in rows)
        api.call("POST", "/api/admin/setting/save", f"saving the settings {keys}", rows)
    return bool(rows)


RESTART_WHAT = "putting the S3 keys in force"


def put_keys_in_force(ports: OpenListPorts, props: Mapping[str, Any], replaced: Mapping[str, str] | None) -> None:
    """Make OpenList's S3 port enforce the declared keys: if it does not (it reads them at start only), restart
    OpenList, then wait until the S3 port itself shows the new keys in force. Asked on every `up`, not only
    after saving the rows: a restart that failed, or one the user was asked for, is due until it happened."""
    bucket, keys = props["bucket"]["name"], props["s3Keys"]
    wait_for(
        lambda: ports.s3.status(bucket, None) is not None,
        RESTART_WHAT,
        f"no answer from its S3 port at {ports.s3_where} within {RESTART_TIMEOUT_SECONDS}s (is its S3 server on, "
        "and is that the address this host reaches it at?)",
    )
    why = ports.s3.keys_not_in_force(bucket, keys, replaced)
    if why is None:
        return
    container, command = props.get("container"), props.get("restartCommand")
    found = f"its S3 port at {ports.s3_where} does not enforce the declared keys: {why}"
    script = None
    if container:
        command, doing = f"docker restart {shlex.quote(container)}", f"restarting {container}"
    elif command:
        # The host's shell reads the command on stdin: it may carry a token, which no command line (here in
        # `ps`, or the remote `sh -c`) may show.
        command, script, doing = "sh -s", command, "running openlist.restartCommand"
    else:
        raise OpenListApiError(
            RESTART_WHAT,
            f"{found}. The keys are saved, but OpenList reads them at start only and this stack does not run it: "
            "restart it (e.g. kubectl rollout restart), or set openlist.restartCommand, then run pulumi up again",
        )
    try:
        run_on_host(props["ssh"], command, doing, stdin=script)
    except RemoteError as error:
        raise OpenListApiError(RESTART_WHAT, f"{found}; {error}") from None
    confirmed: list[str | None] = []

    def keys_confirmed() -> bool:
        confirmed.append(ports.s3.keys_not_in_force(bucket, keys, replaced))
        return confirmed[-KEYS_CONFIRMATIONS:] == [None] * KEYS_CONFIRMATIONS

    wait_for(
        keys_confirmed,
        RESTART_WHAT,
        lambda: (
            f"{doing} returned, but {RESTART_TIMEOUT_SECONDS}s later its S3 port at {ports.s3_where} still does "
            f"not enforce the declared keys ({confirmed[-1] if confirmed else 'not asked'}): OpenList was not restarted"
        ),
    )
    wait_until_it_answers(ports.api, props, RESTART_WHAT)


def wait_for(done: Callable[[], bool], what: str, failure: str | Callable[[], str]) -> None:
    """Poll `done` every second for RESTART_TIMEOUT_SECONDS; then fail, doing `what`, with `failure`."""
    deadline = time.monotonic() + RESTART_TIMEOUT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise OpenListApiError(what, failure if isinstance(failure, str) else failure())
        time.sleep(POLL_SECONDS)


def wait_until_it_answers(api: AdminApi, props: Mapping[str, Any], what: str) -> None:
    endpoint = props["endpoint"]
    where = f"{endpoint['host']}:{endpoint['port']}"
    wait_for(api.ping, what, f"no answer from {where} within {RESTART_TIMEOUT_SECONDS}s")


def observe(ports: OpenListPorts, props: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """What OpenList holds, in `desired_state`'s shape (secret values as one digest)."""
    api = ports.api
    try:
        log_in_only(api, props)
    except OpenListApiError:
        return {"adminLogin": False}, ""
    live = find_storage(api, props["storage"]["mountPath"])
    plain_storage, secret_fields = storage_view(live, props) if live else (None, None)
    folder = api_exists(api, props["bucket"]["folder"])
    rows = {r["key"]: r for r in api.call("GET", f"/api/admin/setting/list?group={S3_GROUP}", "reading S3") or []}
    keys = (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_BUCKETS)
    plain = {
        "adminLogin": True,
        "storage": plain_storage,
        "bucketFolder": folder,
        "s3Buckets": rows.get(S3_BUCKETS, {}).get("value"),
        "s3Private": all(rows.get(k, {}).get("flag") == PRIVATE for k in keys),
        "s3KeysInForce": ports.s3.keys_not_in_force(props["bucket"]["name"], props["s3Keys"], None) is None,
    }
    secrets = {
        S3_ACCESS_KEY_ID: rows.get(S3_ACCESS_KEY_ID, {}).get("value"),
        S3_SECRET_ACCESS_KEY: rows.get(S3_SECRET_ACCESS_KEY, {}).get("value"),
        "fields": secret_fields,
    }
    return plain, digest(secrets)


def log_in_only(api: AdminApi, props: Mapping[str, Any]) -> None:
    api.login(props["adminUsername"], props["adminPassword"])


def api_exists(api: AdminApi, path: str) -> bool:
    try:
        data = api.call("POST", "/api/fs/get", f"looking up {path}", {"path": path})
    except OpenListApiError:
        return False
    return bool(data and data.get("is_dir"))


def apply(props: Mapping[str, Any], olds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Make OpenList hold `props`; the outputs, with what it then holds. Writes only what differs, and
    restarts OpenList only when its S3 port does not enforce the declared keys."""
    write_managed = olds is None or olds.get("writtenSha256") != digest(written_fields(props))
    with openlist_ports(props) as ports:
        api = ports.api
        wait_until_it_answers(api, props, "reaching OpenList")  # a container just (re)created is starting
        log_in(api, props)
        apply_storage(api, props, write_managed)
        # The bucket's folder only; Kopia writes the prefix folder with its first blob.
        folder = props["bucket"]["folder"]
        api.call("POST", "/api/fs/mkdir", f"making the bucket folder {folder}", {"path": folder})
        apply_s3_settings(api, props)
        put_keys_in_force(ports, props, replaced=(olds or {}).get("s3Keys"))
        live, live_secrets = observe(ports, props)
    return outputs(props, live, live_secrets)


def outputs(props: Mapping[str, Any], live: Mapping[str, Any], live_secrets: str) -> dict[str, Any]:
    return {
        **props,
        "live": dict(live),
        "liveSecretsSha256": live_secrets,
        "writtenSha256": digest(written_fields(props)),
    }


def read_live(props: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """`observe` through a fresh tunnel; an OpenList that does not answer reads as unreachable (drift)."""
    try:
        with openlist_ports(props) as ports:
            if not ports.api.ping():
                return {"reachable": False}, ""
            return observe(ports, props)
    except OpenListApiError:
        return {"reachable": False}, ""


# ---------------------------------------------------------------- provider and resource

#: Outputs that hold secrets (or digests of them): encrypted in state, `[secret]` in previews.
SECRET_OUTPUTS = ["adminPassword", "s3Keys", "storageSecrets", "liveSecretsSha256", "writtenSha256"]


class OpenListSettingsProvider(ResourceProvider):
    """Inputs: ssh (argv), target (user@host:port), endpoint {host, port, tls} as the host reaches the web
    port, s3Endpoint {host, port, tls} as it reaches the S3 port, container (name, or None for an OpenList this
    stack does not deploy), restartCommand (for one it does not deploy, or None), adminUsername,
    adminPassword, storage {driver, mountPath, cacheExpiration, webProxy, fields}, storageSecrets,
    bucket {name, folder}, s3Keys {accessKeyId, secretAccessKey}."""

    serialize_as_secret_always = False  # it captures nothing secret: secrets come in as inputs

    def create(self, props: dict[str, Any]) -> CreateResult:
        props = integral(props)
        endpoint = props["endpoint"]
        return CreateResult(id_=f"{props['target']}:{endpoint['host']}:{endpoint['port']}", outs=apply(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=apply(integral(news), integral(olds)))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        olds, news = integral(olds), integral(news)
        replaces = [key for key in ("target", "endpoint") if olds.get(key) != news.get(key)]
        if any(not _known(news.get(key)) for key in ("adminPassword", "s3Keys", "storageSecrets")):
            return DiffResult(changes=True, replaces=replaces)  # a preview with unknown secrets
        wanted, wanted_secrets = desired_state(news)
        drifted = olds.get("live") != wanted or olds.get("liveSecretsSha256") != wanted_secrets
        rewritten = olds.get("writtenSha256") != digest(written_fields(news))
        moved = any(
            olds.get(k) != news.get(k)
            # s3Keys too: after an update that failed once the rows were saved, the live rows match the new
            # keys, and the old instance the old ones; only the inputs still show the keys to put in force.
            for k in ("ssh", "s3Endpoint", "s3Keys", "container", "restartCommand", "adminUsername", "adminPassword")
        )
        return DiffResult(changes=bool(replaces) or drifted or rewritten or moved, replaces=replaces)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        props = integral(props)
        live, live_secrets = read_live(props)
        return ReadResult(id_=id_, outs={**props, "live": live, "liveSecretsSha256": live_secrets})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing: OpenList keeps its settings (its database outlives the stack, like its data dir)."""


def _known(value: Any) -> bool:
    return isinstance(value, str | dict | list)


class OpenListSettings(Resource, module="homelab", name="OpenListSettings"):
    """OpenList's admin password, storage, bucket folder and S3 settings, as declared."""

    live: pulumi.Output[dict]

    def __init__(
        self,
        name: str,
        *,
        ssh: Sequence[str],
        target: str,
        endpoint: Mapping[str, Any],
        s3_endpoint: Mapping[str, Any],
        container: pulumi.Input[str] | None,
        restart_command: pulumi.Input[str] | None,
        admin_username: str,
        admin_password: pulumi.Input[str],
        storage: Mapping[str, Any],
        storage_secrets: Mapping[str, pulumi.Input[str]],
        bucket: Mapping[str, str],
        s3_keys: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "ssh": list(ssh),
            "target": target,
            "endpoint": dict(endpoint),
            "s3Endpoint": dict(s3_endpoint),
            "container": container,
            "restartCommand": restart_command,
            "adminUsername": admin_username,
            "adminPassword": pulumi.Output.secret(admin_password),
            "storage": dict(storage),
            "storageSecrets": pulumi.Output.secret(dict(storage_secrets)),
            "bucket": dict(bucket),
            "s3Keys": pulumi.Output.secret(dict(s3_keys)),
            "live": None,
            "liveSecretsSha256": None,
            "writtenSha256": None,
        }
        # A restart command given by a secret reference arrives as a secret Output, and stays one in state.
        secret_command = ["restartCommand"] if isinstance(restart_command, pulumi.Output) else []
        options = pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS + secret_command)
        super().__init__(OpenListSettingsProvider(), name, props, pulumi.ResourceOptions.merge(opts, options))
