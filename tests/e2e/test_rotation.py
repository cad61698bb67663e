"""Every secret rotated as docs/operations.md ("Rotating a secret") says: change it where the stack reads it
(here the test stacks' `config:` secrets, as Key Vault on the real hosts), then `pulumi up` the stacks.

One deployment for the module. After each rotation: snapshots still run on both hosts, the old value no longer
works where it should not, and no snapshot attempt failed in between. Kopia's own alerts are the oracle for a
failed attempt: both hosts' servers send one to the webhook receiver for every failed snapshot (minimum
severity warning), and nothing for a good one.
"""

from __future__ import annotations

import copy
import secrets
import time

import pytest

from components import render
from testbed import infra
from testbed.infra.receivers import Received
from testbed.mocks import stack_config
from testbed.s3 import S3Client
from testbed.system import (
    CONFIG_DIR,
    KOPIA,
    OPENLIST_WEB_URL,
    S3_ENDPOINT,
    SMTP_USERNAME,
    STACKS,
    System,
    say,
    server_status,
    wait_for,
)

#: the `config:` key the test stacks' owner points kopia.secrets.previousRepositoryPassword at, while it changes
PREVIOUS_PASSWORD_KEY = "previousRepoPassword"
BUCKET = stack_config("e2e-vps")["homelab-backup:repository"]["bucket"]
#: the subject of the alert Kopia's CLI sends when a command fails (notification/notifytemplate/generic-error.txt)
COMMAND_FAILED = "Kopia has encountered an error during"


@pytest.fixture(scope="module")
def system(parts, request) -> System:
    """Both stacks deployed, every source snapshotted once, both hosts healthy: a system in service."""
    system = parts.system()
    system.smtp_login = True  # the mail profile logs in (test_the_smtp_password_rotates...)
    request.addfinalizer(system.destroy)
    system.deploy()
    started = time.time()
    wait_for("the repository to exist", lambda: system.oracle.connect().returncode == 0, 240, interval=5)
    system.wait_for_snapshots_since(started - 600, timeout=300)
    for stack in STACKS:
        system.wait_healthy(KOPIA[stack])
    return system


def failed_snapshot_alerts(receivers: list[infra.HttpReceiver], since: float) -> list[Received]:
    """What Kopia sent to the webhook since `since` other than a test message: a failed snapshot's report."""
    return [
        alert
        for receiver in receivers
        for alert in receiver.alerts_since(since)
        if not alert.headers.get("Subject", "").startswith("Test notification")
    ]


def owner_with_previous_password() -> dict:
    """The owner's kopia key with kopia.secrets.previousRepositoryPassword, as the operator sets it for one up."""
    kopia = copy.deepcopy(stack_config("e2e-sakamoto")["homelab-backup:kopia"])
    kopia["secrets"]["previousRepositoryPassword"] = f"config:{PREVIOUS_PASSWORD_KEY}"
    return {"homelab-backup:kopia": kopia}


def since_last_start(system: System, stack: str) -> str:
    return system.logs(KOPIA[stack]).split("kopia-start: connecting")[-1]


def test_the_repository_password_rotates_with_pulumi_up_the_other_hosts_first_then_the_owner(system: System):
    assert system.receiver is not None and system.oracle is not None
    old, new = system.secrets["repoPassword"], "repo-rotated-" + secrets.token_urlsafe(18)
    since = time.time()

    # 1. Every other host gets the new password: it does not open the repository yet, so the host waits,
    # running and saying what to do, instead of crash-looping.
    system.up("vps", secrets_override={"repoPassword": new})
    vps = KOPIA["vps"]
    waiting = "the repository password changed: run pulumi up for this host's stack"
    wait_for("e2e-vps to wait for the new password", lambda: waiting in since_last_start(system, "vps"), 120, 3)
    assert system.inspect(vps)["State"]["Running"] and system.inspect(vps)["RestartCount"] == 0, "no crash loop"
    assert "FATAL" not in since_last_start(system, "vps")

    # 2. The owner gets the new password and, for this one up, the one the repository opens with now.
    system.up(
        "sakamoto", secrets_override={"repoPassword": new, PREVIOUS_PASSWORD_KEY: old}, **owner_with_previous_password()
    )
    previous_file = CONFIG_DIR["sakamoto"] / render.PREVIOUS_PASSWORD_ENV
    assert previous_file.stat().st_mode & 0o777 == 0o600
    system.secrets["repoPassword"] = new
    changed = "changed the repository password to kopia.secrets.repositoryPassword"
    wait_for("sakamoto to change the password", lambda: changed in since_last_start(system, "sakamoto"), 120, 3)
    changed_at = time.time()
    for stack in STACKS:  # vps connects at its next try, within 30 s
        system.wait_healthy(KOPIA[stack], timeout=240)
        assert "FATAL" not in since_last_start(system, stack)
    say(f"e2e-vps waited {changed_at - since:.0f}s in all for the owner to change the password")

    # The old password opens nothing now; the new one does, from any machine.
    result = system.new_oracle(password=old).connect(check=False)
    assert result.returncode != 0 and render.MSG_INVALID_PASSWORD in result.stdout + result.stderr
    system.renew_oracle()
    system.wait_for_snapshots_since(changed_at)
    assert failed_snapshot_alerts([system.receiver], since) == [], "no snapshot attempt failed in between"

    # 3. The previous password is removed from the stack: its file goes, and Kopia is not restarted for it.
    container = system.inspect(KOPIA["sakamoto"])["Id"]
    system.up("sakamoto")
    assert not previous_file.exists()
    assert system.inspect(KOPIA["sakamoto"])["Id"] == container


