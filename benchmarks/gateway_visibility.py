"""Benchmark: how long an object written through one OpenList gateway takes to show in the other's listing.

Deploys both test stacks with two gateways in front of one drive that caches listings like 189 Cloud's
(testbed/gateways.py: OpenList's SFTP driver on this machine's sshd; the VPS's gateway deployed by the
program, the cluster's started here and configured by sakamoto's stack). For each `cacheExpirationMinutes`
(set on both gateways by `pulumi up`) it measures the worst case in both directions at once: the reader's
listing cached just before the write, then polled every second until it shows the object.

The baseline, measured in the same run, is a cache of 0 minutes (nothing cached). Writes
benchmarks/results/gateway_visibility.json and prints a table. Takes the machine-wide run lock. With the
committed 30 minutes a run takes about 35 minutes. Run as root:
    venv/bin/python -m benchmarks.gateway_visibility [--cache-minutes 0,1,30]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from testbed.gateways import TwoGateways, Visibility, measure_visibility
from testbed.system import real_parts, say

RESULTS = Path(__file__).resolve().parent / "results" / "gateway_visibility.json"
SLACK_SECONDS = 60  # a measurement gives up this long after the cache should have expired


def measure_both_ways(gateways: TwoGateways, minutes: int) -> list[Visibility]:
    vps, cluster = ("vps", gateways.vps_s3()), ("cluster", gateways.cluster_s3())
    timeout = minutes * 60 + SLACK_SECONDS
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(measure_visibility, w, r, minutes, timeout) for w, r in ((vps, cluster), (cluster, vps))]
        return [run.result() for run in runs]


def worst(measured: list[Visibility]) -> float | None:
    """The longest delay, or None when an object was never listed within the timeout."""
    seconds = [v.seconds for v in measured]
    return None if None in seconds else max(s for s in seconds if s is not None)


def summary(minutes: int, measured: list[Visibility], baseline: float | None) -> dict:
    """One cache setting's measurements, its worst delay, and that delay against the baseline's."""
    longest = worst(measured)
    return {
        "cache_minutes": minutes,
        "measurements": [asdict(v) for v in measured],
        "worst_seconds": longest,
        "worst_minus_baseline_seconds": None if longest is None or baseline is None else round(longest - baseline, 1),
        "within_cache_expiration": all(
            v.seconds is not None and v.seconds <= minutes * 60 + SLACK_SECONDS for v in measured
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-minutes", default="0,1,30", help="comma-separated; the first is the baseline")
    args = parser.parse_args()
    settings = [int(m) for m in args.cache_minutes.split(",")]
    results: dict[int, list[Visibility]] = {}
    with real_parts() as parts:
        gateways = TwoGateways(parts.system(), cache_minutes=settings[0])
        try:
            gateways.deploy()
            for minutes in settings:
                if minutes != gateways.cache_minutes:
                    say(f"cacheExpirationMinutes {minutes} on both gateways (pulumi up)")
                    gateways.set_cache(minutes)
                results[minutes] = measure_both_ways(gateways, minutes)
        finally:
            gateways.destroy()
    baseline = worst(results[settings[0]])
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tier": gateways.system.tier,
        "method": "worst case: the reader's listing cached just before the write, polled every second",
        "baseline_cache_minutes": settings[0],
        "settings": [summary(minutes, measured, baseline) for minutes, measured in results.items()],
        "deploy_seconds": gateways.timings,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'cache (min)':>12} {'vps -> cluster (s)':>20} {'cluster -> vps (s)':>20} {'vs baseline (s)':>16}")
    for entry in report["settings"]:
        seconds = [m["seconds"] for m in entry["measurements"]]
        shown = [f"{s:.1f}" if s is not None else "never" for s in seconds]
        versus = entry["worst_minus_baseline_seconds"]
        print(f"{entry['cache_minutes']:>12} {shown[0]:>20} {shown[1]:>20} {versus!s:>16}")
    print(f"\nwritten: {RESULTS}")
    return 0 if all(entry["within_cache_expiration"] for entry in report["settings"]) else 1


if __name__ == "__main__":
    sys.exit(main())
