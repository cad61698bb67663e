"""Secret references: where a secret lives (`azure://...` or `config:<key>`), never the secret itself.

Parsed here into `SecretRef`; `secret_references` lists every one of a stack, which
`components/secrets.py` then reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer, PlainValidator, WithJsonSchema

from components.config.problems import key_of


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives; never the secret itself.

    `azure://<vault>/<secret>[/<field>]`: a Key Vault secret, or one key of a
    JSON or dotenv secret value. `config:<key>`: a Pulumi config secret of this
    stack (`pulumi config set --secret <key> ...`).
    """

    text: str
    vault: str | None = None
    secret: str | None = None
    field: str | None = None
    config_key: str | None = None

    def __str__(self) -> str:
        return self.text


_AZURE_REF = re.compile(
    r"^azure://(?P<vault>[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9])/(?P<secret>[A-Za-z0-9-]{1,127})(/(?P<field>[^/\s]+))?$"
)
# Keys of this project's namespace only: __main__ reads them with pulumi.Config().require_secret.
_CONFIG_REF = re.compile(r"^config:(?P<key>[A-Za-z0-9_.-]+)$")


def config_key(text: str) -> str | None:
    """The key a `config:<key>` reference names, or None for any other text."""
    match = _CONFIG_REF.fullmatch(text)
    return match["key"] if match else None


def parse_secret_ref(value: Any) -> SecretRef:
    """Parse a reference string; the error says which forms are accepted."""
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a secret reference string")
    if match := _AZURE_REF.fullmatch(value):
        return SecretRef(value, vault=match["vault"], secret=match["secret"], field=match["field"])
    if match := _CONFIG_REF.fullmatch(value):
        return SecretRef(value, config_key=match["key"])
    raise ValueError(
        "must be a secret reference: 'azure://<vault>/<secret>[/<field>]' (Key Vault names: letters, digits, '-')"
        " or 'config:<key>' (a Pulumi config secret); never the secret value itself"
    )


#: The schema's `format` of a secret reference: scripts/config_docs.py names the type by it (editors check the pattern).
REFERENCE_FORMAT = "secret-reference"  # a name, not a secret

SecretReference = Annotated[
    SecretRef,
    PlainValidator(parse_secret_ref),
    PlainSerializer(str),
    WithJsonSchema(
        {"type": "string", "format": REFERENCE_FORMAT, "pattern": f"{_AZURE_REF.pattern}|{_CONFIG_REF.pattern}"}
    ),
]


def secret_references(config: BaseModel) -> list[tuple[str, SecretRef]]:
    """Every secret reference of a stack's config (a `StackConfig`) with its fully qualified key, in the models'
    order. Typed as any model so that this module, which the models import, imports none of them."""
    found: list[tuple[str, SecretRef]] = []

    def walk(value: Any, loc: tuple[int | str, ...]) -> None:
        if isinstance(value, SecretRef):
            found.append((key_of(loc), value))
        elif isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                walk(getattr(value, name), (*loc, field.alias or name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        elif isinstance(value, Mapping):  # openlist.storage.secretFields: one reference per field name
            for name, item in value.items():
                walk(item, (*loc, str(name)))

    walk(config, ())
    return found
