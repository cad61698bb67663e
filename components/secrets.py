"""Secret references -> plain values, all read and checked before any resource is declared.

`azure://<vault>/<secret>[/<field>]` is read from the Key Vault *data plane*
(`GET https://<vault>.vault.azure.net/secrets/<secret>`): azure-native's
`keyvault.get_secret` is the management plane and never returns the value
(pulumi/pulumi-azure-native#1422). The bearer token comes from
`authorization.get_client_token`, i.e. the same credentials as the azure-native
provider (`az login`, a service principal, a managed identity).

`config:<key>` is a Pulumi config secret of the stack (`pulumi config set --secret`).

`read_secrets` reads every reference of a stack at once and reports every problem
together (`SecretsError`), each naming its config key and reference, never a value.
`__main__.py` wraps each value with `pulumi.Output.secret` before any resource sees it.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from components.config import PROJECT, SecretRef
from components.render import parse_s3_endpoint

KEY_VAULT_RESOURCE = "https://vault.azure.net"  # token audience of the Key Vault data plane

Problem = tuple[str, str]  # (fully qualified config key, message)


class SecretReadError(Exception):
    """A secret reference that cannot be resolved; the message names the reference and what to do."""


class SecretsError(Exception):
    """Every secret of the stack that cannot be read or is not usable, each with its config key."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {key}: {message}" for key, message in self.problems)
        count = len(self.problems)
        super().__init__(
            f"cannot read the stack's secrets ({count} problem{'s' if count != 1 else ''}); nothing was changed:\n"
            f"{lines}"
        )


# ---------------------------------------------------------------- Key Vault


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Key Vault never redirects a secret read; following one would hand the Azure token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # urllib's signature
        return None  # urllib then raises HTTPError with the 30x code


_OPENER = urllib.request.build_opener(_NoRedirect)


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
        with _OPENER.open(request, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise SecretReadError(
                f"{label}: Key Vault answered with a redirect (HTTP {exc.code}); not followed, because the request"
                " carries the Azure token: check the vault name and keyVault.urlTemplate"
            ) from None
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
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SecretReadError(f"{label}: Key Vault answered with something that is not JSON") from None
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise SecretReadError(f"{label}: Key Vault's answer holds no secret value")
    return value


# ---------------------------------------------------------------- fields of a JSON or dotenv secret


class _NotDotenv(Exception):
    """Why a value is not an env file; says where, never what (the line may be secret)."""


# Docker Compose env-file rules (docs.docker.com/compose/env-file/), which the vault's values were written for.
_DOTENV_LINE = re.compile(
    r"[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(?P<rest>.*)", re.DOTALL
)
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "$": "$"}


def parse_dotenv(value: str) -> dict[str, str]:
    """NAME=value lines, read by Docker Compose's env-file rules; raises _NotDotenv naming the line number.

    Blank lines and lines starting with '#' are skipped; `export ` before a name is allowed. Unquoted values
    are trimmed and end at ' #' (an inline comment needs a space before it). Single-quoted values are literal
    (`\\'` is a quote). Double-quoted values may span lines and understand `\\n`, `\\r`, `\\t`, `\\\\`, `\\"`;
    a comment may follow the closing quote. Compose would substitute `$VAR` in unquoted and double-quoted
    values; this reader does not guess what it would substitute, so a `$` there is refused: single-quote it.
    """
    fields: dict[str, str] = {}
    lines = value.replace("\r\n", "\n").split("\n")
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.fullmatch(line)
        if not match:
            raise _NotDotenv(f"line {number} is not NAME=value")
        name, rest = match["name"], match["rest"]
        if rest.startswith('"'):
            text, rest, number = _double_quoted(rest[1:], lines, number)
        elif rest.startswith("'"):
            text, rest = _single_quoted(rest[1:], number)
        else:
            text, _, _ = rest.partition(" #")
            text, rest = text.partition("\t#")[0].strip(), ""
            if "$" in text:
                raise _NotDotenv(f"line {number}: '$' in an unquoted value would be substituted by Compose")
        if rest.strip() and not rest.strip().startswith("#"):
            raise _NotDotenv(f"line {number}: text after the closing quote")
        fields[name] = text
    return fields


