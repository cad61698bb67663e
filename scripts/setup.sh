#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine: the Python virtualenv Pulumi.yaml names (venv/),
# and, as root, what the end-to-end suite and the demo need (Docker engine, sshd, static busybox, zstd, and a
# Go new enough to build Kopia, OpenList and the Pulumi CLI: fetched from the Go module proxy when missing).
# Safe to run again; prints each step and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '[setup] %s\n' "$*" >&2; }
timed() { local start=$SECONDS; "$@"; step "  done in $((SECONDS - start))s"; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)  # any Docker engine will do
    for package in openssh-server openssh-client busybox-static zstd debootstrap shellcheck iproute2; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        timed apt-get update -qq
        timed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
else
    step "not root (or no apt-get): skipping system packages; the end-to-end suite will be skipped"
fi

if [ ! -x venv/bin/python ]; then
    step "creating venv/ (Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
    timed python3 -m venv venv
fi
step "installing pinned Python dependencies (requirements.txt)"
timed venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
# The machine's Go if new enough, else the pinned toolchain from the Go module proxy (testbed/infra/gotoolchain.py).
timed venv/bin/python testbed/infra/gotoolchain.py
step "ready: ./scripts/test.sh runs the tests; ./scripts/demo.sh deploys the test stacks on local Docker"
