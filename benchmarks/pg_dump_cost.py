"""Benchmark: what the program's PostgreSQL dump costs a database of about 1 GiB: how long it takes, and whether it
blocks the app's writes.

Debian's PostgreSQL 15 in the e2e suite's image (testbed/postgres.py), a generated database of `--size-gib`
(a table of documents plus the app's accounts and transfers). The dump is the program's own: the script
`render_dump_script` renders (components/templates/dump-loop.sh: pg_dump into a temp file, renamed once whole,
then the status line), in a container of the database's image with the credentials file `render_pgpass` writes,
mounted read-only, on the database's network, as `pulumi up` starts it; its first dump is timed. The app is
`pgbench`, one client over the network, each transaction a transfer (two UPDATEs and an INSERT, committed), its
latency logged per transaction. In ONE run:

1. baseline: the writer alone;
2. the dump alone (an idle database);
3. the writer with the dump started `--lead-in` seconds into its run: the transactions that ended while the dump
   ran are compared with the baseline (transactions per second, latency p50/p95/p99/max, the longest gap between
   two commits);
4. the writer alone again (how much the machine drifted within the run).

Writes benchmarks/results/pg_dump_cost.json and prints progress and a table. Takes the machine-wide run lock (its
containers have fixed names). Run as root:
    venv/bin/python -m benchmarks.pg_dump_cost [--size-gib 1] [--seconds 40]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import model
from benchmarks.snapshot_throughput import _cpu_model, container_cpuacct
from components import render
from components.config import Dump
from testbed import infra
from testbed.postgres import docker, psql, start_database
from testbed.system import say, wait_for

RESULTS = Path(__file__).resolve().parent / "results" / "pg_dump_cost.json"
DB = f"{infra.NAME_PREFIX}bench-pg"
DUMPER = f"{infra.NAME_PREFIX}bench-pg-dump"
WRITER = f"{infra.NAME_PREFIX}bench-pg-writer"
NETWORK = f"{infra.NAME_PREFIX}bench-pg"
NAME = "bench"  # the dump, the role and the database
HZ = os.sysconf("SC_CLK_TCK")
GIB = 1024**3
CHUNK_ROWS = 500_000

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g;
CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
CREATE TABLE documents (id bigint PRIMARY KEY, owner int NOT NULL, title text NOT NULL, body text NOT NULL);
"""

# Text that differs from row to row (hex of hashes), about 200 bytes a row with its title.
CHUNK = """INSERT INTO documents
SELECT g, g % 1000, 'document ' || g, md5(g::text) || md5((g * 31)::text) || md5((g * 97)::text) || md5((g * 7)::text)
FROM generate_series({first}, {last}) g;"""

# One transfer a transaction, as the e2e suite's writer does; the accounts are random, so a transfer to itself
# changes nothing.
TRANSFER = """\\set a random(1, 100)
\\set b random(1, 100)
\\set n random(1, 50)
BEGIN;
UPDATE accounts SET balance = balance - :n WHERE id = :a;
UPDATE accounts SET balance = balance + :n WHERE id = :b;
INSERT INTO transfers (src, dst, amount) VALUES (:a, :b, :n);
COMMIT;
"""


def the_dump() -> Dump:
    """The dump as a stack file declares it (its password's reference is never read: the file is written here)."""
    return Dump.model_validate(
        {
            "name": NAME,
            "postgres": {"container": DB, "database": NAME, "user": NAME, "password": "config:benchDbPassword"},
        }
    )


def generate(size_gib: float) -> dict:
    """The schema, then documents in chunks until the database holds `size_gib`; frozen and checkpointed, so the
    dumps read settled pages (no hint bits to write)."""
    psql(DB, NAME, SCHEMA, user=NAME)
    target = int(size_gib * GIB)
    rows = 0
    started = time.monotonic()
    while (size := int(psql(DB, NAME, "SELECT pg_database_size(current_database());").strip())) < target:
        psql(DB, NAME, CHUNK.format(first=rows + 1, last=rows + CHUNK_ROWS), user=NAME)
        rows += CHUNK_ROWS
        say(f"generated {size / GIB:.2f} of {size_gib} GiB ({rows} documents, {time.monotonic() - started:.0f}s)")
    psql(DB, NAME, "VACUUM (FREEZE, ANALYZE);")
    psql(DB, NAME, "CHECKPOINT;")
    size = int(psql(DB, NAME, "SELECT pg_database_size(current_database());").strip())
    say(f"database: {size / GIB:.2f} GiB, {rows} documents, made in {time.monotonic() - started:.0f}s")
    return {"bytes": size, "documents": rows, "generate_s": round(time.monotonic() - started, 1)}


