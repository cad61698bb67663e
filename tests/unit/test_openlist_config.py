"""OpenList configured by the program: what is declared (under mocks), and the provider's pure logic."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from components import openlist_config as oc
from components.config import ConfigError, load_stack_config
from components.host_files import RemoteError
from testbed.mocks import plain_strings, stack_config, unwrap_all
from tests.fake_openlist import FakeOpenList
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
    assert inputs["s3Endpoint"] == {"host": "100.64.0.2", "port": 5246, "tls": False}  # where it is published
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
    assert inputs["s3Endpoint"] == {"host": "openlist.cluster.lan", "port": 5246, "tls": False}  # openlist.s3Url
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


def test_a_gateway_needs_its_s3_address_to_see_its_keys_in_force():
    values = _sakamoto()
    del values["openlist"]["s3Url"]
    [(key, message)] = _problems(values)
    assert key == "homelab-backup:openlist.s3Url"
    assert message.startswith("is required with openlist.adminUrl: that OpenList's S3 address as this host reaches it")
    [(key, message)] = _problems(_sakamoto(s3Url="openlist.lan:5246"))
    assert (key, message) == (
        "homelab-backup:openlist.s3Url",
        "must be 'http(s)://<host>:<port>' (OpenList's S3 port, as the stack's host reaches it)",
    )


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
        "s3Endpoint": {"host": "10.0.0.2", "port": 5246, "tls": False},
        "container": "openlist",
        "restartCommand": None,
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


def test_the_tunnel_forwards_private_sockets_through_the_stacks_own_ssh():
    ssh = ["ssh", "-o", "StrictHostKeyChecking=yes", "-p", "2222", "u@h"]
    forwards = {"/tmp/x/port-0.sock": ("10.0.0.2", 5244), "/tmp/x/port-1.sock": ("10.0.0.2", 5246)}
    assert oc.tunnel_command(ssh, forwards) == [
        "ssh", "-o", "StrictHostKeyChecking=yes", "-p", "2222",
        "-N", "-o", "ExitOnForwardFailure=yes",
        "-L", "/tmp/x/port-0.sock:10.0.0.2:5244", "-L", "/tmp/x/port-1.sock:10.0.0.2:5246",
        "u@h",
    ]  # fmt: skip


def test_numbers_pulumi_hands_over_as_floats_go_to_openlist_as_ints():
    p = oc.integral(props(storage={**props()["storage"], "cacheExpiration": 1.0, "fields": {"n": 3.0, "x": 0.5}}))
    body = oc.storage_body(p, live=None, defaults={}, write_managed=False)
    assert '"cache_expiration": 1,' in json.dumps(body)
    assert json.loads(body["addition"])["n"] == 3 and json.loads(body["addition"])["x"] == 0.5


# ---------------------------------------------------------------- the flows, against a fake OpenList


@pytest.fixture
def openlist(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenList]:
    """A fake OpenList where the provider's tunnel would lead, its host's commands run against it."""
    with FakeOpenList() as fake:

        @contextlib.contextmanager
        def tunnel(ssh: list[str], targets: list[tuple[str, int]]) -> Iterator[list[str]]:
            assert targets == [("10.0.0.2", 5244), ("10.0.0.2", 5246)], "the web port, then the S3 port"
            yield [fake.admin_socket, fake.s3_socket]

        monkeypatch.setattr(oc, "ssh_tunnel", tunnel)
        monkeypatch.setattr(oc, "run_on_host", HostCommands(fake))
        monkeypatch.setattr(oc, "RESTART_TIMEOUT_SECONDS", 2)
        monkeypatch.setattr(oc, "POLL_SECONDS", 0.01)
        yield fake


class HostCommands:
    """`run_on_host` on the stack's host: `openlist admin random` and the restart act on the fake."""

    def __init__(self, fake: FakeOpenList):
        self.fake, self.ran, self.stdin, self.restart = fake, [], [], "works"

    def __call__(self, ssh: list[str], command: str, what: str, stdin: str | None = None) -> str:
        self.ran.append(command)
        self.stdin.append(stdin)
        if command.endswith("./openlist admin random --no-prefix"):
            self.fake.admin_password = "random-" + command[-6:]
            return f"...\nusername: admin\npassword: {self.fake.admin_password}\n"
        if self.restart == "fails":
            raise RemoteError(f'{what} failed on u@h (exit 1): error: deployments.apps "openlist" not found')
        if self.restart == "works":
            self.fake.restart()
        elif self.restart == "returns-before":
            self.fake.restart_later(after_s3_requests=4)
        return ""  # "never": the command returns, nothing restarts


