# The last snapshot attempt of each source, from the task list of the Kopia server on stdin (GET /api/v1/tasks:
# {"tasks": [...]}, most recent first, as internal/uitask/uitask_manager.go @ v0.22.3 lists them). A snapshot that fails
# outright writes no manifest, so the control API still shows the last good one; the failed task is here.
# One home for the rule: the health check embeds this program and `scripts/status` runs it.
# Variable: expected (the sources of the host, space-separated user@host:/path). Prints one
# "<source>: last snapshot attempt failed at <time>: <error>" line per source whose most recent snapshot task
# failed, and exits 1 then; prints nothing and exits 0 otherwise. No single quotes in this file: the health
# check passes it to awk inside single quotes.
function text(line) {
    sub(/^[^:]*: *"/, "", line); sub(/",?$/, "", line)
    gsub(/\\"/, "\"", line); gsub(/\\n/, " ", line); gsub(/\\u003c/, "<", line); gsub(/\\u003e/, ">", line)
    gsub(/\\u0026/, "\\&", line)
    return line
}
function finish(    source, at) {
    if (kind == "Snapshot" && description != "") {
        # The description is "<user@host:/path> at <RFC 3339 time>" (internal/server/server.go).
        source = description; sub(/ at [^ ]*$/, "", source)
        at = description; sub(/^.* at /, "", at)
        if ((source in want) && !(source in seen)) {
            seen[source] = 1
            if (status == "FAILED") {
                printf "%s: last snapshot attempt failed at %s: %s\n", source, at, error
                failed = 1
            }
        }
    }
    kind = ""; description = ""; status = ""; error = ""
}
BEGIN { n = split(expected, list, " "); for (i = 1; i <= n; i++) want[list[i]] = 1 }
/^ *"id": / { finish() }
/^ *"kind": / { kind = text($0) }
/^ *"description": / { description = text($0) }
/^ *"status": / { status = text($0) }
/^ *"errorMessage": / { error = text($0) }
END { finish(); exit failed }
