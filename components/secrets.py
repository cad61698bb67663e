"""Secret references -> Pulumi secret Outputs.

`azure://<vault>/<secret>[/<field>]` is read from the Key Vault *data plane*
(`GET https://<vault>.vault.azure.net/secrets/<secret>`): azure-native's
`keyvault.get_secret` is the management plane and never returns the value
(pulumi/pulumi-azure-native#1422). The bearer token comes from
`authorization.get_client_token`, i.e. the same credentials as the azure-native
provider (`az login`, a service principal, a managed identity).

`config:<key>` is a Pulumi config secret of the stack (`pulumi config set --secret`).

Every value leaves this module wrapped by `pulumi.Output.secret`. Errors name
the reference, never the value.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import pulumi

from components.config import SecretRef

KEY_VAULT_RESOURCE = "https://vault.azure.net"  # token audience of the Key Vault data plane


class SecretReadError(Exception):
    """A secret reference that cannot be resolved; the message names the reference and what to do."""


# ---------------------------------------------------------------- pure parts


def fetch_key_vault_secret(
    base_url: str, secret: str, token: str, *, api_version: str = "7.4", timeout: float = 30.0, ref: str = ""
) -> str:
    """The current value of one Key Vault secret (data plane REST API)."""
    label = ref or secret
    if not base_url.startswith(("https://", "http://")):
        raise SecretReadError(f"{label}: Key Vault URL must be http(s), got {base_url!r} (keyVault.urlTemplate)")
    url = f"{base_url.rstrip('/')}/secrets/{urllib.parse.quote(secret)}?api-version={api_version}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = {
            401: "the Azure token was refused: run 'az login' (or set the service principal's ARM_* variables)",
            403: "access denied: grant this identity 'Get' on secrets (access policy) or the role"
            " 'Key Vault Secrets User' (RBAC)",
            404: "no such secret in this vault: create it ('az keyvault secret set') or fix the reference",
        }.get(exc.code, "unexpected answer from Key Vault")
        raise SecretReadError(f"{label}: Key Vault answered HTTP {exc.code}: {hint}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SecretReadError(
            f"{label}: cannot reach Key Vault at {base_url} ({reason}); check the vault name"
        ) from None
    except json.JSONDecodeError:
        raise SecretReadError(f"{label}: Key Vault answered with something that is not JSON") from None
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise SecretReadError(f"{label}: Key Vault's answer holds no secret value")
    return value


def parse_secret_fields(value: str) -> dict[str, str] | None:
    """The keys of a JSON object or dotenv secret value; None when it is neither."""
    stripped = value.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        if isinstance(data, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        return None
    fields: dict[str, str] = {}
    for line in value.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, raw = line.partition("=")
        if not sep or not name.strip().replace("_", "").isalnum():
            return None
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        fields[name.strip()] = raw
    return fields or None


def pick_field(value: str, field: str, ref: str) -> str:
    """One key of a JSON or dotenv secret; the error lists the keys present, never a value."""
    fields = parse_secret_fields(value)
    if fields is None:
        raise SecretReadError(f"{ref}: the secret is not JSON or dotenv, so it has no field '{field}'")
    if field not in fields:
        # Name the fields only of a structured secret: the "field" of a one-line 'a=b' value is part of the secret.
        present = f" (it has: {', '.join(sorted(fields))})" if len(fields) > 1 or value.strip().startswith("{") else ""
        raise SecretReadError(f"{ref}: no field '{field}' in the secret{present}")
    if fields[field] == "":
        raise SecretReadError(f"{ref}: field '{field}' is empty")
    return fields[field]


def read_secret(
    ref: SecretRef,
    *,
    config_value: Callable[[str], str],
    key_vault_token: Callable[[], str],
    url_template: str = "https://{vault}.vault.azure.net",
    api_version: str = "7.4",
) -> str:
    """A reference's plain value, outside a Pulumi program (scripts/status): the same rules as `SecretResolver`."""
    if ref.config_key is not None:
        return config_value(ref.config_key)
    if ref.vault is None or ref.secret is None:
        raise SecretReadError(f"{ref}: not a Key Vault or config reference")
    base_url = url_template.format(vault=ref.vault)
    label = f"azure://{ref.vault}/{ref.secret}"
    value = fetch_key_vault_secret(base_url, ref.secret, key_vault_token(), api_version=api_version, ref=label)
    return pick_field(value, ref.field, ref.text) if ref.field is not None else value


# ---------------------------------------------------------------- Outputs


class SecretResolver:
    """Resolves references to secret Outputs, reading each Key Vault secret once per run."""

    def __init__(
        self,
        *,
        config_secret: Callable[[str], pulumi.Output[str]],
        key_vault_token: Callable[[], pulumi.Output[str]],
        url_template: str = "https://{vault}.vault.azure.net",
        api_version: str = "7.4",
    ):
        self._config_secret = config_secret
        self._key_vault_token = key_vault_token
        self._token: pulumi.Output[str] | None = None
        self._url_template = url_template
        self._api_version = api_version
        self._values: dict[tuple[str, str], pulumi.Output[str]] = {}

    def resolve(self, ref: SecretRef) -> pulumi.Output[str]:
        if ref.config_key is not None:
            return pulumi.Output.secret(self._config_secret(ref.config_key))
        if ref.vault is None or ref.secret is None:
            raise SecretReadError(f"{ref}: not a Key Vault or config reference")
        value = self._secret_value(ref.vault, ref.secret, ref)
        if ref.field is not None:
            field = ref.field
            value = value.apply(lambda v: pick_field(v, field, ref.text))
        return pulumi.Output.secret(value)

    def _secret_value(self, vault: str, secret: str, ref: SecretRef) -> pulumi.Output[str]:
        key = (vault, secret)
        if key not in self._values:
            if self._token is None:
                # Only stacks that reference Key Vault need Azure credentials.
                self._token = pulumi.Output.secret(self._key_vault_token())
            base_url = self._url_template.format(vault=vault)
            api_version = self._api_version
            label = f"azure://{vault}/{secret}"
            self._values[key] = pulumi.Output.secret(
                self._token.apply(
                    lambda token: fetch_key_vault_secret(base_url, secret, token, api_version=api_version, ref=label)
                )
            )
        return self._values[key]
