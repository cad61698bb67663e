#!/bin/sh
# Kopia health check for @IDENTITY@, rendered by homelab-backup from components/templates/kopia-health.sh.
# Docker runs it every minute. Healthy means every source of this host is backing up: it is scheduled,
# not paused, has a next snapshot time, its last snapshot is complete and error-free, and that snapshot
# is younger than @MAX_AGE_SECONDS@s (two intervals plus a margin) and not dated more than
# @CLOCK_SKEW_SECONDS@s in the future (a wrong clock), and its last snapshot attempt did not fail. A source that is uploading counts as healthy while it uploads.
# The last restore drill (see the start script) must have passed, within two drill intervals plus a margin,
# every database dump of this host must have succeeded within the same age as a snapshot, the notification
# profiles must have been applied (no "failed" result), and the stack must no longer set kopia.createRepository.
# Prints one line per problem (Docker keeps them in `docker inspect`), or one "healthy" line. A healthy
# check then pings the heartbeat URL, if one is configured: when pings stop, the monitoring service alerts
# (a dead host, a crash-looping container and stale sources alike, since then no check passes).
. @DEPLOY_DIR@/@SECRETS_ENV@ || { echo "cannot read @SECRETS_ENV@"; exit 1; }
# While the stack still sets kopia.createRepository (a first deploy's one-off request), the host is not healthy:
# left set, a later rebuild of this host would create a new repository over an old one that the gateway fails to
# show. The line comes first, whatever else the check finds; the check fails at its end.
create_reminder=@CREATE_REMINDER@
[ -z "$create_reminder" ] || echo "$create_reminder"

# The control API, with the server-control login on stdin (never in the command line), pinned to this
# server's own certificate.
auth=$(printf '%s:%s' "$KOPIA_SERVER_CONTROL_USER" "$KOPIA_SERVER_CONTROL_PASSWORD" | base64 | tr -d '\n')
if ! sources=$(printf 'Authorization: Basic %s\n' "$auth" |
    curl -sS --fail --max-time 8 @CURL_TLS@ -H @- "@SERVER_URL@/api/v1/control/sources" 2>&1); then
    echo "kopia server not answering: $sources"
    exit 1
fi
started=$(stat -c %Y @STATE_DIR@/repository-seen 2>/dev/null || echo 0)

verdict=$(printf '%s\n' "$sources" | awk -v now="$(date +%s)" -v started="$started" -v max_age=@MAX_AGE_SECONDS@ \
    -v upload_allowance=@UPLOAD_ALLOWANCE_SECONDS@ -v skew=@CLOCK_SKEW_SECONDS@ \
    -v expected="@SOURCES@" '
@VERDICT_AWK@')
healthy=$?

# The last snapshot attempts, from the server's task list (the UI API, with the UI login): a snapshot that
# failed outright leaves the control API showing the last good one until it goes stale.
@UI_API@
ui_error=''
if ! ui_open || ! attempts=$(ui_api GET /api/v1/tasks); then
    echo "kopia server's task list not answering: ${ui_error:-$attempts}"
    exit 1
fi
attempts=$(printf '%s\n' "$attempts" | awk -v expected="@SOURCES@" '
@ATTEMPTS_AWK@')
attempts_ok=$?
@DUMP_VERDICT@
if [ "$healthy" -ne 0 ] || [ "$attempts_ok" -ne 0 ] || [ "$dumps_ok" -ne 0 ]; then
    # A failed dump first: it is the cause of the error its named pipe gives the next snapshot.
    [ "$dumps_ok" -eq 0 ] || printf '%s\n' "$dumps"
    [ "$healthy" -eq 0 ] || printf '%s\n' "$verdict"
    [ "$attempts_ok" -eq 0 ] || printf '%s\n' "$attempts"
    exit 1
fi
printf '%s\n' "$verdict"

@DRILL_VERDICT@
# Kopia's own alerts (the start script applies the declared notification profiles once the server runs).
if [ -r @STATE_DIR@/notification-profiles ] && read -r outcome _ when message < @STATE_DIR@/notification-profiles &&
    [ "$outcome" = failed ]; then
    echo "notification profiles not applied (last try at $when): $message"
    exit 1
fi
[ -z "$create_reminder" ] || exit 1

if [ -n "${@HEARTBEAT_URL_VARIABLE@:-}" ]; then
    # The URL holds its token: curl reads it from stdin (a config line), never from its command line.
    url=$(printf '%s' "$@HEARTBEAT_URL_VARIABLE@" | sed 's/[\\"]/\\&/g')
    if ! out=$(printf 'url = "%s"\n' "$url" | curl -fsS --max-time 5 -o /dev/null -K - 2>&1); then
        echo "heartbeat ping failed (the backups are fine): $out"
    fi
fi
exit 0