@pytest.fixture
def cluster(openlist: FakeOpenList) -> FakeOpenList:
    """The user's gateway: its admin password is the one the stack is given (README, "The cluster's gateway")."""
    openlist.admin_password = "admin-pw"
    return openlist


def commands(fake: FakeOpenList) -> HostCommands:
    return oc.run_on_host  # type: ignore[return-value]


def gateway(**changes: object) -> dict:
    """An OpenList this stack only configures (the cluster's), restarted by the stack's command."""
    return props(**{"container": None, "restartCommand": "kubectl rollout restart deployment/openlist", **changes})


def up(provider_props: dict, olds: dict | None = None) -> dict:
    """What `pulumi up` makes the provider do: create, or (after a refresh) update when diff says so."""
    provider = oc.OpenListSettingsProvider()
    if olds is None:
        return provider.create(provider_props).outs
    refreshed = provider.read("id", olds).outs
    if not provider.diff("id", refreshed, provider_props).changes:
        return refreshed
    return provider.update("id", refreshed, provider_props).outs


def unsigned_is_refused_and_the_keys_accepted(fake: FakeOpenList, keys: dict) -> bool:
    port = oc.S3Port(lambda: oc._UnixHTTPConnection(fake.s3_socket, "10.0.0.2", 5246, False), "10.0.0.2:5246")
    return port.status("kopia", None) == 403 and port.status("kopia", keys) == 200


def test_a_first_configuration_sets_everything_and_restarts_once_and_an_unchanged_one_writes_nothing(openlist):
    outs = up(props())
    assert openlist.admin_password == "admin-pw", "the declared password replaced the random one"
    assert commands(openlist).ran[0] == "docker exec openlist ./openlist admin random --no-prefix"
    assert openlist.addition("/189") == {
        "username": "13800000000",
        "password": "drive-pw",
        "refresh_token": "seed-token",
    }
    assert "/189/kopia" in openlist.folders
    assert {k: (r["value"], r["flag"]) for k, r in openlist.settings.items()} == {
        "s3_access_key_id": ("AKID", 1),
        "s3_secret_access_key": ("SECRET", 1),
        "s3_buckets": (oc.bucket_map("kopia", "/189/kopia"), 1),
    }
    assert openlist.restarts == 1 and commands(openlist).ran[-1] == "docker restart openlist"
    assert unsigned_is_refused_and_the_keys_accepted(openlist, props()["s3Keys"])
    assert outs["live"] == oc.desired_state(props())[0]
    # The next up: refresh, diff, nothing to do: no write, no restart.
    openlist.calls.clear()
    assert up(props(), outs)["live"] == outs["live"]
    assert openlist.writes() == [] and openlist.restarts == 1


def test_a_gateway_whose_restart_fails_fails_the_up_and_is_restarted_by_the_next_one(cluster):
    """The rows are saved before the restart fails: the next up must still restart it (it used not to)."""
    commands(cluster).restart = "fails"
    with pytest.raises(oc.OpenListApiError) as failed:
        up(gateway(), None)
    message = str(failed.value)
    assert message.startswith("OpenList: putting the S3 keys in force: its S3 port at 10.0.0.2:5246 does not ")
    assert "it answers an unsigned request (HTTP 200): it runs without keys" in message
    assert 'deployments.apps "openlist" not found' in message
    assert cluster.settings["s3_access_key_id"]["value"] == "AKID", "saved before the restart"
    # The user fixes the command; the resource was never created, so the next up creates it again.
    commands(cluster).restart = "works"
    outs = up(gateway(), None)
    assert cluster.restarts == 1
    assert unsigned_is_refused_and_the_keys_accepted(cluster, props()["s3Keys"])
    assert outs["live"]["s3KeysInForce"] is True


