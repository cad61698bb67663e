# Kopia's before- and after-snapshot-root action on @IDENTITY@, rendered by homelab-backup from
# components/templates/pause-action.sh into policy.json (the user@host entry, which every source of this host
# inherits). It holds no socket and stops nothing itself: it writes "pause <snapshot id>" or "resume <snapshot id>"
# into @PAUSE_DIR@/<source>.request and waits for the pauser container (@PAUSER@), which alone holds the Docker
# socket, to answer in <source>.answer. Before the snapshot it is essential: a pause not confirmed fails that
# snapshot, and Kopia reports it. After the snapshot Kopia runs it also when the snapshot failed; if it gets no
# answer, the pauser still ends the pause when the source's maxSeconds pass. Kopia runs it with `sh -e`.
case "$KOPIA_SOURCE_PATH" in
@CASES@
*) exit 0 ;; # this source pauses nothing
esac
case "$KOPIA_ACTION" in
before-snapshot-root) request=pause expected=paused ;;
after-snapshot-root) request=resume expected=resumed ;;
*)
    echo "homelab-pause: unknown action '$KOPIA_ACTION'" >&2
    exit 1
    ;;
esac
id=$KOPIA_SNAPSHOT_ID
ask() {
    tmp=$(mktemp "@PAUSE_DIR@/.request.XXXXXX") && printf '%s %s\n' "$1" "$id" > "$tmp" &&
        mv -f "$tmp" "@PAUSE_DIR@/$key.request"
}
ask "$request" || {
    echo "homelab-pause: cannot write @PAUSE_DIR@/$key.request to $request $containers" >&2
    exit 1
}
waited=0
while [ "$waited" -lt @ANSWER_SECONDS@ ]; do
    # The before and after actions of one snapshot share its id: the after action waits past the "paused" answer.
    if read -r answer answered reason 2> /dev/null < "@PAUSE_DIR@/$key.answer" && [ "$answered" = "$id" ]; then
        case "$answer" in
        "$expected") exit 0 ;;
        failed)
            echo "homelab-pause: $request of $containers for $KOPIA_SOURCE_PATH failed: $reason" >&2
            exit 1
            ;;
        esac
    fi
    sleep 1
    waited=$((waited + 1))
done
echo "homelab-pause: no answer from @PAUSER@ within @ANSWER_SECONDS@s to '$request $containers' for" \
    "$KOPIA_SOURCE_PATH: is it running? (docker logs @PAUSER@)" >&2
# A pause that comes late must not last: Kopia runs no after action once the before action failed.
[ "$request" != pause ] || ask resume
exit 1
