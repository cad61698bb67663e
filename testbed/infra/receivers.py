"""Local receivers for what the hosts send out: heartbeat pings and webhook alerts (HTTP), and mail (SMTP).

They listen on every interface of this machine, so a container reaches them through a Docker network's
gateway address. They stand in for healthchecks.io, ntfy and a mail server; each records what arrived.
"""

from __future__ import annotations

import http.server
import secrets
import socketserver
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class _Inbox:
    items: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Received) -> None:
        with self.lock:
            self.items.append(item)

    def since(self, moment: float, path: str | None = None) -> list[Received]:
        with self.lock:
            return [i for i in self.items if i.at >= moment and (path is None or i.path == path)]


class HttpReceiver:
    """A healthchecks.io-style ping URL and a webhook URL, each with its own random token; any other path
    answers 404. Answers 200, which Kopia's webhook sender requires (notification/sender/webhook)."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(12)
        self.inbox = _Inbox()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                known = self.path in (receiver.ping_path, receiver.webhook_path)
                if known:
                    receiver.inbox.add(Received(time.time(), self.path, dict(self.headers.items()), body))
                self.send_response(200 if known else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_PUT = do_HEAD = _answer

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # noqa: S104 (containers reach it)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def ping_path(self) -> str:
        return f"/ping/{self.token}"

    @property
    def webhook_path(self) -> str:
        return f"/alerts/{self.token}"

    def ping_url(self, address: str) -> str:
        return f"http://{address}:{self.port}{self.ping_path}"

    def webhook_url(self, address: str) -> str:
        return f"http://{address}:{self.port}{self.webhook_path}"

    def pings_since(self, moment: float) -> int:
        return len(self.inbox.since(moment, self.ping_path))

    def alerts_since(self, moment: float) -> list[Received]:
        return self.inbox.since(moment, self.webhook_path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """Just enough SMTP (RFC 5321: HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), no STARTTLS and no AUTH,
    for a relay that Kopia's email sender talks to without a login. Each message is kept with its envelope
    recipients as `path` and its header lines parsed."""

    def __init__(self) -> None:
        self.inbox = _Inbox()
        receiver = self

        class Session(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 homelab-e2e SMTP receiver")
                recipients: list[str] = []
                while raw := self.rfile.readline():
                    command = raw.decode(errors="replace").rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("HELO", "EHLO"):
                        self.reply("250 homelab-e2e")
                    elif verb == "MAIL":
                        recipients = []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(command.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        receiver.inbox.add(self._message(recipients))
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 OK")
                    else:
                        self.reply("502 not implemented")

            def _message(self, recipients: list[str]) -> Received:
                lines: list[str] = []
                while (line := self.rfile.readline().decode(errors="replace").rstrip("\r\n")) != ".":
                    lines.append(line[1:] if line.startswith("..") else line)
                blank = lines.index("") if "" in lines else len(lines)
                headers = dict(h.split(": ", 1) for h in lines[:blank] if ": " in h)
                return Received(time.time(), ",".join(recipients), headers, "\n".join(lines[blank + 1 :]))

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("0.0.0.0", 0), Session)  # noqa: S104 (containers reach it)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def mail_since(self, moment: float) -> list[Received]:
        return self.inbox.since(moment)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
