"""The base of every config model, and the checked string types the models share (paths, names, images).

Each type is a string checked by a function whose message says what the value must be.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+@-]*$")
_IMAGE_DIGEST = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


#: Linux's limits: NAME_MAX bytes in one path component, PATH_MAX bytes in a whole path (with its NUL).
NAME_MAX, PATH_MAX = 255, 4096


def canonical_path(path: str) -> str:
    """The one spelling of an absolute path: no '//', no '.', no trailing '/', each '..' taken with its parent
    (as written: a symlink on the host is not followed). Two paths name the same directory only in this form."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def is_within(path: str, directory: str) -> bool:
    """`path` is `directory` or lies below it, compared in canonical form."""
    path, directory = canonical_path(path), canonical_path(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (start with '/')")
    if not _SAFE_PATH.fullmatch(value):
        raise ValueError("may hold only letters, digits and '/._+@-' (it goes into shell commands and Kopia's policy)")
    if value != (canonical := canonical_path(value)):
        # The rules that keep paths apart (a source holding the config dir, a path mounted twice) compare
        # paths; one spelling for each directory keeps '/opt//data' from passing as another path than '/opt/data'.
        raise ValueError(
            f"must be written in canonical form, '{canonical}' (no '//', no '.' or '..' segments, no trailing '/')"
        )
    if any(len(part.encode()) > NAME_MAX for part in value.split("/")):
        raise ValueError(f"has a component longer than {NAME_MAX} bytes, more than a Linux file name can hold")
    if len(value.encode()) >= PATH_MAX:
        raise ValueError(f"is {PATH_MAX} bytes or longer, more than a Linux path can hold")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a lowercase DNS label (letters, digits, '-')")
    return value


def _username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise ValueError("must be a lowercase user name (letters, digits, '_', '-')")
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address (ports are bound to it)") from None
    return value


def _pinned_image(value: str) -> str:
    if _IMAGE_DIGEST.fullmatch(value):
        return value  # pinned by content: the strongest pin
    if not _IMAGE.fullmatch(value):
        raise ValueError("must be '<repository>:<tag>' with an explicit tag")
    if value.rsplit(":", 1)[1] == "latest":
        raise ValueError("must pin a release, not ':latest'")
    return value


def _network_address(value: str) -> str:
    # A host name or an IP address. For SSH it goes into ssh://user@address and an ssh option: a leading '-'
    # or a space would inject options.
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not re.fullmatch(
        r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$", value
    ):
        raise ValueError("must be a host name or an IP address")
    return value


# The patterns are for editors and docs/configuration.md (schema/stack-config.schema.json); the functions decide.
AbsolutePath = Annotated[
    str, AfterValidator(_absolute_path), WithJsonSchema({"type": "string", "pattern": _SAFE_PATH.pattern})
]
HostName = Annotated[str, AfterValidator(_hostname), WithJsonSchema({"type": "string", "pattern": _HOSTNAME.pattern})]
UserName = Annotated[str, AfterValidator(_username), WithJsonSchema({"type": "string", "pattern": _USERNAME.pattern})]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
PinnedImage = Annotated[str, AfterValidator(_pinned_image)]
NetworkAddress = Annotated[str, AfterValidator(_network_address)]


class Model(BaseModel):
    """Base: YAML keys are camelCase aliases; unknown keys are errors; values are frozen.

    Strict: no coercion between types, so `port: true` is refused instead of becoming port 1, and
    `"5246"` is not a number. `pulumi config set --path` stores digits and true/false typed, so it fits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)
