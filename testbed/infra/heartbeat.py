"""A local heartbeat receiver (healthchecks.io style)."""

from __future__ import annotations

import secrets
import time

# ---------------------------------------------------------------- a heartbeat receiver


class HeartbeatReceiver:
    """A healthchecks.io-style receiver on this machine: records the time of every request to /ping/<token>.

    It listens on every interface, so a container reaches it through its network's gateway address.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.token = secrets.token_urlsafe(12)
        self.pings: list[float] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                known = self.path == f"/ping/{receiver.token}"
                if known:
                    receiver.pings.append(time.time())
                self.send_response(200 if known else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # noqa: S104 (containers reach it)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}/ping/{self.token}"

    def pings_since(self, moment: float) -> int:
        return sum(1 for t in self.pings if t >= moment)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
