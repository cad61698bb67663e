"""The runbook's commands and steps as docs/operations.md writes them, for the suite to run as written: the
restore of a whole source from any machine (and the lost home server's steps), and the restore of a database.

What a test runs is read from the doc at run time, so the doc cannot drift from what is tested: a command
the doc changes is the command the suite runs next, and a placeholder the doc renames, a command it adds or
drops, fails here with a message naming it. A test's failure message quotes the step's own text
(`runbook_step`), so the words that tell the user what to do next are the doc's.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
ANY_MACHINE = "A whole source, from any machine"
HOME_SERVER_DIED = "The home server died"
RESTORE_DATABASE = "Restore a database from a snapshot"
#: The example names the database restore block is written with; the suite renames them to its own.
RESTORE_DATABASE_EXAMPLE = "immich"

#: The password prompt of `kopia repository connect` (cli/password.go @ v0.22.3), answered on a terminal.
PASSWORD_PROMPT = "Enter password to open repository:"

# `kopia snapshot list` (text): a source line `user@host:/path`, then one indented line per snapshot that starts
# with its time and the root object ID `snapshot restore` takes. Colours on a terminal are escape sequences.
_ESCAPES = re.compile(r"\x1b\[[0-9;]*m")
_SOURCE_LINE = re.compile(r"^(\S+@\S+:/\S*)$")
_SNAPSHOT_LINE = re.compile(r"^\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ (k?[0-9a-f]{32,}) ")


class RunbookError(Exception):
    """The doc no longer has what the suite runs: the message names the section and what is missing."""


def section(heading: str, text: str | None = None) -> str:
    """The section under the heading (any level) up to the next heading of the same or a higher level."""
    text = OPERATIONS.read_text() if text is None else text
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, flags=re.MULTILINE)
    if match is None:
        raise RunbookError(f"docs/operations.md has no section {heading!r}")
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


@dataclass(frozen=True)
class AnyMachineCommands:
    """The commands of "A whole source, from any machine", each as the doc writes it (continuations kept)."""

    export: str
    connect: str
    list_snapshots: str
    restore: str
    disconnect: str


#: How each command of the block starts; the block must hold each once, and nothing else.
_ANY_MACHINE_STARTS = {
    "export": "export AWS_ACCESS_KEY_ID=",
    "connect": "kopia repository connect s3 ",
    "list_snapshots": "kopia snapshot list --all",
    "restore": "kopia snapshot restore ",
    "disconnect": "kopia repository disconnect",
}


def _block_commands(heading: str, starts: dict[str, str], text: str | None) -> dict[str, str]:
    """The first ```sh block under `heading`, split into its commands (continuations kept), each found by how
    it starts: the block must hold each of `starts` once, and nothing else."""
    body = section(heading, text)
    block = re.search(r"^```sh\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise RunbookError(f"docs/operations.md, {heading!r}: no ```sh block")
    commands: list[str] = []
    for line in block.group(1).splitlines():
        if commands and commands[-1].split("#")[0].rstrip().endswith("\\"):
            commands[-1] += "\n" + line
        elif line.strip():
            commands.append(line)
    found: dict[str, str] = {}
    for command in commands:
        names = [name for name, start in starts.items() if command.startswith(start)]
        if len(names) != 1 or names[0] in found:
            raise RunbookError(
                f"docs/operations.md, {heading!r}: the suite runs one each of "
                f"{sorted(starts.values())}, and the block has {command!r}"
            )
        found[names[0]] = command
    missing = [start for name, start in starts.items() if name not in found]
    if missing:
        raise RunbookError(f"docs/operations.md, {heading!r}: the block lacks {missing}")
    return found


def any_machine_commands(text: str | None = None) -> AnyMachineCommands:
    """The first ```sh block of "A whole source, from any machine", split into its commands."""
    return AnyMachineCommands(**_block_commands(ANY_MACHINE, _ANY_MACHINE_STARTS, text))


