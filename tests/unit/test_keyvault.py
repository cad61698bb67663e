"""Key Vault data-plane reads against the local fake, field picking, and `SecretResolver` under Pulumi mocks."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pulumi
import pytest
from pulumi_azure_native import authorization

from components.config import parse_secret_ref
from components.secrets import KEY_VAULT_RESOURCE, SecretReadError, SecretResolver, fetch_key_vault_secret, pick_field
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
    assert pick_field(JSON_SECRET, "port", "ref") == "5246"  # non-strings come back as JSON text
    assert pick_field('  {"a": "x"}\n', "a", "ref") == "x"


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


@pytest.mark.parametrize("value", ["plain-Value-Pp9", "", "[1, 2]", '"a string"', "{not json", "A=1\nplain-Value-Pp9"])
def test_pick_field_rejects_a_value_that_is_not_json_or_dotenv(value):
    with pytest.raises(SecretReadError) as info:
        pick_field(value, "A", "azure://v/s/A")
    assert str(info.value) == "azure://v/s/A: the secret is not JSON or dotenv, so it has no field 'A'"


# ---------------------------------------------------------------- SecretResolver under Pulumi mocks


class TokenMocks(pulumi.runtime.Mocks):
    """Answers the azure-native token invoke, records every invoke, and has no resources to create."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        with self.lock:
            self.calls.append((args.token, dict(args.args)))
        if args.token == "azure-native:authorization:getClientToken":
            return {"token": TOKEN, "clientId": "c", "objectId": "o", "subscriptionId": "s", "tenantId": "t"}
        raise NotImplementedError(args.token)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        raise NotImplementedError(args.typ)

    @property
    def token_calls(self) -> list[dict]:
        return [a for t, a in self.calls if t == "azure-native:authorization:getClientToken"]


@pytest.fixture
def mocks() -> TokenMocks:
    mocks = TokenMocks()
    pulumi.runtime.set_mocks(mocks, project="homelab-backup", stack="test", preview=False)
    return mocks


def resolver(kv: FakeKeyVault, config_secret=None) -> SecretResolver:
    """As `__main__.py` builds it, with Key Vault's URL pointed at the fake."""

    def no_config(key: str) -> pulumi.Output[str]:
        raise AssertionError(f"config secret {key} read")

    return SecretResolver(
        config_secret=config_secret or no_config,
        key_vault_token=lambda: authorization.get_client_token_output(endpoint=KEY_VAULT_RESOURCE).token,
        url_template=kv.url_template,
        api_version="7.4",
    )


async def _flags(outputs: list[pulumi.Output]) -> list[bool]:
    return [await output.is_secret() for output in outputs]


def secret_flags(outputs: list[pulumi.Output]) -> pulumi.Output[list[bool]]:
    return pulumi.Output.from_input(_flags(outputs))


@pulumi.runtime.test
def test_three_fields_of_one_secret_make_one_request_and_are_secret(kv, mocks):
    secrets = resolver(kv)
    names = ["KOPIA_PASSWORD", "KOPIA_SERVER_USERNAME", "KOPIA_PASSWORD"]
    outputs = [secrets.resolve(parse_secret_ref(f"azure://{VAULT}/compose-vps/{name}")) for name in names]

    def check(args):
        values, flags = args
        assert values == ["repo-pass-Vq7w", "admin-Ux2", "repo-pass-Vq7w"]
        assert flags == [True, True, True]
        assert kv.requests == [f"/{VAULT}/secrets/compose-vps"]
        assert mocks.token_calls == [{"endpoint": KEY_VAULT_RESOURCE}]

    return pulumi.Output.all(pulumi.Output.all(*outputs), secret_flags(outputs)).apply(check)


@pulumi.runtime.test
def test_each_secret_is_read_once_and_the_token_fetched_once(kv, mocks):
    secrets = resolver(kv)
    refs = [
        f"azure://{VAULT}/compose-vps/KOPIA_PASSWORD",
        f"azure://{VAULT}/as-json/user",
        f"azure://{VAULT}/plain",
        f"azure://{VAULT}/as-json/password",
        f"azure://{VAULT}/plain",
    ]
    outputs = [secrets.resolve(parse_secret_ref(ref)) for ref in refs]

    def check(args):
        values, flags = args
        assert values == ["repo-pass-Vq7w", "admin-Jq1", "plain-Value-Pp9", "pw-Jq2", "plain-Value-Pp9"]
        assert all(flags)
        assert sorted(kv.requests) == sorted(f"/{VAULT}/secrets/{s}" for s in ("compose-vps", "as-json", "plain"))
        assert len(mocks.token_calls) == 1

    return pulumi.Output.all(pulumi.Output.all(*outputs), secret_flags(outputs)).apply(check)


@pulumi.runtime.test
def test_config_reference_uses_the_injected_config_secret_and_is_secret(kv, mocks):
    asked: list[str] = []

    def config_secret(key: str) -> pulumi.Output[str]:
        asked.append(key)
        return pulumi.Output.from_input(f"value-of-{key}")  # plain on purpose: the resolver must mark it

    secrets = resolver(kv, config_secret)
    output = secrets.resolve(parse_secret_ref("config:kopiaPassword"))

    def check(args):
        value, flags = args
        assert value == "value-of-kopiaPassword"
        assert flags == [True]
        assert asked == ["kopiaPassword"]
        assert mocks.calls == []
        assert kv.requests == []

    return pulumi.Output.all(output, secret_flags([output])).apply(check)


@pulumi.runtime.test
def test_no_token_invoke_when_the_stack_has_no_azure_reference(kv, mocks):
    refs = ["config:s3Endpoint", "config:s3Key", "config:s3Secret", "config:repoPassword", "config:uiPassword"]
    secrets = resolver(kv, lambda key: pulumi.Output.secret(f"v-{key}"))
    outputs = [secrets.resolve(parse_secret_ref(ref)) for ref in refs]

    def check(args):
        values, flags = args
        assert values == ["v-s3Endpoint", "v-s3Key", "v-s3Secret", "v-repoPassword", "v-uiPassword"]
        assert all(flags)
        assert mocks.calls == []  # no Azure credentials needed
        assert kv.requests == []

    return pulumi.Output.all(pulumi.Output.all(*outputs), secret_flags(outputs)).apply(check)


def test_resolver_error_names_the_reference_not_the_value(kv, mocks):
    secrets = resolver(kv)
    ref = f"azure://{VAULT}/compose-vps/KOPIA_SERVER_PASSWORD"

    @pulumi.runtime.test
    def resolve_missing_field():
        return secrets.resolve(parse_secret_ref(ref))

    with pytest.raises(SecretReadError) as info:
        resolve_missing_field()
    message = str(info.value)
    assert message.startswith(f"{ref}: no field 'KOPIA_SERVER_PASSWORD'")
    assert_clean(message)
