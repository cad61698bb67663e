"""Local receivers for what the hosts send out: heartbeat pings and webhook alerts (HTTP), and mail (SMTP).

They listen on every interface of this machine, so a container reaches them through a Docker network's
gateway address. They stand in for healthchecks.io, ntfy and a mail server; each records what arrived.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hmac
import http.server
import os
import secrets
import socket
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


@dataclass(frozen=True)
class Login:
    """One AUTH at the SMTP receiver: the username given, and whether the password was the one it takes."""

    at: float
    username: str
    accepted: bool


#: setns(2)'s flag for a network namespace (linux/sched.h)
CLONE_NEWNET = 0x40000000


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
    """Just enough SMTP (RFC 5321: HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), no STARTTLS, for a relay
    that Kopia's email sender talks to. Each message is kept with its envelope recipients as `path` and its
    header lines parsed.

    With `login` (username, password) it stands in for a mail provider's submission server: it offers AUTH
    PLAIN (RFC 4616), the one mechanism Kopia's sender uses (Go's net/smtp PlainAuth,
    notification/sender/email at v0.22.3), refuses any other login with 535 and any mail before a login with
    530. Changing `login` is the password change at the provider. Every AUTH is kept in `logins`.

    PlainAuth sends the password only over TLS or to localhost/127.0.0.1. A real provider is reached over
    STARTTLS with a certificate the system trusts; here the sender reaches the receiver at 127.0.0.1 inside
    its own container instead (`listen_in_network_of`): the same SMTP dialogue and the same password check,
    without a certificate authority for the containers to trust."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.inbox = _Inbox()
        self.login = login
        self.logins: list[Login] = []
        self._listeners: dict[int, socket.socket] = {}
        receiver = self

        class Session(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 homelab-e2e SMTP receiver")
                recipients: list[str] = []
                authenticated = False
                while raw := self.rfile.readline():
                    command = raw.decode(errors="replace").rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb == "EHLO" and receiver.login is not None:
                        self.reply("250-homelab-e2e")
                        self.reply("250 AUTH PLAIN")
                    elif verb in ("HELO", "EHLO"):
                        self.reply("250 homelab-e2e")
                    elif verb == "AUTH" and receiver.login is not None:
                        authenticated = self._auth(command.split(" ")[1:])
                    elif verb == "MAIL" and receiver.login is not None and not authenticated:
                        self.reply("530 5.7.0 Authentication required")
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

            def _auth(self, args: list[str]) -> bool:
                """`AUTH PLAIN [initial-response]`: true once the login matches `receiver.login`."""
                if not args or args[0].upper() != "PLAIN":
                    self.reply("504 5.5.4 only AUTH PLAIN")
                    return False
                if len(args) > 1:
                    response = args[1]
                else:
                    self.reply("334 ")
                    response = self.rfile.readline().decode(errors="replace").strip()
                try:
                    _identity, username, password = base64.b64decode(response, validate=True).decode().split("\0")
                except ValueError:
                    self.reply("501 5.5.2 cannot decode the response")
                    return False
                accepted = receiver.login is not None and hmac.compare_digest(
                    f"{username}\0{password}".encode(), "\0".join(receiver.login).encode()
                )
                receiver.logins.append(Login(time.time(), username, accepted))
                self.reply("235 2.7.0 Authentication successful" if accepted else "535 5.7.8 Authentication failed")
                return accepted

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

        self._session = Session
        self.server = Server(("0.0.0.0", 0), Session)  # noqa: S104 (containers reach it)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def listen_in_network_of(self, pid: int) -> None:
        """Also listen on 127.0.0.1:`port` in the network namespace of process `pid` (a container's: Docker's
        `State.Pid`), so that a sender in that container reaches this receiver as localhost. Once per namespace;
        a replaced container has a new one."""
        namespace = os.stat(f"/proc/{pid}/ns/net").st_ino
        if namespace in self._listeners:
            return
        made: list[socket.socket | BaseException] = []

        def make() -> None:  # setns(2) moves only this short-lived thread; the socket stays in the namespace
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/proc/{pid}/ns/net", "rb") as handle:
                    if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into the network namespace of {pid}")
                listener = socket.create_server(("127.0.0.1", self.port))
                made.append(listener)
            except BaseException as error:  # handed to the caller's thread
                made.append(error)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        listener = made[0]
        self._listeners[namespace] = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, address = listener.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._serve, args=(connection, address), daemon=True).start()

    def _serve(self, connection: socket.socket, address: object) -> None:
        with connection:
            self._session(connection, address, self.server)

    def mail_since(self, moment: float) -> list[Received]:
        return self.inbox.since(moment)

    def logins_since(self, moment: float) -> list[Login]:
        return [login for login in self.logins if login.at >= moment]

    def stop(self) -> None:
        for listener in self._listeners.values():
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
            listener.close()
        self.server.shutdown()
        self.server.server_close()
