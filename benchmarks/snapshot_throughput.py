"""Benchmark: where a first snapshot's time goes, how costs grow with the repository, and a 20 TB model.

Deploys the e2e-vps test stack on local Docker (real Kopia 0.22.3, real OpenList v4.2.5 with a Local
storage standing in for 189 Cloud) and, in ONE run, over ONE generated data set (>= 512 MiB, files from
4 KiB to 16 MiB, 40% random bytes, 60% text):

1. the floor `tar | zstd -1 -T1 > /dev/null`;
2. Kopia in the deployed container to a filesystem repository (Kopia's own cost), per variant
   (compression, upload parallelism, hash);
3. Kopia in the deployed container through the deployed OpenList S3 gateway, a fresh repository (prefix)
   per variant: the program's former settings (the baseline) first, then each change;
4. the deployed repository itself, with the settings the program applies now: first snapshot, unchanged
   second snapshot (time, bytes written) and restore (the figures this benchmark always kept);
5. growth: a repository whose folder is filled with generated pack blobs (--blob-counts), measuring the
   S3 listing of the whole prefix and of a one-character sub-prefix, `kopia repository connect`, a
   snapshot of unchanged data and a full maintenance run at each count; then a fit and the 20 TB model.

Every timed step records wall time, throughput, CPU user+system of the containers involved (cgroup
cpuacct) and of local child processes, and how busy each core was (/proc/stat), and bytes stored per
source byte. Writes benchmarks/results/latest.json and benchmarks/results/growth.png and prints tables.
Takes the machine-wide run lock (it waits, with progress, while another run holds it). Run as root:
    venv/bin/python -m benchmarks.snapshot_throughput [--size-mib 512] [--blob-counts 1000,5000,20000,50000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import model
from components import config as program_config
from components import render
from testbed import infra
from testbed.s3 import S3Client
from testbed.system import (
    BASE,
    BUCKET_ON_HOST,
    KOPIA,
    KOPIA_DATA_DIR,
    OPENLIST,
    SOURCES,
    WITH_SECRETS,
    real_parts,
    say,
    stack_config,
    wait_for,
)

RESULTS = Path(__file__).resolve().parent / "results"
RAW_REPORT = Path("/var/tmp/homelab-backup-benchmark-raw.json")
MIB = model.MIB
HZ = os.sysconf("SC_CLK_TCK")
DRIVE_BYTES = 20 * model.TB
OPENLIST_UID = infra.OPENLIST_UID

#: The program's settings before issue 10 (Kopia's defaults): the baseline every variant is compared with.
BEFORE = {"compression": "zstd-fastest", "parallel": 0, "pack_mib": 20}


@dataclass(frozen=True)
class Variant:
    name: str
    repository: str  # "fs" or "s3"
    compression: str
    parallel: int = 0  # 0: Kopia's default (one file read per CPU)
    pack_mib: int = 20
    create_flags: tuple[str, ...] = ()

    def describe(self) -> str:
        parallel = f"parallel {self.parallel}" if self.parallel else "parallel default (2 = CPUs)"
        extra = f", {' '.join(self.create_flags)}" if self.create_flags else ""
        return f"{self.compression}, {parallel}, pack {self.pack_mib} MiB{extra}"


def chosen_settings() -> dict:
    """What the program applies to the e2e-vps stack: its policy's compression and upload parallelism, and the
    repository's pack size (the models' defaults unless the stack sets them)."""
    config = stack_config("e2e-vps")
    policy, repository = config["homelab-backup:policy"], config["homelab-backup:repository"]
    return {
        "compression": str(policy["compression"]),
        "parallel": int(policy.get("parallelFileReads", program_config.DEFAULT_PARALLEL_FILE_READS)),
        "pack_mib": int(repository.get("packSizeMB", program_config.DEFAULT_PACK_SIZE_MB)),
    }


def variants() -> list[Variant]:
    chosen = chosen_settings()
    return [
        Variant("fs zstd-fastest", "fs", "zstd-fastest"),
        Variant("fs s2-default", "fs", "s2-default"),
        Variant("fs none", "fs", "none"),
        Variant("fs zstd-fastest p8", "fs", "zstd-fastest", 8),
        Variant("fs s2-default p8", "fs", "s2-default", 8),
        Variant("s3 before (zstd-fastest)", "s3", BEFORE["compression"]),
        Variant("s3 zstd-fastest p4", "s3", "zstd-fastest", 4),
        Variant("s3 zstd-fastest p8", "s3", "zstd-fastest", 8),
        Variant("s3 s2-default", "s3", "s2-default"),
        Variant("s3 s2-default p8", "s3", "s2-default", 8),
        Variant("s3 s2-better p8", "s3", "s2-better", 8),
        Variant("s3 zstd-fastest p8 pack64", "s3", "zstd-fastest", 8, 64),
        Variant("s3 zstd-fastest p8 blake3", "s3", "zstd-fastest", 8, 20, ("--block-hash=BLAKE3-256-128",)),
        Variant(
            "s3 chosen",
            "s3",
            chosen["compression"],
            chosen["parallel"],
            chosen["pack_mib"],
        ),
    ]


# ---------------------------------------------------------------- data


def _word_corpus(rng: random.Random, size: int) -> bytes:
    """Text-like bytes: random words from a fixed vocabulary (LZ matches, like logs or source code)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4096)]
    words = rng.choices(vocabulary, k=size // 5)
    return (" ".join(words) + "\n").encode()[:size]


def generate_dataset(root: Path, size_mib: int, seed: int = 20261126) -> tuple[int, int]:
    """40% random bytes, 60% word text; files from 4 KiB to 16 MiB. Every 4 KiB of text carries a
    unique stamp, so no two chunks are equal and Kopia cannot shortcut by deduplication.
    Returns (bytes, files)."""
    rng = random.Random(seed)
    corpus = _word_corpus(rng, 8 * MIB)
    target = size_mib * MIB
    written = files = 0
    reported = 0
    for kind, share in (("random", 0.40), ("text", 0.60)):
        budget = int(target * share)
        while budget > 0:
            size = min(budget, rng.choice([4 * 1024, 32 * 1024, 256 * 1024, 1 * MIB, 4 * MIB, 16 * MIB]))
            path = root / kind / f"d{files % 17:02d}" / f"f{files:05d}.{kind}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "random":
                data = os.urandom(size)
            else:
                start = rng.randrange(len(corpus))
                text = bytearray((corpus[start:] + corpus) * (size // len(corpus) + 1))[:size]
                for offset in range(0, size - 24, 4096):
                    text[offset : offset + 24] = f"<{files:06d}:{offset:015d}>".encode()
                data = bytes(text)
            path.write_bytes(data)
            budget -= size
            written += size
            files += 1
            if written - reported >= 64 * MIB:
                reported = written
                say(f"generated {written / MIB:.0f}/{size_mib} MiB")
    return written, files


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def blob_sizes(folder: Path, prefix: str) -> list[int]:
    """Sizes of the blobs whose names start with `prefix` directly in an S3 repository's folder."""
    if not folder.exists():
        return []
    return [p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name.startswith(prefix)]


# ---------------------------------------------------------------- measuring


def container_cpuacct(container: str) -> Path | None:
    """The container's cgroup v1 cpuacct.stat, found from its init process (None if not readable here)."""
    pid = infra.docker("inspect", "--format", "{{.State.Pid}}", container, check=False).stdout.strip()
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpuacct" in controllers.split(","):
                stat = Path("/sys/fs/cgroup/cpuacct") / path.lstrip("/") / "cpuacct.stat"
                return stat if stat.exists() else None
    except (OSError, ValueError):
        return None
    return None


class Meter:
    """Wall time, CPU user+system of the given containers and of local child processes, per-core busy."""

    def __init__(self, containers: dict[str, Path | None]) -> None:
        self.containers = containers

    def _read(self) -> tuple[float, dict, dict, tuple[float, float]]:
        stats = {}
        for name, path in self.containers.items():
            stats[name] = model.parse_cpuacct_stat(path.read_text(), HZ) if path else None
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (
            time.monotonic(),
            model.parse_proc_stat(Path("/proc/stat").read_text()),
            stats,
            (children.ru_utime, children.ru_stime),
        )

    def run(self, argv: list[str], source_bytes: int, **kwargs) -> tuple[dict, subprocess.CompletedProcess]:
        t0, cores0, cg0, ch0 = self._read()
        result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
        t1, cores1, cg1, ch1 = self._read()
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:6])}... failed: {result.stderr[-800:]}")
        wall = t1 - t0
        busy = model.core_busy(cores0, cores1)
        cpu = {"local processes": {"user_s": round(ch1[0] - ch0[0], 2), "system_s": round(ch1[1] - ch0[1], 2)}}
        for name in self.containers:
            if cg0.get(name) and cg1.get(name):
                cpu[name] = {
                    "user_s": round(cg1[name][0] - cg0[name][0], 2),
                    "system_s": round(cg1[name][1] - cg0[name][1], 2),
                }
        total = sum(v["user_s"] + v["system_s"] for v in cpu.values())
        return {
            "wall_s": round(wall, 2),
            "mib_per_s": round(source_bytes / MIB / wall, 1) if source_bytes else None,
            "cpu": cpu,
            "cpu_total_s": round(total, 2),
            "cores_busy": busy,
            "cores_busy_sum": round(sum(busy.values()), 2),
        }, result


