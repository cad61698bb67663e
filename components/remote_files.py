"""ConfigFiles: files written into one directory on a host over SSH, mode 0600, atomically.

pulumi-command has no file resource with a delete, so each file is a remote
`Command`: create and update write stdin to a temp file in the same directory and
rename it over the target (a reader never sees half a file); delete removes it.
`update` is set so a content change rewrites the file in place instead of a
replace, whose delete-after-create would remove the file just written.
Content travels on stdin, never in the command text, and output is not logged.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

import pulumi
import pulumi_command as command


def write_file_command(directory: str, filename: str) -> str:
    target = shlex.quote(f"{directory}/{filename}")
    tmp_pattern = shlex.quote(f"{directory}/.{filename}.XXXXXX")
    return (
        f"set -e; umask 077; mkdir -p {shlex.quote(directory)}; "
        f"tmp=$(mktemp {tmp_pattern}); trap 'rm -f \"$tmp\"' EXIT; "
        f'cat > "$tmp"; chmod 600 "$tmp"; mv -f "$tmp" {target}; trap - EXIT'
    )


def delete_file_command(directory: str, filename: str) -> str:
    # The directory goes too once empty; anything else in it is left alone.
    return f"rm -f {shlex.quote(f'{directory}/{filename}')}; rmdir {shlex.quote(directory)} 2>/dev/null || true"


class ConfigFiles(pulumi.ComponentResource):
    """Files in `directory` on the host reached by `connection`; `files` maps file name to content."""

    commands: dict[str, command.remote.Command]

    def __init__(
        self,
        name: str,
        *,
        connection: command.remote.ConnectionArgs,
        directory: str,
        files: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("homelab:index:ConfigFiles", name, None, opts)
        self.commands = {}
        for filename, content in sorted(files.items()):
            role = filename.replace(".", "-")
            self.commands[filename] = command.remote.Command(
                f"{name}-{role}",
                connection=connection,
                create=write_file_command(directory, filename),
                update=write_file_command(directory, filename),
                delete=delete_file_command(directory, filename),
                stdin=content,
                logging=command.remote.Logging.STDERR,  # stdout would echo nothing; stderr holds no secret
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
            )
        self.paths = {filename: f"{directory}/{filename}" for filename in files}
        self.register_outputs({"paths": self.paths})
