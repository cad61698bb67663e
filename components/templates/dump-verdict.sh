# The verdict on each database dump and pause of a host (components/templates/dump-loop.sh and pauser.sh write their
# status lines). Part of the Kopia container's health check, and run by `scripts/status` over SSH against the host's
# copies of the files: one home for the rule. Prints one "<source>: dump <name> ..." (or "pause <containers> ...")
# line per problem and exits 1 then; prints nothing and exits 0 when every one is fresh. Rendered from
# components/templates/dump-verdict.sh.
now=$(date +%s)
started=$(cat @STATE_DIR@/first-start 2>/dev/null || echo "$now")
dumps_bad=0
while read -r source what name file; do
    [ -n "$name" ] || continue
    if ! read -r outcome at details < "$file" 2>/dev/null; then
        if [ $((now - started)) -gt @MAX_AGE_SECONDS@ ]; then
            echo "$source: $what $name: no result since the server started $((now - started))s ago (is its container running?)"
            dumps_bad=1
        fi
        continue
    fi
    when=$(date -u -d "@$at" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "$at")
    if [ "$outcome" != ok ]; then
        echo "$source: $what $name failed at $when: $details"
        dumps_bad=1
    elif [ $((now - at)) -gt @MAX_AGE_SECONDS@ ]; then
        echo "$source: $what $name stale: the last one finished at $when, $((now - at))s ago (more than @MAX_AGE_SECONDS@s; is its container running?)"
        dumps_bad=1
    fi
done <<DUMPS
@DUMPS@
DUMPS
[ "$dumps_bad" -eq 0 ]
