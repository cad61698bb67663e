# A result's status line, replaced whole; readable by all (it holds no secret) so scripts/status reads it over SSH.
# $status: the line's file; $marker: the named pipe kept beside it while the result is a failure (Kopia's policy for
# the .dumps directory counts an entry of an unknown type as an error, so the next snapshot reports the failure and
# Kopia's notification profiles alert). Embedded by components/templates/dump-loop.sh and pauser.sh.
write_status() {
    tmp_status=$(mktemp "${status%/*}/.${status##*/}.XXXXXX") || { log "cannot write $status"; return 1; }
    printf '%s %s %s\n' "$1" "$(date +%s)" "$2" > "$tmp_status" && chmod 644 "$tmp_status" &&
        mv -f "$tmp_status" "$status"
}

failed() {
    [ -p "$marker" ] || { rm -f "$marker" && mkfifo -m 600 "$marker"; } || log "cannot make $marker"
    write_status failed "$1"
    log "failed: $1"
}

succeeded() {
    rm -f "$marker"
    write_status ok "$1"
}
