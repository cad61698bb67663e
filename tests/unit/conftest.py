"""Fixtures for running the committed stacks under Pulumi mocks against a local fake Key Vault."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_key_vault import FakeKeyVault
from tests.harness import ProgramRun, run_program

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
}
SAKAMOTO_SECRETS = {
    "KOPIA_REPO_PASSWORD": "repo-pass-Vq7w",
    "KOPIA_SERVER_USERNAME": "admin-sakamoto-Qe5",
    "KOPIA_SERVER_PASSWORD": "ui-pass-Rt6y",
    "KOPIA_SERVER_CONTROL_PASSWORD": "control-pass-Wc1x",
    "OPENLIST_S3_ENDPOINT": "http://openlist.cluster.lan:5246",
    "OPENLIST_S3_ACCESS_KEY_ID": "s3-key-id-Kk2",
    "OPENLIST_S3_SECRET_ACCESS_KEY": "s3-secret-Jj3m",
}
ALL_SECRET_VALUES = sorted(
    {v for v in VPS_SECRETS.values()} | {v for k, v in SAKAMOTO_SECRETS.items() if k != "OPENLIST_S3_ENDPOINT"}
)


@pytest.fixture
def key_vault() -> Iterator[FakeKeyVault]:
    secrets = {"shelken-homelab": {"compose-vps": dotenv(VPS_SECRETS), "compose-sakamoto": dotenv(SAKAMOTO_SECRETS)}}
    with FakeKeyVault(token=AZURE_TOKEN, secrets=secrets) as vault:
        yield vault


def run_committed_stack(stack: str, key_vault: FakeKeyVault, **overrides: object) -> ProgramRun:
    """The committed stack file as it is, with Key Vault's URL pointed at the local fake."""
    return run_program(
        stack,
        overrides={"homelab-backup:keyVault": {"urlTemplate": key_vault.url_template}, **overrides},
        invoke_answers={"azure-native:authorization:getClientToken": {"token": AZURE_TOKEN}},
    )


@pytest.fixture
def vps(key_vault: FakeKeyVault) -> ProgramRun:
    return run_committed_stack("vps", key_vault)


@pytest.fixture
def sakamoto(key_vault: FakeKeyVault) -> ProgramRun:
    return run_committed_stack("sakamoto", key_vault)
