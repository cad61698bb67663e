"""Deploy the test stacks on local Docker, show the backups land, clean up. See scripts/demo.sh."""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

from testbed.system import ALL_SOURCES, KOPIA, SOURCES, say, source_name, tree_digest, wait_for


def main() -> int:
    from testbed.system import real_parts

    with real_parts() as parts:
        system = parts.system()
        say(f"deploying with the {system.tier} tier: {system.tier_description}")
        try:
            say("pulumi up e2e-vps (OpenList configured by it), pulumi up e2e-sakamoto")
            system.deploy()
            say("waiting for sakamoto to create the repository and both hosts to back up (about a minute)")
            wait_for("the repository", lambda: system.oracle.connect().returncode == 0, 240, interval=5)
            wait_for(
                "a snapshot of every source",
                lambda: set(ALL_SOURCES) <= {source_name(s) for s in system.oracle.snapshots()},
                300,
                interval=10,
            )
            print(system.oracle.run("snapshot", "list", "--all").stdout)
            if system.tier == "engine":
                say("./scripts/status: every host's sources, from this machine, through Kopia's control API")
                status = system.run_status()
                print(status.stdout + status.stderr)
            for stack in KOPIA:
                container = KOPIA[stack]
                system.wait_healthy(container)
                url = system.deployments[stack].outputs["kopia_server_url"]
                print(f"{KOPIA[stack]}: {system.health(KOPIA[stack])}, server {url}")
            latest = system.oracle.snapshots_of("shelken@vps:/backup/data")[-1]
            with tempfile.TemporaryDirectory() as target:
                started = time.monotonic()
                system.oracle.run("snapshot", "restore", latest["id"], target)
                same = tree_digest(Path(target)) == tree_digest(SOURCES["vps"]["/backup/data"])
                say(f"restored shelken@vps:/backup/data in {time.monotonic() - started:.1f}s: identical={same}")
            if not same:
                raise RuntimeError("the restored copy of shelken@vps:/backup/data differs from the source")
            return 0
        finally:
            say("tearing down (pulumi destroy)")
            system.destroy()


def one_line(error: BaseException) -> str:
    """The error's message on one line (a config error lists its problems on several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run() -> int:
    """`main()` for a person at a terminal: a failure is one line saying what went wrong and where the whole
    story is, never a traceback (the traceback goes to a log file that the line names)."""
    try:
        return main()
    except KeyboardInterrupt:
        print("[demo] interrupted; run ./scripts/demo.sh again (it starts from a clean slate)", file=sys.stderr)
        return 130
    except Exception as error:
        with tempfile.NamedTemporaryFile("w", prefix="homelab-demo-", suffix=".log", delete=False) as log:
            traceback.print_exception(error, file=log)
        print(f"[demo] FAILED: {one_line(error)} (details: {log.name})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
