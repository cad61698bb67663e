"""A local stand-in for one OpenList, for the unit tests of `OpenListSettings` (components/openlist_config.py).

It serves the admin API calls the provider makes and the S3 port's authentication, each on a Unix socket
(where the provider's SSH tunnel would put them), and keeps what a real OpenList keeps apart: the settings
in its database, and the S3 keys its S3 server took when it last started. `restart()` is the only thing that
moves the saved keys into force. Answers as OpenList v4.2.5 gives them (docs/upstream-behaviour.md#the-admin-api):
HTTP 200 with a JSON `code`; the S3 port checks every request's signature once it has keys (gofakes3).
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import socketserver
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from components.s3_signature import sign

S3_KEYS = ("s3_access_key_id", "s3_secret_access_key", "s3_buckets")
_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


def _setting_row(key: str, index: int) -> dict[str, Any]:
    """A fresh database's S3 row (internal/bootstrap/data/setting.go): empty, in group 9."""
    return {"key": key, "value": "", "type": "string", "group": 9, "flag": 0, "index": index, "help": ""}


@dataclass
class FakeOpenList:
    admin_password: str = "random-first-start"
    #: the fields of the driver, as /api/admin/driver/info lists them
    driver_fields: list[dict[str, Any]] = field(
        default_factory=lambda: [{"name": "username", "type": "string", "default": ""}]
    )
    storages: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {key: _setting_row(key, i) for i, key in enumerate(S3_KEYS)}
    )
    folders: set[str] = field(default_factory=set)
    #: the keys the S3 server took at its last start: (id, secret); empty ones mean no authentication
    keys_in_force: tuple[str, str] = ("", "")
    restarts: int = 0
    #: every admin call, "METHOD /path", in order (the S3 port's requests are in s3_requests)
    calls: list[str] = field(default_factory=list)
    s3_requests: int = 0
    #: a restart that happens only after this many more S3 requests (a command that returns before it)
    pending_restart_after: int | None = None
    tokens: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ what OpenList does

    def restart(self) -> None:
        """A new process: it takes the saved S3 keys (tokens stay valid: their secret is in the database)."""
        self.keys_in_force = (
            self.settings["s3_access_key_id"]["value"],
            self.settings["s3_secret_access_key"]["value"],
        )
        self.restarts += 1

    def restart_later(self, after_s3_requests: int) -> None:
        """What `kubectl rollout restart` does: returns at once; the old instance answers a while longer."""
        self.pending_restart_after = after_s3_requests

    def writes(self) -> list[str]:
        """The calls that change something (logging in and looking up a path change nothing)."""
        return [c for c in self.calls if c.startswith("POST") and c not in ("POST /api/auth/login", "POST /api/fs/get")]

    def storage(self, mount_path: str) -> dict[str, Any]:
        return next(s for s in self.storages if s["mount_path"] == mount_path)

    def addition(self, mount_path: str) -> dict[str, Any]:
        return json.loads(self.storage(mount_path)["addition"])

    # ------------------------------------------------------------ the admin API

    def admin(self, method: str, path: str, query: dict[str, list[str]], token: str, body: Any) -> tuple[int, Any]:
        self.calls.append(f"{method} {path}")
        if (method, path) == ("POST", "/api/auth/login"):
            if body.get("password") != self.admin_password:
                return 400, "password is incorrect"
            token = secrets.token_hex(8)
            self.tokens.add(token)
            return 200, {"token": token}
        if token not in self.tokens:
            return 401, "Token is invalidated"
        if (method, path) == ("POST", "/api/me/update"):
            self.admin_password = body["password"]
            self.tokens.clear()  # tokens issued before stop working
            return 200, None
        if (method, path) == ("GET", "/api/admin/storage/list"):
            return 200, {"content": [dict(s) for s in self.storages], "total": len(self.storages)}
        if (method, path) == ("GET", "/api/admin/driver/info"):
            return 200, {"additional": self.driver_fields}
        if (method, path) == ("POST", "/api/admin/storage/create"):
            self.storages.append({**body, "id": len(self.storages) + 1, "status": "work"})
            return 200, {"id": len(self.storages)}
        if (method, path) == ("POST", "/api/admin/storage/update"):
            index = next(i for i, s in enumerate(self.storages) if s["id"] == body["id"])
            self.storages[index] = {**body, "status": "work"}
            return 200, None
        if (method, path) == ("POST", "/api/fs/mkdir"):
            self.folders.add(body["path"])
            return 200, None
        if (method, path) == ("POST", "/api/fs/get"):
            return (200, {"is_dir": True}) if body["path"] in self.folders else (500, "object not found")
        if (method, path) == ("GET", "/api/admin/setting/list"):
            return 200, [dict(self.settings[k]) for k in S3_KEYS if query.get("group") == ["9"]]
        if (method, path) == ("POST", "/api/admin/setting/save"):
            for row in body:
                self.settings[row["key"]] = dict(row)
            return 200, None
        return 404, f"no such call {method} {path}"

    # ------------------------------------------------------------ the S3 port

    def s3_status(self, method: str, path: str, headers: dict[str, str]) -> int:
        """gofakes3's answer: without keys every request passes; with keys only a valid signature does."""
        self.s3_requests += 1
        if self.pending_restart_after is not None:
            if self.pending_restart_after <= 0:
                self.pending_restart_after = None
                self.restart()
            else:
                self.pending_restart_after -= 1
        key_id, secret = self.keys_in_force
        if key_id or secret:
            authorization = headers.get("authorization", "")
            match = _CREDENTIAL.search(authorization)
            if not match or match[1] != key_id:
                return 403
            when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
            expected = sign(method, headers["host"], path, access_key=key_id, secret_key=secret, now=when)
            if expected.headers["Authorization"] != authorization:
                return 403
        buckets = json.loads(self.settings["s3_buckets"]["value"] or "[]")  # read per request
        return 200 if any(f"/{b['name']}" == path for b in buckets) else 404

    # ------------------------------------------------------------ the two sockets

    def __enter__(self) -> FakeOpenList:
        fake = self
        self._directory = tempfile.TemporaryDirectory(prefix="fake-openlist-")
        self.admin_socket = str(Path(self._directory.name) / "admin.sock")
        self.s3_socket = str(Path(self._directory.name) / "s3.sock")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                if self.server is fake._s3_server:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    return self._answer(fake.s3_status(self.command, parts.path, headers), content_type="text/xml")
                if parts.path == "/ping":
                    return self._answer(200, b"pong", "text/plain")
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                token = self.headers.get("Authorization", "")
                code, data = fake.admin(self.command, parts.path, parse_qs(parts.query), token, body)
                answer = {"code": code, "message": data if code != 200 else "success", "data": data}
                self._answer(200, json.dumps(answer).encode())

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self._admin_server = socketserver.ThreadingUnixStreamServer(self.admin_socket, Handler)
        self._s3_server = socketserver.ThreadingUnixStreamServer(self.s3_socket, Handler)
        for server in (self._admin_server, self._s3_server):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._admin_server, self._s3_server):
            server.shutdown()
            server.server_close()
        self._directory.cleanup()