def test_rotated_keys_whose_restart_fails_are_put_in_force_by_the_next_up(cluster):
    """A failed update leaves the state's old inputs, with whose keys the old instance still agrees; the rows
    already hold the new keys. The next up must still restart it."""
    deployed = up(gateway())
    rotated = gateway(s3Keys={"accessKeyId": "AKID2", "secretAccessKey": "SECRET2"})
    commands(cluster).restart = "fails"
    with pytest.raises(oc.OpenListApiError, match="a request signed with the declared keys gets HTTP 403"):
        up(rotated, deployed)
    assert cluster.settings["s3_access_key_id"]["value"] == "AKID2", "saved before the restart"
    commands(cluster).restart = "works"
    up(rotated, deployed)  # the state still holds what the last successful up wrote
    assert cluster.restarts == 2
    assert unsigned_is_refused_and_the_keys_accepted(cluster, rotated["s3Keys"])
    assert not unsigned_is_refused_and_the_keys_accepted(cluster, props()["s3Keys"]), "the old keys still work"


def test_a_gateway_without_a_restart_command_stops_every_up_until_it_was_restarted(cluster):
    no_command = gateway(restartCommand=None)
    for _ in range(2):  # the second up finds the rows saved: it must stop all the same
        with pytest.raises(oc.OpenListApiError) as stopped:
            up(no_command)
        message = str(stopped.value)
        assert "it runs without keys. The keys are saved, but OpenList reads them at start only" in message
        assert "set openlist.restartCommand, then run pulumi up again" in message
    cluster.restart()  # the user restarts it by hand, as the message says
    outs = up(no_command)
    assert outs["live"]["s3KeysInForce"] is True and cluster.restarts == 1


def test_a_restart_command_that_returns_before_the_restart_is_confirmed_only_by_the_s3_port(cluster):
    """`kubectl rollout restart` returns at once; the old instance answers /ping all along."""
    commands(cluster).restart = "returns-before"
    outs = up(gateway())
    assert cluster.restarts == 1 and outs["live"]["s3KeysInForce"] is True
    assert cluster.s3_requests >= 4 + oc.KEYS_CONFIRMATIONS, "the up waited for the restart itself"


def test_a_restart_command_that_restarts_nothing_fails_the_up_though_the_old_instance_answers(cluster):
    commands(cluster).restart = "never"
    with pytest.raises(oc.OpenListApiError) as failed:
        up(gateway())
    message = str(failed.value)
    assert "running openlist.restartCommand returned, but 2s later its S3 port at 10.0.0.2:5246" in message
    assert message.endswith(
        "(it answers an unsigned request (HTTP 200): it runs without keys): OpenList was not restarted"
    )


def test_a_gateway_whose_password_does_not_log_in_is_not_reset(openlist):
    with pytest.raises(oc.OpenListApiError, match="this OpenList is not deployed by this stack"):
        up(gateway())
    assert commands(openlist).ran == [], "never `openlist admin random` on an OpenList this stack does not run"


def test_a_changed_drive_password_is_written_and_an_unchanged_seed_keeps_what_the_driver_rotated(openlist):
    deployed = up(props())
    openlist.storage("/189")["addition"] = json.dumps({**openlist.addition("/189"), "refresh_token": "rotated"})
    openlist.calls.clear()
    changed = props(storageSecrets={"password": "new-drive-pw", "refresh_token": "seed-token"})
    up(changed, deployed)
    assert openlist.writes() == ["POST /api/admin/storage/update", "POST /api/fs/mkdir"]
    assert openlist.addition("/189")["password"] == "new-drive-pw"
    assert openlist.addition("/189")["refresh_token"] == "rotated", "the driver's own token is kept"
    assert openlist.restarts == 1, "a storage change restarts nothing"


def test_a_rotated_token_seed_is_written(openlist):
    deployed = up(props())
    openlist.storage("/189")["addition"] = json.dumps({**openlist.addition("/189"), "refresh_token": "rotated"})
    up(props(storageSecrets={"password": "drive-pw", "refresh_token": "new-seed"}), deployed)
    assert openlist.addition("/189")["refresh_token"] == "new-seed"


@pytest.mark.parametrize(
    ("unsigned", "signed", "replaced", "verdict"),
    [
        (403, 200, None, None),
        (403, 200, 403, None),
        (None, 200, None, "it does not answer"),
        (200, 200, None, "it answers an unsigned request (HTTP 200): it runs without keys"),
        (403, 403, None, "a request signed with the declared keys gets HTTP 403 (it runs with other keys)"),
        (403, 404, None, "a request signed with the declared keys gets HTTP 404"),
        (403, 200, 200, "it still accepts the keys they replace (HTTP 200)"),
    ],
)
def test_the_keys_are_in_force_only_when_the_s3_port_refuses_unsigned_requests_and_takes_the_keys(
    unsigned, signed, replaced, verdict
):
    assert oc.keys_verdict(unsigned, signed, replaced) == verdict


