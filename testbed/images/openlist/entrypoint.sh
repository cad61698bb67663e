#!/bin/sh
# Entrypoint of the e2e stand-in for ghcr.io/openlistteam/openlist-git (written for this project).
# It does what the upstream image's entrypoint does for a deployer: apply $UMASK, refuse a data
# dir this user cannot write, and run the server reading its settings from the environment
# without a prefix (S3_ENABLE, S3_PORT, HTTP_PORT, ...). Upstream's optional aria2 service is left out.
umask "${UMASK:-022}"
if [ "${1:-}" = version ]; then
    exec ./openlist version
fi
if [ -d ./data ] && { [ ! -w ./data ] || [ ! -x ./data ]; }; then
    echo "Error: Current user does not have write and/or execute permissions for the ./data directory: $(pwd)/data" >&2
    echo "Make it owned by uid $(id -u) (the deployer's job), then start again. Exiting..." >&2
    exit 1
fi
exec ./openlist server --no-prefix
