#!/bin/sh
# Kopia start script for @IDENTITY@, rendered by homelab-backup from components/templates/kopia-start.sh.
# Edit the stack and run `pulumi up`, never this copy. Every failure before the
# server starts exits 1 with ONE line "kopia-start: FATAL: ...", so Docker's restart
# policy retries and `docker ps` shows it; a server is started only once connected.
set -u
umask 077

DEPLOY=@DEPLOY_DIR@
IDENTITY=@IDENTITY@
OWNER=@OWNER@
MAY_CREATE=@MAY_CREATE@
SEEN_MARKER=@STATE_DIR@/repository-seen

log() { printf 'kopia-start: %s\n' "$*" >&2; }
die() { printf 'kopia-start: FATAL: %s\n' "$*" >&2; exit 1; }
# Kopia's own error line, without the progress lines around it.
kopia_error() { printf '%s\n' "$1" | grep . | tail -n 1; }

for f in @REQUIRED_FILES@; do
    [ -r "$DEPLOY/$f" ] || die "missing $DEPLOY/$f: run 'pulumi up' for this host's stack"
done
. "$DEPLOY/@SECRETS_ENV@" || die "cannot read $DEPLOY/@SECRETS_ENV@"

set -- --override-hostname=@HOSTNAME@ --override-username=@USERNAME@ \
    --no-check-for-updates --no-persist-credentials --cache-directory=@CACHE_DIR@

log "connecting to the repository as $IDENTITY"
while :; do
    if out=$(kopia repository connect from-config --file "$DEPLOY/@REPOSITORY_CONFIG@" "$@" 2>&1); then
        log "connected"
        break
    fi
    case "$out" in
    *"@MSG_NOT_INITIALIZED@"*) ;;
    *) die "cannot connect to the repository (wrong password or S3 endpoint down?): $(kopia_error "$out")" ;;
    esac
    [ ! -e "$SEEN_MARKER" ] ||
        die "the storage answers as empty, but this host used a repository there before" \
            "($SEEN_MARKER): the S3 backend is failing; refusing to create a new repository over it"
    if [ "$MAY_CREATE" != yes ]; then
        # A normal state on first deploy: wait here (container running, not healthy yet)
        # rather than crash-loop, so Docker's restart back-off does not delay the start.
        log "the storage holds no repository yet; only $OWNER creates it: waiting for that host" \
            "(next try in @REPOSITORY_WAIT_SECONDS@s)"
        sleep @REPOSITORY_WAIT_SECONDS@
        continue
    fi
    log "the storage holds no repository yet: creating it as $IDENTITY"
    if ! out=$(kopia repository create from-config --token-file "$DEPLOY/@STORAGE_TOKEN@" "$@" 2>&1); then
        case "$out" in
        *"@MSG_EXISTING_DATA@"*)
            die "cannot create the repository: the prefix holds other data (OpenList lists" \
                "'@EMPTY_MARKER@' in an empty folder: delete that empty folder or pick a new repository.prefix)" ;;
        esac
        die "cannot create the repository: $(kopia_error "$out")"
    fi
    log "created the repository"
    break
done
date -u +%Y-%m-%dT%H:%M:%SZ > "$SEEN_MARKER" || die "cannot write $SEEN_MARKER: is @STATE_DIR@ a writable volume?"
# When this host first served: restarts do not move it, so a drill that never ran is noticed.
[ -e @STATE_DIR@/first-start ] || date +%s > @STATE_DIR@/first-start
if [ "$MAY_CREATE" = yes ]; then
    out=$(kopia maintenance set --owner=me 2>&1) ||
        die "cannot make $IDENTITY the maintenance owner: $(kopia_error "$out")"
    log "$IDENTITY owns maintenance"
else
    log "maintenance is run by $OWNER"
fi
out=$(kopia policy import --from-file "$DEPLOY/@POLICY_JSON@" 2>&1) ||
    die "cannot import $DEPLOY/@POLICY_JSON@: $(kopia_error "$out")"
log "imported policy.json; this host backs up: @SOURCES@"

# The restore drill: every @DRILL_INTERVAL@s, Kopia verifies the snapshots of this host's sources and reads
# back @DRILL_PERCENT@% of their files (`kopia snapshot verify`). The result, one line, is what the health
# check reads: "ok|failed <epoch> <UTC time> [Kopia's error]". Its own output stays out of the container log.
# The next drill is due one interval after the last one (after a failure, within @DRILL_RETRY@s), however
# often the container restarts; a host that has none runs one @DRILL_FIRST_WAIT@s after it starts.
restore_drill() {
    while :; do
        outcome=none last=0
        [ -r "$DRILL_RESULT" ] && read -r outcome last _ < "$DRILL_RESULT"
        case "$outcome" in
        ok) due=$((last + @DRILL_INTERVAL@)) ;;
        failed) due=$((last + @DRILL_RETRY@)) ;;
        *) due=0 ;;
        esac
        wait=$((due - $(date +%s)))
        [ "$wait" -ge @DRILL_FIRST_WAIT@ ] || wait=@DRILL_FIRST_WAIT@
        sleep "$wait"
        at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
        if out=$(kopia snapshot verify --verify-files-percent=@DRILL_PERCENT@ @DRILL_SOURCES@ 2>&1); then
            result="ok $(date +%s) $at"
        else
            result="failed $(date +%s) $at $(kopia_error "$out")"
        fi
        printf '%s\n' "$result" > "$DRILL_RESULT.tmp" && mv -f "$DRILL_RESULT.tmp" "$DRILL_RESULT"
    done
}
DRILL_RESULT=@STATE_DIR@/restore-drill
( exec </dev/null >/dev/null 2>&1; restore_drill ) &  # exec: dash keeps no copy of the log fds

log "starting the Kopia server on port @PORT@ (@SCHEME@)"
exec kopia server start --address=0.0.0.0:@PORT@ @TLS_FLAGS@ \
    --refresh-interval=@REFRESH_INTERVAL@ --shutdown-grace-period=30s