def _double_quoted(rest: str, lines: list[str], number: int) -> tuple[str, str, int]:
    """The value up to the closing quote (it may span lines), what follows it, and the line number reached."""
    out: list[str] = []
    start = number
    while True:
        i = 0
        while i < len(rest):
            char = rest[i]
            if char == "\\" and i + 1 < len(rest):
                out.append(_DOUBLE_QUOTED_ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
                i += 2
                continue
            if char == '"':
                return "".join(out), rest[i + 1 :], number
            if char == "$":
                raise _NotDotenv(f"line {number}: '$' in a double-quoted value would be substituted by Compose")
            out.append(char)
            i += 1
        if number >= len(lines):
            raise _NotDotenv(f"line {start}: the double quote is never closed")
        out.append("\n")
        rest = lines[number]
        number += 1


def _single_quoted(rest: str, number: int) -> tuple[str, str]:
    out: list[str] = []
    i = 0
    while i < len(rest):
        if rest.startswith("\\'", i):
            out.append("'")
            i += 2
            continue
        if rest[i] == "'":
            return "".join(out), rest[i + 1 :]
        out.append(rest[i])
        i += 1
    raise _NotDotenv(f"line {number}: the single quote is never closed")


# Field names printed in an error: only names that look like variable names (a line of a value that is not
# really an env file, e.g. base64 ending in '=', would otherwise print part of the secret).
_PRINTABLE_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def pick_field(value: str, field: str, ref: str) -> str:
    """One field of a JSON object or dotenv secret; errors name the fields present, never a value."""
    stripped = value.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            raise SecretReadError(f"{ref}: the secret starts with '{{' but is not valid JSON") from None
        if not isinstance(data, dict):
            raise SecretReadError(f"{ref}: the secret is not a JSON object")
        names = [str(k) for k in data]
        picked: object = data.get(field)
    else:
        try:
            fields = parse_dotenv(value)
        except _NotDotenv as exc:
            raise SecretReadError(
                f"{ref}: the secret is neither a JSON object nor an env file (Docker Compose rules: {exc}),"
                f" so it has no field '{field}'"
            ) from None
        if not fields:
            raise SecretReadError(f"{ref}: the secret is not JSON or dotenv, so it has no field '{field}'")
        names = list(fields)
        picked = fields.get(field)
    if field not in names:
        shown = sorted(n for n in names if stripped.startswith("{") or _PRINTABLE_FIELD_NAME.fullmatch(n))
        hidden = len(names) - len(shown)
        present = ", ".join(shown) + (f" and {hidden} more not shown" if hidden else "")
        raise SecretReadError(f"{ref}: no field '{field}' in the secret (it has: {present or 'none shown'})")
    if not isinstance(picked, str):
        kind = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}
        raise SecretReadError(
            f"{ref}: field '{field}' is {kind.get(type(picked), 'a list')}, not a string: store it as a JSON string"
        )
    if picked == "":
        raise SecretReadError(f"{ref}: field '{field}' is empty")
    return picked


# ---------------------------------------------------------------- what a value must be


def _any_value(value: str) -> str | None:
    if value == "":
        return "the secret is empty"
    if "\x00" in value:
        return "the value holds a NUL byte, which no file or environment variable can carry"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON may spell half of a UTF-16 pair ('\ud800'); no file or request can carry it as UTF-8.
        return "the value holds a lone UTF-16 surrogate (a JSON '\\uD800'-style escape without its pair), not text"
    return None


_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----\r?\n.*\r?\n-----END [A-Z0-9 ]+-----\r?\n?", re.DOTALL)


def _one_line_value(value: str) -> str | None:
    """A password, key or login ends where the stored bytes end: a final line break would be part of it, and
    `az keyvault secret set --file` (like most editors) stores one. Refused rather than stripped, so that the
    value the vault holds is the value in force (docs/decisions.md). A PEM block (an SSH or TLS private key
    for a storage driver) is lines by design, and its final line break is part of the format, so it passes."""
    if _PEM_BLOCK.fullmatch(value):
        return None
    if value.endswith(("\n", "\r")):
        return (
            "the value ends in a line break (what 'az keyvault secret set --file' stores), which would be part of"
            " the secret: store it without one, e.g. 'az keyvault secret set --value \"$(cat <file>)\"' (the shell"
            " drops the final newline), or fix the JSON or dotenv field"
        )
    return None


def _s3_endpoint_value(value: str) -> str | None:
    try:
        parse_s3_endpoint(value)
    except ValueError as exc:
        return f"the value is not an S3 endpoint: {exc}"
    return None