def test_every_other_secret_rotates_with_pulumi_up_of_each_stack(system: System):
    """The S3 keys (the gateway's and every Kopia's), both logins of both servers, OpenList's admin password,
    the heartbeat URL and the webhook URL of the alerts, all at once: `pulumi up` e2e-vps, then e2e-sakamoto."""
    assert system.receiver is not None
    old_receiver, new_receiver = system.receiver, infra.HttpReceiver()  # the new URLs point at a new service
    old = dict(system.secrets)
    new = {
        "s3AccessKeyId": "AK" + secrets.token_hex(8).upper(),
        "s3SecretAccessKey": "sk-" + secrets.token_urlsafe(24),
        "serverUsername": "admin-" + secrets.token_hex(4),
        "serverPassword": "ui-" + secrets.token_urlsafe(18),
        "serverControlPassword": "ctl-" + secrets.token_urlsafe(18),
        "openlistAdminPassword": "ol-" + secrets.token_urlsafe(12),
        "heartbeatUrl": new_receiver.ping_url(system.receiver_address),
        "alertWebhookUrl": new_receiver.webhook_url(system.receiver_address),
    }
    since = time.time()
    system.secrets.update(new)
    system.receiver = new_receiver  # the system's teardown stops the new one; this test the old one
    try:
        system.up("vps")
        system.up("sakamoto")
        deployed = time.time()
        for stack in STACKS:
            system.wait_healthy(KOPIA[stack], timeout=240)

        # S3: the gateway refuses the old keys and takes the new ones (Kopia's too: the snapshots below).
        listing = {"list-type": "2", "prefix": "main/"}
        with_old_keys = S3Client(f"http://{S3_ENDPOINT}", old["s3AccessKeyId"], old["s3SecretAccessKey"])
        assert with_old_keys.request("GET", f"/{BUCKET}", listing).status == 403  # gofakes3's answer to other keys
        assert system.s3().request("GET", f"/{BUCKET}", listing).status == 200
        # Both servers: the old UI login and the old control login are refused, the new ones work.
        for stack in STACKS:
            assert server_status(stack, "/", old["serverUsername"], old["serverPassword"]) == 401
            assert server_status(stack, "/", new["serverUsername"], new["serverPassword"]) == 200
            control = "/api/v1/control/sources"
            assert server_status(stack, control, render.SERVER_CONTROL_USER, old["serverControlPassword"]) == 401
            assert server_status(stack, control, render.SERVER_CONTROL_USER, new["serverControlPassword"]) == 200
        # OpenList's admin: the old password no longer logs in.
        with pytest.raises(infra.OpenListError):
            infra.OpenListAdmin(OPENLIST_WEB_URL).login(old["openlistAdminPassword"])
        system.openlist_admin()  # logs in with the new one
        # The heartbeat goes to the new URL only (a check already running may still ping the old one once).
        wait_for("a heartbeat at the new URL", lambda: new_receiver.pings_since(deployed) >= 1, 90, 2)
        time.sleep(20)
        assert old_receiver.pings_since(deployed + 12) == 0, "the old heartbeat URL gets nothing"
        # Alerts: the profile in the repository sends to the new URL only.
        alert_test = time.time()
        system.kopia("sakamoto", f"notification profile test --profile-name={render.KOPIA_PROFILE_PREFIX}alerts")
        wait_for("Kopia's test alert at the new URL", lambda: new_receiver.alerts_since(alert_test), 30, 1)
        assert old_receiver.alerts_since(alert_test) == []

        system.renew_oracle()  # its connection holds the old S3 keys
        system.wait_for_snapshots_since(deployed)
        # A snapshot attempt can fail only while a host's Kopia holds other S3 keys than the gateway: from the
        # gateway's restart in e2e-vps's up until e2e-sakamoto's up replaced its Kopia (here both stacks write
        # through e2e-vps's gateway; on the real hosts each stack rotates its own gateway and Kopia together).
        failed = failed_snapshot_alerts([old_receiver, new_receiver], since)
        say(
            f"S3 keys: e2e-vps's up to e2e-sakamoto's done in {deployed - since:.0f}s; failed snapshot attempts in "
            f"between: {len(failed)} ({', '.join(a.headers.get('Subject', '?') for a in failed) or 'none'})"
        )
        for alert in failed:
            assert since <= alert.at <= deployed + 60, f"a failed snapshot outside the key change: {alert.body}"
    finally:
        old_receiver.stop()


