"""OpenList configured by the program: what is declared (under mocks), and the provider's pure logic."""

from __future__ import annotations

import json

import pytest

from components import openlist_config as oc
from components.config import ConfigError, load_stack_config
from testbed.mocks import plain_strings, stack_config, unwrap_all
from tests.unit.conftest import SAKAMOTO_SECRETS, VPS_SECRETS, run_committed_stack

SETTINGS = "pulumi-python:dynamic/homelab:OpenListSettings"
CONTAINER = "docker:index/container:Container"


# ---------------------------------------------------------------- declared under mocks


def test_vps_configures_its_openlist_through_the_host(vps):
    settings = vps.one(SETTINGS, "openlist-settings")
    assert settings.parent_name == "openlist"
    assert any(d.endswith("::openlist-container") for d in settings.options["depends_on"])
    inputs = unwrap_all(settings.inputs)
    assert inputs["endpoint"] == {"host": "100.64.0.2", "port": 5244, "tls": False}
    assert inputs["container"] == "openlist"
    assert (
        inputs["ssh"] == vps.one("pulumi-python:dynamic/homelab:RemoteFile", "kopia-config-secrets-env").inputs["ssh"]
    )
    assert inputs["storage"] == {
        "driver": "189CloudPC",
        "mountPath": "/189",
        "cacheExpiration": 30,
        "webProxy": True,
        "fields": {"username": "13800000000"},
    }
    # The bucket's folder, never the prefix's (its empty folder would list a fake object).
    assert inputs["bucket"] == {"name": "kopia", "folder": "/189/kopia"}
    # The S3 keys are Kopia's own (one home), the admin password and the drive's password from Key Vault.
    assert inputs["s3Keys"] == {
        "accessKeyId": VPS_SECRETS["OPENLIST_S3_ACCESS_KEY_ID"],
        "secretAccessKey": VPS_SECRETS["OPENLIST_S3_SECRET_ACCESS_KEY"],
    }
    assert inputs["adminPassword"] == VPS_SECRETS["OPENLIST_ADMIN_PASSWORD"]
    assert inputs["storageSecrets"] == {"password": VPS_SECRETS["CLOUD189_PASSWORD"]}


@pytest.mark.parametrize(("stack", "secrets"), [("vps", VPS_SECRETS), ("sakamoto", SAKAMOTO_SECRETS)])
def test_openlist_secrets_are_secret_in_inputs_outputs_and_state(stack, secrets, key_vault):
    run = run_committed_stack(stack, key_vault)
    settings = run.by_type(SETTINGS)
    assert len(settings) == 1
    resource = settings[0]
    plain = plain_strings(resource.inputs) + plain_strings(resource.outputs)
    for value in secrets.values():
        assert value not in plain and not any(value in s for s in plain), "a secret in plain text"
    assert set(resource.options["additional_secret_outputs"]) == set(oc.SECRET_OUTPUTS)
    for name in run.outputs:
        assert not any(v in json.dumps(run.outputs[name]) for v in secrets.values())


def test_kopia_on_the_vps_is_deployed_after_openlist_is_configured(vps):
    """Its endpoint comes through the settings resource, so its files (and container) wait for it."""
    repository_config = vps.one("pulumi-python:dynamic/homelab:RemoteFile", "kopia-config-repository-config")
    assert any(d.endswith("::openlist-settings") for d in repository_config.options["depends_on"])


def test_sakamoto_configures_the_clusters_gateway_without_deploying_one(sakamoto):
    settings = sakamoto.one(SETTINGS, "openlist-gateway-settings")
    assert settings.parent_name == "openlist-gateway"
    inputs = unwrap_all(settings.inputs)
    assert inputs["endpoint"] == {"host": "openlist.cluster.lan", "port": 5244, "tls": False}
    assert inputs.get("container") is None  # not ours to restart
    assert inputs["s3Keys"]["accessKeyId"] == SAKAMOTO_SECRETS["OPENLIST_S3_ACCESS_KEY_ID"]
    assert [c.inputs["name"] for c in sakamoto.by_type(CONTAINER)] == ["kopia"]


