"""The runbook as the e2e suite reads it from docs/operations.md (testbed/runbook.py), and its terminal."""

import os
import re
import sys

import pytest

from components import render
from testbed import infra, runbook

LISTING = (
    "shelken@sakamoto:/backup/minio\r\n"
    "\x1b[m  2026-12-03 00:57:16 UTC k9f82d04adefb7a6753fe19d65cac4c5c 3 B drwxr-xr-x files:1 dirs:2 (latest-2)\r\n"
    "\x1b[m  2026-12-03 00:58:16 UTC k1111d04adefb7a6753fe19d65cac4c5c 3 B drwxr-xr-x files:1 dirs:2 (latest-1)\r\n"
    "\x1b[0m  + 1 identical snapshots until 2026-12-03 00:59:16 UTC\r\n"
    "\r\n"
    "shelken@vps:/backup/data\r\n"
    "\x1b[m  2026-12-03 00:56:19 UTC k2dbe9acdd1975698b3fbb3627e32908f 300 KB drwxr-xr-x files:1 dirs:1 (latest-1)\r\n"
)


def test_the_any_machine_block_holds_each_command_the_suite_runs_with_the_placeholders_it_fills():
    commands = runbook.any_machine_commands()
    export = runbook.fill_export(commands.export, {"AWS_ACCESS_KEY_ID": "AK1", "AWS_SECRET_ACCESS_KEY": "s k$"})
    assert export.startswith("export AWS_ACCESS_KEY_ID=AK1 AWS_SECRET_ACCESS_KEY='s k$'   # ")
    connect = runbook.fill(commands.connect, {"<vps deployAddress>": "100.64.0.2"})
    assert "--endpoint=100.64.0.2:5246 " in connect and "--readonly" in connect and connect.count("\n") == 1
    restore = runbook.fill(commands.restore, {"<snapshot-id>": "k12", "/restore/here": "/tmp/a b"})
    assert restore.startswith("kopia snapshot restore k12 '/tmp/a b'")
    assert "<snapshot-id>" in restore, "the comment stays as written"
    assert commands.list_snapshots.startswith("kopia snapshot list --all")
    assert commands.disconnect.startswith("kopia repository disconnect")


def test_a_block_that_drops_adds_or_renames_a_command_or_placeholder_is_refused_by_name():
    good = runbook.OPERATIONS.read_text()
    block = "kopia repository disconnect"
    with pytest.raises(runbook.RunbookError, match=r"lacks.*kopia repository disconnect"):
        runbook.any_machine_commands(re.sub(rf"^{block}.*\n", "", good, count=1, flags=re.MULTILINE))
    with pytest.raises(runbook.RunbookError, match="kopia snapshot verify"):
        runbook.any_machine_commands(good.replace(block, f"{block}\nkopia snapshot verify", 1))
    with pytest.raises(runbook.RunbookError, match="'<vps address>' occurs 0 times"):
        runbook.fill(runbook.any_machine_commands().connect, {"<vps address>": "x"})
    with pytest.raises(runbook.RunbookError, match="no section 'Nope'"):
        runbook.section("Nope")


def test_the_database_restore_block_holds_each_command_the_suite_runs_with_the_names_it_fills():
    commands = runbook.restore_database_commands()
    example = runbook.RESTORE_DATABASE_EXAMPLE
    restore = runbook.fill(commands.restore, {"<snapshot-id>": "k12", "/restore/here": "/tmp/a b"})
    assert restore.startswith("kopia snapshot restore k12/.dumps '/tmp/a b'   # ")
    status = runbook.rename(runbook.fill(commands.status, {"/restore/here": "/r"}), example, "bank")
    assert status.startswith("cat /r/bank.status ")
    create = runbook.rename(runbook.fill(commands.create, {"<db>": "db1"}), example, "bank")
    assert create.startswith('docker exec -i db1 psql -U postgres -c "CREATE ROLE bank LOGIN" -c "CREATE DATABASE bank')
    load = runbook.rename(runbook.fill(commands.load, {"<db>": "db1", "/restore/here": "/r"}), example, "bank")
    assert load.startswith("docker exec -i db1 psql -U postgres -d bank -v ON_ERROR_STOP=1 < /r/bank.sql ")
    assert example not in load.split("#")[0]


def test_a_database_restore_block_that_changes_a_command_or_a_name_is_refused_by_name():
    good = runbook.OPERATIONS.read_text()
    load = "docker exec -i <db> psql -U postgres -d immich"
    with pytest.raises(runbook.RunbookError, match="the block has 'docker exec -i <db> pg_restore"):
        runbook.restore_database_commands(good.replace(load, "docker exec -i <db> pg_restore -d immich", 1))
    with pytest.raises(runbook.RunbookError, match=r"lacks \['docker exec -i <db> psql -U postgres -d '\]"):
        runbook.restore_database_commands(re.sub(rf"^{re.escape(load)}.*\n", "", good, count=1, flags=re.MULTILINE))
    with pytest.raises(runbook.RunbookError, match="dropdb"):
        runbook.restore_database_commands(good.replace(load, f"dropdb immich\n{load}", 1))
    with pytest.raises(runbook.RunbookError, match="'nextcloud' does not occur"):
        runbook.rename(runbook.restore_database_commands().create, "nextcloud", "bank")
    with pytest.raises(ValueError, match="plain word"):
        runbook.rename(runbook.restore_database_commands().create, "immich", "bank; rm")
    assert (
        runbook.rename("cat immich.status immich2   # immich", "immich", "bank") == "cat bank.status immich2   # immich"
    )


def test_each_step_of_the_lost_host_runbook_says_what_to_do_when_it_fails():
    """The e2e test prints these steps as its failure messages: each names the failure the user sees and the way out."""
    step = {n: runbook.runbook_step(n) for n in range(1, 6)}
    assert "invalid repository password" in step[1] and "outside Key Vault" in step[1]
    assert render.MSG_NOT_INITIALIZED.split(" in ")[0] in step[1] and "the other gateway" in step[1]
    assert "kopia.createRepository is not set: nothing was created" in step[4] and "fix the gateway" in step[4]
    assert "never set it here" in step[4] and "owns maintenance" in step[4]
    assert "one history" in step[5] and "host.name" in step[5]
    with pytest.raises(runbook.RunbookError, match="no step 6"):
        runbook.runbook_step(6)


def test_the_newest_snapshot_of_each_source_is_read_from_kopias_listing_on_a_terminal():
    assert runbook.newest_snapshot_ids(LISTING) == {
        "shelken@sakamoto:/backup/minio": "k1111d04adefb7a6753fe19d65cac4c5c",
        "shelken@vps:/backup/data": "k2dbe9acdd1975698b3fbb3627e32908f",
    }


def test_a_password_prompt_on_a_terminal_is_answered_once_echo_is_off_and_the_answer_never_shows(tmp_path):
    script = tmp_path / "ask.sh"
    script.write_text(
        "printf 'Password: '; stty -echo; read -r answer; stty echo; echo; echo \"got ${#answer} chars\"\n"
    )
    env = {"PATH": os.environ["PATH"]}
    result = infra.run_in_terminal(["sh", str(script)], answers={"Password:": "s3cret-Value"}, env=env, timeout=30)
    assert result.returncode == 0
    assert "got 12 chars" in result.stdout
    assert "s3cret-Value" not in result.stdout


def test_a_program_that_never_ends_on_the_terminal_is_stopped_at_its_timeout():
    with pytest.raises(infra.E2EError, match="did not end within 1s"):
        infra.run_in_terminal([sys.executable, "-c", "import time; time.sleep(30)"], answers={}, env={}, timeout=1)
