"""How a problem with the stack's config is named and reported.

A problem is a fully qualified key (`homelab-backup:<key>`) and a message; `ConfigError` lists every
problem found, so one run shows them all.
"""

from __future__ import annotations

from pydantic import ValidationError

PROJECT = "homelab-backup"

# Keys of the stack's config, in the project's namespace (`homelab-backup:<key>`).
PROJECT_KEYS = ("images", "repository", "policy", "schedule", "keyVault", "notifications")
HOST_KEYS = ("host", "kopia", "openlist")


Problem = tuple[str, str]  # (fully qualified key, message)


class ConfigError(Exception):
    """Invalid stack config: every problem, each with its `homelab-backup:<key>` path."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {key}: {message}" for key, message in problems)
        super().__init__(
            f"invalid stack config ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}\n"
            f"Fix them in Pulumi.yaml ({', '.join(PROJECT_KEYS)}: shared by every host) or in "
            f"Pulumi.<stack>.yaml ({', '.join(HOST_KEYS)}), then preview again. Not 'pulumi config set --path' on a "
            "Pulumi.yaml key: the stack's value would replace the whole shared object."
        )


def key_of(loc: tuple[int | str, ...]) -> str:
    """The fully qualified key of a location in the config: `homelab-backup:kopia.sources[0].path`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{PROJECT}:{path}"


def pydantic_problems(error: ValidationError) -> list[Problem]:
    """What pydantic found, one problem a location: its key and its message in the words of this project."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        problems.append((key_of(loc), message))
    return problems