class Writer:
    """pgbench as the app: one client over the network, its password from the same kind of 0600 file."""

    def __init__(self, image: str, work: Path, secrets_dir: Path):
        self.image, self.work, self.secrets_dir = image, work, secrets_dir
        (work / "transfer.sql").write_text(TRANSFER)

    def start(self, phase: str, seconds: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                "docker", "run", "--rm", "--name", WRITER, "--network", NETWORK,
                "--label", f"{infra.RESOURCE_LABEL}=1",
                "-v", f"{self.work}:/work", "-v", f"{self.secrets_dir}:{render.DUMP_SECRETS_DIR}:ro",
                "-e", f"PGPASSFILE={render.DUMP_SECRETS_DIR}/{render.PGPASS_FILE}",
                "--entrypoint", "pgbench", self.image,
                "-h", DB, "-U", NAME, "-n", "-c", "1", "-j", "1", "-T", str(seconds),
                "-f", "/work/transfer.sql", "--log", f"--log-prefix=/work/{phase}", NAME,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    def wait(self, run: subprocess.Popen, phase: str, seconds: int) -> None:
        started = time.monotonic()
        while run.poll() is None:
            time.sleep(1)
            elapsed = time.monotonic() - started
            if int(elapsed) % 10 == 0:
                say(f"{phase}: writer {elapsed:.0f}/{seconds} s")
        output = run.stdout.read() if run.stdout else ""
        if run.returncode != 0:
            raise RuntimeError(f"pgbench ({phase}) exited {run.returncode}: {output[-1500:]}")

    def transactions(self, phase: str) -> list[tuple[float, float]]:
        """(when it ended, seconds since the epoch; its latency in seconds) of each transaction of `phase`, from
        pgbench's log: `client transaction_no latency_us script_no epoch_s epoch_us`."""
        found = []
        for path in self.work.glob(f"{phase}.*"):
            for line in path.read_text().splitlines():
                fields = line.split()
                found.append((int(fields[4]) + int(fields[5]) / 1e6, int(fields[2]) / 1e6))
        return sorted(found)


def writer_stats(transactions: list[tuple[float, float]], start: float, end: float) -> dict:
    """Throughput and latency of the transactions that ended within [start, end], and the longest time in it
    without a commit (from its start to the first, between two, from the last to its end)."""
    inside = [(at, latency) for at, latency in transactions if start <= at <= end]
    ends = [start, *(at for at, _ in inside), end]
    stats: dict = {
        "transactions": len(inside),
        "window_s": round(end - start, 2),
        "tps": round(len(inside) / (end - start), 1),
        "latency_ms": None,
        # Whether the writer was blocked shows here: no commit for as long as something held it.
        "longest_gap_between_commits_ms": round(max(b - a for a, b in itertools.pairwise(ends)) * 1000, 2),
    }
    if len(inside) >= 2:
        latencies = sorted(latency * 1000 for _, latency in inside)
        quantiles = statistics.quantiles(latencies, n=100)
        stats["latency_ms"] = {
            "mean": round(statistics.fmean(latencies), 2),
            "p50": round(quantiles[49], 2),
            "p95": round(quantiles[94], 2),
            "p99": round(quantiles[98], 2),
            "max": round(latencies[-1], 2),
        }
    return stats


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def latency(stats: dict, key: str) -> float | None:
    return stats["latency_ms"][key] if stats["latency_ms"] else None


def cpu_seconds(container: str) -> float | None:
    path = container_cpuacct(container)
    if path is None:
        return None
    user, system = model.parse_cpuacct_stat(path.read_text(), HZ)
    return user + system


def run_dump(image: str, dumps_dir: Path, secrets_dir: Path) -> dict:
    """The program's dump container, as `pulumi up` starts it; its first dump (the one at start), timed from this
    machine and by its own status line; the container is removed once it wrote that line."""
    status = dumps_dir / f"{NAME}.status"
    status.unlink(missing_ok=True)
    db_cpu = cpu_seconds(DB)
    script = render.render_dump_script(the_dump(), 3600)
    started = time.time()
    docker(
        "run", "-d", "--name", DUMPER, "--network", NETWORK, "--label", f"{infra.RESOURCE_LABEL}=1",
        "-v", f"{dumps_dir}:{render.DUMP_OUTPUT_DIR}", "-v", f"{secrets_dir}:{render.DUMP_SECRETS_DIR}:ro",
        "-e", "TZ=UTC", "--entrypoint", "/bin/sh", image, "-c", script, "homelab-dump",
    )  # fmt: skip
    try:

        def begun() -> bool:  # the script makes its temp file just before pg_dump starts
            return any(dumps_dir.glob(f".{NAME}.*")) or status.exists()

        wait_for("the dump's temp file", begun, 120, interval=0.02)
        dump_started = time.time()

        def written() -> str | None:
            return status.read_text() if status.exists() else None

        line = wait_for("the dump's status line", written, 1800, interval=0.05)
        ended = time.time()
        dumper_cpu = cpu_seconds(DUMPER)
        db_cpu_after = cpu_seconds(DB)
    finally:
        docker("rm", "-f", DUMPER, check=False)
    outcome, _, details = line.strip().split(" ", 2)
    if outcome != "ok":
        raise RuntimeError(f"the dump failed: {line.strip()}")
    size = (dumps_dir / f"{NAME}.sql").stat().st_size
    result = {
        # From the temp file's appearance (pg_dump starts) to the status line (renamed, written): the writer's
        # transactions that ended in this window ran alongside the dump.
        "start_epoch": round(dump_started, 3),
        "end_epoch": round(ended, 3),
        "wall_s": round(ended - dump_started, 2),
        "with_container_start_s": round(ended - started, 2),
        "status_line": line.strip(),
        "dump_bytes": size,
        "dump_mib_per_s": round(size / 2**20 / (ended - dump_started), 1),
        "cpu_s": {
            "dump_container": None if dumper_cpu is None else round(dumper_cpu, 2),
            "database_container": None if db_cpu is None or db_cpu_after is None else round(db_cpu_after - db_cpu, 2),
        },
    }
    say(f"dump: {result['wall_s']} s, {size / 2**20:.0f} MiB ({details})")
    return result


def remove_containers() -> None:
    """This benchmark's containers and network (a run stopped midway leaves them)."""
    for name in (DUMPER, WRITER, DB):
        docker("rm", "-f", name, check=False)
    docker("network", "rm", NETWORK, check=False)


def measure(size_gib: float, seconds: int, lead_in: int, work: Path) -> dict:
    image = infra.ensure_postgres_image(infra.cache_dir())
    remove_containers()
    docker("network", "create", NETWORK)
    data, dumps_dir, secrets_dir = work / "data", work / "dumps", work / "secrets"
    for path in (data, dumps_dir, secrets_dir):
        path.mkdir(mode=0o700)
    start_database(DB, image, data, NETWORK)
    version = psql(DB, "postgres", "SHOW server_version;").strip()
    password = "bench-" + secrets.token_urlsafe(16)
    # The role's password reaches the server on stdin, never a command line; the clients read it from the file.
    psql(DB, "postgres", f"CREATE ROLE {NAME} LOGIN PASSWORD '{password}'; CREATE DATABASE {NAME} OWNER {NAME};")
    pgpass = secrets_dir / render.PGPASS_FILE
    pgpass.touch(mode=0o600)
    pgpass.write_text(render.render_pgpass(password))
    database = generate(size_gib)
    writer = Writer(image, work, secrets_dir)

    def writer_alone(phase: str) -> dict:
        say(f"{phase}: the writer alone for {seconds} s")
        before = time.time()
        writer.wait(writer.start(phase, seconds), phase, seconds)
        transactions = writer.transactions(phase)
        # The whole run but its first and last second (connection and the end).
        stats = writer_stats(transactions, transactions[0][0] + 1, transactions[-1][0] - 1)
        say(f"{phase}: {stats['tps']} transactions/s, p99 {latency(stats, 'p99')} ms")
        return {"started_epoch": round(before, 3), **stats}

    report: dict = {"postgres": version, "database": database}
    report["baseline"] = writer_alone("baseline")
    say("the dump alone (an idle database)")
    report["dump_alone"] = run_dump(image, dumps_dir, secrets_dir)

    window = lead_in + int(report["dump_alone"]["wall_s"] * 3) + lead_in
    say(f"the writer for {window} s, the dump started {lead_in} s into it")
    run = writer.start("with_dump", window)
    time.sleep(lead_in)
    dump = run_dump(image, dumps_dir, secrets_dir)
    writer.wait(run, "with_dump", window)
    transactions = writer.transactions("with_dump")
    if transactions[-1][0] < dump["end_epoch"]:
        raise RuntimeError("the writer stopped before the dump ended: raise the window")
    during = writer_stats(transactions, dump["start_epoch"], dump["end_epoch"])
    say(f"with the dump: {during['tps']} transactions/s, p99 {latency(during, 'p99')} ms during it")
    report["with_dump"] = {"dump": dump, "writer_during_dump": during}
    report["baseline_after"] = writer_alone("baseline_after")

    base = report["baseline"]
    report["comparison"] = {
        "dump_time_under_load_vs_idle": ratio(dump["wall_s"], report["dump_alone"]["wall_s"]),
        "writer_tps_during_dump_vs_baseline": ratio(during["tps"], base["tps"]),
        "writer_p50_during_dump_vs_baseline": ratio(latency(during, "p50"), latency(base, "p50")),
        "writer_p99_during_dump_vs_baseline": ratio(latency(during, "p99"), latency(base, "p99")),
        "writer_longest_gap_during_dump_ms": during["longest_gap_between_commits_ms"],
        "writer_longest_gap_baseline_ms": base["longest_gap_between_commits_ms"],
        "baseline_after_vs_before_tps": ratio(report["baseline_after"]["tps"], base["tps"]),
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="the database's size (pg_database_size)")
    parser.add_argument("--seconds", type=int, default=40, help="each writer-alone phase")
    parser.add_argument("--lead-in", type=int, default=10, help="the writer's seconds before the dump starts")
    args = parser.parse_args()
    infra.check_prerequisites()
    with infra.exclusive_run(f"benchmark, PostgreSQL dump ({DB})"):
        infra.ensure_docker_engine(infra.cache_dir())
        work = Path(tempfile.mkdtemp(prefix=f"{infra.NAME_PREFIX}bench-pg-", dir="/var/tmp"))
        try:
            report = measure(args.size_gib, args.seconds, args.lead_in, work)
        finally:
            say("tearing down")
            remove_containers()
            shutil.rmtree(work, ignore_errors=True)
    full = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
            "disk": "this machine's disk (the database's data dir and the dump file on it)",
        },
        "method": (
            "the program's dump script and credentials file in a container of the database's image; the writer is"
            " pgbench, one client over the Docker network, a transfer (2 UPDATE + 1 INSERT) per transaction;"
            " 'writer_during_dump' counts the transactions that ended while the dump ran; the baseline is the"
            " writer alone in the same run"
        ),
        **report,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(full, indent=2) + "\n")
    base, during = report["baseline"], report["with_dump"]["writer_during_dump"]
    after = report["baseline_after"]
    print(f"\ndatabase {report['database']['bytes'] / GIB:.2f} GiB (PostgreSQL {report['postgres']})")
    print(f"dump alone: {report['dump_alone']['wall_s']} s, {report['dump_alone']['dump_bytes'] / 2**20:.0f} MiB")
    print(f"dump with the writer: {report['with_dump']['dump']['wall_s']} s")
    print(f"\n{'writer':<26} {'tx/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'gap ms':>8}")
    for label, stats in (("alone (baseline)", base), ("while the dump runs", during), ("alone again", after)):
        shown = [latency(stats, key) for key in ("p50", "p95", "p99", "max")]
        print(
            f"{label:<26} {stats['tps']:>8} "
            + " ".join(f"{v!s:>8}" for v in shown)
            + f" {stats['longest_gap_between_commits_ms']:>8}"
        )
    print(f"\nwritten: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
