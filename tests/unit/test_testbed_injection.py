"""The testbed's own guards: the address it gives the test stacks' containers, and the values it injects.

Unit tests, so a machine without Docker still checks them; the e2e suite runs the same functions against the
Docker engine that setup installs (tests/e2e/test_infra_smoke.py).
"""

from __future__ import annotations

import pytest

from testbed import infra
from testbed.system import CREATE_REPOSITORY, OWNER, check_injected_config

# `docker network inspect bridge` as Debian 12's docker.io (20.10.24+dfsg1, API 1.41) answers it: no Gateway.
DEBIAN_20_10_BRIDGE = {
    "Name": "bridge",
    "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "172.17.0.0/16"}]},
    "Options": {"com.docker.network.bridge.default_bridge": "true", "com.docker.network.bridge.name": "docker0"},
}
# As newer engines (28.x) answer it.
WITH_GATEWAY = {**DEBIAN_20_10_BRIDGE, "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}
LOCAL = {"lo": ["127.0.0.1"], "eth0": ["10.0.0.5"], "docker0": ["172.17.0.1"]}


def test_the_bridge_address_comes_from_the_interface_when_ipam_names_no_gateway() -> None:
    assert infra.choose_bridge_address(DEBIAN_20_10_BRIDGE, LOCAL) == "172.17.0.1"


def test_the_bridge_address_with_a_gateway_in_the_answer() -> None:
    assert infra.choose_bridge_address(WITH_GATEWAY, LOCAL) == "172.17.0.1"


def test_the_subnets_first_address_counts_only_when_it_is_local() -> None:
    renamed = {**DEBIAN_20_10_BRIDGE, "Options": {}}  # no bridge name: fall back to the subnet's first address
    assert infra.choose_bridge_address(renamed, LOCAL) == "172.17.0.1"
    with pytest.raises(infra.E2EError, match="no local address on Docker's 'bridge' network") as raised:
        infra.choose_bridge_address(renamed, {"lo": ["127.0.0.1"], "eth0": ["172.17.0.1"][:0]})
    assert "\n" not in str(raised.value)  # one line, saying what to check
    assert "ip -4 addr show docker0" in str(raised.value)


def test_an_address_outside_the_subnet_is_not_taken() -> None:
    # docker0 holding some other address (a hand-made bridge) is not the network's gateway
    with pytest.raises(infra.E2EError):
        infra.choose_bridge_address(DEBIAN_20_10_BRIDGE, {"docker0": ["192.168.9.1"]})


def _overrides(smtp_server: str, stack: str = "vps") -> dict:
    from testbed.mocks import stack_config

    config = stack_config(f"e2e-{stack}")
    notifications = [
        {**p, "email": {**p["email"], "smtpServer": smtp_server, "smtpPort": 2525}} if "email" in p else p
        for p in config["homelab-backup:notifications"]
    ]
    return {"homelab-backup:notifications": notifications}


SECRETS = {
    "repoPassword": "repo-password-long-enough",
    "serverUsername": "admin",
    "serverPassword": "ui-password-long-enough",
    "serverControlPassword": "ctl-password-long-enough",
    "s3AccessKeyId": "AKEXAMPLE",
    "s3SecretAccessKey": "sk-example-long-enough",
    "s3Endpoint": "http://hle2e-openlist:5246",
    "openlistAdminPassword": "ol-password",
    "heartbeatUrl": "http://172.17.0.1:8080/ping/token",
    "alertWebhookUrl": "http://172.17.0.1:8080/alerts/token",
}


def test_injected_values_the_program_accepts_pass() -> None:
    check_injected_config("vps", _overrides("172.17.0.1"), SECRETS)


def test_an_empty_injected_address_names_itself_before_any_deploy() -> None:
    # What happened on Debian's engine: the bridge address came back empty and reached the stack.
    with pytest.raises(infra.E2EError) as raised:
        check_injected_config("vps", _overrides(""), SECRETS)
    message = str(raised.value)
    assert "values this testbed injects into e2e-vps" in message
    assert "notifications[1].email.smtpServer" in message


def test_an_injected_secret_the_program_refuses_names_itself() -> None:
    check_injected_config("sakamoto", _overrides("172.17.0.1", "sakamoto"), SECRETS)
    with pytest.raises(infra.E2EError, match="heartbeatUrl"):
        check_injected_config("sakamoto", _overrides("172.17.0.1", "sakamoto"), {**SECRETS, "heartbeatUrl": "x"})


def test_the_owners_first_up_asks_for_the_repository_and_the_program_accepts_it_only_there() -> None:
    """The e2e first deploy passes kopia.createRepository to the owner's first up (README "First deploy")."""
    assert OWNER == "sakamoto"
    check_injected_config(OWNER, {**_overrides("172.17.0.1", OWNER), **CREATE_REPOSITORY}, SECRETS)
    from testbed.mocks import stack_config

    vps_asking = {"homelab-backup:kopia": {**stack_config("e2e-vps")["homelab-backup:kopia"], "createRepository": True}}
    with pytest.raises(infra.E2EError, match="1 problem") as raised:
        check_injected_config("vps", {**_overrides("172.17.0.1"), **vps_asking}, SECRETS)
    assert "homelab-backup:kopia.createRepository: only the maintenance owner shelken@sakamoto" in str(raised.value)
