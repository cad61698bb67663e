"""Benchmark: snapshot and restore throughput through the deployed Kopia container.

Deploys the e2e-vps test stack on local Docker (real Kopia 0.22.3, real OpenList
v4.2.5 with a Local storage standing in for 189 Cloud), then, through the
running container (`docker exec`):

1. first snapshot of a generated data set (>= 512 MiB, mixed sizes, 60% compressible text),
   against the baseline `tar | zstd -1 > /dev/null` over the same data in the same run (time and size);
2. second snapshot of the unchanged data: time and bytes written to the bucket;
3. restore of the first snapshot: throughput.

Writes benchmarks/results/latest.json and prints a table. Run as root:
    venv/bin/python -m benchmarks.snapshot_throughput [--size-mib 512]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed.system import BASE, BUCKET_ON_HOST, KOPIA, SOURCES, real_parts, say, stack_config, wait_for

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024


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


def timed(argv: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed: {result.stderr[-800:]}")
    return elapsed, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)

    with real_parts() as parts:
        system = parts.system()
        try:
            system.prepare_host()
            source = SOURCES["vps"]["/backup/data"]
            staging = BASE / "vps/bench-staging"
            say(f"generating a {args.size_mib} MiB data set")
            dataset_bytes, dataset_files = generate_dataset(staging, args.size_mib)

            say("baseline: tar | zstd -1 > /dev/null over the same data")
            baseline_s, baseline = timed(["sh", "-c", f"tar -cf - -C {staging} . | zstd -1 -q -T1 | wc -c"])
            baseline_bytes = int(baseline.stdout.strip())

            # Only the VPS stack: it owns the repository here, and hourly scheduling keeps the
            # scheduler out of the measured snapshots.
            policy = {**stack_config("e2e-vps")["homelab-backup:policy"], "intervalSeconds": 3600}
            repository = {**stack_config("e2e-vps")["homelab-backup:repository"], "maintenanceOwner": "shelken@vps"}
            say("deploying e2e-vps (OpenList + Kopia)")
            # No restore drill during the measurement (the e2e stack runs one every minute).
            kopia = {**stack_config("e2e-vps")["homelab-backup:kopia"], "drill": {"intervalSeconds": 86400}}
            overrides = {"policy": policy, "repository": repository, "kopia": kopia}
            system.up("vps", **{f"homelab-backup:{key}": value for key, value in overrides.items()})
            container = KOPIA["vps"]
            system.wait_healthy(container, timeout=300)
            exec_kopia = ["docker", "exec", container, "sh", "-c"]
            with_secrets = ". /app/deploy/secrets.env && exec kopia "

            def idle() -> bool:  # the server's own first (small) snapshot is done
                out = subprocess.run(
                    [*exec_kopia, with_secrets + "snapshot list --json /backup/data"],
                    env=system.deployments["vps"].docker_env,
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                return bool(out.strip()) and json.loads(out) != []

            wait_for("the scheduled first snapshot of the small tree", idle, 300, interval=5)
            dest = source / "bench"
            staging.rename(dest)  # same filesystem: instant, outside the measurement

            docker_env = system.deployments["vps"].docker_env
            results: dict[str, object] = {}
            for label in ("first", "second"):
                bucket_before = du_bytes(BUCKET_ON_HOST)
                say(f"{label} snapshot of /backup/data through {container}")
                elapsed, result = timed(
                    [*exec_kopia, with_secrets + "snapshot create /backup/data --json"], env=docker_env
                )
                manifest = json.loads(result.stdout)
                results[f"{label}_snapshot_s"] = round(elapsed, 2)
                results[f"{label}_snapshot_mib_per_s"] = round(dataset_bytes / MIB / elapsed, 1)
                results[f"{label}_snapshot_bucket_bytes_written"] = du_bytes(BUCKET_ON_HOST) - bucket_before
                results[f"{label}_snapshot_id"] = manifest["id"]

            say("restore of the first snapshot inside the container")
            restore_s, _ = timed(
                [
                    *exec_kopia,
                    with_secrets + f"snapshot restore {results['first_snapshot_id']}/bench /tmp/bench-restore "
                    "&& rm -rf /tmp/bench-restore",
                ],
                env=docker_env,
            )
        finally:
            say("tearing down")
            system.destroy()
            shutil.rmtree(BASE / "vps/bench-staging", ignore_errors=True)

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kopia": "0.22.3", "openlist": "v4.2.5"},
        "dataset": {"bytes": dataset_bytes, "files": dataset_files, "mix": "40% random bytes, 60% word text"},
        "baseline_tar_zstd1_s": round(baseline_s, 2),
        "baseline_tar_zstd1_mib_per_s": round(dataset_bytes / MIB / baseline_s, 1),
        "baseline_tar_zstd1_output_bytes": baseline_bytes,
        **{k: v for k, v in results.items() if not k.endswith("_id")},
        "first_snapshot_vs_baseline_time_ratio": round(float(results["first_snapshot_s"]) / baseline_s, 2),
        "restore_s": round(restore_s, 2),
        "restore_mib_per_s": round(dataset_bytes / MIB / restore_s, 1),
    }
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        ("data set", f"{dataset_bytes / MIB:.0f} MiB in {dataset_files} files", ""),
        (
            "tar | zstd -1 (baseline)",
            f"{report['baseline_tar_zstd1_s']} s",
            f"{report['baseline_tar_zstd1_mib_per_s']} MiB/s",
        ),
        ("first snapshot", f"{report['first_snapshot_s']} s", f"{report['first_snapshot_mib_per_s']} MiB/s"),
        ("  vs baseline (time ratio)", f"{report['first_snapshot_vs_baseline_time_ratio']}x", ""),
        (
            "  bytes written to bucket",
            f"{int(report['first_snapshot_bucket_bytes_written']) / MIB:.1f} MiB",
            f"zstd -1: {baseline_bytes / MIB:.1f} MiB",
        ),
        ("second snapshot (unchanged)", f"{report['second_snapshot_s']} s", ""),
        ("  bytes written to bucket", f"{int(report['second_snapshot_bucket_bytes_written']) / 1024:.1f} KiB", ""),
        ("restore", f"{report['restore_s']} s", f"{report['restore_mib_per_s']} MiB/s"),
    ]
    for name, value, rate in rows:
        print(f"{name:<30} {value:>22} {rate:>14}")
    print(f"\nwritten to {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
