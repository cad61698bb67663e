"""Key Vault data-plane reads against the local fake, fields of JSON and dotenv secrets, and `read_secrets`."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from components.config import parse_secret_ref
from components.secrets import (
    SecretReadError,
    SecretsError,
    fetch_key_vault_secret,
    pick_field,
    read_secrets,
    value_problem,
)
from tests.fake_key_vault import FakeKeyVault

TOKEN = "eyJ0eXAi.test-token.Zm9v"
VAULT = "shelken-homelab"
DOTENV = "# compose-vps\nexport KOPIA_PASSWORD='repo-pass-Vq7w'\nKOPIA_SERVER_USERNAME=admin-Ux2\n"
JSON_SECRET = json.dumps({"user": "admin-Jq1", "password": "pw-Jq2", "port": 5246})
SECRETS = {
    VAULT: {
        "compose-vps": DOTENV,
        "as-json": JSON_SECRET,
        "plain": "plain-Value-Pp9",
        "locked": "locked-Value-Ll4",
    }
}
SECRET_VALUES = ["repo-pass-Vq7w", "admin-Ux2", "admin-Jq1", "pw-Jq2", "plain-Value-Pp9", "locked-Value-Ll4"]


@pytest.fixture
def kv() -> Iterator[FakeKeyVault]:
    with FakeKeyVault(token=TOKEN, secrets=SECRETS, forbidden={(VAULT, "locked")}) as vault:
        yield vault


def base_url(kv: FakeKeyVault, vault: str = VAULT) -> str:
    return kv.url + "/" + vault


def assert_clean(message: str) -> None:
    assert TOKEN not in message
    for value in SECRET_VALUES:
        assert value not in message


# ---------------------------------------------------------------- fetch_key_vault_secret


def test_fetch_returns_the_value_with_the_right_token(kv):
    assert fetch_key_vault_secret(base_url(kv), "plain", TOKEN) == "plain-Value-Pp9"
    assert fetch_key_vault_secret(base_url(kv) + "/", "compose-vps", TOKEN) == DOTENV
    assert kv.requests == [f"/{VAULT}/secrets/plain", f"/{VAULT}/secrets/compose-vps"]


@pytest.mark.parametrize(
    ("secret", "token", "status", "advice"),
    [
        ("plain", "wrong-token-Ww1", 401, "run 'az login'"),
        ("locked", TOKEN, 403, "grant this identity 'Get' on secrets"),
        ("missing", TOKEN, 404, "create it ('az keyvault secret set') or fix the reference"),
    ],
)
def test_fetch_errors_name_the_reference_and_what_to_do_without_leaking(kv, secret, token, status, advice):
    ref = f"azure://{VAULT}/{secret}/FIELD"
    with pytest.raises(SecretReadError) as info:
        fetch_key_vault_secret(base_url(kv), secret, token, ref=ref)
    message = str(info.value)
    assert message.startswith(f"{ref}: ")
    assert f"HTTP {status}" in message
    assert advice in message
    assert_clean(message)
    assert "wrong-token-Ww1" not in message


def test_fetch_without_ref_names_the_secret(kv):
    with pytest.raises(SecretReadError, match=r"^missing: Key Vault answered HTTP 404"):
        fetch_key_vault_secret(base_url(kv), "missing", TOKEN)


def test_fetch_from_an_unreachable_url_says_so(kv):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/{VAULT}"
    with pytest.raises(SecretReadError) as info:
        fetch_key_vault_secret(url, "plain", TOKEN, ref=f"azure://{VAULT}/plain", timeout=5)
    message = str(info.value)
    assert message.startswith(f"azure://{VAULT}/plain: cannot reach Key Vault at {url}")
    assert "check the vault name" in message
    assert_clean(message)


def test_fetch_from_a_silent_server_times_out_with_a_clear_message():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # accepts connections, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/{VAULT}"
        with pytest.raises(SecretReadError, match="cannot reach Key Vault") as info:
            fetch_key_vault_secret(url, "plain", TOKEN, ref=f"azure://{VAULT}/plain", timeout=0.5)
    assert_clean(str(info.value))


@pytest.mark.parametrize("url", ["shelken-homelab.vault.azure.net", "file:///etc/passwd", "ftp://vault"])
def test_fetch_refuses_a_non_http_url(url):
    with pytest.raises(SecretReadError, match=r"Key Vault URL must be http\(s\).*keyVault.urlTemplate"):
        fetch_key_vault_secret(url, "plain", TOKEN, ref="azure://x/plain")


# ---------------------------------------------------------------- pick_field


def test_pick_field_from_json():
    assert pick_field(JSON_SECRET, "password", "ref") == "pw-Jq2"
    assert pick_field('  {"a": "x"}\n', "a", "ref") == "x"


@pytest.mark.parametrize(
    ("field_value", "kind"),
    [("null", "null"), ("true", "a boolean"), ("5246", "a number"), ('{"a": "b"}', "an object"), ("[1]", "a list")],
)
def test_pick_field_refuses_a_json_field_that_is_not_a_string(field_value, kind):
    """`null` used to become the password "null"."""
    ref = "azure://v/s/password"
    with pytest.raises(SecretReadError) as info:
        pick_field('{"password": ' + field_value + ', "user": "admin-Jq1"}', "password", ref)
    assert str(info.value) == f"{ref}: field 'password' is {kind}, not a string: store it as a JSON string"


def test_pick_field_from_dotenv_with_export_quotes_and_comments():
    value = (
        "# Kopia secrets of compose-vps\n"
        "\n"
        "export KOPIA_PASSWORD='it is \"quoted\"'\n"
        'KOPIA_SERVER_USERNAME="admin user"\n'
        "  # indented comment\n"
        "S3_KEY = spaced \n"
        "URL=http://openlist:5246/?a=b\n"
        "EMPTY_QUOTED=''\n"
    )
    assert pick_field(value, "KOPIA_PASSWORD", "ref") == 'it is "quoted"'
    assert pick_field(value, "KOPIA_SERVER_USERNAME", "ref") == "admin user"
    assert pick_field(value, "S3_KEY", "ref") == "spaced"
    assert pick_field(value, "URL", "ref") == "http://openlist:5246/?a=b"


def test_pick_field_missing_lists_field_names_but_no_values():
    ref = f"azure://{VAULT}/compose-vps/KOPIA_SERVER_PASSWORD"
    with pytest.raises(SecretReadError) as info:
        pick_field(DOTENV, "KOPIA_SERVER_PASSWORD", ref)
    message = str(info.value)
    assert message == (
        f"{ref}: no field 'KOPIA_SERVER_PASSWORD' in the secret (it has: KOPIA_PASSWORD, KOPIA_SERVER_USERNAME)"
    )
    assert_clean(message)
    with pytest.raises(SecretReadError, match=r"\(it has: password, port, user\)") as info:
        pick_field(JSON_SECRET, "token", ref)
    assert_clean(str(info.value))


@pytest.mark.parametrize("value", ["A=\nB=x\n", 'A=""\n', '{"A": ""}'])
def test_pick_field_rejects_an_empty_field(value):
    with pytest.raises(SecretReadError, match=r"^ref: field 'A' is empty$"):
        pick_field(value, "A", "ref")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("plain-Value-Pp9", "line 1 is not NAME=value"),
        ("", "the secret is not JSON or dotenv"),
        ("[1, 2]", "line 1 is not NAME=value"),
        ('"a string"', "line 1 is not NAME=value"),
        ("{not json", "starts with '{' but is not valid JSON"),
        ("A=1\nplain-Value-Pp9", "line 2 is not NAME=value"),
    ],
)
def test_pick_field_rejects_a_value_that_is_not_json_or_dotenv(value, why):
    with pytest.raises(SecretReadError) as info:
        pick_field(value, "A", "azure://v/s/A")
    assert str(info.value).startswith("azure://v/s/A: ")
    assert why in str(info.value)
    assert_clean(str(info.value))


# ---------------------------------------------------------------- dotenv: Docker Compose's env-file rules


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A=plain", "plain"),
        ("A=value # an inline comment", "value"),  # a comment needs a space before '#'
        ("A=value#not-a-comment", "value#not-a-comment"),
        ('A="value # not a comment"', "value # not a comment"),
        ('A="value" # a comment after the quote', "value"),
        ("A='value' # a comment after the quote", "value"),
        ("A='$OTHER ${X} \\n'", "$OTHER ${X} \\n"),  # single quotes are literal
        ("A='Let\\'s go'", "Let's go"),  # ...but a quote may be escaped
        ('A="line1\\nline2\\ttab \\\\ \\"q\\""', 'line1\nline2\ttab \\ "q"'),  # double-quoted escapes
        ('A="{\\"hello\\": \\"json\\"}"', '{"hello": "json"}'),
        ('A="first\nsecond"', "first\nsecond"),  # a double-quoted value may span lines
        ("export A=exported", "exported"),
        ("  A = spaced  ", "spaced"),
        ("A=http://openlist:5246/?a=b", "http://openlist:5246/?a=b"),
    ],
)
def test_dotenv_follows_compose_env_file_rules(line, value):
    secret = f"# a comment line\n\nB=other\n{line}\nC=last\n"
    assert pick_field(secret, "A", "ref") == value
    assert pick_field(secret, "C", "ref") == "last"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("A=pa$$word", "'$' in an unquoted value would be substituted by Compose"),
        ('A="pa$word"', "'$' in a double-quoted value would be substituted by Compose"),
        ('A="never closed', "the double quote is never closed"),
        ("A='never closed", "the single quote is never closed"),
        ("A='x' trailing", "text after the closing quote"),
    ],
)
def test_dotenv_that_compose_would_read_differently_is_refused(line, why):
    with pytest.raises(SecretReadError) as info:
        pick_field(f"B=other\n{line}\n", "B", "ref")
    assert why in str(info.value)
    assert "line 2" in str(info.value)
    assert "pa$" not in str(info.value) and "never closed" not in str(info.value).split("(")[0]


def test_field_names_that_may_be_secret_are_not_printed():
    """A value that is not really an env file (base64 lines end in '=') parses as names that are secret text."""
    value = "KOPIA_PASSWORD=x\nc2VjcmV0LXZhbHVlLWJhc2U2NA==\n"
    with pytest.raises(SecretReadError) as info:
        pick_field(value, "KOPIA_SERVER_PASSWORD", "ref")
    assert (
        str(info.value)
        == "ref: no field 'KOPIA_SERVER_PASSWORD' in the secret (it has: KOPIA_PASSWORD and 1 more not shown)"
    )


# ---------------------------------------------------------------- redirects


def test_a_redirect_is_not_followed_with_the_token():
    """Key Vault never redirects a secret read; a redirect (a wrong urlTemplate, a proxy) must not get the token."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    seen: list[str | None] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"value": "x"}')

        def log_message(self, *args: object) -> None:
            pass

    class Redirecting(Elsewhere):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_address[1]}/steal")
            self.end_headers()

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    redirecting = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (elsewhere, redirecting):
        Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SecretReadError) as info:
            fetch_key_vault_secret(f"http://127.0.0.1:{redirecting.server_address[1]}/v", "plain", TOKEN, ref="r")
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()
    assert seen == []
    assert str(info.value).startswith("r: Key Vault answered with a redirect (HTTP 307); not followed")
    assert_clean(str(info.value))


