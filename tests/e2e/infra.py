"""End-to-end test infrastructure: a real Docker engine, sshd, Kopia and OpenList on this machine.

Everything the e2e fixtures do lives here so that the scenario tests, the smoke tests and a
person at a Python prompt can all use it the same way; `conftest.py` only wires it into pytest.

Why it looks the way it does:

* No registry can be reached, so both images the program pins (`kopia/kopia:0.22.3`,
  `ghcr.io/openlistteam/openlist-git:v4.2.5`) are built here `FROM scratch` out of a static
  busybox and the real upstream binaries, compiled from the Go module proxy. The images
  carry the tags the program pins, so `docker.RemoteImage` finds them locally and never pulls.
* Go builds take minutes, so binaries are cached by version under
  `${HOMELAB_E2E_CACHE:-/var/cache/homelab-backup-e2e}/bin` and images are rebuilt only when
  their `homelab.e2e.version` label no longer matches the binary inside.
* The program reaches hosts with pulumi-docker over `ssh://`, which runs the local `ssh`
  client (`ssh ... docker system dial-stdio`). `SshHost` is a real sshd on 127.0.0.1 with a
  pinned host key, and `SshDocker` drives the real docker CLI the same way, so a wrong host
  key or a stopped sshd fails exactly like it would against a real host.
* Every setup step reports its duration as `[e2e setup] <step>: <seconds>s` so a slow run
  shows where the time went; `conftest.py` routes these lines past pytest's capture.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

# ---------------------------------------------------------------- versions and names the program pins

KOPIA_VERSION = "0.22.3"
OPENLIST_VERSION = "v4.2.5"
KOPIA_IMAGE = f"kopia/kopia:{KOPIA_VERSION}"
OPENLIST_IMAGE = f"ghcr.io/openlistteam/openlist-git:{OPENLIST_VERSION}"
VERSION_LABEL = "homelab.e2e.version"

#: Every container, network and scratch dir the suite makes starts with this, so leftovers are easy to find.
NAME_PREFIX = "hle2e-"
#: Label on every container and network the suite makes (`docker ps -a --filter label=homelab.e2e`).
RESOURCE_LABEL = "homelab.e2e"

SSH_USER = "homelab-e2e"
OPENLIST_UID = 1001  # the upstream image's `openlist` user and group
OPENLIST_DATA_DIR = "/opt/openlist/data"
OPENLIST_HTTP_PORT = 80  # what the program sets with HTTP_PORT
OPENLIST_S3_PORT = 5246
OPENLIST_SETTING_GROUP_S3 = 9  # internal/model/setting.go: SINGLE, SITE, ..., LDAP, S3

HERE = Path(__file__).resolve().parent
IMAGES_DIR = HERE / "images"

E2E_ENV = "HOMELAB_E2E"
CACHE_ENV = "HOMELAB_E2E_CACHE"
DEFAULT_CACHE = Path("/var/cache/homelab-backup-e2e")

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
    """Skip the test in `auto` mode, fail it in `require` mode; `reason` should say what to install."""
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
    """`go` on PATH, else the usual tarball install (root's PATH under sudo often lacks it)."""
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None


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
        missing.append("go (>= 1.21; it fetches the toolchain go.mod asks for): install Go and put it on PATH")
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").is_file():
        missing.append("sshd: apt-get install openssh-server")
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        missing.append("ssh and ssh-keygen: apt-get install openssh-client")
    if busybox_path() is None:
        missing.append("a static /bin/busybox for the images: apt-get install busybox-static")
    if not shutil.which("debootstrap") and not Path("/usr/sbin/debootstrap").is_file():
        missing.append("debootstrap (the Kopia image's Debian root): apt-get install debootstrap")
    if not shutil.which("useradd"):
        missing.append("useradd: apt-get install passwd")
    return missing


def check_prerequisites() -> None:
    """Skip or fail (see `require_or_skip`) unless every prerequisite is present."""
    missing = missing_prerequisites()
    if missing:
        require_or_skip("; ".join(missing))


# ---------------------------------------------------------------- progress and timing


def _default_progress_writer(line: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()


_progress_writer: Callable[[str], None] = _default_progress_writer


def set_progress_writer(writer: Callable[[str], None]) -> None:
    """Where progress lines go; conftest.py installs one that gets past pytest's output capture."""
    global _progress_writer
    _progress_writer = writer


def progress(message: str) -> None:
    """One `[e2e setup] ...` line on the terminal, even while pytest captures output."""
    _progress_writer(f"[e2e setup] {message}")


@contextlib.contextmanager
def timed(step: str, *, announce: bool = False) -> Iterator[None]:
    """Report how long `step` took (`[e2e setup] <step>: <seconds>s`); `announce` also reports its start."""
    if announce:
        progress(f"{step}: started")
    started = time.monotonic()
    try:
        yield
    except BaseException:
        progress(f"{step}: FAILED after {time.monotonic() - started:.1f}s")
        raise
    progress(f"{step}: {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- running commands


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError its message shows stderr, which is usually the answer."""

    def __str__(self) -> str:
        def tail(text: str | bytes | None) -> str:
            if not text:
                return ""
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            return text[-4000:].strip()

        cmd = self.cmd if isinstance(self.cmd, str) else shlex.join(str(c) for c in self.cmd)
        parts = [f"command exited {self.returncode}: {cmd}"]
        if tail(self.stderr):
            parts.append(f"stderr:\n{tail(self.stderr)}")
        if tail(self.stdout):
            parts.append(f"stdout:\n{tail(self.stdout)}")
        return "\n".join(parts)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text; `check` raises `CommandError` showing stderr.

    `input` may be bytes (sent as is) so that secrets and binary payloads need no encoding games.
    """
    args = [os.fspath(c) for c in cmd]
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        args,
        input=data,
        capture_output=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    result = subprocess.CompletedProcess(
        args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(result.returncode, args, result.stdout, result.stderr)
    return result


def docker(
    *args: str, check: bool = True, input: bytes | str | None = None, timeout: float | None = 600
) -> subprocess.CompletedProcess[str]:
    """The local docker CLI against the local engine (the e2e "remote" hosts share this engine)."""
    return run(["docker", *args], check=check, input=input, timeout=timeout)


#: Anything that runs the docker CLI: `docker` above, or `SshDocker(...).run` to go through sshd.
DockerRunner = Callable[..., subprocess.CompletedProcess[str]]


def tail_file(path: Path, lines: int = 40) -> str:
    """The end of a log file for an error message (empty when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_name(label: str) -> str:
    """`hle2e-<label>-<random>`: unique per call, so parallel or leftover runs never collide."""
    return f"{NAME_PREFIX}{label}-{secrets.token_hex(4)}"


def wait_until(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `probe` until it returns something truthy, and return that; E2EError naming `what` after
    `timeout` seconds. Exceptions of the `retry_on` types count as "not yet"; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if value := probe():
                return value
        except retry_on as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise E2EError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


# ---------------------------------------------------------------- cache dir


def cache_dir() -> Path:
    """`${HOMELAB_E2E_CACHE:-/var/cache/homelab-backup-e2e}`, created: Go builds and logs are kept here."""
    path = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    (path / "bin").mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(cache: Path, name: str) -> Iterator[None]:
    """An exclusive lock in the cache so two sessions never build the same binary or image at once."""
    with (cache / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- docker engine


def docker_info_ok() -> bool:
    """True when the docker CLI reaches an engine."""
    try:
        return run(["docker", "info"], check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class DockerEngine:
    """The engine the suite uses; `started_by_suite` says whether `stop()` will shut it down."""

    started_by_suite: bool
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop dockerd if (and only if) this session started it; a pre-existing engine is left alone."""
        if not self.started_by_suite or self.process is None or self.process.poll() is not None:
            return
        with timed("stop dockerd"):
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def ensure_docker_engine(cache: Path, timeout: float = 60, dockerd_args: Sequence[str] = ()) -> DockerEngine:
    """Use the running engine, or start `dockerd [dockerd_args]` in the background (as root) and wait for it.

    The log goes to `<cache>/logs/dockerd.log`; its tail is in the error when it does not come up.
    """
    with timed("docker engine"):
        if docker_info_ok():
            return DockerEngine(started_by_suite=False)
        if os.geteuid() != 0:
            require_or_skip("no docker engine answers `docker info`, and starting dockerd needs root")
        log_path = cache / "logs" / "dockerd.log"
        progress(f"docker engine: not running, starting dockerd (log: {log_path})")
        with log_path.open("ab") as log:
            log.write(f"\n===== dockerd started by the e2e suite at {time.ctime()} =====\n".encode())
            log.flush()
            process = subprocess.Popen(
                ["dockerd", *dockerd_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        engine = DockerEngine(started_by_suite=True, log_path=log_path, process=process)
        deadline = time.monotonic() + timeout
        while not docker_info_ok():
            if process.poll() is not None:
                require_or_skip(
                    f"dockerd exited with {process.returncode} at start; tail of {log_path}:\n{tail_file(log_path)}"
                )
            if time.monotonic() > deadline:
                engine.stop()
                require_or_skip(
                    f"dockerd did not answer `docker info` within {timeout:.0f}s; "
                    f"tail of {log_path}:\n{tail_file(log_path)}"
                )
            time.sleep(0.5)
        return engine


# ---------------------------------------------------------------- Go builds, cached by version


#: Bump when `build_go_binary` changes how binaries are made, so cached ones are rebuilt.
BUILD_RECIPE = 2


@dataclass(frozen=True)
class GoBuild:
    """How one upstream binary is built from a wrapper module in `tests/e2e/images/<name>`."""

    name: str
    version: str
    module: str  # the upstream module path (its version comes from the wrapper's go.mod)
    package: str  # what `go build` builds
    ldflags: tuple[str, ...]
    tags: str = ""
    #: upstream's go:embed dir for the web UI is empty in the module; files from here go into it
    embed_dist: bool = False

    @property
    def wrapper_dir(self) -> Path:
        return IMAGES_DIR / self.name

    def binary_path(self, cache: Path) -> Path:
        return cache / "bin" / f"{self.name}-{self.version}"

    def recipe_digest(self) -> str:
        """Hash of everything that shapes the binary: a changed go.sum or stub page rebuilds it."""
        h = hashlib.sha256(json.dumps([BUILD_RECIPE, self.package, self.ldflags, self.tags]).encode())
        for path in sorted(p for p in self.wrapper_dir.rglob("*") if p.is_file() and p.name != "Dockerfile"):
            if path.name == "entrypoint.sh":
                continue  # image-only file
            h.update(str(path.relative_to(self.wrapper_dir)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-buildvcs=false", GOWORK="off")
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    return env


def _module_origin_hash(go: str, workdir: Path, module: str, version: str) -> str:
    """The upstream commit of `module@version` as the proxy reports it (for `version` output), or ''."""
    result = run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=workdir, env=_go_env(), check=False)
    if result.returncode != 0:
        return ""
    try:
        return str(json.loads(result.stdout).get("Origin", {}).get("Hash", ""))
    except json.JSONDecodeError:
        return ""


def module_dir(go: str, workdir: Path, module: str, version: str) -> Path:
    result = run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=workdir, env=_go_env())
    return Path(json.loads(result.stdout)["Dir"])


def _run_long(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, what: str) -> None:
    """Run a build that takes minutes, printing a heartbeat every 30s so the terminal never looks stuck."""
    with log_path.open("wb") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        started = time.monotonic()
        next_beat = started + 30
        while process.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_beat:
                progress(f"{what}: still running ({time.monotonic() - started:.0f}s, log: {log_path})")
                next_beat += 30
    if process.returncode != 0:
        raise E2EError(f"{what} failed (exit {process.returncode}); tail of {log_path}:\n{tail_file(log_path)}")


def build_go_binary(spec: GoBuild, cache: Path) -> Path:
    """`go build` the binary into `<cache>/bin/<name>-<version>` (atomically), from a temp copy of the wrapper.

    Only the Go module proxy is needed: the wrapper's go.sum pins every module, so no checksum
    database lookup happens (sum.golang.org does not answer for some OpenList modules here).
    For OpenList the upstream source is copied and `replace`d in, so the stub web page can be
    put into its `public/dist` (go:embed), the way upstream's release build embeds the frontend;
    `go build -overlay` cannot do it because it refuses to overlay files in the module cache.
    """
    go = go_executable()
    if go is None:
        require_or_skip("go is not installed: install Go and put it on PATH")
    target = spec.binary_path(cache)
    log_path = cache / "logs" / f"build-{spec.name}-{spec.version}.log"
    with tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}build-{spec.name}-", dir=cache) as tmp:
        work = Path(tmp) / "module"
        work.mkdir()
        for name in ("go.mod", "go.sum", "main.go", "tools.go"):
            if (spec.wrapper_dir / name).is_file():
                shutil.copy2(spec.wrapper_dir / name, work / name)
        env = _go_env()
        commit = _module_origin_hash(go, work, spec.module, spec.version)
        if spec.embed_dist:
            upstream = module_dir(go, work, spec.module, spec.version)
            source = Path(tmp) / "upstream"
            shutil.copytree(upstream, source)
            for path in source.rglob("*"):  # the module cache is read-only
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
            source.chmod(source.stat().st_mode | stat.S_IWUSR)
            shutil.copytree(spec.wrapper_dir / "dist", source / "public" / "dist", dirs_exist_ok=True)
            # Relative, so the path recorded in the binary's build info is the same at every build.
            run([go, "mod", "edit", f"-replace={spec.module}=../upstream"], cwd=work, env=env)
        ldflags = " ".join(flag.replace("@COMMIT@", commit or spec.version) for flag in spec.ldflags)
        out = Path(tmp) / spec.name
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out)]
        if spec.tags:
            cmd += ["-tags", spec.tags]
        cmd.append(spec.package)
        _run_long(cmd, cwd=work, env=env, log_path=log_path, what=f"go build {spec.name} {spec.version}")
        if not is_static_elf(out):
            raise E2EError(f"{out} is not a static executable: it would not run in a FROM scratch image")
        out.chmod(0o755)
        os.replace(out, target)
    return target


KOPIA_BUILD = GoBuild(
    name="kopia",
    version=f"v{KOPIA_VERSION}",
    module="github.com/kopia/kopia",
    package="github.com/kopia/kopia",
    # As kopia's .goreleaser.yml, so `kopia --version` reads like the release's.
    ldflags=(
        "-s -w",
        f"-X github.com/kopia/kopia/repo.BuildVersion={KOPIA_VERSION}",
        "-X github.com/kopia/kopia/repo.BuildInfo=@COMMIT@",
        "-X github.com/kopia/kopia/repo.BuildGitHubRepo=kopia/kopia",
    ),
)

OPENLIST_BUILD = GoBuild(
    name="openlist",
    version=OPENLIST_VERSION,
    module="github.com/OpenListTeam/OpenList/v4",
    package=".",
    # As OpenList's build.sh (release docker); the pure-Go sqlite driver needs no cgo on amd64/arm64.
    ldflags=(
        "-s -w",
        f"-X github.com/OpenListTeam/OpenList/v4/internal/conf.Version={OPENLIST_VERSION}",
        f"-X github.com/OpenListTeam/OpenList/v4/internal/conf.WebVersion={OPENLIST_VERSION}",
        "-X github.com/OpenListTeam/OpenList/v4/internal/conf.GitCommit=@COMMIT@",
        "-X github.com/OpenListTeam/OpenList/v4/internal/conf.GitAuthor=homelab-backup-e2e",
    ),
    tags="jsoniter",
    embed_dist=True,
)


PULUMI_VERSION = "v3.274.0"  # v3.271 to v3.273 are refused by the module proxy here

PULUMI_BUILD = GoBuild(
    name="pulumi",
    version=PULUMI_VERSION,
    module="github.com/pulumi/pulumi/pkg/v3",
    package="github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
    # As pulumi's own release build: the version comes from an ldflag (`pulumi version` prints it).
    ldflags=("-s -w", f"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={PULUMI_VERSION}"),
)


def ensure_go_binary(spec: GoBuild, cache: Path) -> Path:
    """The cached binary for `spec`, built first when missing or built from a different recipe."""
    target = spec.binary_path(cache)
    stamp = target.with_name(target.name + ".recipe")
    digest = spec.recipe_digest()
    started = time.monotonic()
    with cache_lock(cache, f"build-{spec.name}"):
        if target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
            progress(f"{spec.name} {spec.version} binary (cached: {target}): {time.monotonic() - started:.1f}s")
            return target
        with timed(f"build {spec.name} {spec.version} (go build, takes minutes)", announce=True):
            build_go_binary(spec, cache)
        stamp.write_text(digest + "\n")
    return target


def ensure_kopia_binary(cache: Path) -> Path:
    """`<cache>/bin/kopia-v0.22.3`, a static Kopia built from the Go module proxy."""
    return ensure_go_binary(KOPIA_BUILD, cache)


def ensure_openlist_binary(cache: Path) -> Path:
    """`<cache>/bin/openlist-v4.2.5`, a static OpenList with a stub web page embedded."""
    return ensure_go_binary(OPENLIST_BUILD, cache)


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class E2EImages:
    """The locally built images, tagged as the program pins them, and the binaries inside them."""

    kopia: str
    openlist: str
    kopia_binary: Path
    openlist_binary: Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_label(tag: str, label: str = VERSION_LABEL) -> str | None:
    """The label's value on a local image; None when the image (or the label) is not there."""
    result = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout.strip() or "null") or {}
    return labels.get(label)


def image_version_label(version: str, image_dir: Path, binary: Path, base: str | None = None) -> str:
    """`<version>+<digest>`: changes when the binary, the base (or busybox) or a file of the recipe changes."""
    h = hashlib.sha256(file_sha256(binary).encode())
    busybox = busybox_path()
    if base is not None:
        h.update(base.encode())
    elif busybox is not None:
        h.update(file_sha256(busybox).encode())
    for name in ("Dockerfile", "entrypoint.sh"):
        if (image_dir / name).is_file():
            h.update(name.encode() + b"\0" + (image_dir / name).read_bytes())
    return f"{version}+{h.hexdigest()[:16]}"


def _image_context(context: Path, binary: Path, binary_name: str, image_dir: Path, base: str | None) -> None:
    shutil.copy2(image_dir / "Dockerfile", context / "Dockerfile")
    try:  # hard link: the binaries are ~100 MB
        os.link(binary, context / binary_name)
    except OSError:
        shutil.copy2(binary, context / binary_name)
    if base is not None:
        return  # the base image has the userland, certificates and tzdata
    busybox = busybox_path()
    if busybox is None:
        require_or_skip("a static /bin/busybox for the images: apt-get install busybox-static")
    if (image_dir / "entrypoint.sh").is_file():
        shutil.copy2(image_dir / "entrypoint.sh", context / "entrypoint.sh")
        (context / "entrypoint.sh").chmod(0o755)
    shutil.copy2(busybox, context / "busybox")
    (context / "busybox").chmod(0o755)
    certs = Path("/etc/ssl/certs/ca-certificates.crt")
    (context / "ca-certificates.crt").write_bytes(certs.read_bytes() if certs.is_file() else b"")
    zoneinfo = Path("/usr/share/zoneinfo")
    if zoneinfo.is_dir():  # tzdata, as both upstream images have: TZ comes from the deployer
        shutil.copytree(zoneinfo, context / "zoneinfo", symlinks=True)
    else:
        (context / "zoneinfo").mkdir()


def build_image(
    tag: str, image_dir: Path, binary: Path, binary_name: str, label: str, cache: Path, base: str | None
) -> None:
    """`docker build` (legacy builder: no buildx needed) from a temp context holding only what the image needs."""
    with tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}ctx-", dir=cache) as tmp:
        context = Path(tmp)
        _image_context(context, binary, binary_name, image_dir, base)
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        build_args = ["--build-arg", f"BASE={base}"] if base else []
        run(
            ["docker", "build", *build_args, "--label", f"{VERSION_LABEL}={label}", "-t", tag, str(context)],
            env=env,
            timeout=900,
        )


#: The Debian root file system under the Kopia image: dash, coreutils, mawk and curl, as upstream's image has.
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("ca-certificates", "curl", "tzdata")
DEBIAN_MIRROR_ENV = "HOMELAB_E2E_DEBIAN_MIRROR"


def ensure_debian_base(cache: Path) -> str:
    """A local image `hle2e-debian-base:<suite>-<digest>` made by debootstrap (minbase) and `docker import`."""
    recipe = hashlib.sha256(json.dumps([DEBIAN_SUITE, DEBIAN_PACKAGES, "minbase"]).encode()).hexdigest()[:12]
    tag = f"{NAME_PREFIX}debian-base:{DEBIAN_SUITE}-{recipe}"
    started = time.monotonic()
    with cache_lock(cache, "debian-base"):
        if docker("image", "inspect", tag, check=False).returncode == 0:
            progress(f"image {tag} (cached): {time.monotonic() - started:.1f}s")
            return tag
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).is_file():
            require_or_skip("debootstrap (the Kopia test image's Debian root): apt-get install debootstrap")
        mirror = os.environ.get(DEBIAN_MIRROR_ENV) or "http://deb.debian.org/debian"
        with (
            timed(f"build image {tag} (debootstrap {DEBIAN_SUITE} from {mirror})", announce=True),
            tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}rootfs-", dir=cache) as tmp,
        ):
            root = Path(tmp) / "root"
            log_path = cache / "logs" / "debootstrap.log"
            include = f"--include={','.join(DEBIAN_PACKAGES)}"
            command = [debootstrap, "--variant=minbase", include, DEBIAN_SUITE, str(root), mirror]
            _run_long(command, cwd=Path(tmp), env=os.environ, log_path=log_path, what="debootstrap")
            for cached in (root / "var/cache/apt/archives").glob("*.deb"):
                cached.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            imported = subprocess.run(
                ["docker", "import", "--change", f"ENV PATH={path}", "-", tag],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            tar.stdout.close()
            if tar.wait() != 0 or imported.returncode != 0:
                raise E2EError(f"docker import of the Debian root failed: {imported.stderr.strip()}")
    return tag


def ensure_image(
    tag: str, image_dir: Path, binary: Path, binary_name: str, version: str, cache: Path, base: str | None = None
) -> str:
    """Build `tag` unless a local image with the same version label exists; returns `tag`."""
    started = time.monotonic()
    label = image_version_label(version, image_dir, binary, base)
    with cache_lock(cache, "images"):
        current = image_label(tag)
        if current == label:
            progress(f"image {tag} (up to date, {VERSION_LABEL}={label}): {time.monotonic() - started:.1f}s")
            return tag
        reason = "missing" if current is None else f"label {current} != {label}"
        old_id = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
        with timed(f"build image {tag} ({reason})", announce=True):
            build_image(tag, image_dir, binary, binary_name, label, cache, base)
        if old_id:  # the stale image is now untagged: drop it unless a container still uses it
            docker("image", "rm", old_id, check=False)
    return tag


def ensure_images(cache: Path, kopia_binary: Path, openlist_binary: Path) -> E2EImages:
    """Both pinned images, built locally when missing or stale."""
    return E2EImages(
        kopia=ensure_image(
            KOPIA_IMAGE, IMAGES_DIR / "kopia", kopia_binary, "kopia", KOPIA_VERSION, cache, ensure_debian_base(cache)
        ),
        openlist=ensure_image(
            OPENLIST_IMAGE, IMAGES_DIR / "openlist", openlist_binary, "openlist", OPENLIST_VERSION, cache
        ),
        kopia_binary=kopia_binary,
        openlist_binary=openlist_binary,
    )


# ---------------------------------------------------------------- a real SSH host


@dataclass(frozen=True)
class SshHost:
    """A host reachable over real SSH, as the program's `connection` and pulumi-docker need it.

    `host_public_key` is `ssh-ed25519 AAAA...`; `known_hosts_line` is the pinned
    `[127.0.0.1]:PORT ssh-ed25519 AAAA...` to put in a known_hosts file.
    """

    address: str
    port: int
    user: str
    private_key_path: Path
    private_key_pem: str
    host_public_key: str
    known_hosts_line: str

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST for the docker CLI and pulumi-docker's provider `host`."""
        return f"ssh://{self.user}@{self.address}:{self.port}"

    def write_known_hosts(self, path: Path) -> Path:
        """Write the pinned line to `path` (for `pinned_ssh_opts(path)`, e.g. pulumi-docker's `ssh_opts`)."""
        path.write_text(self.known_hosts_line + "\n")
        return path


def _free_id(start: int = 2000) -> int:
    """The first id >= start that is neither a uid nor a gid yet."""
    used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    candidate = start
    while candidate in used:
        candidate += 1
    return candidate


def ensure_ssh_user(user: str = SSH_USER) -> None:
    """Create `user` (shell /bin/sh, home dir) if missing and put it in the docker socket's group.

    Its uid and gid are kept away from 1001, OpenList's uid: files the SSH user makes on the
    host must not look as if OpenList owned them, or a test could pass although the program
    forgot to chown OpenList's data dir. The password field is `*` (no password can match)
    rather than useradd's `!`: sshd without PAM treats `!` as a locked account and refuses
    even key logins.
    """
    sock = Path("/var/run/docker.sock")
    group = "docker"
    if sock.exists():
        gid = sock.stat().st_gid
        if gid == 0:
            raise E2EError(f"{sock} belongs to group root: the SSH user could not use docker (start dockerd -G docker)")
        group = grp.getgrgid(gid).gr_name
    else:
        try:
            grp.getgrnam(group)
        except KeyError:
            run(["groupadd", "--system", group])
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        new_id = _free_id()
        run(["groupadd", "--gid", str(new_id), user])
        ids = ["--uid", str(new_id), "--gid", str(new_id)]
        run(["useradd", "--create-home", "--shell", "/bin/sh", *ids, "--groups", group, "--password", "*", user])
        return
    if OPENLIST_UID in (entry.pw_uid, entry.pw_gid):  # made by an older version of this suite
        new_id = _free_id()
        run(["groupmod", "--gid", str(new_id), grp.getgrgid(entry.pw_gid).gr_name])
        run(["usermod", "--uid", str(new_id), "--gid", str(new_id), user])
        if Path(entry.pw_dir).is_dir():
            run(["chown", "-R", f"{new_id}:{new_id}", entry.pw_dir])
    run(["usermod", "--append", "--groups", group, "--shell", "/bin/sh", user])
    shadow = Path("/etc/shadow")
    if shadow.is_file():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user and fields[1].startswith("!"):
                run(["usermod", "--password", "*", user])


def _keygen(path: Path, comment: str) -> None:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _public_key(pub_path: Path) -> str:
    """`type base64` without the comment."""
    kind, blob = pub_path.read_text().split()[:2]
    return f"{kind} {blob}"


def known_hosts_line(address: str, port: int, public_key: str) -> str:
    """The known_hosts line ssh looks up for `address:port` (bracketed when not port 22)."""
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {public_key}"


SSHD_CONFIG = """\
# sshd for the homelab-backup e2e suite: loopback only, key auth for one user only.
Port {port}
ListenAddress 127.0.0.1
HostKey {workdir}/ssh_host_ed25519_key
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
AllowUsers {user}
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The key files live in a temp dir, not under the user's home: skip the home-dir ownership checks.
StrictModes no
PermitUserEnvironment no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
# pulumi-command copies files over SFTP.
Subsystem sftp internal-sftp
"""


class SshServer:
    """A session's sshd: started by `start()`, stopped and its keys deleted by `stop()`."""

    def __init__(self, user: str = SSH_USER) -> None:
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}sshd-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.host: SshHost | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def start(self, timeout: float = 20) -> SshHost:
        """Generate keys and config, start `sshd -D -e -f` on a free port, wait for its banner."""
        with timed("sshd"):
            ensure_ssh_user(self.user)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
            # The SSH user reads authorized_keys (sshd drops to it for that): the dir must be traversable.
            self.workdir.chmod(0o755)
            _keygen(self.workdir / "ssh_host_ed25519_key", "hle2e-host")
            client_key = self.workdir / "client_ed25519"
            _keygen(client_key, "hle2e-client")
            authorized = self.workdir / "authorized_keys"
            authorized.write_text((self.workdir / "client_ed25519.pub").read_text())
            authorized.chmod(0o644)
            port = free_port()
            config = self.workdir / "sshd_config"
            config.write_text(SSHD_CONFIG.format(port=port, workdir=self.workdir, user=self.user))
            sshd = shutil.which("sshd") or "/usr/sbin/sshd"  # sshd re-execs itself: absolute path
            run([sshd, "-t", "-f", str(config)])
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self._wait_banner(port, timeout)
            host_key = _public_key(self.workdir / "ssh_host_ed25519_key.pub")
            self.host = SshHost(
                address="127.0.0.1",
                port=port,
                user=self.user,
                private_key_path=client_key,
                private_key_pem=client_key.read_text(),
                host_public_key=host_key,
                known_hosts_line=known_hosts_line("127.0.0.1", port, host_key),
            )
            return self.host

    def _wait_banner(self, port: int, timeout: float) -> None:
        def banner() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise E2EError(f"sshd exited with {self.process.returncode}; log:\n{tail_file(self.log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    return s.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False

        try:
            wait_until(f"sshd on 127.0.0.1:{port}", banner, timeout, interval=0.2)
        except E2EError as e:
            raise E2EError(f"{e}; sshd log:\n{tail_file(self.log_path)}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop_process(self) -> None:
        """Stop sshd but keep the keys (a test can prove that docker over ssh then fails)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop sshd and delete its keys, config and log."""
        self.stop_process()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SshAgent:
    """A session's ssh-agent holding the operator's key, as a user's would: `SSH_AUTH_SOCK` for the program's
    ssh (the Docker provider and the file resources run the local `ssh`, which asks the agent)."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}agent-"))
        self.socket = self.workdir / "agent.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, key: Path) -> str:
        """Start the agent, add `key`, and return the socket path."""
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until("ssh-agent's socket", self.socket.exists, 10, interval=0.1)
        run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(self.socket)})
        return str(self.socket)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def operator_agent(host: SshHost) -> Iterator[str]:
    """An ssh-agent with the operator's key, exported as SSH_AUTH_SOCK for this process while it lasts."""
    agent = SshAgent()
    previous = os.environ.get("SSH_AUTH_SOCK")
    try:
        os.environ["SSH_AUTH_SOCK"] = agent.start(host.private_key_path)
        yield os.environ["SSH_AUTH_SOCK"]
    finally:
        if previous is None:
            os.environ.pop("SSH_AUTH_SOCK", None)
        else:
            os.environ["SSH_AUTH_SOCK"] = previous
        agent.stop()


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


# ---------------------------------------------------------------- one run at a time

#: The e2e stacks and the demo use fixed container names and host paths: one run per machine at a time.
RUN_LOCK = Path("/var/lock/homelab-backup-e2e.lock")


@contextlib.contextmanager
def exclusive_run(what: str, timeout: float = 3600) -> Iterator[None]:
    """Hold the machine-wide run lock while `what` uses the fixed names and paths; wait (with progress)
    while another run (a demo, the tests, a benchmark) holds it, and say which process that is."""
    RUN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with RUN_LOCK.open("a+") as handle:
        started = time.monotonic()
        next_report = started
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - started > timeout:
                    raise E2EError(
                        f"{what}: another run still holds {RUN_LOCK} after {timeout:.0f}s; "
                        "wait for it to finish, or stop it (its pid is in the file)"
                    ) from None
                if now >= next_report:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    progress(f"{what}: waiting for another run to finish ({holder}; lock {RUN_LOCK})")
                    next_report = now + 30
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {what}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def pinned_ssh_opts(known_hosts_file: Path) -> list[str]:
    """ssh options that trust exactly the host key in `known_hosts_file` and never prompt."""
    return [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=15",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def ssh_run(
    host: SshHost,
    command: str,
    *,
    stdin: bytes | None = None,
    ssh_opts: list[str] | None = None,
    check: bool = True,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """`ssh -i key -p port [opts] user@address -- command`; stdout/stderr come back as text.

    With `ssh_opts=None` the host key is pinned (StrictHostKeyChecking=yes against a temp
    known_hosts holding `host.known_hosts_line`); otherwise exactly `ssh_opts` plus `-i` are used.
    """
    with tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}ssh-") as tmp:
        if ssh_opts is None:
            known_hosts = Path(tmp) / "known_hosts"
            known_hosts.write_text(host.known_hosts_line + "\n")
            ssh_opts = pinned_ssh_opts(known_hosts)
        cmd = [
            "ssh", "-i", str(host.private_key_path), "-p", str(host.port), *ssh_opts,
            f"{host.user}@{host.address}", "--", command,
        ]  # fmt: skip
        return run(cmd, input=stdin, check=check, timeout=timeout)


class SshDocker:
    """The real docker CLI over `DOCKER_HOST=ssh://user@127.0.0.1:PORT`, as pulumi-docker connects.

    docker (like pulumi-docker) runs `ssh ... docker system dial-stdio` and has no flag for
    extra ssh options, so a temp dir first on PATH holds an `ssh` wrapper that execs
    `/usr/bin/ssh <ssh_opts...> -i <key> "$@"`. `ssh_opts=None` pins `host.known_hosts_line`.
    Use as a context manager, or call `close()`, to delete the temp dir.
    """

    def __init__(
        self,
        host: SshHost,
        ssh_opts: list[str] | None = None,
        *,
        known_hosts_line: str | None = None,
        docker_host: str | None = None,
    ):
        """`docker_host` overrides `host.docker_host`, e.g. with the program's declared provider `host`."""
        self.host = host
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{NAME_PREFIX}sshdocker-")
        tmp = Path(self._tmp.name)
        if ssh_opts is None:
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text((known_hosts_line or host.known_hosts_line) + "\n")
            ssh_opts = pinned_ssh_opts(known_hosts)
        self.ssh_opts = list(ssh_opts)
        bindir = tmp / "bin"
        bindir.mkdir()
        real_ssh = "/usr/bin/ssh" if Path("/usr/bin/ssh").is_file() else (shutil.which("ssh") or "ssh")
        wrapper = bindir / "ssh"
        wrapper.write_text(
            "#!/bin/sh\n"
            "# docker's ssh connection helper has no way to pass ssh options: this adds them.\n"
            f'exec {shlex.join([real_ssh, *self.ssh_opts, "-i", str(host.private_key_path)])} "$@"\n'
        )
        wrapper.chmod(0o755)
        self.bindir = bindir
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        }
        self.env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.env["DOCKER_HOST"] = docker_host or host.docker_host

    def run(
        self,
        *args: str,
        check: bool = True,
        input: bytes | str | None = None,
        timeout: float | None = 600,
    ) -> subprocess.CompletedProcess[str]:
        """`docker <args>` through sshd; same contract as `docker()`."""
        return run(["docker", *args], check=check, input=input, env=self.env, timeout=timeout)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> SshDocker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- cleanup


@dataclass
class ResourceTracker:
    """Containers, networks and dirs a test made; `cleanup()` removes them all, even after a failure.

    Names come from `name()` (`hle2e-...`); containers and networks get the `homelab.e2e` label.
    """

    workdir: Path
    runner: DockerRunner = docker
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def name(self, label: str) -> str:
        return unique_name(label)

    def container(self, name: str) -> str:
        """Remember a container (created by the test or by the program under test) for removal."""
        self.containers.append(name)
        return name

    def network(self, label: str = "net") -> str:
        """Create a user-defined bridge network and remember it for removal."""
        name = self.name(label)
        self.runner("network", "create", "--label", f"{RESOURCE_LABEL}=1", name)
        self.networks.append(name)
        return name

    def adopt_network(self, name: str) -> str:
        """Remember a network made elsewhere (e.g. by the program under test) for removal."""
        self.networks.append(name)
        return name

    def mkdir(self, label: str, *, owner: int | str | None = None, mode: int = 0o755) -> Path:
        """A fresh dir under the session's scratch dir, owned by `owner` (uid or user name) if given."""
        path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.workdir))
        path.chmod(mode)
        if owner is not None:
            uid = pwd.getpwnam(owner).pw_uid if isinstance(owner, str) else owner
            gid = pwd.getpwnam(owner).pw_gid if isinstance(owner, str) else owner
            os.chown(path, uid, gid)
        self.paths.append(path)
        return path

    def cleanup(self) -> list[str]:
        """Remove everything (containers first, then networks, then dirs); returns what could not be removed."""
        problems: list[str] = []
        for name in reversed(self.containers):
            result = self.runner("rm", "-f", "-v", name, check=False, timeout=120)
            if result.returncode != 0 and "No such container" not in result.stderr:
                problems.append(f"container {name}: {result.stderr.strip()}")
        for name in reversed(self.networks):
            result = self.runner("network", "rm", name, check=False, timeout=120)
            if result.returncode != 0 and "not found" not in result.stderr:
                problems.append(f"network {name}: {result.stderr.strip()}")
        for path in reversed(self.paths):
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                problems.append(f"dir {path}: still there")
        self.containers.clear()
        self.networks.clear()
        self.paths.clear()
        return problems


