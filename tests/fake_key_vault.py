"""A local stand-in for the Key Vault data plane (`GET /secrets/<name>?api-version=...`), for tests.

It answers like Key Vault: 401 without the expected bearer token, 403 for secrets
marked forbidden, 404 for unknown names, else `{"value": ...}`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class FakeKeyVault:
    token: str
    secrets: dict[str, dict[str, str]]  # vault -> secret name -> value
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FakeKeyVault:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                vault.requests.append(parts.path)
                segments = parts.path.strip("/").split("/")
                if self.headers.get("Authorization") != f"Bearer {vault.token}":
                    return self._answer(401, {"error": {"code": "Unauthorized"}})
                if len(segments) != 3 or segments[1] != "secrets" or "api-version=" not in parts.query:
                    return self._answer(400, {"error": {"code": "BadParameter"}})
                name, secret = segments[0], segments[2]
                if (name, secret) in vault.forbidden:
                    return self._answer(403, {"error": {"code": "Forbidden"}})
                if secret not in vault.secrets.get(name, {}):
                    return self._answer(404, {"error": {"code": "SecretNotFound"}})
                return self._answer(200, {"value": vault.secrets[name][secret], "id": parts.path})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url_template(self) -> str:
        return self.url + "/{vault}"
