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
IS_OWNER=@IS_OWNER@
# kopia.createRepository: set in the owner's stack for its first deploy only (docs/decisions.md). Without it
# no host creates a repository: a gateway that answers "empty" (189 login expired, storage pointed at
# another folder, a listing glitch) must not get a new kopia.repository over the old one.
CREATE_REQUESTED=@CREATE_REQUESTED@
CREATE_REMINDER=@CREATE_REMINDER@
SEEN_MARKER=@STATE_DIR@/repository-seen
PREVIOUS_PASSWORD=$DEPLOY/@PREVIOUS_PASSWORD_ENV@
# A source pauses containers (kopia.sources[].pause): Kopia's snapshot actions must run (below).
ACTIONS_REQUIRED=@ACTIONS_REQUIRED@

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
    --no-check-for-updates --no-persist-credentials --cache-directory=@CACHE_DIR@ @CACHE_FLAGS@ @ACTIONS_FLAG@

# The repository has ONE password, kept in its format blob; `kopia repository change-password` on one connected
# client rewrites it. That client is the maintenance owner, and only while its stack declares the password the
# repository opens with now (kopia.secrets.previousRepositoryPassword, the file $PREVIOUS_PASSWORD). Every other
# host just gets the new password: until the owner has changed it, that host waits (below), as it does once the
# owner has changed it and it still has the old one. Passwords travel in the environment, never on a command line.
change_repository_password() {  # the connect flags as arguments
    # shellcheck source=/dev/null
    . "$PREVIOUS_PASSWORD" || die "cannot read $PREVIOUS_PASSWORD"
    new_password=$KOPIA_PASSWORD
    out=$(KOPIA_PASSWORD=$@PREVIOUS_PASSWORD_VARIABLE@ kopia repository connect from-config \
        --file "$DEPLOY/@REPOSITORY_CONFIG@" "$@" 2>&1) ||
        die "cannot connect to the repository: it opens with neither kopia.secrets.repositoryPassword nor" \
            "kopia.secrets.previousRepositoryPassword: $(kopia_error "$out")"
    out=$(KOPIA_PASSWORD=$@PREVIOUS_PASSWORD_VARIABLE@ KOPIA_NEW_PASSWORD=$new_password \
        kopia repository change-password 2>&1) ||
        die "cannot change the repository password: $(kopia_error "$out")"
    unset @PREVIOUS_PASSWORD_VARIABLE@  # sourced with export: no later process needs it
    log "changed the repository password to kopia.secrets.repositoryPassword (it opened with" \
        "kopia.secrets.previousRepositoryPassword): run pulumi up for every other host's stack with the new" \
        "password, then remove kopia.secrets.previousRepositoryPassword from this stack"
}
password_changed=no

log "connecting to the repository as $IDENTITY"
while :; do
    if out=$(kopia repository connect from-config --file "$DEPLOY/@REPOSITORY_CONFIG@" "$@" 2>&1); then
        log "connected"
        [ "$CREATE_REQUESTED" != yes ] ||
            log "WARNING: the storage holds a repository: connected to it, created nothing. $CREATE_REMINDER"
        break
    fi
    case "$out" in
    *"@MSG_NOT_INITIALIZED@"*) ;;
    *"@MSG_INVALID_PASSWORD@"*)
        if [ "$IS_OWNER" != yes ]; then
            # Not a crash loop: Docker's back-off would delay the start once the password opens it again.
            log "the repository does not open with this host's kopia.secrets.repositoryPassword" \
                "($(kopia_error "$out")): the repository password changed: run pulumi up for this host's stack" \
                "with the new one; if this host has it already, $OWNER changes the repository's password to it" \
                "at its next start: run pulumi up for that host's stack (next try in @REPOSITORY_WAIT_SECONDS@s)"
            sleep @REPOSITORY_WAIT_SECONDS@
            continue
        fi
        if [ ! -r "$PREVIOUS_PASSWORD" ] || [ "$password_changed" = yes ]; then
            die "cannot connect to the repository: it does not open with kopia.secrets.repositoryPassword" \
                "($(kopia_error "$out")): to change the repository's password to that one, declare the one it" \
                "opens with as kopia.secrets.previousRepositoryPassword on this stack and run pulumi up;" \
                "otherwise put the right password back in the secret"
        fi
        change_repository_password "$@"
        password_changed=yes
        continue ;;
    *) die "cannot connect to the repository (S3 endpoint down or wrong keys?): $(kopia_error "$out")" ;;
    esac
    # Kopia read no format blob (kopia.repository) under the prefix. That is all it knows: OpenList answers a
    # failing drive with 404 and an empty listing, just as it answers an empty folder.
    [ ! -e "$SEEN_MARKER" ] ||
        die "the storage answers as empty, but this host used a repository there before" \
            "($SEEN_MARKER): the S3 backend is failing; refusing to create a new repository over it"
    if [ "$IS_OWNER" != yes ]; then
        # A normal state on first deploy: wait here (container running, not healthy yet)
        # rather than crash-loop, so Docker's restart back-off does not delay the start.
        log "the storage holds no repository yet; only $OWNER creates it: waiting for that host" \
            "(next try in @REPOSITORY_WAIT_SECONDS@s). If the repository exists, the S3 gateway answers empty:" \
            "check its storage (the 189 login, the folder it points at, the openlist container's logs)"
        sleep @REPOSITORY_WAIT_SECONDS@
        continue
    fi
    [ "$CREATE_REQUESTED" = yes ] ||
        die "the storage answers that it holds no repository, and kopia.createRepository is not set: nothing" \
            "was created. If the repository exists, the S3 gateway answers empty: check its storage (the 189" \
            "login, the folder the storage points at, the openlist container's logs); this container retries by" \
            "itself. Only on the very first deploy, create the repository once:" @CREATE_COMMAND@
    # Asked for, and this host has never seen a repository. Kopia's create checks once more through other
    # answers of the storage: a listing of the whole prefix must be empty, and neither kopia.repository nor
    # kopia.blobcfg may be readable (docs/upstream-behaviour.md#create-refuses-a-prefix-that-holds-anything).
    log "the storage holds no repository and kopia.createRepository asks for one: creating it as $IDENTITY"
    if ! out=$(kopia repository create from-config --token-file "$DEPLOY/@STORAGE_TOKEN@" "$@" 2>&1); then
        case "$out" in
        *"@MSG_EXISTING_DATA@"*)
            die "cannot create the repository: the prefix holds other data (OpenList lists" \
                "'@EMPTY_MARKER@' in an empty folder: delete that empty folder or pick a new repository.prefix;" \
                "if it holds a repository whose kopia.repository could not be read, fix the gateway, delete nothing)" ;;
        esac
        die "cannot create the repository: $(kopia_error "$out")"
    fi
    log "created the repository. $CREATE_REMINDER"
    break
