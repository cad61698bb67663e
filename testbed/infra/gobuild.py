"""Upstream binaries (Kopia, OpenList, the Pulumi CLI, MinIO, mc) built from the Go module proxy, cached by version."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.infra.cache import cache_lock
from testbed.infra.gate import E2EError, go_executable, is_static_elf, require_or_skip
from testbed.infra.pins import IMAGES_DIR, KOPIA_VERSION, NAME_PREFIX, OPENLIST_VERSION
from testbed.infra.process import progress, run, tail_file, timed

# ---------------------------------------------------------------- Go builds, cached by version


#: Bump when `build_go_binary` changes how binaries are made, so cached ones are rebuilt.
BUILD_RECIPE = 2


@dataclass(frozen=True)
class GoBuild:
    """How one upstream binary is built from a wrapper module in `testbed/images/<name>`."""

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
    # GOTOOLCHAIN=local: the Go chosen is new enough (gotoolchain.find_go); switching would need sum.golang.org.
    env.update(CGO_ENABLED="0", GOFLAGS="-buildvcs=false", GOWORK="off", GOTOOLCHAIN="local")
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


def run_long(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, what: str) -> None:
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
        run_long(cmd, cwd=work, env=env, log_path=log_path, what=f"go build {spec.name} {spec.version}")
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


def _wrapper_version(name: str, module: str) -> str:
    """The version of `module` that the wrapper module `testbed/images/<name>` requires (its go.mod pins it)."""
    for line in (IMAGES_DIR / name / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == [module] or words[:2] == ["require", module]:
            return words[-1]
    raise E2EError(f"testbed/images/{name}/go.mod does not require {module}")


#: MinIO and its client for the MinIO dump's test (issue 19). Neither has a semver release in the module proxy
#: (upstream tags are RELEASE.<date>), so the wrappers pin pseudo-versions: the newest commits the proxy serves.
#: Both are AGPL programs, built and run as separate containers, never linked into anything of this project.
MINIO_BUILD = GoBuild(
    name="minio",
    version=_wrapper_version("minio", "github.com/minio/minio"),
    module="github.com/minio/minio",
    package=".",
    ldflags=("-s -w", "-X github.com/minio/minio/cmd.CommitID=@COMMIT@"),  # as buildscripts/gen-ldflags.go, in part
)

MC_BUILD = GoBuild(
    name="mc",
    version=_wrapper_version("mc", "github.com/minio/mc"),
    module="github.com/minio/mc",
    package=".",
    ldflags=("-s -w", "-X github.com/minio/mc/cmd.CommitID=@COMMIT@"),
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