def test_a_restart_command_and_s3_url_are_refused_for_the_openlist_this_stack_deploys():
    values = {k.split(":", 1)[1]: v for k, v in stack_config("vps").items() if k.startswith("homelab-backup:")}
    values["openlist"] = {**values["openlist"], "restartCommand": "docker restart openlist", "s3Url": "http://x:5246"}
    assert _problems(values) == [
        (
            "homelab-backup:openlist.restartCommand",
            "applies only with openlist.adminUrl: the OpenList this stack deploys is restarted by the program",
        ),
        (
            "homelab-backup:openlist.s3Url",
            "applies only with openlist.adminUrl: the OpenList this stack deploys is reached at host.deployAddress "
            "and openlist.s3Port",
        ),
    ]


def test_sakamotos_gateway_gets_its_restart_command(key_vault):
    command = "kubectl rollout restart deployment/openlist"
    openlist = {**stack_config("sakamoto")["homelab-backup:openlist"], "restartCommand": command}
    run = run_committed_stack("sakamoto", key_vault, **{"homelab-backup:openlist": openlist})
    assert unwrap_all(run.one(SETTINGS, "openlist-gateway-settings").inputs)["restartCommand"] == command


# ---------------------------------------------------------------- driver fields, answers, restart references


@pytest.mark.parametrize(
    "name",
    # As OpenList v4.2.5's drivers name their credentials (drivers/*/meta.go).
    ["authorization", "passphrase", "salt", "pwd", "share_pwd", "repoPwd", "receive_code", "mail_cookies",
     "RefreshToken", "client_secret", "api_key", "gpg_key_passphrase", "sharepassword"],
)  # fmt: skip
def test_a_credential_by_any_of_the_names_drivers_give_it_is_refused_in_plain_fields(name):
    storage = {"driver": "Some Driver", "fields": {name: "value-Zz9"}}  # no driver the project knows: names only
    assert _problems(_sakamoto(storage=storage)) == [
        (
            f"homelab-backup:openlist.storage.fields.{name}",
            "looks like a credential: move it to openlist.storage.secretFields as a reference",
        )
    ]


@pytest.mark.parametrize("name", ["cdn_token_method", "cdn_token_include_ip", "pass_ua_to_upsteam", "access_key_id"])
def test_settings_named_like_credentials_are_plain_fields(name):
    load_stack_config(_sakamoto(storage={"driver": "Some Driver", "fields": {name: True}}))


@pytest.mark.parametrize(
    ("driver", "where", "name"),
    [
        ("189CloudPC", "secretFields", "pasword"),
        ("189CloudPC", "secretFields", "refreshToken"),
        ("189CloudPC", "fields", "user_name"),
        ("189Cloud", "secretFields", "cookies"),
        ("SFTP", "secretFields", "privatekey"),
        ("Local", "fields", "root_path"),
    ],
)
def test_a_field_the_known_driver_does_not_have_is_refused(driver, where, name):
    """OpenList drops it without a word: the real credential would never be updated, and no diff would show it."""
    value = "config:x" if where == "secretFields" else "x"
    [(key, message)] = _problems(_sakamoto(storage={"driver": driver, where: {name: value}}))
    assert key == f"homelab-backup:openlist.storage.{where}.{name}"
    assert f"is not a field of OpenList's {driver} driver" in message
    assert "check its spelling" in message


def test_any_field_of_a_driver_the_project_does_not_know_is_sent():
    storage = {"driver": "115 Cloud", "fields": {"page_size": 1000}, "secretFields": {"cookie": "config:c"}}
    load_stack_config(_sakamoto(storage=storage))


