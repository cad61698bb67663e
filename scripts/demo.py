"""Deploy the test stacks on local Docker, show the backups land, clean up. See scripts/demo.sh."""

from __future__ import annotations

import sys
import tempfile
import time
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
            return 0 if same else 1
        finally:
            say("tearing down (pulumi destroy)")
            system.destroy()


if __name__ == "__main__":
    sys.exit(main())
