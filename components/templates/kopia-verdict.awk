# The verdict on each source of a host, from the answer of the Kopia control API (GET /api/v1/control/sources) on
# stdin. One home for the rules: the health check of the container (components/templates/kopia-health.sh embeds
# this program) and `scripts/status` on the machine of the operator both run it.
# Variables: now, started (epoch seconds of the server start; empty: unknown), max_age (seconds),
# upload_allowance (seconds an upload may add to max_age), skew (seconds a time may lie ahead of now before
# it is a clock problem, not a fresh snapshot), expected (the sources of the host, space-separated
# user@host:/path). Prints one "<source>: <problem>" line per problem, or
# "healthy: <n> sources backing up"; exits 1 on any problem. No single quotes in this file: the health
# check passes it to awk inside single quotes.
# Seconds since the epoch of an RFC 3339 time such as 2026-11-27T11:54:00.32Z or 2026-11-27T19:55:00+08:00.
function epoch(t,    y, mo, d, h, mi, s, off, sign, era, yoe, doy, doe, days) {
    y = substr(t, 1, 4) + 0; mo = substr(t, 6, 2) + 0; d = substr(t, 9, 2) + 0
    h = substr(t, 12, 2) + 0; mi = substr(t, 15, 2) + 0; s = substr(t, 18, 2) + 0
    off = 0
    if (match(t, /[+-][0-9][0-9]:[0-9][0-9]$/)) {
        sign = substr(t, RSTART, 1) == "-" ? -1 : 1
        off = sign * (substr(t, RSTART + 1, 2) * 3600 + substr(t, RSTART + 4, 2) * 60)
    }
    if (mo <= 2) y -= 1
    era = int(y / 400); yoe = y - era * 400
    doy = int((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5) + d - 1
    doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + s - off
}
function value(line) { sub(/^[^:]*: */, "", line); sub(/,$/, "", line); gsub(/"/, "", line); return line }
function finish() {
    if (path == "") return
    name = user "@" host ":" path
    seen[name] = 1
    if (!(name in want)) { path = ""; return }
    if (status == "PAUSED") problem(name ": paused")
    else if (status != "IDLE" && status != "PENDING" && status != "UPLOADING") problem(name ": status " status)
    else if (status == "UPLOADING") {
        # Uploading counts as backing up, within a bound: a hung upload must not stay green forever.
        since = last_start == "" ? (started == "" ? 0 : now - started) : now - epoch(last_start)
        if (!(last_start != "" && ahead(name, since)) && since > max_age + upload_allowance)
            problem(name ": uploading, but no snapshot finished for " since "s (more than " max_age + upload_allowance "s)")
    }
    else {
        if (next_time == "") problem(name ": no next snapshot scheduled (paused, or a failed snapshot waiting for the next refresh)")
        if (last_start == "") {
            if (started == "") problem(name ": no snapshot yet")
            else if (now - started > max_age) problem(name ": no snapshot since the server started " now - started "s ago")
        } else {
            age = now - epoch(last_start)
            if (!ahead(name, age) && age > max_age) problem(name ": last snapshot " age "s ago (more than " max_age "s)")
            if (errors + 0 > 0) problem(name ": last snapshot had " errors " errors")
            if (incomplete != "") problem(name ": last snapshot is incomplete (" incomplete ")")
        }
    }
    path = ""
}
function problem(text) { print text; bad = 1 }
# A snapshot dated in the future has a negative age, which no bound ever calls stale: a host clock that ran
# ahead, or one set back later. Beyond the tolerated skew it is a problem of its own.
function ahead(name, age) {
    if (age >= -skew) return 0
    problem(name ": last snapshot is dated " (-age) "s in the future (more than " skew "s ahead): check the host clock")
    return 1
}
function reset() { status = ""; last_start = ""; errors = 0; incomplete = ""; next_time = ""; user = ""; host = ""; path = "" }
BEGIN { n = split(expected, list, " "); for (i = 1; i <= n; i++) want[list[i]] = 1 }
# Kopia pretty-prints the answer, one key per line; stack[d] is the key that opened nesting level d
# (stack[2] = "sources", stack[3] = one source, stack[4] = "source", "lastSnapshot", ...).
{
    line = $0; sub(/^[ \t]+/, "", line)
    key = ""; if (match(line, /^"[^"]*":/)) key = substr(line, 2, RLENGTH - 3)
    in_source = depth >= 3 && stack[2] == "sources"
    if (depth == 2 && stack[2] == "sources" && line ~ /^\{/) { finish(); reset() }
    if (in_source && depth == 3 && key == "status") status = value(line)
    if (in_source && depth == 3 && key == "nextSnapshotTime") next_time = value(line)
    if (in_source && depth == 4 && stack[4] == "source") {
        if (key == "host") host = value(line)
        if (key == "userName") user = value(line)
        if (key == "path") path = value(line)
    }
    if (in_source && depth == 4 && stack[4] == "lastSnapshot") {
        if (key == "startTime") last_start = value(line)
        if (key == "incomplete") incomplete = value(line)
    }
    if (in_source && depth == 5 && stack[4] == "lastSnapshot" && stack[5] == "stats" && key == "errorCount")
        errors = value(line)
    stripped = line; gsub(/"([^"\\]|\\.)*"/, "", stripped)
    opens = gsub(/[{[]/, "", stripped); closes = gsub(/[]}]/, "", stripped)
    if (opens > closes) { depth++; stack[depth] = key }
    else if (closes > opens) depth--
}
END {
    finish()
    for (name in want) if (!(name in seen)) problem(name ": not scheduled by the server")
    if (!bad) print "healthy: " n " sources backing up"
    exit bad
}