def _url_value(value: str) -> str | None:
    # It becomes a line of curl's config on stdin, or Kopia's webhook endpoint: a newline would add options.
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "the URL must not contain whitespace or control characters"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http(s)://host/... (with its scheme)"
    return None


#: Keys whose value is more than one line by design (one 'Name: value' header a line; a shell script).
MULTI_LINE_KEYS = frozenset({"notifications[].webhook.headers", "openlist.restartCommand"})

# Rules for the values of particular keys (on top of `_any_value` and, but for MULTI_LINE_KEYS,
# `_one_line_value`), keyed without the namespace and with list indexes as '[]'.
VALUE_RULES: Mapping[str, Callable[[str], str | None]] = {
    "kopia.s3.endpoint": _s3_endpoint_value,
    "kopia.health.heartbeatUrl": _url_value,
    "notifications[].webhook.url": _url_value,
    "openlist.restartCommand": lambda value: None if value.strip() else "the command is blank",
}


def value_problem(key: str, value: str) -> str | None:
    """What is wrong with the value of the secret at config `key` (`homelab-backup:kopia.s3.endpoint`), or None."""
    rule_key = re.sub(r"\[[0-9]+\]", "[]", key.removeprefix(f"{PROJECT}:"))
    rule = VALUE_RULES.get(rule_key)
    one_line = None if rule_key in MULTI_LINE_KEYS else _one_line_value(value)
    return _any_value(value) or one_line or (rule(value) if rule else None)


# ---------------------------------------------------------------- reading every reference


def read_secrets(
    references: Sequence[tuple[str, SecretRef]],
    *,
    config_secret: Callable[[str], str],
    key_vault_token: Callable[[], str],
    url_template: str = "https://{vault}.vault.azure.net",
    api_version: str = "7.4",
) -> dict[str, str]:
    """Every referenced value by its config key (`homelab-backup:kopia.secrets.serverPassword`), or SecretsError
    listing every reference that cannot be read or whose value is not usable.

    Each Key Vault secret is read once and the token fetched once, only when a reference needs it.
    `config_secret(key)` returns a `config:` value or raises SecretReadError.
    """
    values: dict[str, str] = {}
    problems: list[Problem] = []
    fetched: dict[tuple[str, str], str | SecretReadError] = {}
    token: list[str] = []

    def key_vault_value(ref: SecretRef) -> str:
        assert ref.vault is not None and ref.secret is not None
        where = (ref.vault, ref.secret)
        if where not in fetched:
            try:
                if not token:
                    token.append(key_vault_token())
                base_url = url_template.format(vault=ref.vault)
                fetched[where] = fetch_key_vault_secret(base_url, ref.secret, token[0], api_version=api_version)
            except SecretReadError as exc:
                fetched[where] = exc
        found = fetched[where]
        if isinstance(found, SecretReadError):
            # Read once per secret; reported for each reference to it, named by that reference.
            raise SecretReadError(f"{ref}: {str(found).removeprefix(f'{ref.secret}: ')}")
        return found

    for key, ref in references:
        try:
            if ref.config_key is not None:
                value = config_secret(ref.config_key)
            elif ref.vault is not None:
                value = key_vault_value(ref)
                if ref.field is not None:
                    value = pick_field(value, ref.field, ref.text)
            else:
                raise SecretReadError(f"{ref}: not a Key Vault or config reference")
        except SecretReadError as exc:
            problems.append((key, str(exc)))
            continue
        if problem := value_problem(key, value):
            problems.append((key, f"{ref}: {problem}"))
            continue
        values[key] = value
    if problems:
        raise SecretsError(problems)
    return values


def read_secret(
    ref: SecretRef,
    *,
    config_value: Callable[[str], str],
    key_vault_token: Callable[[], str],
    url_template: str = "https://{vault}.vault.azure.net",
    api_version: str = "7.4",
) -> str:
    """One reference's plain value, outside a Pulumi program (scripts/status): the same rules as `read_secrets`."""
    try:
        return read_secrets(
            [(f"{PROJECT}:{ref}", ref)],
            config_secret=config_value,
            key_vault_token=key_vault_token,
            url_template=url_template,
            api_version=api_version,
        )[f"{PROJECT}:{ref}"]
    except SecretsError as exc:
        raise SecretReadError(exc.problems[0][1]) from None