# ---------------------------------------------------------------- read_secrets: every reference, once


def read(kv: FakeKeyVault, refs: list[str], config: dict[str, str] | None = None, tokens: list | None = None):
    tokens = [] if tokens is None else tokens

    def config_secret(key: str) -> str:
        if key not in (config or {}):
            raise SecretReadError(f"config:{key}: no config value")
        return (config or {})[key]

    def token() -> str:
        tokens.append(1)
        return TOKEN

    return read_secrets(
        [(f"homelab-backup:k{i}", parse_secret_ref(ref)) for i, ref in enumerate(refs)],
        config_secret=config_secret,
        key_vault_token=token,
        url_template=kv.url_template,
    )


def test_each_secret_is_read_once_and_the_token_fetched_once(kv):
    tokens: list = []
    refs = [
        f"azure://{VAULT}/compose-vps/KOPIA_PASSWORD",
        f"azure://{VAULT}/as-json/user",
        f"azure://{VAULT}/plain",
        f"azure://{VAULT}/as-json/password",
        f"azure://{VAULT}/compose-vps/KOPIA_SERVER_USERNAME",
    ]
    values = read(kv, refs, tokens=tokens)
    assert list(values.values()) == ["repo-pass-Vq7w", "admin-Jq1", "plain-Value-Pp9", "pw-Jq2", "admin-Ux2"]
    assert sorted(kv.requests) == sorted(f"/{VAULT}/secrets/{s}" for s in ("compose-vps", "as-json", "plain"))
    assert len(tokens) == 1


