"""The Go toolchain the builds need (Kopia, OpenList, the Pulumi CLI): the machine's own if new enough, else the
one `scripts/setup.sh` fetched from the Go module proxy.

Why setup fetches Go itself: Debian 12's `golang-go` is 1.19, older than the wrappers' go.mod files ask for,
and a Go that is only somewhat old cannot fetch its successor here either: `GOTOOLCHAIN=auto` verifies the
toolchain against the checksum database (sum.golang.org), which this kind of machine cannot reach. The proxy
serves Go's own toolchain as a module (`golang.org/toolchain@v0.0.1-go<version>.<os>-<arch>`, the zip that
`GOTOOLCHAIN=auto` downloads), so setup downloads that zip and checks it against the SHA-256 pinned here.

Run as `python -m testbed.infra.gotoolchain` (setup does): it says which Go it uses, or installs one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

#: Where setup installs the fetched toolchain, one directory per version (`<root>/go<version>/bin/go`).
INSTALL_ROOT = Path("/usr/local/lib/homelab-backup")
#: The toolchain setup installs, and the SHA-256 of its module zip per platform, as the proxy served it on
#: 2026-12-03 (`curl -sS $GOPROXY/golang.org/toolchain/@v/v0.0.1-go1.26.8.linux-amd64.zip | sha256sum`).
PINNED_VERSION = "1.26.8"
PINNED_SHA256 = {"linux-amd64": "30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7"}
DEFAULT_PROXY = "https://proxy.golang.org"
WRAPPERS = Path(__file__).resolve().parent.parent / "images"


def parse_version(text: str) -> tuple[int, ...]:
    """(1, 26, 6) from '1.26.6', 'go1.26.6' or '1.25' ((1, 25, 0))."""
    match = re.match(r"(?:go)?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise ValueError(f"not a Go version: {text!r}")
    return tuple(int(part or 0) for part in match.groups())


def required_version() -> tuple[int, ...]:
    """The newest `go` line of the wrapper modules' go.mod files: what every build needs."""
    found = []
    for go_mod in sorted(WRAPPERS.glob("*/go.mod")):
        for line in go_mod.read_text().splitlines():
            if line.startswith("go "):
                found.append(parse_version(line.removeprefix("go ")))
    return max(found)


def show(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def version_of(go: str) -> tuple[int, ...] | None:
    """What `go env GOVERSION` says, or None when it cannot run (GOTOOLCHAIN=local: never switch, never fetch)."""
    try:
        answer = subprocess.run(
            [go, "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GOTOOLCHAIN": "local"},
            check=False,
        )
        return parse_version(answer.stdout) if answer.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def candidates() -> list[str]:
    """Every Go this machine has, in the order they are preferred: PATH, the usual tarball, setup's install."""
    found = [shutil.which("go"), "/usr/local/go/bin/go", *(str(p) for p in sorted(INSTALL_ROOT.glob("go*/bin/go")))]
    unique: list[str] = []
    for path in found:
        if path and Path(path).is_file() and path not in unique:
            unique.append(path)
    return unique


@functools.cache
def find_go() -> str | None:
    """The first Go on this machine that is new enough for every build, or None."""
    need = required_version()
    for go in candidates():
        version = version_of(go)
        if version is not None and version >= need:
            return go
    return None


def platform_name() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{sys.platform}-{machine}"


def proxy_url() -> str:
    """The first URL in GOPROXY (as `go` reads it: comma or pipe separated; 'direct' and 'off' are not URLs)."""
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        if entry.strip().startswith(("https://", "http://")):
            return entry.strip().rstrip("/")
    return DEFAULT_PROXY


def install(version: str = PINNED_VERSION) -> str:
    """Download the pinned toolchain from the module proxy, check its SHA-256, unpack it under INSTALL_ROOT.
    Returns the path of its `go`; raises RuntimeError saying what to do when it cannot."""
    target = INSTALL_ROOT / f"go{version}"
    if (target / "bin" / "go").is_file():
        return str(target / "bin" / "go")
    plat = platform_name()
    expected = PINNED_SHA256.get(plat) if version == PINNED_VERSION else None
    if expected is None:
        raise RuntimeError(
            f"no pinned Go {version} toolchain for {plat}: install Go {show(required_version())} or newer"
            " (https://go.dev/doc/install) and put it on PATH, then run ./scripts/setup.sh again"
        )
    url = f"{proxy_url()}/golang.org/toolchain/@v/v0.0.1-go{version}.{plat}.zip"
    INSTALL_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".go-", dir=INSTALL_ROOT) as tmp:
        archive = Path(tmp) / "toolchain.zip"
        digest = _download(url, archive)
        if digest != expected:
            raise RuntimeError(f"{url}: SHA-256 {digest}, expected {expected}: not installed (a proxy fault?)")
        unpacked = Path(tmp) / "go"
        _unzip_toolchain(archive, unpacked)
        unpacked.rename(target)
    return str(target / "bin" / "go")


def _download(url: str, to: Path) -> str:
    """Fetch `url` into `to`, printing progress every 10%; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as answer, to.open("wb") as out:  # noqa: S310 (https URL)
            total = int(answer.headers.get("Content-Length") or 0)
            done, next_report = 0, 10
            while chunk := answer.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and done * 100 >= next_report * total:
                    _say(f"  {done >> 20} of {total >> 20} MiB")
                    next_report += 10
    except OSError as error:
        raise RuntimeError(
            f"cannot download {url} ({error}): check GOPROXY and the network, or install Go"
            f" {show(required_version())} or newer yourself and run ./scripts/setup.sh again"
        ) from None
    return digest.hexdigest()


def _unzip_toolchain(archive: Path, into: Path) -> None:
    """The module zip holds `golang.org/toolchain@<version>/...`; unpack its contents with their modes."""
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            inside = info.filename.split("/", 2)[-1] if info.filename.count("/") >= 2 else ""
            if not inside or info.is_dir():
                continue
            path = (into / inside).resolve()
            if not path.is_relative_to(into.resolve()):
                raise RuntimeError(f"{archive}: entry {info.filename!r} would land outside the install dir")
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, path.open("wb") as out:
                shutil.copyfileobj(source, out)
            path.chmod((info.external_attr >> 16) & 0o777 or 0o644)


def _say(message: str) -> None:
    print(f"[setup] {message}", file=sys.stderr, flush=True)


def main() -> int:
    need = show(required_version())
    go = find_go()
    if go is not None:
        _say(f"go: {go} (go{show(version_of(go) or ())}; the builds need {need} or newer)")
        return 0
    others = ", ".join(f"{g} (go{show(v)})" if (v := version_of(g)) else g for g in candidates()) or "none"
    if os.geteuid() != 0:
        _say(f"go: none new enough (found: {others}); the builds need {need} or newer: run setup as root to install it")
        return 0  # the unit tests need no Go; the e2e gate says what is missing
    _say(f"go: none new enough (found: {others}); installing go{PINNED_VERSION} from {proxy_url()} in {INSTALL_ROOT}")
    try:
        installed = install()
    except RuntimeError as error:
        _say(f"FAILED: {error}")
        return 1
    find_go.cache_clear()
    if find_go() != installed:
        _say(f"FAILED: {installed} does not run or is older than {need}")
        return 1
    _say(f"go: {installed} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
