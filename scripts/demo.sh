#!/usr/bin/env bash
# The main job on its built-in default: deploy the two test stacks (Pulumi.e2e-vps.yaml, Pulumi.e2e-sakamoto.yaml)
# onto this machine's Docker through a local sshd, wait for the first scheduled backups, list them with Kopia,
# restore one and compare it, then tear everything down. Needs root (Docker, sshd) and Go (builds Kopia/OpenList).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x venv/bin/python ] || ./scripts/setup.sh
exec venv/bin/python -m scripts.demo "$@"
