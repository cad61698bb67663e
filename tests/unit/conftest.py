"""Fixtures for running the committed stacks under Pulumi mocks against a local fake Key Vault."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.mocks import ProgramRun, committed_stacks, key_vault_references, run_program
from tests.fake_key_vault import FakeKeyVault

AZURE_TOKEN = "test-azure-token"


def dotenv(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


# Distinct, recognisable values: the secret tests search every plain input and output for them.
VPS_SECRETS = {
    "KOPIA_REPO_PASSWORD": "repo-pass-Vq7w",
    "KOPIA_SERVER_USERNAME": "admin-vps-Ux2",
    "KOPIA_SERVER_PASSWORD": "ui-pass-Lm3k",
    "KOPIA_SERVER_CONTROL_PASSWORD": "control-pass-Zp9d",
    "OPENLIST_S3_ACCESS_KEY_ID": "s3-key-id-Hh4",
    "OPENLIST_S3_SECRET_ACCESS_KEY": "s3-secret-Yy8n",
    "OPENLIST_ADMIN_PASSWORD": "openlist-admin-Pq4v",
    "CLOUD189_PASSWORD": "cloud189-pass-Gg7e",
}
SAKAMOTO_SECRETS = {
    "KOPIA_REPO_PASSWORD": "repo-pass-Vq7w",
    "KOPIA_SERVER_USERNAME": "admin-sakamoto-Qe5",
    "KOPIA_SERVER_PASSWORD": "ui-pass-Rt6y",
    "KOPIA_SERVER_CONTROL_PASSWORD": "control-pass-Wc1x",
    "OPENLIST_S3_ENDPOINT": "http://openlist.cluster.lan:5246",
    "OPENLIST_S3_ACCESS_KEY_ID": "s3-key-id-Kk2",
    "OPENLIST_S3_SECRET_ACCESS_KEY": "s3-secret-Jj3m",
    "OPENLIST_ADMIN_PASSWORD": "openlist-admin-Cc8w",
    "CLOUD189_PASSWORD": "cloud189-pass-Nn5t",
}
KNOWN_SECRETS = {
    ("shelken-homelab", "compose-vps"): VPS_SECRETS,
    ("shelken-homelab", "compose-sakamoto"): SAKAMOTO_SECRETS,
}


def generated_secrets(vault: str, secret: str, fields: set[str]) -> dict[str, str]:
    """Distinct values for a stack file this suite has no hand-made secrets for (a newly added host)."""
    return {
        field: f"http://openlist.{secret}.lan:5246" if field.endswith("ENDPOINT") else f"{secret}-{field}-value"
        for field in fields
    }


def vault_contents() -> dict[tuple[str, str], dict[str, str]]:
    """What the fake Key Vault holds: every secret any committed stack file references."""
    contents = dict(KNOWN_SECRETS)
    for stack in committed_stacks():
        for (vault, secret), fields in key_vault_references(stack).items():
            contents.setdefault((vault, secret), generated_secrets(vault, secret, fields))
    return contents


ALL_SECRET_VALUES = sorted(
    {v for fields in vault_contents().values() for k, v in fields.items() if not k.endswith("ENDPOINT")}
)


@pytest.fixture
def key_vault() -> Iterator[FakeKeyVault]:
    secrets: dict[str, dict[str, str]] = {}
    for (vault, secret), fields in vault_contents().items():
        secrets.setdefault(vault, {})[secret] = dotenv(fields)
    with FakeKeyVault(token=AZURE_TOKEN, secrets=secrets) as vault:
        yield vault


def run_committed_stack(
    stack: str, key_vault: FakeKeyVault, secrets: dict[str, str] | None = None, **overrides: object
) -> ProgramRun:
    """The committed stack file as it is, with Key Vault's URL pointed at the local fake (and `overrides`,
    and `secrets` for `config:` references)."""
    return run_program(
        stack,
        overrides={"homelab-backup:keyVault": {"urlTemplate": key_vault.url_template}, **overrides},
        secrets=secrets,
        invoke_answers={"azure-native:authorization:getClientToken": {"token": AZURE_TOKEN}},
    )


@pytest.fixture
def vps(key_vault: FakeKeyVault) -> ProgramRun:
    return run_committed_stack("vps", key_vault)


@pytest.fixture
def sakamoto(key_vault: FakeKeyVault) -> ProgramRun:
    return run_committed_stack("sakamoto", key_vault)