@dataclass(frozen=True)
class RestoreDatabaseCommands:
    """The commands of "Restore a database from a snapshot", each as the doc writes it."""

    restore: str  # the source's `.dumps` from a snapshot into a scratch dir
    status: str  # the dump's status line
    create: str  # the owner role and an empty database in a fresh PostgreSQL
    load: str  # the dump into it


_RESTORE_DATABASE_STARTS = {
    "restore": "kopia snapshot restore <snapshot-id>/.dumps ",
    "status": "cat ",
    "create": "docker exec -i <db> psql -U postgres -c ",
    "load": "docker exec -i <db> psql -U postgres -d ",
}


def restore_database_commands(text: str | None = None) -> RestoreDatabaseCommands:
    """The first ```sh block of "Restore a database from a snapshot", split into its commands."""
    return RestoreDatabaseCommands(**_block_commands(RESTORE_DATABASE, _RESTORE_DATABASE_STARTS, text))


def _replace_in_code(command: str, placeholder: str, value: str) -> str:
    """`command` with `placeholder`, which must occur once outside its `# comments`, replaced by `value`."""
    lines = [re.match(r"^(.*?)(\s+#.*)?$", line) for line in command.split("\n")]
    parts = [(m.group(1), m.group(2) or "") for m in lines if m is not None]
    count = sum(code.count(placeholder) for code, _ in parts)
    if count != 1:
        raise RunbookError(f"docs/operations.md: {placeholder!r} occurs {count} times in {command!r}, not once")
    return "\n".join(code.replace(placeholder, value) + comment for code, comment in parts)


def fill(command: str, values: dict[str, str]) -> str:
    """The command with each placeholder replaced by its value (shell-quoted), its comments as written."""
    for placeholder, value in values.items():
        command = _replace_in_code(command, placeholder, shlex.quote(value))
    return command


def rename(command: str, example: str, name: str) -> str:
    """The command with every whole-word `example` name outside its `# comments` (a role, a database, a dump's
    files) replaced by `name`, a plain word; the command must name `example` at least once."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"{name!r} is not a plain word")
    pattern = re.compile(rf"\b{re.escape(example)}\b")
    lines = [re.match(r"^(.*?)(\s+#.*)?$", line) for line in command.split("\n")]
    parts = [(m.group(1), m.group(2) or "") for m in lines if m is not None]
    if not any(pattern.search(code) for code, _ in parts):
        raise RunbookError(f"docs/operations.md: {example!r} does not occur in {command!r}")
    return "\n".join(pattern.sub(name, code) + comment for code, comment in parts)


def fill_export(command: str, values: dict[str, str]) -> str:
    """The `export NAME=... NAME=...` line with each `NAME=...` given its value (shell-quoted)."""
    for name, value in values.items():
        command = _replace_in_code(command, f"{name}=...", f"{name}={shlex.quote(value)}")
    return command


def runbook_step(number: int, heading: str = HOME_SERVER_DIED, text: str | None = None) -> str:
    """Step `number` of the numbered list under `heading`, as one line of plain text."""
    steps: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in section(heading, text).splitlines():
        item = re.match(r"^(\d+)\. (.*)$", line)
        if item:
            current = steps.setdefault(int(item.group(1)), [item.group(2)])
        elif current is not None and line.startswith(" ") and line.strip():
            current.append(line.strip())
        else:
            current = None
    if number not in steps:
        raise RunbookError(f"docs/operations.md, {heading!r}: no step {number}")
    return " ".join(steps[number])


def what_to_do(number: int) -> str:
    """What a failed check of step `number` prints: the step as the doc gives it."""
    return f"docs/operations.md, {HOME_SERVER_DIED!r}, step {number}: {runbook_step(number)}"


def newest_snapshot_ids(listing: str) -> dict[str, str]:
    """source -> the ID of its newest (last) snapshot line, from `kopia snapshot list` as printed."""
    newest: dict[str, str] = {}
    source = None
    for raw in listing.replace("\r\n", "\n").splitlines():
        line = _ESCAPES.sub("", raw)
        if _SOURCE_LINE.match(line):
            source = line
        elif source is not None and (snapshot := _SNAPSHOT_LINE.match(line)):
            newest[source] = snapshot.group(1)
    return newest
