"""What the project knows of OpenList's storage drivers: the fields of the drivers it uses, with the JSON type
each is decoded into, and how any driver names a credential.

A storage's `addition` is decoded into the driver's `Addition` struct by a decoder compatible with Go's
encoding/json (`utils.Json.UnmarshalFromString`, internal/op/storage.go @ v4.2.5): a YAML number where the
struct holds a string fails the storage after the container exists, and a field the struct lacks is dropped
without a word. So for a known driver both are refused before any resource (docs/upstream-behaviour.md,
"Driver fields").
"""

from __future__ import annotations

import re

# `driver.RootID` and `driver.RootPath` (internal/driver/item.go @ v4.2.5), embedded in most drivers.
_ROOT_ID = {"root_folder_id": str}
_ROOT_PATH = {"root_folder_path": str}

#: Each known driver's `Addition` fields and their JSON types (drivers/<dir>/meta.go @ v4.2.5). The 189 Cloud
#: drivers are the production drive; SFTP and Local are what the end-to-end suite stands in with.
KNOWN_DRIVER_FIELDS: dict[str, dict[str, type]] = {
    "189CloudPC": {  # drivers/189pc/meta.go
        "login_type": str,
        "username": str,
        "password": str,
        "validate_code": str,
        "access_token": str,
        "refresh_token": str,
        **_ROOT_ID,
        "order_by": str,
        "order_direction": str,
        "type": str,
        "family_id": str,
        "upload_method": str,
        "upload_thread": str,  # a string in OpenList, though it holds a number
        "family_transfer": bool,
        "rapid_upload": bool,
        "no_use_ocr": bool,
        "generate_torrent": bool,
    },
    "189Cloud": {"username": str, "password": str, "cookie": str, **_ROOT_ID},  # drivers/189/meta.go
    "189CloudTV": {  # drivers/189_tv/meta.go
        **_ROOT_ID,
        "access_token": str,
        "order_by": str,
        "order_direction": str,
        "type": str,
        "family_id": str,
        "upload_thread": str,
        "rapid_upload": bool,
    },
    "SFTP": {  # drivers/sftp/meta.go
        "address": str,
        "username": str,
        "private_key": str,
        "password": str,
        "passphrase": str,
        **_ROOT_PATH,
        "ignore_symlink_error": bool,
    },
    "Local": {  # drivers/local/meta.go
        **_ROOT_PATH,
        "directory_size": bool,
        "thumbnail": bool,
        "thumb_cache_folder": str,
        "thumb_concurrency": str,
        "video_thumb_pos": str,
        "show_hidden": bool,
        "mkdir_perm": str,
        "recycle_bin_path": str,
    },
}

#: A field name that holds a credential, as OpenList's drivers name them (drivers/*/meta.go @ v4.2.5):
#: password, share_pwd, repoPwd, passphrase, client_secret, cookie, mail_cookies, authorization, salt,
#: access_token, RefreshToken, api_key, private_key, receive_code (a 115 share's password). Words that are
#: credentials wherever they stand, and words that are one at the end of a name: `cdn_token_method` is a
#: setting, `cdn_token_key` a credential.
CREDENTIAL_FIELD = re.compile(
    r"password|passwd|passphrase|secret|cookie|authorization|credential|receive_code|(token|key|pwd|salt)$",
    re.IGNORECASE,
)

_JSON_TYPE_NAMES = {str: "text", bool: "true or false", int: "a number", float: "a number"}


def json_type_name(python_type: type) -> str:
    """How a field's type is named to the user."""
    return _JSON_TYPE_NAMES.get(python_type, python_type.__name__)
