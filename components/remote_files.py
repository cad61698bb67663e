"""ConfigFiles: the files one host's Kopia reads, in one directory on the host, each a `RemoteFile`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi

from components.host_files import RemoteFile, RemotePath


class ConfigFiles(pulumi.ComponentResource):
    """Files in `directory` on the host reached by `ssh`; `files` maps file name to content.

    Files named in `secret_files` keep their content and digest secret in Pulumi state.
    """

    files: dict[str, RemoteFile]

    def __init__(
        self,
        name: str,
        *,
        ssh: Sequence[str],
        target: str,
        directory: str,
        files: Mapping[str, pulumi.Input[str]],
        secret_files: frozenset[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("homelab:index:ConfigFiles", name, None, opts)
        self.files = {
            filename: RemoteFile(
                f"{name}-{filename.replace('.', '-')}",
                at=RemotePath(ssh, target, f"{directory}/{filename}"),
                content=content,
                secret=filename in secret_files,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for filename, content in sorted(files.items())
        }
        self.paths = {filename: f"{directory}/{filename}" for filename in files}
        self.register_outputs({"paths": self.paths})