def make_session_workdir() -> Path:
    """`/tmp/hle2e-run-*` (0755: the SSH user must be able to reach dirs made for it inside)."""
    path = Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}run-"))
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- OpenList


class OpenListError(E2EError):
    """OpenList answered with a JSON `code` other than 200 (its HTTP status is 200 either way)."""


class OpenListAdmin:
    """OpenList's admin HTTP API, stdlib only: what the README's "First deploy" does by hand in the UI.

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
            "mount_path": mount_path,
            "driver": "Local",
            "order": 0,
            "cache_expiration": 0,
            "remark": "homelab-backup e2e",
            "addition": json.dumps(addition),
            "web_proxy": False,
            "webdav_policy": "native_proxy",
            "down_proxy_url": "",
            "order_by": "name",
            "order_direction": "asc",
            "extract_folder": "front",
            "disable_index": False,
            "enable_sign": False,
            **fields,
        }
        data = self._request("POST", "/api/admin/storage/create", storage)
        return int(data["id"])

    def list_settings(self, group: int | None = None) -> list[dict[str, Any]]:
        """`GET /api/admin/setting/list` (all groups, or one): full setting items."""
        query = "" if group is None else f"?group={group}"
        return list(self._request("GET", f"/api/admin/setting/list{query}") or [])

    def save_settings(self, values: Mapping[str, str]) -> None:
        """Change settings by key. `POST /api/admin/setting/save` wants FULL items (type, group,
        flag...): a bare `{key, value}` would reset the rest, e.g. make the S3 secret public. So the
        current items are fetched and sent back with only their values changed."""
        current = {item["key"]: item for item in self.list_settings()}
        unknown = sorted(set(values) - set(current))
        if unknown:
            raise OpenListError(f"no such OpenList settings: {unknown}")
        items = []
        for key, value in values.items():
            item = dict(current[key])
            item["value"] = value
            if key.startswith("s3_"):
                item["flag"] = 1  # PRIVATE: never in /api/public/settings
            items.append(item)
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
        self.save_settings(
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


def published_port(container: str, port: int, runner: DockerRunner = docker) -> int:
    """The 127.0.0.1 host port docker picked for `port/tcp` of `container`."""
    out = runner("port", container, f"{port}/tcp").stdout.split()
    for mapping in out:
        host, _, host_port = mapping.rpartition(":")
        if host in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 (reading docker's answer)
            return int(host_port)
    raise E2EError(f"{container} does not publish {port}/tcp on 127.0.0.1: {out}")


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
    """`docker run` OpenList as the program does: data dir bind-mounted, `S3_ENABLE=true S3_PORT=5246
    HTTP_PORT=80 TZ=...`, on `network`, web and S3 ports published on 127.0.0.1.

    The host ports are free ones picked here (or given) and published explicitly: with
    `-p 127.0.0.1::80` docker would pick new ones at every `docker restart`, and the
    S3 keys only apply after a restart. `owner_uid` chowns `data_dir` first (what the program's
    own_data_dir_command does); None leaves it as it is, to see the image refuse a dir it
    cannot write. `wait` waits for /ping.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if owner_uid is not None:
        os.chown(data_dir, owner_uid, owner_uid)
    web_port = web_port or free_port()
    s3_port = s3_port or free_port()
    runner(
        "run", "-d", "--name", name, "--network", network,
        "--label", f"{RESOURCE_LABEL}=1",
        "-e", f"TZ={timezone}", "-e", "S3_ENABLE=true",
        "-e", f"S3_PORT={OPENLIST_S3_PORT}", "-e", f"HTTP_PORT={OPENLIST_HTTP_PORT}",
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
    """An OpenList configured the way the README's "First deploy" does it, ready for Kopia."""

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


# ---------------------------------------------------------------- Kopia on this machine


@dataclass
class KopiaCli:
    """The host's Kopia binary with its own config file and secrets passed only through the environment.

    `KOPIA_PASSWORD`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are never on the command
    line (where `ps` would show them); logs and cache stay inside `config_dir`.
    """

    binary: Path
    config_dir: Path
    password: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "repository.config"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KOPIA_", "AWS_"))}
        env.update(
            KOPIA_PASSWORD=self.password,
            KOPIA_CHECK_FOR_UPDATES="false",
            KOPIA_LOG_DIR=str(self.config_dir / "logs"),
            KOPIA_CACHE_DIRECTORY=str(self.config_dir / "cache"),
        )
        if self.access_key_id is not None:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key is not None:
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        env.update(self.extra_env)
        return env

    def run(self, *args: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """`kopia --config-file=<dir>/repository.config <args>`."""
        return run(
            [self.binary, f"--config-file={self.config_file}", *args], env=self.env, check=check, timeout=timeout
        )

    def s3_args(self, s3: OpenListS3, prefix: str) -> list[str]:
        """`repository create|connect s3` flags for `s3` (keys come from the environment, not from here)."""
        return [
            f"--bucket={s3.bucket}",
            f"--prefix={prefix}",
            f"--endpoint={s3.endpoint}",
            "--disable-tls",
        ]
