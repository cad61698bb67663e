"""Reading a stack's config: every key of the namespace, validated, every problem reported at once.

`load_namespace` takes the keys as Pulumi lists them (`homelab-backup:<key>`); `load_stack_config` the
values without the namespace. Both return a `StackConfig` or raise `ConfigError` listing each problem:
unknown keys, placeholders left in, what the models refuse, control characters, and the rules across keys.
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from components.config.problems import HOST_KEYS, PROJECT, PROJECT_KEYS, ConfigError, Problem, key_of, pydantic_problems
from components.config.references import config_key
from components.config.rules import consistency_problems
from components.config.stack import StackConfig

# Prefix of a committed stack file's host-specific value that must be replaced before a deploy
# ('SET-ME:<example>'); what follows is only an example.
PLACEHOLDER = "SET-ME:"


def load_namespace(
    values: Mapping[str, Any], *, stack: str | None = None, secret_keys: Collection[str] | None = None
) -> StackConfig:
    """The stack's config from fully qualified keys (`homelab-backup:host`, ...), as `pulumi config` lists them.

    The one way every caller reads the program's keys: `__main__.py` (every key Pulumi hands the program)
    and `scripts/status` (from the Automation API). Values may be objects or their JSON text.
    `stack`: the stack being deployed (its host must be its own). `secret_keys`: the keys stored as secrets;
    given, every other key of the namespace must be a program key or named by a `config:` reference.
    """
    picked: dict[str, Any] = {}
    others: list[str] = []
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue  # pulumi:, docker:, azure-native: ... belong to Pulumi and the providers
        if key not in PROJECT_KEYS + HOST_KEYS:
            others.append(full_key)
            continue
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            with contextlib.suppress(json.JSONDecodeError):  # else the model reports the key's type
                value = json.loads(value)
        if value is not None:
            picked[key] = value
    problems: list[Problem] = []
    if secret_keys is not None:
        refs = (config_key(text) for _, text in _strings(picked))
        referenced = {f"{PROJECT}:{ref}" for ref in refs if ref}
        for full_key in others:
            if full_key not in referenced and full_key not in secret_keys:
                problems.extend(_unknown_top_level_key(full_key))
    return load_stack_config(picked, stack=stack, namespace_problems=problems)


def _unknown_top_level_key(full_key: str) -> list[Problem]:
    """A plain key the program never reads: a misspelled key would otherwise be silently ignored. (A key stored
    as a secret is a value for a `config:` reference, maybe of another stack sharing the same secrets.)"""
    key = full_key.partition(":")[2]
    if key.partition(".")[0] in PROJECT_KEYS + HOST_KEYS:
        # `pulumi config set` / `pulumi up --config` without the path flag store 'kopia.x' as a key of its own.
        return [
            (
                full_key,
                f"is a key of its own, not {key} inside {key.partition('.')[0]}: it was set without the path flag."
                f" Remove it (pulumi config rm '{full_key}') and set it with 'pulumi config set --path' (or"
                " 'pulumi up --config-path --config ...')",
            )
        ]
    return [
        (
            full_key,
            f"unknown key (check its spelling): the program reads {', '.join(PROJECT_KEYS + HOST_KEYS)} and the"
            " secrets named by 'config:<key>' references",
        )
    ]


def load_stack_config(
    values: Mapping[str, Any], *, stack: str | None = None, namespace_problems: Sequence[Problem] = ()
) -> StackConfig:
    """Validate the stack's config (`{key: value}` without namespace) or raise ConfigError listing every problem.

    A placeholder is reported instead of what the model says about it; a control character where the model
    saw nothing wrong (a free-text label, a pattern-checked name) is reported on its own.
    """
    placeholders = _placeholders_are_replaced(values)
    model: list[Problem] = []
    config = None
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as exc:
        model = [p for p in pydantic_problems(exc) if not any(_is_key_within(p[0], k) for k, _ in placeholders)]
    reported = [k for k, _ in placeholders + model]
    controls = [p for p in _no_control_characters(values) if not any(_is_key_within(p[0], k) for k in reported)]
    problems = [*namespace_problems, *placeholders, *model, *controls]
    if config is not None:  # the rules across keys need a whole model; they run beside any other problem
        problems += consistency_problems(config, stack)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _strings(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[tuple[int | str, ...], str]]:
    """Every string in raw config values, with its location."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*loc, str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, (*loc, i))


def _placeholders_are_replaced(values: Mapping[str, Any]) -> list[Problem]:
    """A committed stack file's host-specific values are 'SET-ME:<example>' until the user sets them, so a
    deploy stops here naming what to set, instead of failing later at SSH or at binding a port."""
    return [
        (
            key_of(loc),
            f"is a placeholder ('{text}'): set this host's value{_description(loc)}",
        )
        for loc, text in _strings(values)
        if text.startswith(PLACEHOLDER)
    ]


def _no_control_characters(values: Mapping[str, Any]) -> list[Problem]:
    """Names, paths and labels go into shell commands, file names and Kopia's policy: a newline or another
    control character there (a config dir 'kopia\\n') would be created on the host as it is."""
    return [
        (key_of(loc), "must not contain control characters (a newline, a tab, ...)")
        for loc, text in _strings(values)
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)
    ]


def _description(loc: tuple[int | str, ...]) -> str:
    """': <the key's description>' from the models, or '' when the key has none."""
    model: Any = StackConfig
    description = None
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()} if _is_model(model) else {}
        if part not in fields:
            return ""
        description = fields[part].description
        model = _model_of(fields[part].annotation)
    return f": {description}" if description else ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_of(annotation: Any) -> Any:
    """The model inside `X`, `X | None`, `list[X]` or `Annotated[X, ...]`, or None."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_of(arg)) is not None:
            return found
    return None


def _is_key_within(key: str, outer: str) -> bool:
    return key == outer or key.startswith((outer + ".", outer + "["))
