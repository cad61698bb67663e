# The restore drill's verdict (the start script runs the drill and writes its result). Part of the health
# check, and run by `scripts/status` over SSH against the host's copy of the state dir. Prints one line;
# exits 1 when the last drill failed or is overdue. Rendered from components/templates/kopia-drill-verdict.sh.
if [ -r @STATE_DIR@/restore-drill ] && read -r outcome at when message < @STATE_DIR@/restore-drill; then
    age=$(( $(date +%s) - at ))
    if [ "$age" -lt -@CLOCK_SKEW_SECONDS@ ]; then
        # A negative age is never overdue: a clock that ran ahead when the drill ran would pass it for ever.
        echo "restore drill result is dated $(( -age ))s in the future (at $when): check the host clock"
        exit 1
    fi
    if [ "$outcome" != ok ]; then
        echo "restore drill failed at $when: $message"
        exit 1
    fi
    if [ "$age" -gt @MAX_DRILL_AGE_SECONDS@ ]; then
        echo "restore drill overdue: the last one passed ${age}s ago, at $when"
        exit 1
    fi
    echo "restore drill passed at $when"
elif [ $(( $(date +%s) - $(cat @STATE_DIR@/first-start 2>/dev/null || date +%s) )) -gt @MAX_DRILL_AGE_SECONDS@ ]; then
    echo "no restore drill since the server started"
    exit 1
else
    echo "no restore drill yet (the first one runs soon after the server starts)"
fi
