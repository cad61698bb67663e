#!/bin/sh
# Entrypoint of the e2e stand-in for ghcr.io/openlistteam/openlist-git:v4.2.5, kept line for line to
# upstream's entrypoint.sh at that tag: `umask ${UMASK}` (the image sets UMASK=022), the `version`
# subcommand, the refusal of a data dir this user cannot write (same message, on stdout), then
# `exec ./openlist server --no-prefix`. The one difference: upstream's optional aria2 service (runsvdir)
# is not in this image, so RUN_ARIA2=true is refused instead of started.

umask ${UMASK}

if [ "$1" = "version" ]; then
  ./openlist version
else
  # Check file of /opt/openlist/data permissions for current user
  if [ -d ./data ]; then
    if ! [ -w ./data ] || ! [ -x ./data ]; then
  cat <<EOT
Error: Current user does not have write and/or execute permissions for the ./data directory: $(pwd)/data
Please visit https://doc.oplist.org/guide/installation/docker#for-version-after-v4-1-0 for more information.
Exiting...
EOT
      exit 1
    fi
  fi

  if [ "$RUN_ARIA2" = "true" ]; then
    echo "RUN_ARIA2=true: this test image has no aria2 service. Exiting..."
    exit 1
  fi
  exec ./openlist server --no-prefix
fi