# ---------------------------------------------------------------- Kopia in the deployed container


@dataclass
class ContainerKopia:
    """`kopia` in the deployed Kopia container with its own config file (not the server's connection)."""

    container: str
    access_key_id: str
    secret_access_key: str

    def argv(self, config: str, script: str) -> list[str]:
        return [
            "docker", "exec",
            "-e", f"AWS_ACCESS_KEY_ID={self.access_key_id}", "-e", f"AWS_SECRET_ACCESS_KEY={self.secret_access_key}",
            self.container, "sh", "-c",
            WITH_SECRETS + f"export KOPIA_CONFIG_PATH={config} KOPIA_LOG_DIR=/tmp/bench-logs "
            f"KOPIA_CACHE_DIRECTORY={config}-cache && {script}",  # never the server's /app/cache
        ]  # fmt: skip

    def sh(self, config: str, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(config, script), capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{script[:120]}... failed: {result.stderr[-800:]}")
        return result


def s3_location(prefix: str) -> str:
    return f"s3 --bucket=kopia --prefix={prefix} --endpoint={OPENLIST}:{infra.OPENLIST_S3_PORT} --disable-tls"


def run_variant(kopia: ContainerKopia, meter: Meter, variant: Variant, index: int, source_bytes: int) -> dict:
    tag = f"v{index:02d}"
    config = f"/tmp/bench/{tag}.config"
    cache = f"--cache-directory=/tmp/bench/{tag}-cache"
    if variant.repository == "fs":  # in the restore dir: a bind mount of the host's disk, like OpenList's
        location = f"filesystem --path={render.RESTORE_DIR}/{tag}-repo"
        folder = None
    else:
        location = s3_location(f"{tag}/")
        folder = BUCKET_ON_HOST / tag
    setup = [f"mkdir -p /tmp/bench && kopia repository create {location} {cache} {' '.join(variant.create_flags)}"]
    if variant.pack_mib != 20:
        setup.append(f"kopia repository set-parameters --max-pack-size-mb={variant.pack_mib}")
    setup.append(f"kopia policy set --global --compression={variant.compression}")
    kopia.sh(config, " && ".join(setup))
    parallel = f" --parallel={variant.parallel}" if variant.parallel else ""
    measured, _ = meter.run(kopia.argv(config, f"kopia snapshot create /backup/data/bench{parallel}"), source_bytes)
    if folder is None:
        stored = du_bytes(KOPIA_DATA_DIR["vps"] / "restore" / f"{tag}-repo")
        packs: list[int] = []
    else:
        stored = du_bytes(folder)
        packs = blob_sizes(folder, "p")
    measured.update(
        name=variant.name,
        settings=variant.describe(),
        stored_bytes=stored,
        stored_per_source_byte=round(stored / source_bytes, 3),
        pack_blobs=len(packs),
    )
    if variant.name == "s3 before (zstd-fastest)":  # the repository's shape, for the 20 TB model
        stats = kopia.sh(config, "kopia content stats").stdout
        count = int(re.search(r"Count: (\d+)", stats).group(1))  # type: ignore[union-attr]
        assert folder is not None
        measured["shape"] = {
            "contents": count,
            "pack_blobs": len(packs),
            "pack_bytes": sum(packs),
            "index_blobs": len(blob_sizes(folder, "x")),
            "index_bytes": sum(blob_sizes(folder, "x")),
            "metadata_bytes": sum(blob_sizes(folder, "q")),
        }
    kopia.sh(config, f"kopia repository disconnect; rm -rf {render.RESTORE_DIR}/{tag}-repo /tmp/bench/{tag}-cache")
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return measured


# ---------------------------------------------------------------- growth


def s3_list_all(client: S3Client, prefix: str) -> tuple[int, int]:
    """ListObjectsV2 of a prefix, every page, as Kopia's S3 client does: (keys, pages)."""
    pages = [len(page) for page in client.list_pages("kopia", prefix)]
    return sum(pages), len(pages)


def add_fake_packs(folder: Path, target: int, rng: random.Random) -> int:
    """Generated pack blobs (p + 32 hex, 64 bytes, modified now) until the folder holds `target` blobs.
    Unreferenced and younger than Kopia's minimum delete age, so maintenance lists them and keeps them."""
    present = sum(1 for _ in folder.iterdir())
    for _ in range(max(target - present, 0)):
        path = folder / f"p{rng.getrandbits(128):032x}"
        path.write_bytes(os.urandom(64))
        os.chown(path, OPENLIST_UID, OPENLIST_UID)
    return sum(1 for _ in folder.iterdir())


def measure_growth(kopia: ContainerKopia, meter: Meter, s3: S3Client, counts: list[int]) -> list[dict]:
    prefix = "growth/"
    folder = BUCKET_ON_HOST / "growth"
    config = "/tmp/bench/growth.config"
    kopia.sh(
        config,
        f"mkdir -p /tmp/bench && kopia repository create {s3_location(prefix)} --cache-directory=/tmp/bench/gc "
        "&& kopia snapshot create /backup/data/dir0 /backup/data/dir1",
        timeout=300,
    )
    rng = random.Random(10)
    points = []
    for count in counts:
        blobs = add_fake_packs(folder, count, rng)
        say(f"growth: {blobs} blobs in the folder")
        point: dict[str, object] = {"blobs": blobs}
        started = time.monotonic()
        keys, pages = s3_list_all(s3, prefix)
        point["list_prefix_s"] = round(time.monotonic() - started, 2)
        point["list_prefix_keys"], point["list_prefix_pages"] = keys, pages
        started = time.monotonic()
        keys, pages = s3_list_all(s3, prefix + "x")
        point["list_subprefix_s"] = round(time.monotonic() - started, 2)
        point["list_subprefix_keys"], point["list_subprefix_pages"] = keys, pages
        fresh = f"/tmp/bench/connect-{count}.config"
        steps = {
            "connect_s": (fresh, f"kopia repository connect {s3_location(prefix)}"),
            "unchanged_snapshot_s": (config, "kopia snapshot create /backup/data/dir0 /backup/data/dir1"),
            "full_maintenance_s": (config, "kopia maintenance run --full"),
        }
        for key, (step_config, script) in steps.items():
            try:
                measured, _ = meter.run(kopia.argv(step_config, script), 0)
                point[key] = measured["wall_s"]
                point[key.replace("_s", "_cpu")] = measured["cpu"]
            except RuntimeError as error:  # recorded, not fatal: the other points still count
                point[key] = None
                point[key.replace("_s", "_error")] = str(error)[-400:]
        kopia.sh(fresh, "kopia repository disconnect || true")
        say(
            f"growth {blobs}: list {point['list_prefix_s']} s ({point['list_prefix_pages']} pages), "
            f"list x {point['list_subprefix_s']} s, connect {point['connect_s']} s, "
            f"unchanged snapshot {point['unchanged_snapshot_s']} s, full maintenance {point['full_maintenance_s']} s"
        )
        points.append(point)
    return points


GROWTH_SERIES = {
    "list_prefix_s": "S3 LIST WHOLE PREFIX",
    "list_subprefix_s": "S3 LIST ONE-CHAR SUB-PREFIX",
    "connect_s": "KOPIA REPOSITORY CONNECT",
    "unchanged_snapshot_s": "SNAPSHOT OF UNCHANGED DATA",
    "full_maintenance_s": "FULL MAINTENANCE",
}


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--blob-counts", default="1000,5000,20000,50000")
    parser.add_argument("--finish-from", type=Path, help="redo the fits, model, plot and tables from a raw report")
    args = parser.parse_args()
    if args.finish_from:
        finish(json.loads(args.finish_from.read_text()))
        return 0
    counts = sorted(int(c) for c in args.blob_counts.split(","))
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, object] = {}

    # The run lock first, then the Docker engine: a run that started dockerd stops it when it ends, so an
    # engine found running while another run still holds the lock would vanish under this one.
    with infra.exclusive_run(f"benchmark, e2e stacks under {BASE}"), real_parts() as parts:
        system = parts.system()
        system._locked = True  # held above, around the engine too
        try:
            system.prepare_host()
            system.start_receivers()
            source = SOURCES["vps"]["/backup/data"]
            staging = BASE / "vps/bench-staging"
            say(f"generating a {args.size_mib} MiB data set")
            dataset_bytes, dataset_files = generate_dataset(staging, args.size_mib)
            report["dataset"] = {
                "bytes": dataset_bytes,
                "files": dataset_files,
                "mix": "40% random bytes, 60% word text",
            }

            say("floor: tar | zstd -1 -T1 > /dev/null over the same data")
            floor_meter = Meter({})
            floor, result = floor_meter.run(
                ["sh", "-c", f"tar -cf - -C {staging} . | zstd -1 -q -T1 | wc -c"], dataset_bytes
            )
            floor["output_bytes"] = int(result.stdout.strip())
            floor["output_per_source_byte"] = round(floor["output_bytes"] / dataset_bytes, 3)
            report["floor_tar_zstd1"] = floor
            say(f"floor: {floor['wall_s']} s, {floor['mib_per_s']} MiB/s")

            # Only the VPS stack: it owns the repository here, and hourly scheduling keeps the
            # scheduler out of the measured snapshots; no restore drill during the measurement.
            schedule = {"intervalSeconds": 3600}
            repository = {**stack_config("e2e-vps")["homelab-backup:repository"], "maintenanceOwner": "shelken@vps"}
            kopia_config = {**stack_config("e2e-vps")["homelab-backup:kopia"], "drill": {"intervalSeconds": 86400}}
            overrides = {"schedule": schedule, "repository": repository, "kopia": kopia_config}
            say("deploying e2e-vps (OpenList + Kopia)")
            system.up("vps", **{f"homelab-backup:{key}": value for key, value in overrides.items()})
            container = KOPIA["vps"]
            system.wait_healthy(container, timeout=300)
            exec_kopia = ["docker", "exec", container, "sh", "-c"]

            def idle() -> bool:  # the server's own first (small) snapshot is done
                out = subprocess.run(
                    [*exec_kopia, WITH_SECRETS + "kopia snapshot list --json /backup/data"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                return bool(out.strip()) and json.loads(out) != []

            wait_for("the scheduled first snapshot of the small tree", idle, 300, interval=5)
            staging.rename(source / "bench")  # same filesystem: instant, outside the measurement

            cgroups = {container: container_cpuacct(container), OPENLIST: container_cpuacct(OPENLIST)}
            if not all(cgroups.values()):
                say("container cgroups not readable here: CPU shows local processes and /proc/stat only")
            meter = Meter(cgroups)
            kopia = ContainerKopia(container, system.secrets["s3AccessKeyId"], system.secrets["s3SecretAccessKey"])

            runs = []
            all_variants = variants()
            for i, variant in enumerate(all_variants):
                say(f"[{i + 1}/{len(all_variants)}] first snapshot, {variant.name}: {variant.describe()}")
                measured = run_variant(kopia, meter, variant, i, dataset_bytes)
                measured["vs_floor_throughput"] = round(measured["mib_per_s"] / floor["mib_per_s"], 2)
                say(
                    f"    {measured['wall_s']} s, {measured['mib_per_s']} MiB/s "
                    f"({measured['vs_floor_throughput']}x the floor), stored {measured['stored_per_source_byte']} "
                    f"B/B, CPU {measured['cpu_total_s']} s, cores busy {measured['cores_busy_sum']}"
                )
                runs.append(measured)
            report["first_snapshot_variants"] = runs

            say("the deployed repository (the program's settings): first, unchanged second, restore")
            deployed: dict[str, object] = {}
            for label in ("first", "second"):
                bucket_before = du_bytes(BUCKET_ON_HOST / "main")
                measured, result = meter.run(
                    [*exec_kopia, WITH_SECRETS + "kopia snapshot create /backup/data --json"], dataset_bytes
                )
                measured["bucket_bytes_written"] = du_bytes(BUCKET_ON_HOST / "main") - bucket_before
                measured["snapshot_id"] = json.loads(result.stdout)["id"]
                deployed[label] = measured
                say(f"    {label}: {measured['wall_s']} s, {measured['bucket_bytes_written']} bytes written")
            restore, _ = meter.run(
                [
                    *exec_kopia,
                    WITH_SECRETS + f"kopia snapshot restore {deployed['first']['snapshot_id']}/bench "  # type: ignore[index]
                    "/tmp/bench-restore && rm -rf /tmp/bench-restore",
                ],
                dataset_bytes,
            )
            deployed["restore"] = restore
            report["deployed"] = deployed

            say(f"growth with the number of blobs in the repository folder: {counts}")
            report["growth"] = measure_growth(kopia, meter, system.s3(), counts)
        finally:
            say("tearing down")
            system.destroy()
            shutil.rmtree(BASE / "vps/bench-staging", ignore_errors=True)

    RAW_REPORT.write_text(json.dumps(report, indent=2) + "\n")  # what --finish-from reads
    finish(report)
    return 0


def finish(report: dict) -> None:
    """Fits, the 20 TB model, the plot, the JSON and the tables."""
    floor = report["floor_tar_zstd1"]
    runs = {r["name"]: r for r in report["first_snapshot_variants"]}
    before, chosen = runs["s3 before (zstd-fastest)"], runs["s3 chosen"]
    deployed = report["deployed"]
    growth = report["growth"]
    measured = {k: [(p["blobs"], p[k]) for p in growth if p.get(k) is not None] for k in GROWTH_SERIES}
    fits = {k: model.fit_growth([n for n, _ in pts], [t for _, t in pts]) for k, pts in measured.items() if pts}
    shape_raw = before["shape"]
    source = report["dataset"]["bytes"]
    shape = model.RepositoryShape(
        stored_per_source_byte=chosen["stored_per_source_byte"],
        pack_fill=min(shape_raw["pack_bytes"] / shape_raw["pack_blobs"] / (BEFORE["pack_mib"] * MIB), 1.0),
        contents_per_source_gib=shape_raw["contents"] / (source / 1024**3),
        index_bytes_per_content=shape_raw["index_bytes"] / shape_raw["contents"],
        metadata_per_source_byte=shape_raw["metadata_bytes"] / source,
    )
    chosen_pack = chosen_settings()["pack_mib"]
    models = {
        f"pack {mib} MiB": model.model_drive(shape, DRIVE_BYTES, mib, fits) for mib in sorted({20, chosen_pack, 120})
    }
    markers = {f"20TB {m['pack_mib']}M": m["pack_blobs"] for m in models.values()}
    series = {GROWTH_SERIES[k]: ([n for n, _ in measured[k]], [t for _, t in measured[k]], fits[k]) for k in fits}
    png = model.plot_growth(series, markers, "OPENLIST + KOPIA: COST VS BLOBS IN THE FOLDER")
    (RESULTS / "growth.png").write_bytes(png)

    first = deployed["first"]
    full = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
            "kopia": "0.22.3",
            "openlist": "v4.2.5",
            "storage": "OpenList Local storage on this machine's disk (standing in for 189 Cloud)",
        },
        **report,
        # The figures this benchmark always kept, under their old names.
        "baseline_tar_zstd1_s": floor["wall_s"],
        "baseline_tar_zstd1_mib_per_s": floor["mib_per_s"],
        "baseline_tar_zstd1_output_bytes": floor["output_bytes"],
        "first_snapshot_s": first["wall_s"],
        "first_snapshot_mib_per_s": first["mib_per_s"],
        "first_snapshot_bucket_bytes_written": first["bucket_bytes_written"],
        "second_snapshot_s": deployed["second"]["wall_s"],
        "second_snapshot_bucket_bytes_written": deployed["second"]["bucket_bytes_written"],
        "first_snapshot_vs_baseline_time_ratio": round(first["wall_s"] / floor["wall_s"], 2),
        "restore_s": deployed["restore"]["wall_s"],
        "restore_mib_per_s": deployed["restore"]["mib_per_s"],
        "before_vs_floor_throughput": before["vs_floor_throughput"],
        "chosen_vs_floor_throughput": chosen["vs_floor_throughput"],
        "deployed_vs_floor_throughput": round(first["mib_per_s"] / floor["mib_per_s"], 2),
        "growth_fits": {k: fit.as_dict() | {"formula": fit.describe()} for k, fit in fits.items()},
        "model_20tb": {"shape": shape.__dict__, **models},
    }
    for run in full["first_snapshot_variants"]:
        run.pop("snapshot_id", None)
    for label in ("first", "second"):
        deployed[label].pop("snapshot_id", None)
    (RESULTS / "latest.json").write_text(json.dumps(full, indent=2) + "\n")

    print(f"\n{'first snapshot of ' + str(round(source / MIB)) + ' MiB':<34} {'s':>7} {'MiB/s':>7} "
          f"{'x floor':>7} {'B/B':>6} {'CPU s':>6} {'cores':>6}")  # fmt: skip
    rows = [
        (
            "tar | zstd -1 -T1 (floor)",
            floor | {"vs_floor_throughput": 1.0, "stored_per_source_byte": floor["output_per_source_byte"]},
        )
    ]
    rows += [(r["name"], r) for r in full["first_snapshot_variants"]]
    rows += [("deployed (program's settings)", first | {
        "vs_floor_throughput": full["deployed_vs_floor_throughput"],
        "stored_per_source_byte": round(first["bucket_bytes_written"] / source, 3)})]  # fmt: skip
    for name, r in rows:
        print(
            f"{name:<34} {r['wall_s']:>7} {r['mib_per_s']:>7} {r['vs_floor_throughput']:>7} "
            f"{r['stored_per_source_byte']:>6} {r['cpu_total_s']:>6} {r['cores_busy_sum']:>6}"
        )
    print(f"\nunchanged second snapshot: {deployed['second']['wall_s']} s, "
          f"{deployed['second']['bucket_bytes_written']} bytes written; "
          f"restore {deployed['restore']['wall_s']} s ({deployed['restore']['mib_per_s']} MiB/s)")  # fmt: skip
    print(f"\n{'blobs':>7} " + " ".join(f"{k[:-2]:>20}" for k in GROWTH_SERIES))
    for p in growth:
        print(f"{p['blobs']:>7} " + " ".join(f"{p.get(k)!s:>20}" for k in GROWTH_SERIES))
    for k, fit in fits.items():
        print(f"  {k[:-2]}: {fit.describe()}")
    for name, m in models.items():
        print(f"20 TB, {name}: {m['pack_blobs']} pack blobs, index {m['index_bytes'] / MIB:.0f} MiB, {m['seconds']}")
    print(f"\nwritten to {RESULTS / 'latest.json'} and {RESULTS / 'growth.png'}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