done
# A source that pauses containers needs Kopia's snapshot actions, which Kopia runs only for a client connected with
# --enable-actions (stored as enableActions in its config); otherwise it logs one line and snapshots the live files
# (snapshot/upload/upload_actions.go @ v0.22.3). So refuse to serve without it, rather than back up a running app.
if [ "$ACTIONS_REQUIRED" = yes ]; then
    grep -q '"enableActions": *true' "$KOPIA_CONFIG_PATH" 2>/dev/null ||
        die "kopia.sources declares a pause, but Kopia's config does not enable snapshot actions after connecting" \
            "with --enable-actions: without them Kopia would snapshot the running app; check this Kopia version"
    log "snapshot actions enabled: the pauses of kopia.sources run before and after each snapshot"
fi
date -u +%Y-%m-%dT%H:%M:%SZ > "$SEEN_MARKER" || die "cannot write $SEEN_MARKER: is @STATE_DIR@ a writable volume?"
# When this host first served: restarts do not move it, so a drill that never ran is noticed.
[ -e @STATE_DIR@/first-start ] || write_result @STATE_DIR@/first-start "$(date +%s)"
if [ "$IS_OWNER" = yes ]; then
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
if [ "$IS_OWNER" = yes ] && [ -r "$PREVIOUS_PASSWORD" ] && [ "$password_changed" = no ]; then
    log "kopia.secrets.previousRepositoryPassword is still declared, but the repository opens with" \
        "kopia.secrets.repositoryPassword: remove it from this stack and run pulumi up (it restarts nothing)"
fi
out=$(kopia policy import --from-file "$DEPLOY/@POLICY_JSON@" 2>&1) ||
    die "cannot import $DEPLOY/@POLICY_JSON@: $(kopia_error "$out")"
log "imported policy.json; this host backs up: @SOURCES@"

# The restore drill: every @DRILL_INTERVAL@s, Kopia verifies the snapshots of this host's sources and reads
# back @DRILL_PERCENT@% of their files (`kopia snapshot verify`). The result, one line, is what the health
# check reads: "ok|failed <epoch> <UTC time> [Kopia's error]". Its own output stays out of the container log.
# The next drill is due one interval after the last one (after a failure, within @DRILL_RETRY@s), however
# often the container restarts; a host that has none (or one dated in the future) runs one @DRILL_FIRST_WAIT@s
# after it starts.
restore_drill() {
    while :; do
        outcome=none last=0
        [ -r "$DRILL_RESULT" ] && read -r outcome last _ < "$DRILL_RESULT"
        # A result dated in the future (the clock ran ahead, then was set right) would put the next drill off by
        # as much, while the health check reports it: run one soon instead.
        [ "$last" -le $(($(date +%s) + @CLOCK_SKEW_SECONDS@)) ] 2>/dev/null || outcome=none
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
# API (skipped when the server already holds the same bytes). Profiles live in the repository, which every
# host shares, so only the maintenance owner deletes the @PROFILE_PREFIX@* profiles no longer declared, and only
# when it declares at least one: a host on files older than Pulumi.yaml, or a stack that overrides the
# notifications away, never deletes another host's alerts. Profiles made by hand keep their other names and
# are left alone. The logins and
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
    if [ "$IS_OWNER" != yes ]; then
        deleted=" none (left to $OWNER)"
    elif [ -z "$declared" ]; then
        deleted=" none (none declared: the @PROFILE_PREFIX@* profiles are left alone)"
    else
        delete_undeclared_profiles || return 1
    fi
    echo "saved:${saved:- none}; unchanged:${unchanged:- none}; deleted:${deleted:- none}"
}
delete_undeclared_profiles() {  # the maintenance owner's: every @PROFILE_PREFIX@* profile not in $declared
    all=$(ui_api GET /api/v1/notificationProfiles) || { echo "cannot list the profiles: $all"; return 1; }
    for name in $(printf '%s\n' "$all" | sed -n 's/^ *"profile": "\(@PROFILE_PREFIX@[a-z0-9-]*\)",*$/\1/p'); do
        case "$declared " in *" $name "*) continue ;; esac
        out=$(ui_api DELETE "/api/v1/notificationProfiles/$name") || { echo "cannot delete $name: $out"; return 1; }
        deleted="$deleted $name"
    done
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
