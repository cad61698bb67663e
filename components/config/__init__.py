"""Typed models of everything the stacks hold, validated once at program start.

Project-level keys (`Pulumi.yaml`, shared by every host) and host keys (`Pulumi.<stack>.yaml`) are read
into one frozen `StackConfig`; `load_namespace` reports *every* problem at once, each named by its config
key, before any resource is declared. One module a job:

- `fields`: the strict, frozen base model and the field types several models share (paths, names, images);
- `references`: secret references (`azure://...`, `config:<key>`), parsed, and every one of a stack listed;
- `project`: the models of the shared keys (images, repository, policy, schedule, keyVault, notifications);
- `host`: the models of one host's keys (host, kopia, openlist);
- `drivers`: what the project knows of OpenList's storage drivers (their fields and types, credential names);
- `stack`: `StackConfig`, the whole, and what follows from it (identity, maintenance owner);
- `rules`: the rules across keys (a scheduled source must be mounted, ...), one function each;
- `problems`: how a problem names its key, and `ConfigError`, which lists them;
- `loader`: reading the namespace, unknown keys, placeholders, control characters, then all of the above.

Callers import from `components.config`; nothing here imports pulumi (`__main__.py` hands over plain values).
"""

from components.config.fields import AbsolutePath, HostName, IpAddress, NetworkAddress, PinnedImage, UserName
from components.config.host import (
    DEFAULT_CONTENT_CACHE_MB,
    DEFAULT_METADATA_CACHE_MB,
    DUMPS_DIR,
    PAUSE_STATUS_NAME,
    S3,
    BackupSource,
    Dump,
    Host,
    Kopia,
    KopiaCache,
    KopiaDrill,
    KopiaHealth,
    KopiaSecrets,
    KopiaServer,
    MinioDump,
    Network,
    OpenList,
    OpenListStorage,
    Pause,
    PostgresDump,
    SqliteDump,
    Ssh,
    dump_container_name,
    parse_admin_url,
    pauser_container_name,
)
from components.config.loader import PLACEHOLDER, load_namespace, load_stack_config
from components.config.problems import HOST_KEYS, PROJECT, PROJECT_KEYS, ConfigError, Problem
from components.config.project import (
    DEFAULT_PACK_SIZE_MB,
    DEFAULT_PARALLEL_FILE_READS,
    MAX_RETENTION_COUNT,
    OPENLIST_EMPTY_FOLDER_MARKER,
    SEVERITIES,
    Compressor,
    EmailTarget,
    Images,
    KeyVault,
    Maintenance,
    NotificationProfile,
    Policy,
    Repository,
    Retention,
    Schedule,
    SourceTarget,
    WebhookTarget,
)
from components.config.references import SecretRef, SecretReference, parse_secret_ref, secret_references
from components.config.rules import CONTAINER_RESERVED_DIRS
from components.config.stack import StackConfig, identity, is_maintenance_owner

__all__ = [
    "CONTAINER_RESERVED_DIRS",
    "DEFAULT_CONTENT_CACHE_MB",
    "DEFAULT_METADATA_CACHE_MB",
    "DEFAULT_PACK_SIZE_MB",
    "DEFAULT_PARALLEL_FILE_READS",
    "DUMPS_DIR",
    "HOST_KEYS",
    "MAX_RETENTION_COUNT",
    "OPENLIST_EMPTY_FOLDER_MARKER",
    "PAUSE_STATUS_NAME",
    "PLACEHOLDER",
    "PROJECT",
    "PROJECT_KEYS",
    "S3",
    "SEVERITIES",
    "AbsolutePath",
    "BackupSource",
    "Compressor",
    "ConfigError",
    "Dump",
    "EmailTarget",
    "Host",
    "HostName",
    "Images",
    "IpAddress",
    "KeyVault",
    "Kopia",
    "KopiaCache",
    "KopiaDrill",
    "KopiaHealth",
    "KopiaSecrets",
    "KopiaServer",
    "Maintenance",
    "MinioDump",
    "Network",
    "NetworkAddress",
    "NotificationProfile",
    "OpenList",
    "OpenListStorage",
    "Pause",
    "PinnedImage",
    "Policy",
    "PostgresDump",
    "Problem",
    "Repository",
    "Retention",
    "Schedule",
    "SecretRef",
    "SecretReference",
    "SourceTarget",
    "SqliteDump",
    "Ssh",
    "StackConfig",
    "UserName",
    "WebhookTarget",
    "dump_container_name",
    "identity",
    "is_maintenance_owner",
    "load_namespace",
    "load_stack_config",
    "parse_admin_url",
    "parse_secret_ref",
    "pauser_container_name",
    "secret_references",
]