def test_no_token_when_the_stack_has_no_azure_reference(kv):
    tokens: list = []
    assert read(kv, ["config:a", "config:b"], {"a": "va", "b": "vb"}, tokens) == {
        "homelab-backup:k0": "va",
        "homelab-backup:k1": "vb",
    }
    assert tokens == [] and kv.requests == []


def test_every_problem_is_reported_at_once_with_its_key_and_reference(kv):
    refs = [
        f"azure://{VAULT}/compose-vps/KOPIA_SERVER_PASSWORD",  # no such field
        f"azure://{VAULT}/missing/A",  # no such secret
        f"azure://{VAULT}/missing/B",  # the same secret: read once, reported for each reference
        f"azure://{VAULT}/locked",  # 403
        "config:absent",
        f"azure://{VAULT}/compose-vps/KOPIA_PASSWORD",  # fine
    ]
    with pytest.raises(SecretsError) as info:
        read(kv, refs)
    keys = [k for k, _ in info.value.problems]
    assert keys == [
        "homelab-backup:k0",
        "homelab-backup:k1",
        "homelab-backup:k2",
        "homelab-backup:k3",
        "homelab-backup:k4",
    ]
    for (_, message), ref in zip(info.value.problems, refs, strict=False):
        assert message.startswith(f"{ref}: "), message
    assert kv.requests.count(f"/{VAULT}/secrets/missing") == 1
    message = str(info.value)
    assert message.startswith("cannot read the stack's secrets (5 problems); nothing was changed:\n")
    assert_clean(message)


OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
)


def test_a_private_key_stored_from_its_file_keeps_its_final_line_break():
    """`az keyvault secret set --file id_ed25519` stores the key as ssh-keygen wrote it: the final line break is
    part of the PEM format (an SFTP storage's private_key), not a stray newline after a password."""
    key = "homelab-backup:openlist.storage.secretFields.private_key"
    assert value_problem(key, OPENSSH_KEY) is None
    assert value_problem(key, OPENSSH_KEY.rstrip("\n")) is None


def test_a_password_after_a_private_key_block_is_still_refused_for_its_line_break():
    key = "homelab-backup:openlist.storage.secretFields.private_key"
    problem = value_problem(key, OPENSSH_KEY + "hunter2\n")
    assert problem is not None and "ends in a line break" in problem