@pytest.mark.parametrize(
    ("fields", "key", "fragment"),
    [
        # what replacing 'SET-ME:13800000000' by hand gives: a YAML number
        ({"username": 13800000000}, "username", "is a number, but the 189CloudPC driver takes text here (quote it:"
         " '13800000000')"),
        ({"upload_thread": 3}, "upload_thread", "is a number, but the 189CloudPC driver takes text here (quote it:"
         " '3')"),
        ({"rapid_upload": "true"}, "rapid_upload", "is text, but the 189CloudPC driver takes true or false here"),
        ({"family_transfer": 1}, "family_transfer", "is a number, but the 189CloudPC driver takes true or false here"),
    ],
)  # fmt: skip
def test_a_field_of_another_type_than_the_driver_takes_is_refused(fields, key, fragment):
    storage = {**_sakamoto()["openlist"]["storage"], "fields": fields}
    assert _problems(_sakamoto(storage=storage)) == [(f"homelab-backup:openlist.storage.fields.{key}", fragment)]


class _DriverInfoApi:
    """The admin API as `apply_storage` uses it for a new storage: it records each request's path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def call(self, method: str, path: str, what: str, body: object = None) -> object:
        self.paths.append(path)
        return {"content": []} if path.startswith("/api/admin/storage/list") else {}


def test_the_driver_info_request_encodes_the_drivers_name():
    """OpenList's names hold spaces ("115 Cloud"): unencoded, the request line would break at the space."""
    api = _DriverInfoApi()
    p = props(storage={**props()["storage"], "driver": "115 Cloud"})
    oc.apply_storage(api, p, write_managed=True)  # type: ignore[arg-type]
    assert "/api/admin/driver/info?driver=115+Cloud" in api.paths


class _Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self._body, self._headers = status, body, headers

    def read(self) -> bytes:
        return self._body

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name)


class _Connection:
    """One HTTP exchange with a fixed answer, as `AdminApi` drives an `http.client` connection."""

    def __init__(self, answer: _Response) -> None:
        self.answer = answer

    def request(self, *args: object, **kwargs: object) -> None:
        pass

    def getresponse(self) -> _Response:
        return self.answer

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (b"<html>bad request: password=admin-pw</html>", "text/html; charset=utf-8", "text/html, 43 bytes"),
        (b"\xffadmin-pw", "admin-pw", "no media type, 9 bytes"),  # not UTF-8; a header that is free text
        (b"admin-pw", None, "no media type, 8 bytes"),
    ],
)
def test_an_answer_that_is_not_json_is_reported_by_status_and_kind_never_quoted(body, content_type, kind):
    """A proxy's or a broken server's page can echo the request, the admin password in it."""
    headers = {"Content-Type": content_type} if content_type else {}
    api = oc.AdminApi(lambda: _Connection(_Response(502, body, headers)), ["admin-pw"])  # type: ignore[arg-type,return-value]
    with pytest.raises(oc.OpenListApiError) as error:
        api.login("admin", "admin-pw")
    assert str(error.value) == f"OpenList: logging in: HTTP 502, not JSON ({kind})"


def test_a_restart_command_given_by_a_secret_reference_stays_a_secret(key_vault):
    command = "kubectl --token=tok-Rr7 rollout restart deployment/openlist"
    openlist = {**stack_config("sakamoto")["homelab-backup:openlist"], "restartCommand": "config:restartCommand"}
    run = run_committed_stack(
        "sakamoto", key_vault, secrets={"restartCommand": command}, **{"homelab-backup:openlist": openlist}
    )
    settings = run.one(SETTINGS, "openlist-gateway-settings")
    assert unwrap_all(settings.inputs)["restartCommand"] == command
    plain = plain_strings(settings.inputs) + plain_strings(settings.outputs)
    assert not [s for s in plain if "tok-Rr7" in s], "the command in plain text"
    assert "restartCommand" in settings.options["additional_secret_outputs"]


@pytest.mark.parametrize(("value", "fragment"), [("config:bad key", "must be a secret reference"), ("  ", "blank")])
def test_a_restart_command_reference_is_checked_like_any_other(value, fragment):
    [(key, message)] = _problems(_sakamoto(restartCommand=value))
    assert key == "homelab-backup:openlist.restartCommand" and fragment in message


def test_a_gateway_is_restarted_with_the_stacks_restart_command_on_the_shells_stdin(cluster):
    """It may carry a token: never on a command line, the local ssh's or the remote shell's."""
    command = "kubectl --token=tok-Rr7 -n media rollout restart deployment/openlist"
    up(gateway(restartCommand=command))
    hosts = commands(cluster)
    assert hosts.ran == ["sh -s"] and hosts.stdin == [command]
    assert cluster.restarts == 1
