#!/bin/sh
# The pauser of @IDENTITY@, rendered by homelab-backup from components/templates/pauser.sh: the entrypoint of the only
# container that holds the Docker socket. It acts on one thing: the requests Kopia's snapshot actions write into
# @PAUSE_DIR@ ("pause <id>" or "resume <id>", components/templates/pause-action.sh), for the containers fixed below
# at deploy, and no others; it answers in <source>.answer. It unpauses them all when it starts (a pause left by a
# crash ends there), and ends a pause that outlives its source's maxSeconds (Kopia stopped mid-snapshot runs no after
# action). Its result per source is one line in that source's .dumps/@STATUS_NAME@.status, "ok <epoch> paused ... for
# <n>s" after each pause and resume, or "failed <epoch> <reason>", judged like a dump's by the health check and
# scripts/status (components/templates/dump-verdict.sh).
umask 077
dir=@PAUSE_DIR@
# One line per source: its key, its maxSeconds, the directory of its status line, the containers it pauses.
PAUSES='@PAUSES@'
log() { echo "homelab-pauser: $*" >&2; }
@STATUS_FUNCTIONS@

# POST /containers/<name>/<pause|unpause> on the socket; Docker answers 204, or an error with a message.
# Pausing a container that does not run, or unpausing one that is not paused, is not a failure: nothing runs
# (a stopped app's files are at rest), or nothing is frozen.
docker_call() { # $1: pause|unpause, $2: the container; sets $reason when it fails
    answer_file=$(mktemp) || {
        reason="cannot make a temp file"
        return 1
    }
    code=$(curl -sS --max-time 30 --unix-socket @SOCKET@ -o "$answer_file" -w '%{http_code}' \
        -X POST "http://docker/containers/$2/$1" < /dev/null 2> "$answer_file.err")
    message=$(cat "$answer_file" "$answer_file.err" | tr -c '[:print:]' ' ' | tr -s ' ' | cut -c 1-300)
    rm -f "$answer_file" "$answer_file.err"
    case "$code:$message" in
    204:*) return 0 ;;
    *"is not running"* | *"already paused"* | *"is not paused"*) return 0 ;;
    esac
    reason="docker $1 $2 answered HTTP ${code:-none}: ${message:-no message}"
    return 1
}

reply() { # $1: paused|resumed|failed, $2: the request's id, $3: why it failed
    if ! { tmp_answer=$(mktemp "$dir/.answer.XXXXXX") && printf '%s %s %s\n' "$1" "$2" "$3" > "$tmp_answer" &&
        mv -f "$tmp_answer" "$dir/$key.answer"; }; then
        log "cannot answer in $dir/$key.answer"
    fi
}

unpause_all() { # sets $reason to every container that could not be unpaused
    stuck=''
    for container in $containers; do
        docker_call unpause "$container" || stuck="$stuck $reason;"
    done
    reason=$stuck
    [ -z "$stuck" ]
}

pause_all() { # $1: the request's id
    paused=''
    for container in $containers; do
        if ! docker_call pause "$container"; then
            why=$reason
            for done_one in $paused; do
                docker_call unpause "$done_one" || why="$why; and $reason (still paused)"
            done
            failed "cannot pause $containers for a snapshot of the source, which therefore failed: $why"
            reply failed "$1" "$why"
            return
        fi
        paused="$paused $container"
    done
    echo "$(date +%s) $1" > "$dir/$key.since"
    reply paused "$1"
}

resume_all() { # $1: the request's id
    since=''
    [ -r "$dir/$key.since" ] && read -r since _ < "$dir/$key.since"
    if ! unpause_all; then
        failed "cannot unpause$reason the app stays frozen: unpause it by hand (docker unpause)"
        reply failed "$1" "$reason"
        return
    fi
    rm -f "$dir/$key.since"
    # No pause before it (a pause that failed, or one already ended by maxSeconds): its status stays as it is.
    [ -z "$since" ] || succeeded "paused $containers for $(($(date +%s) - since))s for the snapshot $1"
    reply resumed "$1"
}

serve() { # one source: its request, if any, then its pause's limit
    status=$status_dir/@STATUS_NAME@.status marker=$status_dir/@STATUS_NAME@.failed
    if [ -e "$dir/$key.request" ]; then
        verb='' id=''
        read -r verb id _ < "$dir/$key.request" || :
        rm -f "$dir/$key.request"
        case "$id" in '' | *[!0-9a-f]*) id=invalid ;; esac # Kopia's snapshot ids are hex
        case "$verb" in
        pause) pause_all "$id" ;;
        resume) resume_all "$id" ;;
        *) reply failed "$id" "unknown request" ;;
        esac
    fi
    if [ -r "$dir/$key.since" ] && read -r since id < "$dir/$key.since" && [ $(($(date +%s) - since)) -ge "$max" ]; then
        unpause_all || log "cannot unpause$reason"
        rm -f "$dir/$key.since"
        failed "the pause of $containers outlived maxSeconds ($max s) and was ended during or after the snapshot $id:" \
            "the snapshot took longer, or Kopia stopped before resuming them; raise maxSeconds, or see the Kopia" \
            "container's log${reason:+; still paused:$reason}"
    fi
}

each_source() { # $1: the function to run once per source, with key, max, status_dir and containers set
    while read -r key max status_dir containers; do "$1"; done << PAUSES
$PAUSES
PAUSES
}

start() {
    status=$status_dir/@STATUS_NAME@.status marker=$status_dir/@STATUS_NAME@.failed
    rm -f "$dir/$key.since"
    # A request Kopia is still waiting for is served; an older one (this container was down) is not: nobody waits.
    find "$dir" -maxdepth 1 -name "$key.request" -mmin +1 -exec rm -f {} +
    unpause_all || failed "at start: cannot unpause$reason the app stays frozen: unpause it by hand (docker unpause)"
}

# Stopped (a deploy replaces or removes this container): nothing it froze stays frozen behind it.
stop() {
    rm -f "$dir/$key.since"
    unpause_all || log "at stop: cannot unpause$reason"
}
trap 'each_source stop; exit 0' TERM INT

until ping=$(curl -sS --max-time 10 --unix-socket @SOCKET@ http://docker/_ping 2>&1) && [ "$ping" = OK ]; do
    log "cannot reach the Docker socket @SOCKET@ (${ping:-no answer}); next try in 10s"
    sleep 10
done
each_source start
log "serving pause requests for: $(printf '%s\n' "$PAUSES" | cut -d ' ' -f 4- | tr '\n' ';')"
while :; do
    each_source serve
    sleep 1
done
