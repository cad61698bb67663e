#!/bin/sh
# The dump of @NAME@ (@KIND@), rendered by homelab-backup from components/templates/dump-loop.sh: the entrypoint of
# its own container, which runs from @IMAGE_ROLE@. Before every scheduled snapshot of the source it dumps
# @WHAT@ into @DUMPS_DIR@/@FILE@ (the source's .dumps directory): into a temp @TEMP_KIND@, renamed once whole, so a
# snapshot holds the last whole dump and never half of one. Its result is one line in @DUMPS_DIR@/@NAME@.status,
# "ok <epoch> <details>" or "failed <epoch> <reason>", which the Kopia container's health check and
# scripts/status judge (components/templates/dump-verdict.sh); an ok line says when the dump started (what it
# holds was committed before then). While the last dump failed, a named pipe
# @DUMPS_DIR@/@NAME@.failed sits beside it: Kopia's policy for the .dumps directory counts an entry of an unknown
# type as an error, so that snapshot reports the error and Kopia's notification profiles alert.
# Credentials come from a 0600 file mounted read-only; none is in this script, the environment or a command line.
umask 077
dir=@DUMPS_DIR@
out="$dir/@FILE@"
status="$dir/@NAME@.status"
marker="$dir/@NAME@.failed"
interval=@INTERVAL_SECONDS@
lead=@LEAD_SECONDS@
# Kopia's server schedules a source at multiples of its interval counted from Go's zero time, 0001-01-01 UTC,
# which is this many seconds before the Unix epoch (SchedulingPolicy.NextSnapshotTime: Truncate(interval),
# snapshot/policy/scheduling_policy.go @ v0.22.3).
go_zero=62135596800
@PRELUDE@
log() { echo "homelab-dump @NAME@: $*" >&2; }

@STATUS_FUNCTIONS@

# One dump. $1: the time of the snapshot it is for (0: none, the dump at start); finishing after it is a failure.
dump_once() {
    started=$(date +%s)
    if ! tmp=$(mktemp @MKTEMP_FLAGS@"$dir/.@NAME@.XXXXXX"); then
        failed "cannot create a temp @TEMP_KIND@ in $dir"
        return
    fi
    errors=$(mktemp)
    client="@CLIENT@"  # the step that failed, for the message (a MinIO mirror's steps set it)
    if @DUMP_COMMAND@ 2>"$errors" </dev/null && client="mv" && @PUBLISH@ 2>"$errors"; then
        finished=$(date +%s)
        if [ "$1" -gt 0 ] && [ "$finished" -ge "$1" ]; then
            failed "late: it finished $((finished - $1))s after the snapshot due at $1 began (it took $((finished - started))s; leadSeconds is $lead): that snapshot may hold the previous dump"
        else
            succeeded "started $started, took $((finished - started))s, @SIZE@, for the snapshot due at $1"
        fi
    else
        code=$?
        rm -rf "$tmp"
        # The client's message on one line, printable characters only, at most 400 of them (pg_dump puts the
        # cause first and where the password came from after it).
        reason=$(tr -c '[:print:]' ' ' < "$errors" | tr -s ' ' | cut -c 1-400)
        failed "$client exited $code: ${reason:-no message}"
    fi
    rm -f "$errors"
}

# The snapshot after a (re)start of Kopia runs at once, so dump at once too; then before each scheduled one.
dump_once 0
while :; do
    now=$(date +%s)
    due=$(( ((now + go_zero) / interval + 1) * interval - go_zero ))
    [ $((due - lead)) -gt "$now" ] || due=$((due + interval))
    sleep $((due - lead - now))
    dump_once "$due"
done