def test_the_smtp_password_rotates_with_pulumi_up_mail_fails_only_in_between(system: System):
    """The mail profile's SMTP password (notifications[].email.password), changed at the mail provider first,
    then in the stacks. The provider is the suite's SMTP receiver with a login (testbed/infra/receivers.py
    SmtpReceiver: AUTH PLAIN as Kopia's sender speaks it, 535 for any other password); it stands in for a
    provider's submission server, reached at 127.0.0.1 inside each Kopia container rather than over STARTTLS
    (Go's PlainAuth sends a password only over TLS or to localhost). Kopia itself sends: `kopia notification
    profile test` in each host's container, with the profile as its server applied it from the stack."""
    assert system.mail is not None and system.receiver is not None
    mail, profile = system.mail, f"{render.KOPIA_PROFILE_PREFIX}mail"
    old, new = system.secrets["smtpPassword"], "smtp-rotated-" + secrets.token_urlsafe(18)

    def test_mail(stack: str) -> tuple[bool, list[Received], str]:
        """Kopia's test message from `stack`, once its server applied the declared profiles: (sent, what
        arrived, Kopia's output)."""
        applied = "notification profiles: saved"
        wait_for(f"e2e-{stack} to apply the profiles", lambda: applied in since_last_start(system, stack), 120, 2)
        system.mail_reaches(stack)
        sent_at = time.time()
        result = system.kopia(stack, f"notification profile test --profile-name={profile}", check=False)
        arrived = [m for m in mail.mail_since(sent_at) if m.headers.get("Subject", "").startswith("Test notif")]
        return result.returncode == 0, arrived, result.stdout + result.stderr

    for stack in STACKS:  # the declared password logs in
        sent, arrived, output = test_mail(stack)
        assert sent and len(arrived) == 1, output
    since = time.time()

    # 1. The password changes at the provider: Kopia's mail is refused (535) until the stacks have the new one.
    mail.login = (SMTP_USERNAME, new)
    refused_at = time.time()
    sent, arrived, output = test_mail("sakamoto")
    assert not sent and arrived == [] and "535" in output, output
    refused = mail.logins_since(refused_at)
    assert refused and not any(login.accepted for login in refused), refused
    assert old not in output and new not in output

    # 2. `pulumi up` both stacks with the new password: each host's Kopia sends, and logs in with it.
    system.secrets["smtpPassword"] = new
    system.up("vps")
    system.up("sakamoto")
    deployed = time.time()
    for stack in STACKS:
        system.wait_healthy(KOPIA[stack], timeout=240)
        sent, arrived, output = test_mail(stack)
        assert sent and len(arrived) == 1, output
    assert all(login.accepted for login in mail.logins_since(deployed)), "a host's Kopia still sends the old one"
    say(f"SMTP password: mail refused from the provider's change to the last up, {deployed - refused_at:.0f}s")

    # Snapshots ran on, and none failed (the mail profile has nothing to do with them). The refused test mail
    # is itself reported by webhook: Kopia's CLI alerts every profile when a command fails (`generic-error`).
    system.renew_oracle()
    system.wait_for_snapshots_since(deployed)
    alerts = failed_snapshot_alerts([system.receiver], since)
    refused_mail = [a for a in alerts if a.headers.get("Subject", "").startswith(COMMAND_FAILED) and "535" in a.body]
    say(f"the refused test mail, reported by webhook: {[a.headers.get('Subject') for a in refused_mail]}")
    assert [a for a in alerts if a not in refused_mail] == [], "no snapshot attempt failed in between"
