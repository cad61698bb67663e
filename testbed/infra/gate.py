"""Whether this machine can run the e2e tier: skip (auto) or fail (require) when something is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from testbed.infra import gotoolchain
from testbed.infra.pins import E2E_ENV

# ---------------------------------------------------------------- gate: skip or fail when something is missing


class E2EError(RuntimeError):
    """A setup step failed for a reason a person has to look at (the message says what and where)."""


def e2e_mode() -> str:
    """`auto` (default: skip when a prerequisite is missing) or `require` (fail instead).

    CI sets `require` so that a machine that lost a package cannot turn the whole e2e suite
    into a row of silent skips.
    """
    value = os.environ.get(E2E_ENV, "").strip().lower() or "auto"
    if value not in ("auto", "require"):
        raise E2EError(f"{E2E_ENV}={value!r}: expected 'auto' (default) or 'require'")
    return value


def require_or_skip(reason: str) -> NoReturn:
    """Skip the test in `auto` mode, fail it in `require` mode; `reason` should say what to install.

    Outside a test (the demo, a benchmark) there is nothing to skip: E2EError, saying what is missing."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        raise E2EError(f"this machine cannot run it: {reason}")
    if e2e_mode() == "require":
        pytest.fail(f"{E2E_ENV}=require and an e2e prerequisite is missing or not working: {reason}", pytrace=False)
    pytest.skip(f"e2e prerequisite missing or not working: {reason} (set {E2E_ENV}=require to make this a failure)")


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header, i.e. one that runs in a `FROM scratch` image."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only: all this suite builds for
        return False
    byteorder = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[0x20:0x28], byteorder)
    phentsize = int.from_bytes(data[0x36:0x38], byteorder)
    phnum = int.from_bytes(data[0x38:0x3A], byteorder)
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off : off + 4], byteorder) == 3:  # PT_INTERP
            return False
    return True


def go_executable() -> str | None:
    """A Go new enough for every build: on PATH, the usual tarball install (root's PATH under sudo often lacks
    it), or the one `scripts/setup.sh` installed (testbed/infra/gotoolchain.py)."""
    return gotoolchain.find_go()


def busybox_path() -> Path | None:
    """Debian's busybox-static binary: the only userland the test images have."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file() and is_static_elf(candidate):
            return candidate
    return None


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the e2e suite, each with what to install; empty when ready."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (the suite starts dockerd and sshd and creates the SSH user): run as root")
    if not shutil.which("dockerd"):
        missing.append("dockerd: apt-get install docker.io")
    if not shutil.which("docker"):
        missing.append("the docker CLI: apt-get install docker.io")
    if not go_executable():
        need = gotoolchain.show(gotoolchain.required_version())
        missing.append(f"go {need} or newer: run ./scripts/setup.sh as root (it installs one), or put one on PATH")
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").is_file():
        missing.append("sshd: apt-get install openssh-server")
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        missing.append("ssh and ssh-keygen: apt-get install openssh-client")
    if busybox_path() is None:
        missing.append("a static /bin/busybox for the images: apt-get install busybox-static")
    if not shutil.which("debootstrap") and not Path("/usr/sbin/debootstrap").is_file():
        missing.append("debootstrap (the Kopia image's Debian root): apt-get install debootstrap")
    if not shutil.which("ip"):
        missing.append("ip (this machine's address on Docker's bridge): apt-get install iproute2")
    if not shutil.which("useradd"):
        missing.append("useradd: apt-get install passwd")
    return missing


def check_prerequisites() -> None:
    """Skip or fail (see `require_or_skip`) unless every prerequisite is present."""
    missing = missing_prerequisites()
    if missing:
        require_or_skip("; ".join(missing))
