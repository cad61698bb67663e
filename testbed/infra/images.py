"""The images the program pins, built locally (no registry is reachable)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.infra.cache import cache_lock
from testbed.infra.gate import E2EError, busybox_path, require_or_skip
from testbed.infra.gobuild import MC_BUILD, MINIO_BUILD, ensure_go_binary, run_long
from testbed.infra.pins import (
    IMAGES_DIR,
    KOPIA_IMAGE,
    KOPIA_VERSION,
    NAME_PREFIX,
    OPENLIST_IMAGE,
    OPENLIST_VERSION,
    VERSION_LABEL,
)
from testbed.infra.process import docker, progress, run, timed

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


#: A database image for the live-data tests (issue 19): Debian's own PostgreSQL, and sqlite3, on the same
#: debootstrap root. Its server and client binaries come first on PATH (Debian's pg_wrapper is a Perl script
#: that picks a cluster; there is none in the image).
POSTGRES_PACKAGES = (*DEBIAN_PACKAGES, "postgresql", "sqlite3")
POSTGRES_MAJOR = "15"  # bookworm's
POSTGRES_BIN = f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin"


def ensure_postgres_image(cache: Path) -> str:
    """`hle2e-postgres:<suite>-<digest>`: Debian's `postgresql` and `sqlite3` in a debootstrap root, built as the
    Kopia image's base is."""
    return ensure_debian_base(cache, POSTGRES_PACKAGES, name="postgres", path_first=POSTGRES_BIN)


def ensure_debian_base(
    cache: Path, packages: tuple[str, ...] = DEBIAN_PACKAGES, name: str = "debian-base", path_first: str = ""
) -> str:
    """A local image `hle2e-<name>:<suite>-<digest>` made by debootstrap (minbase, with `packages`) and `docker
    import`; `path_first` goes before the usual PATH."""
    recipe_parts: list[object] = [DEBIAN_SUITE, packages, "minbase"]
    if path_first:
        recipe_parts.append(path_first)
    recipe = hashlib.sha256(json.dumps(recipe_parts).encode()).hexdigest()[:12]
    tag = f"{NAME_PREFIX}{name}:{DEBIAN_SUITE}-{recipe}"
    started = time.monotonic()
    with cache_lock(cache, name):
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
            log_path = cache / "logs" / f"debootstrap-{name}.log"
            include = f"--include={','.join(packages)}"
            command = [debootstrap, "--variant=minbase", include, DEBIAN_SUITE, str(root), mirror]
            run_long(command, cwd=Path(tmp), env=os.environ, log_path=log_path, what="debootstrap")
            for cached in (root / "var/cache/apt/archives").glob("*.deb"):
                cached.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            usual = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            path = f"{path_first}:{usual}" if path_first else usual
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


@dataclass(frozen=True)
class MinioImages:
    """A MinIO server image and a MinIO client (mc) image, built locally from binaries built from the proxy."""

    minio: str
    mc: str
    mc_binary: Path


def ensure_minio_images(cache: Path) -> MinioImages:
    """`hle2e-minio:<version>` and `hle2e-mc:<version>` on the Kopia image's Debian root; the binaries are built
    (minutes, once per version) and cached like Kopia's."""
    base = ensure_debian_base(cache)
    built = {}
    for spec in (MINIO_BUILD, MC_BUILD):
        binary = ensure_go_binary(spec, cache)
        tag = f"{NAME_PREFIX}{spec.name}:{spec.version}"
        built[spec.name] = (
            ensure_image(tag, IMAGES_DIR / spec.name, binary, spec.name, spec.version, cache, base),
            binary,
        )
    return MinioImages(minio=built["minio"][0], mc=built["mc"][0], mc_binary=built["mc"][1])
