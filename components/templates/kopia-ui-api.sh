# Kopia's UI API, as its own UI calls it: the UI login (Basic), a session cookie, and the CSRF token the UI
# page carries for that session (internal/server/server.go, server_authz_checks.go @ v0.22.3). The login
# and the token travel on curl's stdin, never on its command line. Part of the start script and the
# health check; rendered from components/templates/kopia-ui-api.sh.
ui_login=$(printf '%s:%s' "$KOPIA_SERVER_USERNAME" "$KOPIA_SERVER_PASSWORD" | base64 | tr -d '\n')
session=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
csrf=none  # until ui_open reads this session's token
ui_api() {  # METHOD PATH [curl options]: prints the answer, or curl's error; fails when the call does
    method=$1 path=$2
    shift 2
    printf 'Authorization: Basic %s\nCookie: Kopia-Session-Cookie=%s\nX-Kopia-Csrf-Token: %s\n' \
        "$ui_login" "$session" "$csrf" |
        curl -sS --fail --max-time 30 @CURL_TLS@ -H @- -X "$method" "$@" "@SERVER_URL@$path" 2>&1
}
ui_open() {  # reads the session's CSRF token from the UI page (run it in this shell, not in $(...));
    # when it cannot, ui_error says why
    page=$(ui_api GET /) || { ui_error="the server's UI page: $page"; return 1; }
    csrf=$(printf '%s\n' "$page" | sed -n 's/.*name="kopia-csrf-token" content="\([0-9a-f]*\)".*/\1/p')
    [ -n "$csrf" ] || { ui_error="the server's UI page carries no CSRF token"; return 1; }
}