# ---------------------------------------------------------------- config rules


def _sakamoto(**openlist: object) -> dict:
    values = {k.split(":", 1)[1]: v for k, v in stack_config("sakamoto").items() if k.startswith("homelab-backup:")}
    values["openlist"] = {**values["openlist"], **openlist}
    return values


def _problems(values: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as error:
        load_stack_config(values)
    return error.value.problems


def test_a_drive_credential_in_plain_fields_is_refused():
    storage = {**_sakamoto()["openlist"]["storage"], "fields": {"username": "u", "refresh_token": "abc"}}
    assert _problems(_sakamoto(storage=storage)) == [
        (
            "homelab-backup:openlist.storage.fields.refresh_token",
            "looks like a credential: move it to openlist.storage.secretFields as a reference",
        )
    ]


def test_a_field_both_plain_and_secret_is_refused():
    storage = {**_sakamoto()["openlist"]["storage"], "fields": {"username": "u", "password": "p"}}
    problems = _problems(_sakamoto(storage=storage))
    assert problems == [
        (
            "homelab-backup:openlist.storage.fields.password",
            "is also in openlist.storage.secretFields: keep it in one of them",
        )
    ]


def test_a_gateway_has_no_container_or_ports():
    assert _problems(_sakamoto(webPort=5244)) == [
        (
            "homelab-backup:openlist.webPort",
            "applies only to an OpenList this stack deploys; remove it, or remove openlist.adminUrl",
        )
    ]


@pytest.mark.parametrize("url", ["openlist.lan:5244", "http://openlist.lan", "ftp://openlist.lan:21", "http://x:0"])
def test_a_malformed_admin_url_is_refused(url):
    [(key, message)] = _problems(_sakamoto(adminUrl=url))
    assert key == "homelab-backup:openlist.adminUrl"
    assert "must be 'http(s)://<host>:<port>'" in message


def test_the_admin_password_is_required():
    values = _sakamoto()
    del values["openlist"]["adminPassword"]
    assert _problems(values) == [("homelab-backup:openlist.adminPassword", "is required")]


# ---------------------------------------------------------------- the provider's pure logic


def props(**changes: object) -> dict:
    base = {
        "ssh": ["ssh", "-p", "22", "u@h"],
        "target": "u@h:22",
        "endpoint": {"host": "10.0.0.2", "port": 5244, "tls": False},
        "container": "openlist",
        "adminUsername": "admin",
        "adminPassword": "admin-pw",
        "storage": {
            "driver": "189CloudPC",
            "mountPath": "/189",
            "cacheExpiration": 1,
            "webProxy": True,
            "fields": {"username": "13800000000"},
        },
        "storageSecrets": {"password": "drive-pw", "refresh_token": "seed-token"},
        "bucket": {"name": "kopia", "folder": "/189/kopia"},
        "s3Keys": {"accessKeyId": "AKID", "secretAccessKey": "SECRET"},
    }
    return {**base, **changes}


def test_s3_settings_are_saved_as_full_private_rows_and_only_when_they_differ():
    current = [
        {"key": "s3_access_key_id", "value": "", "type": "string", "group": 9, "flag": 1, "help": "", "index": 0},
        {"key": "s3_secret_access_key", "value": "SECRET", "type": "string", "group": 9, "flag": 0, "index": 1},
        {"key": "s3_buckets", "value": oc.bucket_map("kopia", "/189/kopia"), "type": "string", "group": 9, "flag": 1},
    ]
    values = {"s3_access_key_id": "AKID", "s3_secret_access_key": "SECRET", "s3_buckets": current[2]["value"]}
    rows = oc.s3_rows(current, values)
    # the key id's value differs; the secret's flag was public: both are sent whole, private
    assert rows == [
        {**current[0], "value": "AKID", "flag": 1},
        {**current[1], "flag": 1},
    ]
    assert oc.s3_rows([{**r, **({"value": values[r["key"]], "flag": 1})} for r in current], values) == []
    with pytest.raises(oc.OpenListApiError, match="no such settings"):
        oc.s3_rows(current[:2], values)


def test_bucket_map_is_compact_json_of_one_bucket():
    assert oc.bucket_map("kopia", "/189/kopia") == '[{"name":"kopia","path":"/189/kopia"}]'


def test_a_new_storage_starts_from_the_drivers_defaults_with_the_declared_values_on_top():
    info = {
        "additional": [
            {"name": "login_type", "type": "select", "default": "password"},
            {"name": "username", "type": "string", "default": ""},
            {"name": "rapid_upload", "type": "bool", "default": "false"},
            {"name": "upload_thread", "type": "string", "default": "3"},
            {"name": "order", "type": "number", "default": "7"},
        ]
    }
    body = oc.storage_body(props(), live=None, defaults=oc.driver_defaults(info), write_managed=False)
    assert (body["mount_path"], body["driver"], body["cache_expiration"], body["web_proxy"]) == (
        "/189",
        "189CloudPC",
        1,
        True,
    )
    assert body["disabled"] is False
    assert json.loads(body["addition"]) == {
        "login_type": "password",
        "username": "13800000000",
        "rapid_upload": False,
        "upload_thread": "3",
        "order": 7,
        "password": "drive-pw",
        "refresh_token": "seed-token",  # a new storage gets the seed
    }


def test_an_update_keeps_what_the_driver_rotated_unless_the_declared_seed_changed():
    live = {
        "id": 3,
        "mount_path": "/189",
        "driver": "189CloudPC",
        "cache_expiration": 30,
        "web_proxy": False,
        "status": "work",
        "mount_details": {"total_space": 1},
        "addition": json.dumps({"username": "13800000000", "password": "drive-pw", "refresh_token": "rotated"}),
    }
    body = oc.storage_body(props(), live=live, defaults={}, write_managed=False)
    assert body["id"] == 3 and "mount_details" not in body
    assert (body["cache_expiration"], body["web_proxy"]) == (1, True)
    assert json.loads(body["addition"])["refresh_token"] == "rotated"
    body = oc.storage_body(props(), live=live, defaults={}, write_managed=True)
    assert json.loads(body["addition"])["refresh_token"] == "seed-token"


def test_the_live_view_matches_the_desired_one_only_when_openlist_holds_the_declared_values():
    p = props()
    live = {
        "mount_path": "/189",
        "driver": "189CloudPC",
        "cache_expiration": 1,
        "web_proxy": True,
        "disabled": False,
        "status": "work",
        "addition": json.dumps({"username": "13800000000", "password": "drive-pw", "refresh_token": "rotated"}),
    }
    wanted, _ = oc.desired_state(p)
    plain, secret_fields = oc.storage_view(live, p)
    assert plain == wanted["storage"]
    assert secret_fields == {"password": "drive-pw"}  # the rotated token is not compared
    plain, _ = oc.storage_view({**live, "web_proxy": False}, p)
    assert plain != wanted["storage"]
    plain, _ = oc.storage_view({**live, "status": "failed init storage: login failed"}, p)
    assert plain != wanted["storage"]


def test_diff_sees_drift_a_new_secret_and_a_new_seed_and_nothing_else():
    provider = oc.OpenListSettingsProvider()
    news = props()
    wanted, wanted_secrets = oc.desired_state(news)
    olds = oc.outputs(news, wanted, wanted_secrets)
    assert not provider.diff("id", olds, news).changes
    drifted = {**olds, "live": {**wanted, "s3Private": False}}
    assert provider.diff("id", drifted, news).changes
    assert provider.diff("id", olds, props(s3Keys={"accessKeyId": "AKID", "secretAccessKey": "NEW"})).changes
    assert provider.diff("id", olds, props(storageSecrets={"password": "drive-pw", "refresh_token": "new"})).changes
    assert provider.diff("id", olds, props(adminPassword="other")).changes
    moved = provider.diff("id", olds, props(endpoint={"host": "10.0.0.3", "port": 5244, "tls": False}))
    assert moved.replaces == ["endpoint"]
    unreachable = {**olds, "live": {"reachable": False}}
    assert provider.diff("id", unreachable, news).changes


def test_openlists_message_never_carries_a_secret():
    assert oc.scrub("login failed for drive-pw and drive-pw2", ["drive-pw", "drive-pw2"]) == (
        "login failed for [secret] and [secret]"
    )


def test_the_tunnel_forwards_a_private_socket_through_the_stacks_own_ssh():
    ssh = ["ssh", "-o", "StrictHostKeyChecking=yes", "-p", "2222", "u@h"]
    assert oc.tunnel_command(ssh, "/tmp/x/admin.sock", "10.0.0.2", 5244) == [
        "ssh", "-o", "StrictHostKeyChecking=yes", "-p", "2222",
        "-N", "-o", "ExitOnForwardFailure=yes", "-L", "/tmp/x/admin.sock:10.0.0.2:5244",
        "u@h",
    ]  # fmt: skip


def test_numbers_pulumi_hands_over_as_floats_go_to_openlist_as_ints():
    p = oc.integral(props(storage={**props()["storage"], "cacheExpiration": 1.0, "fields": {"n": 3.0, "x": 0.5}}))
    body = oc.storage_body(p, live=None, defaults={}, write_managed=False)
    assert '"cache_expiration": 1,' in json.dumps(body)
    assert json.loads(body["addition"])["n"] == 3 and json.loads(body["addition"])["x"] == 0.5


# ---------------------------------------------------------------- restart after the S3 settings change


class _Answers:
    """OpenList's admin API as `restart` uses it: it answers /ping."""

    def ping(self) -> bool:
        return True


def _restart_runs(monkeypatch: pytest.MonkeyPatch, **changes: object) -> list[str]:
    ran: list[str] = []
    monkeypatch.setattr(oc, "run_on_host", lambda ssh, command, what: ran.append(command) or "")
    oc.restart(_Answers(), props(**changes))  # type: ignore[arg-type]
    return ran


def test_the_openlist_this_stack_deploys_is_restarted_with_docker(monkeypatch):
    assert _restart_runs(monkeypatch) == ["docker restart openlist"]


def test_a_gateway_is_restarted_with_the_stacks_restart_command(monkeypatch):
    command = "kubectl -n media rollout restart deployment/openlist"
    assert _restart_runs(monkeypatch, container=None, restartCommand=command) == [command]


def test_a_gateway_without_a_restart_command_stops_the_up_saying_what_to_do(monkeypatch):
    with pytest.raises(oc.OpenListApiError) as stopped:
        _restart_runs(monkeypatch, container=None, restartCommand=None)
    message = str(stopped.value)
    assert "reads them at start only" in message
    assert "set openlist.restartCommand, then run pulumi up again" in message


def test_a_restart_command_is_refused_for_the_openlist_this_stack_deploys():
    values = {k.split(":", 1)[1]: v for k, v in stack_config("vps").items() if k.startswith("homelab-backup:")}
    values["openlist"] = {**values["openlist"], "restartCommand": "docker restart openlist"}
    assert _problems(values) == [
        (
            "homelab-backup:openlist.restartCommand",
            "applies only with openlist.adminUrl: the OpenList this stack deploys is restarted by the program",
        )
    ]


def test_sakamotos_gateway_gets_its_restart_command(key_vault):
    command = "kubectl rollout restart deployment/openlist"
    openlist = {**stack_config("sakamoto")["homelab-backup:openlist"], "restartCommand": command}
    run = run_committed_stack("sakamoto", key_vault, **{"homelab-backup:openlist": openlist})
    assert unwrap_all(run.one(SETTINGS, "openlist-gateway-settings").inputs)["restartCommand"] == command
