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
# One result line for the health check, replaced atomically (it may read at any moment). Readable by all:
# it holds no secret, and `scripts/status` reads it over SSH as the deploy user.
write_result() { (umask 022 && printf '%s\n' "$2" > "$1.tmp") && mv -f "$1.tmp" "$1"; }
# Kopia's own error line, without the progress lines around it.
kopia_error() { printf '%s\n' "$1" | grep . | tail -n 1; }

for f in @REQUIRED_FILES@; do
    [ -r "$DEPLOY/$f" ] || die "missing $DEPLOY/$f: run 'pulumi up' for this host's stack"
done
. "$DEPLOY/@SECRETS_ENV@" || die "cannot read $DEPLOY/@SECRETS_ENV@"

set -- --override-hostname=@HOSTNAME@ --override-username=@USERNAME@ \
    --no-check-for-updates --no-persist-credentials --cache-directory=@CACHE_DIR@ @CACHE_FLAGS@

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
[ -e @STATE_DIR@/first-start ] || write_result @STATE_DIR@/first-start "$(date +%s)"
if [ "$MAY_CREATE" = yes ]; then
    out=$(kopia maintenance set --owner=me @MAINTENANCE_FLAGS@ 2>&1) ||
        die "cannot make $IDENTITY the maintenance owner: $(kopia_error "$out")"
    log "$IDENTITY owns maintenance (@MAINTENANCE_FLAGS@)"
    # Fewer, larger pack blobs: OpenList lists the whole folder for every listing page. Packs written
    # before keep their size; the repository's format blob is rewritten only when the value changes.
    out=$(kopia repository status --json 2>&1) || die "cannot read the repository status: $(kopia_error "$out")"
    case "$out" in
    *'"maxPackSize":@PACK_SIZE_BYTES@,'* | *'"maxPackSize":@PACK_SIZE_BYTES@}'*) ;;  # compact JSON
    *)
        out=$(kopia repository set-parameters --max-pack-size-mb=@PACK_SIZE_MB@ 2>&1) ||
            die "cannot set the maximum pack size: $(kopia_error "$out")"
        log "maximum pack size set to @PACK_SIZE_MB@ MiB" ;;
    esac
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
        write_result "$DRILL_RESULT" "$result"
    done
}
DRILL_RESULT=@STATE_DIR@/restore-drill
( exec </dev/null >/dev/null 2>&1; restore_drill ) &  # exec: dash keeps no copy of the log fds

# Kopia's own alerts: the declared notification profiles are the files $DEPLOY/@NOTIFICATION_FILES@, each
# the profile's JSON as Kopia's server answers for it. Once the server answers, each one is saved through its
# API (skipped when the server already holds the same bytes), and every @PROFILE_PREFIX@* profile that is no
# longer declared is deleted; profiles made by hand keep their other names and are left alone. The logins and
# the files' secrets travel on curl's stdin and in files, never on a command line. The result, one line, is
# what the health check reads: "ok|failed <epoch> <UTC time> <what was done, or what failed>".
@UI_API@
apply_notification_profiles() {  # prints what it did, or what failed
    ui_open || { echo "$ui_error"; return 1; }
    declared='' saved='' unchanged='' deleted=''
    for file in "$DEPLOY"/@NOTIFICATION_FILES@; do
        [ -r "$file" ] || continue
        name=$(basename "$file" .json)
        name=@PROFILE_PREFIX@${name#notification-}
        declared="$declared $name"
        if current=$(ui_api GET "/api/v1/notificationProfiles/$name") && [ "$current" = "$(cat "$file")" ]; then
            unchanged="$unchanged $name"
            continue
        fi
        out=$(ui_api POST /api/v1/notificationProfiles -H 'Content-Type: application/json' --data-binary "@$file") ||
            { echo "cannot save $name: $out"; return 1; }
        saved="$saved $name"
    done
    all=$(ui_api GET /api/v1/notificationProfiles) || { echo "cannot list the profiles: $all"; return 1; }
    for name in $(printf '%s\n' "$all" | sed -n 's/^ *"profile": "\(@PROFILE_PREFIX@[a-z0-9-]*\)",*$/\1/p'); do
        case "$declared " in *" $name "*) continue ;; esac
        out=$(ui_api DELETE "/api/v1/notificationProfiles/$name") || { echo "cannot delete $name: $out"; return 1; }
        deleted="$deleted $name"
    done
    echo "saved:${saved:- none}; unchanged:${unchanged:- none}; deleted:${deleted:- none}"
}
notification_profiles() {
    tries=0  # wait for the server to answer at all (any HTTP status), at most two minutes
    until [ "$(curl -s -o /dev/null --max-time 5 @CURL_TLS@ -w '%{http_code}' "@SERVER_URL@/")" != 000 ] ||
        [ "$tries" -ge 60 ]; do
        tries=$((tries + 1))
        sleep 2
    done
    while :; do
        at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
        if outcome=$(apply_notification_profiles); then
            write_result "$NOTIFY_RESULT" "ok $(date +%s) $at $outcome"
            log "notification profiles: $outcome"
            return 0
        fi
        write_result "$NOTIFY_RESULT" "failed $(date +%s) $at $outcome"
        log "ERROR: cannot apply the notification profiles (next try in @NOTIFY_RETRY@s): $outcome"
        sleep @NOTIFY_RETRY@
    done
}
NOTIFY_RESULT=@STATE_DIR@/notification-profiles
rm -f "$NOTIFY_RESULT"
notification_profiles &

log "starting the Kopia server on port @PORT@ (@SCHEME@)"
exec kopia server start --address=0.0.0.0:@PORT@ @TLS_FLAGS@ \
    --refresh-interval=@REFRESH_INTERVAL@ --shutdown-grace-period=30s
