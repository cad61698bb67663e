#!/usr/bin/env bash
# Run every test: unit tests always; the end-to-end suite (real Docker, sshd, Kopia, OpenList) where this
# machine can run it (root, Docker, Go). HOMELAB_E2E=require makes a missing prerequisite a failure
# instead of a skip (CI sets it). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x venv/bin/python ] || ./scripts/setup.sh
venv/bin/ruff check .
venv/bin/ruff format --check .
exec venv/bin/python -m pytest -rs "$@"  # -rs: every skip says why
