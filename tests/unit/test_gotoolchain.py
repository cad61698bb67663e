"""setup's Go: the one that is new enough, or the pinned toolchain from the module proxy, checked by SHA-256.

The download is tested against a local HTTP server standing in for the Go module proxy (no network here);
the real proxy download was run by hand (see docs/testing.md).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.infra import gotoolchain


def test_the_pinned_toolchain_is_new_enough_for_every_wrapper_module() -> None:
    # A go.mod bumped past the pin would make setup install a Go that cannot build.
    assert gotoolchain.parse_version(gotoolchain.PINNED_VERSION) >= gotoolchain.required_version()
    assert gotoolchain.required_version() >= (1, 25, 0)


def test_versions_parse_as_go_writes_them() -> None:
    assert gotoolchain.parse_version("go1.26.8") == (1, 26, 8)
    assert gotoolchain.parse_version("1.25") == (1, 25, 0)
    assert gotoolchain.parse_version("1.19") < gotoolchain.parse_version("1.26.6")  # Debian 12's golang-go
    with pytest.raises(ValueError):
        gotoolchain.parse_version("devel")


def test_the_proxy_is_the_first_url_in_goproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPROXY", "direct,https://mirror.example/go/|https://proxy.golang.org")
    assert gotoolchain.proxy_url() == "https://mirror.example/go"
    monkeypatch.setenv("GOPROXY", "off")
    assert gotoolchain.proxy_url() == gotoolchain.DEFAULT_PROXY


def test_a_go_older_than_required_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"/old/go": (1, 19, 8), "/new/go": (1, 26, 8)}
    monkeypatch.setattr(gotoolchain, "candidates", lambda: list(versions))
    monkeypatch.setattr(gotoolchain, "version_of", versions.get)
    gotoolchain.find_go.cache_clear()
    try:
        assert gotoolchain.find_go() == "/new/go"
        versions["/new/go"] = (1, 21, 0)
        gotoolchain.find_go.cache_clear()
        assert gotoolchain.find_go() is None
    finally:
        gotoolchain.find_go.cache_clear()


def _toolchain_zip(entries: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, (data, mode) in entries.items():
            info = zipfile.ZipInfo(f"golang.org/toolchain@v0.0.1-go{gotoolchain.PINNED_VERSION}.linux-amd64/{name}")
            info.external_attr = mode << 16
            zipped.writestr(info, data)
    return buffer.getvalue()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, bytes]]:
    """A stand-in for the module proxy: serves whatever zip the test puts in the dict; install goes to tmp."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GOPROXY", f"http://127.0.0.1:{server.server_address[1]},direct")
    monkeypatch.setattr(gotoolchain, "INSTALL_ROOT", tmp_path / "lib")
    monkeypatch.setattr(gotoolchain, "platform_name", lambda: "linux-amd64")
    yield served
    server.shutdown()


ZIP_PATH = f"/golang.org/toolchain/@v/v0.0.1-go{gotoolchain.PINNED_VERSION}.linux-amd64.zip"


def test_install_unpacks_the_zip_with_its_modes_when_the_digest_matches(
    proxy: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _toolchain_zip({"bin/go": (b"#!/bin/sh\n", 0o755), "src/x.go": (b"package x\n", 0o644)})
    proxy[ZIP_PATH] = archive
    monkeypatch.setitem(gotoolchain.PINNED_SHA256, "linux-amd64", hashlib.sha256(archive).hexdigest())
    go = Path(gotoolchain.install())
    assert go == gotoolchain.INSTALL_ROOT / f"go{gotoolchain.PINNED_VERSION}" / "bin" / "go"
    assert go.stat().st_mode & 0o777 == 0o755
    assert (go.parent.parent / "src" / "x.go").stat().st_mode & 0o777 == 0o644


def test_install_refuses_a_zip_whose_digest_differs(proxy: dict[str, bytes]) -> None:
    proxy[ZIP_PATH] = _toolchain_zip({"bin/go": (b"not the real go", 0o755)})
    with pytest.raises(RuntimeError, match=r"SHA-256 .* expected .*not installed"):
        gotoolchain.install()
    assert not (gotoolchain.INSTALL_ROOT / f"go{gotoolchain.PINNED_VERSION}").exists()


def test_install_says_what_to_do_when_the_proxy_does_not_serve_it(proxy: dict[str, bytes]) -> None:
    with pytest.raises(RuntimeError, match=r"cannot download .* install Go 1\.\d+\.\d+ or newer yourself"):
        gotoolchain.install()


def test_an_entry_outside_the_install_dir_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_toolchain_zip({"../../escaped": (b"x", 0o644)}))
    with pytest.raises(RuntimeError, match="outside the install dir"):
        gotoolchain._unzip_toolchain(archive, tmp_path / "go")
    assert not (tmp_path / "escaped").exists()
