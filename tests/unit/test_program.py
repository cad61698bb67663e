"""The program as the committed stacks declare it, run under Pulumi mocks (no engine, no network).

Key Vault is the local fake (tests/fake_key_vault.py); everything else is the
committed Pulumi.yaml + Pulumi.<stack>.yaml as they are.
"""

from __future__ import annotations

import copy
import json

import pulumi
import pytest

from components import render
from testbed.mocks import (
    ProgramRun,
    RecordingMocks,
    committed_stacks,
    plain_strings,
    run_program,
    stack_config,
    unwrap_all,
)
from tests.unit.conftest import ALL_SECRET_VALUES, AZURE_TOKEN, VPS_SECRETS, run_committed_stack

CONTAINER = "docker:index/container:Container"
REMOTE_FILE = "pulumi-python:dynamic/homelab:RemoteFile"
OWNED_DIRECTORY = "pulumi-python:dynamic/homelab:OwnedDirectory"
IMAGE = "docker:index/remoteImage:RemoteImage"


def env_of(container) -> dict[str, str]:
    return dict(e.split("=", 1) for e in container.inputs["envs"])


def labels_of(container) -> dict[str, str]:
    return {item["label"]: item["value"] for item in unwrap_all(container.inputs["labels"])}


def volumes_of(container) -> dict[str, tuple[str, bool]]:
    """Volumes and bind mounts alike: container path -> (host path, read-only)."""
    volumes = {v["containerPath"]: (v["hostPath"], v.get("readOnly", False)) for v in container.inputs["volumes"]}
    for mount in container.inputs.get("mounts", []):
        assert mount["type"] == "bind"
        volumes[mount["target"]] = (mount["source"], mount.get("readOnly", False))
    return volumes


def bind_mounts_of(container) -> set[str]:
    return {m["target"] for m in container.inputs.get("mounts", [])}


def file_content(run: ProgramRun, filename: str) -> str:
    role = filename.replace(".", "-")
    return unwrap_all(run.one(REMOTE_FILE, f"kopia-config-{role}").inputs["content"])


def image_name(run: ProgramRun, container) -> str:
    images = {r.outputs["imageId"]: r.inputs["name"] for r in run.by_type(IMAGE)}
    return images[container.inputs["image"]]


# ---------------------------------------------------------------- shape


@pytest.mark.parametrize("stack", committed_stacks())
def test_components_have_type_tokens_and_children_are_parented_and_named(stack, key_vault):
    run = run_committed_stack(stack, key_vault)
    components = {r.name: r for r in run.resources if r.typ.startswith("homelab:index:")}
    assert components["kopia"].typ == "homelab:index:KopiaNode"
    assert components["kopia-config"].typ == "homelab:index:ConfigFiles"
    assert components["kopia-config"].parent_name == "kopia"
    for resource in run.resources:
        if resource.typ.startswith("pulumi:providers:") or resource.name in ("kopia", "openlist", "openlist-gateway"):
            continue
        owner = resource.parent_name
        assert owner in components, f"{resource.typ} {resource.name} is not inside a component"
        assert resource.name.startswith(f"{owner}-"), f"{resource.name} is not named after its parent {owner}"
    openlist = stack_config(stack).get("homelab-backup:openlist")
    if openlist is None:
        assert "openlist" not in components and "openlist-gateway" not in components
    elif "adminUrl" in openlist:  # configured, not deployed
        assert components["openlist-gateway"].typ == "homelab:index:OpenListGateway"
        assert "openlist" not in components
    else:
        assert components["openlist"].typ == "homelab:index:OpenList"


@pytest.mark.parametrize("stack", committed_stacks())
def test_providers_pin_the_host_key_and_every_resource_uses_them(stack, key_vault):
    host = stack_config(stack)["homelab-backup:host"]["ssh"]["address"]
    run = run_committed_stack(stack, key_vault)
    provider = run.one("pulumi:providers:docker")
    assert provider.inputs["host"] == f"ssh://shelken@{host}:22"
    opts = json.loads(provider.inputs["sshOpts"])  # provider config travels as JSON text
    assert "StrictHostKeyChecking=yes" in opts
    assert not any("StrictHostKeyChecking=no" in o for o in opts)
    pinned = f"{host} {stack_config(stack)['homelab-backup:host']['ssh']['hostKey']}"
    assert f"KnownHostsCommand=/bin/echo {pinned}" in opts
    assert "BatchMode=yes" in opts
    for resource in run.resources:
        if resource.typ.startswith("docker:"):
            assert resource.provider and resource.provider.split("::")[-2] == f"{stack}-docker"
    # The file and directory resources run the same ssh, with the same options, as the Docker provider.
    ssh_resources = run.by_type(REMOTE_FILE) + run.by_type(OWNED_DIRECTORY)
    assert ssh_resources
    for resource in ssh_resources:
        assert resource.inputs["ssh"] == ["ssh", *opts, "-p", "22", f"shelken@{host}"]
        assert resource.inputs["target"] == f"shelken@{host}:22"


# ---------------------------------------------------------------- vps


def test_vps_openlist_container(vps):
    container = vps.one(CONTAINER, "openlist-container")
    assert image_name(vps, container) == "ghcr.io/openlistteam/openlist-git:v4.2.5"
    assert container.inputs["name"] == "openlist"
    assert container.inputs["restart"] == "always"
    assert env_of(container) == {
        "TZ": "Asia/Shanghai",
        "S3_ENABLE": "true",
        "S3_PORT": "5246",
        "HTTP_PORT": "80",
        "UMASK": "077",
    }
    ports = {(p["internal"], p["external"], p["ip"]) for p in container.inputs["ports"]}
    assert ports == {(80, 5244, "100.64.0.2"), (5246, 5246, "100.64.0.2")}
    assert volumes_of(container) == {"/opt/openlist/data": ("/opt/services/openlist/data", False)}
    assert [n["name"] for n in container.inputs["networksAdvanced"]] == ["homelab"]
    assert labels_of(container) == {
        "homepage.group": "VPS",
        "homepage.name": "openlist",
        "homepage.icon": "openlist.svg",
        "homepage.description": "网盘S3服务",
    }
    data_dir = vps.one(OWNED_DIRECTORY, "openlist-data-dir")
    assert (data_dir.inputs["path"], data_dir.inputs["uid"], data_dir.inputs["mode"]) == (
        "/opt/services/openlist/data",
        1001,
        "700",
    )
    assert data_dir.inputs["image"] == "ghcr.io/openlistteam/openlist-git:v4.2.5"
    # Prepared before OpenList starts on it.
    assert any(d.endswith("::openlist-data-dir") for d in container.options["depends_on"])


def test_vps_kopia_container(vps):
    container = vps.one(CONTAINER, "kopia-container")
    assert image_name(vps, container) == "kopia/kopia:0.22.3"
    assert container.inputs["name"] == "kopia"
    assert container.inputs["hostname"] == "vps"
    assert container.inputs["restart"] == "always"
    assert [n["name"] for n in container.inputs["networksAdvanced"]] == ["homelab"]
    assert [(p["internal"], p["external"], p["ip"]) for p in container.inputs["ports"]] == [
        (51515, 51515, "100.64.0.2")
    ]
    assert volumes_of(container) == {
        "/app/deploy": ("/opt/compose/vps/kopia", True),
        "/app/cache": ("/opt/kopia/cache", False),
        "/app/logs": ("/opt/kopia/logs", False),
        "/app/state": ("/opt/kopia/state", False),
        "/app/restore": ("/opt/kopia/restore", False),  # where the UI restores: the sources are read-only
        # Mounted where the policy looks: /data would leave the scheduled source missing.
        "/backup/data": ("/opt/data", True),
    }
    # A source is a bind mount: a missing host path stops the container instead of backing up an empty dir.
    assert bind_mounts_of(container) == {"/backup/data"}
    env = env_of(container)
    assert env["TZ"] == "Asia/Shanghai"
    assert env["KOPIA_CHECK_FOR_UPDATES"] == "false"
    assert not any("PASSWORD" in k or "SECRET" in k for k in env)
    script = container.inputs["entrypoints"][2]
    assert container.inputs["entrypoints"][:2] == ["/bin/sh", "-c"]
    assert "--override-hostname=vps --override-username=shelken" in script
    assert "IS_OWNER=no" in script  # sakamoto owns the repository
    assert "CREATE_REQUESTED=no" in script  # and no stack file asks for one
    assert "--tls-cert-file=/app/deploy/tls.crt" in script
    health = container.inputs["healthcheck"]["tests"]
    assert health[0] == "CMD-SHELL"
    assert "shelken@vps:/backup/data" in health[1]
    labels = labels_of(container)
    assert labels["homepage.name"] == "kopia"
    assert len(labels["homelab-backup.config-sha256"]) == 64


def test_vps_kopia_reaches_openlist_over_the_docker_network_in_plain_http(vps):
    storage = json.loads(file_content(vps, render.REPOSITORY_CONFIG))["storage"]
    assert storage["type"] == "s3"
    assert storage["config"]["endpoint"] == "openlist:5246"
    assert storage["config"]["doNotUseTLS"] is True
    assert storage["config"]["bucket"] == "kopia"
    assert storage["config"]["prefix"] == "main/"
    assert storage["config"]["accessKeyID"] == VPS_SECRETS["OPENLIST_S3_ACCESS_KEY_ID"]


def test_vps_outputs(vps):
    assert vps.outputs["kopia_server_url"] == "https://100.64.0.2:51515"
    assert vps.outputs["openlist_web_url"] == "http://100.64.0.2:5244"
    assert vps.outputs["openlist_s3_url"] == "http://100.64.0.2:5246"
    assert vps.outputs["kopia_identity"] == "shelken@vps"
    assert vps.outputs["backup_sources"] == ["shelken@vps:/backup/data"]
    cert = file_content(vps, render.TLS_CERT)
    assert vps.outputs["kopia_tls_fingerprint"] == render.pem_sha256_fingerprint(cert)


def test_vps_uses_the_existing_network_by_name(vps):
    assert ("docker:index/getNetwork:getNetwork", {"name": "homelab"}) in vps.mocks.calls
    assert vps.by_type("docker:index/network:Network") == []


def test_network_is_created_when_the_stack_says_so(key_vault):

    host = stack_config("vps")["homelab-backup:host"]
    run = run_committed_stack(
        "vps", key_vault, **{"homelab-backup:host": {**host, "network": {"name": "homelab", "create": True}}}
    )
    network = run.one("docker:index/network:Network")
    assert network.inputs["name"] == "homelab"
    assert not [c for c in run.mocks.calls if c[0] == "docker:index/getNetwork:getNetwork"]


# ---------------------------------------------------------------- sakamoto


def test_sakamoto_kopia(sakamoto):
    assert sakamoto.by_type("homelab:index:OpenList") == []
    container = sakamoto.one(CONTAINER, "kopia-container")
    assert container.inputs["hostname"] == "sakamoto"
    volumes = volumes_of(container)
    assert volumes["/backup/minio"] == ("/opt/minio/data", True)
    assert volumes["/backup/compose"] == ("/opt/docker-data", True)
    assert bind_mounts_of(container) == {"/backup/minio", "/backup/compose"}
    assert [(p["internal"], p["external"], p["ip"]) for p in container.inputs["ports"]] == [
        (51515, 51515, "192.168.1.10")
    ]
    script = container.inputs["entrypoints"][2]
    assert "IS_OWNER=yes" in script
    assert "CREATE_REQUESTED=no" in script  # only a first deploy asks for one (kopia.createRepository)
    assert "kopia maintenance set --owner=me" in script
    storage = json.loads(file_content(sakamoto, render.REPOSITORY_CONFIG))["storage"]["config"]
    assert storage["endpoint"] == "openlist.cluster.lan:5246"  # from Key Vault
    assert storage["doNotUseTLS"] is True
    assert sakamoto.outputs["kopia_identity"] == "shelken@sakamoto"
    assert sakamoto.outputs["backup_sources"] == [
        "shelken@sakamoto:/backup/minio",
        "shelken@sakamoto:/backup/compose",
    ]
    assert "openlist_web_url" not in sakamoto.outputs


# ---------------------------------------------------------------- config files on the host


@pytest.mark.parametrize("stack", committed_stacks())
def test_config_files_are_one_resource_each_secret_where_they_hold_secrets(stack, key_vault):
    run = run_committed_stack(stack, key_vault)
    config_dir = stack_config(stack)["homelab-backup:host"]["configDir"]
    files = {r.name: r for r in run.by_type(REMOTE_FILE) if r.parent_name == "kopia-config"}
    expected = [render.REPOSITORY_CONFIG, render.STORAGE_TOKEN, render.POLICY_JSON, render.SECRETS_ENV]
    expected += [render.TLS_CERT, render.TLS_KEY]
    assert sorted(files) == sorted(f"kopia-config-{f.replace('.', '-')}" for f in expected)
    for filename in expected:
        resource = files[f"kopia-config-{filename.replace('.', '-')}"]
        assert resource.inputs["path"] == f"{config_dir}/{filename}"
        # A replacement must not delete the file it has just written (same path).
        assert resource.options["delete_before_replace"] is True
        secret = filename in render.SECRET_FILES
        assert (plain_strings(resource.inputs["content"]) == []) is secret, filename
        assert ({"content", "sha256"} <= set(resource.options["additional_secret_outputs"])) is secret, filename
    assert {render.SECRETS_ENV, render.TLS_KEY, render.REPOSITORY_CONFIG} <= render.SECRET_FILES
    container = run.one(CONTAINER, "kopia-container")
    assert set(files) <= {d.rsplit("::", 1)[-1] for d in container.options["depends_on"]}


@pytest.mark.parametrize(
    ("stack", "settings"), [("vps", "openlist-settings"), ("sakamoto", "openlist-gateway-settings")]
)
def test_kopias_s3_keys_reach_its_files_only_after_the_gateway_enforces_them(key_vault, stack, settings):
    """A changed S3 key goes to the gateway first, then to Kopia (its files, hence its container): when the
    gateway step stops (a gateway to restart by hand), Kopia keeps the keys the gateway still enforces instead of
    crash-looping on new ones it does not take yet."""
    run = run_committed_stack(stack, key_vault)
    for filename in (render.REPOSITORY_CONFIG, render.STORAGE_TOKEN):
        resource = run.one(REMOTE_FILE, f"kopia-config-{filename.replace('.', '-')}")
        assert settings in {d.rsplit("::", 1)[-1] for d in resource.options["depends_on"]}, filename


def test_policy_json_is_identical_on_both_hosts(vps, sakamoto):
    assert file_content(vps, render.POLICY_JSON) == file_content(sakamoto, render.POLICY_JSON)


def test_policy_change_replaces_the_kopia_container(key_vault):

    before = run_committed_stack("vps", key_vault)
    policy = stack_config("vps")["homelab-backup:policy"]
    after = run_committed_stack(
        "vps", key_vault, **{"homelab-backup:policy": {**policy, "retention": {"keepHourly": 12, "keepDaily": 7}}}
    )
    assert file_content(before, render.POLICY_JSON) != file_content(after, render.POLICY_JSON)
    digest = "homelab-backup.config-sha256"
    # Container labels force a replacement in the Docker provider: the new container imports the new policy.
    assert (
        labels_of(before.one(CONTAINER, "kopia-container"))[digest]
        != labels_of(after.one(CONTAINER, "kopia-container"))[digest]
    )


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("stack", committed_stacks())
def test_no_secret_value_in_any_plain_input_or_output(stack, key_vault):
    run = run_committed_stack(stack, key_vault)
    assert key_vault.requests, "the stack read Key Vault"
    plain = [s for r in run.resources for s in plain_strings(r.inputs) + plain_strings(r.outputs)]
    plain += [json.dumps(v) for k, v in run.outputs.items() if k not in run.secret_outputs]
    for secret in [*ALL_SECRET_VALUES, AZURE_TOKEN]:
        leaks = [s[:80] for s in plain if secret in s]
        assert not leaks, f"secret {secret!r} in plain text: {leaks}"
    # ...and the secrets did reach the files that need them, as secrets.
    secrets_env = run.one(REMOTE_FILE, "kopia-config-secrets-env").inputs["content"]
    assert plain_strings(secrets_env) == []
    assert "KOPIA_PASSWORD=" in unwrap_all(secrets_env)
    # The change-detection digest covers secret files but is keyed by one, so it may be plain: a
    # preview then shows which label changed instead of hiding every label behind [secret].
    labels = run.one(CONTAINER, "kopia-container").inputs["labels"]
    digest = labels_of(run.one(CONTAINER, "kopia-container"))["homelab-backup.config-sha256"]
    plain_labels = plain_strings(labels)
    for key, value in labels_of(run.one(CONTAINER, "kopia-container")).items():
        assert key in plain_labels and value in plain_labels, key
    assert digest in plain_labels


@pytest.mark.parametrize("stack", committed_stacks())
def test_no_stack_output_holds_a_secret(stack, key_vault):
    """Outputs are printed by `pulumi up` and read by `scripts/status`: none carries a secret, secret or not."""
    run = run_committed_stack(stack, key_vault)
    assert run.outputs, "the stack exports its server URL, fingerprint, identity and sources"
    for name, value in run.outputs.items():
        leaked = [secret for secret in [*ALL_SECRET_VALUES, AZURE_TOKEN] if secret in json.dumps(value)]
        assert not leaked, f"output {name} holds a secret"
    assert run.secret_outputs == set()


def config_secret_run(*, tls: bool = True, **secret_values: str) -> ProgramRun:
    """sakamoto with every reference a `config:` secret, so a test can change one secret value."""
    kopia = stack_config("sakamoto")["homelab-backup:kopia"]
    names = {
        "s3": {"endpoint": "s3Endpoint", "accessKeyId": "s3Key", "secretAccessKey": "s3Secret"},
        "secrets": {
            "repositoryPassword": "repoPassword",
            "serverUsername": "uiUser",
            "serverPassword": "uiPassword",
            "serverControlPassword": "controlPassword",
        },
    }
    refs = {group: {k: f"config:{v}" for k, v in fields.items()} for group, fields in names.items()}
    values = {v: f"value-of-{v}" for fields in names.values() for v in fields.values()}
    values["s3Endpoint"] = "http://s3.example.net:5246"
    # tls=False for runs compared with each other: the mocks make a new key at every run, where the TLS
    # provider keeps one in state.
    insecure = {} if tls else {"server": {**kopia.get("server", {}), "insecure": True}}
    openlist = stack_config("sakamoto")["homelab-backup:openlist"]
    storage = {**openlist["storage"], "secretFields": {"password": "config:cloud189Password"}}
    openlist = {**openlist, "adminPassword": "config:openlistAdminPassword", "storage": storage}
    values |= {"openlistAdminPassword": "value-of-openlistAdminPassword", "cloud189Password": "value-of-cloud189"}
    return run_program(
        "sakamoto",
        overrides={"homelab-backup:kopia": {**kopia, **refs, **insecure}, "homelab-backup:openlist": openlist},
        secrets={**values, **secret_values},
    )


def test_config_secrets_instead_of_key_vault(key_vault):
    """A stack without Key Vault: every reference is `config:<key>`; no Azure token is requested."""
    run = config_secret_run(s3Endpoint="https://s3.example.net")
    assert not [c for c in run.mocks.calls if c[0].startswith("azure-native:")]
    storage = json.loads(file_content(run, render.REPOSITORY_CONFIG))["storage"]["config"]
    assert storage["endpoint"] == "s3.example.net"
    assert "doNotUseTLS" not in storage
    plain = [s for r in run.resources for s in plain_strings(r.inputs) + plain_strings(r.outputs)]
    for name in ("s3Key", "s3Secret", "repoPassword", "uiPassword", "controlPassword", "openlistAdmin", "cloud189"):
        assert not [s for s in plain if f"value-of-{name}" in s]


# ---------------------------------------------------------------- bad input


def test_invalid_stack_fails_before_any_resource_with_every_problem(key_vault):

    host = stack_config("vps")["homelab-backup:host"]
    with pytest.raises(pulumi.RunError) as error:
        run_committed_stack(
            "vps",
            key_vault,
            **{"homelab-backup:host": {**host, "deployAddress": "not-an-ip", "name": "VPS"}},
        )
    message = str(error.value)
    assert "homelab-backup:host.deployAddress" in message
    assert "homelab-backup:host.name" in message
    assert "2 problems" in message


def test_missing_key_vault_field_names_the_reference_not_a_value(key_vault):
    from tests.unit.conftest import SAKAMOTO_SECRETS, dotenv

    values = {k: v for k, v in VPS_SECRETS.items() if k != "KOPIA_SERVER_CONTROL_PASSWORD"}
    key_vault.secrets["shelken-homelab"]["compose-vps"] = dotenv(values)
    key_vault.secrets["shelken-homelab"]["compose-sakamoto"] = dotenv(SAKAMOTO_SECRETS)
    with pytest.raises(Exception) as error:
        run_committed_stack("vps", key_vault)
    message = str(error.value)
    assert "azure://shelken-homelab/compose-vps/KOPIA_SERVER_CONTROL_PASSWORD" in message
    assert "no field 'KOPIA_SERVER_CONTROL_PASSWORD'" in message
    for secret in values.values():
        assert secret not in message


def test_insecure_is_an_explicit_visible_opt_out_of_tls(key_vault):

    kopia = stack_config("sakamoto")["homelab-backup:kopia"]
    run = run_committed_stack(
        "sakamoto", key_vault, **{"homelab-backup:kopia": {**kopia, "server": {"insecure": True}}}
    )
    assert run.by_type("tls:index/privateKey:PrivateKey") == []
    assert run.by_type("tls:index/selfSignedCert:SelfSignedCert") == []
    container = run.one(CONTAINER, "kopia-container")
    assert "--insecure" in container.inputs["entrypoints"][2]
    assert "http://127.0.0.1:51515/api/v1/control/sources" in container.inputs["healthcheck"]["tests"][1]
    assert run.outputs["kopia_server_url"] == "http://192.168.1.10:51515"
    assert run.outputs["kopia_tls_fingerprint"] is None
    files = {r.name for r in run.by_type(REMOTE_FILE)}
    assert "kopia-config-tls-key" not in files and "kopia-config-tls-crt" not in files


def test_a_new_hosts_stack_file_is_picked_up_by_every_parametrized_test(tmp_path):
    """Adding `Pulumi.<host>.yaml` is enough for the tests above to run it: they are parametrized over this."""
    for name in ("Pulumi.yaml", "Pulumi.vps.yaml", "Pulumi.nas.yaml", "Pulumi.e2e-vps.yaml"):
        (tmp_path / name).write_text("config: {}\n")
    assert committed_stacks(tmp_path) == ["nas", "vps"]
    assert set(committed_stacks()) >= {"vps", "sakamoto"}


@pytest.mark.parametrize("changed", ["repoPassword", "controlPassword", "s3Secret", "s3Endpoint"])
def test_the_restart_digest_covers_every_file_secrets_included(changed):
    """A changed secret changes a file, so the label, so the container: Kopia restarts with the new value."""
    digest = "homelab-backup.config-sha256"
    before = labels_of(config_secret_run(tls=False).one(CONTAINER, "kopia-container"))[digest]
    again = labels_of(config_secret_run(tls=False).one(CONTAINER, "kopia-container"))[digest]
    assert before == again, "same files, same label: no restart on an unchanged `pulumi up`"
    value = "http://other.example.net:5246" if changed == "s3Endpoint" else "another-value"
    after = labels_of(config_secret_run(tls=False, **{changed: value}).one(CONTAINER, "kopia-container"))[digest]
    assert after != before


def test_a_host_on_another_ssh_port_is_reached_there_by_every_resource(key_vault):
    host = stack_config("vps")["homelab-backup:host"]
    run = run_committed_stack(
        "vps", key_vault, **{"homelab-backup:host": {**host, "ssh": {**host["ssh"], "port": 2222}}}
    )
    provider = run.one("pulumi:providers:docker")
    assert provider.inputs["host"] == "ssh://shelken@vps.example.net:2222"
    opts = json.loads(provider.inputs["sshOpts"])
    # known_hosts names a host on another port as [address]:port
    assert f"KnownHostsCommand=/bin/echo [vps.example.net]:2222 {host['ssh']['hostKey']}" in opts
    for option in ("StrictHostKeyChecking=yes", "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null"):
        assert option in opts
    for resource in run.by_type(REMOTE_FILE) + run.by_type(OWNED_DIRECTORY):
        assert resource.inputs["ssh"][-3:] == ["-p", "2222", "shelken@vps.example.net"]
        assert resource.inputs["target"] == "shelken@vps.example.net:2222"


def test_the_adapter_keeps_the_tls_key_and_certificate_across_ups_as_pulumi_state_does(key_vault):
    """Otherwise every adapter-tier `up` would write a new certificate and restart Kopia, which the engine does
    not: an `up` that changes nothing else must leave Kopia running."""
    state: dict = {}

    def certificate(**overrides: object) -> str:
        mocks = RecordingMocks({"azure-native:authorization:getClientToken": {"token": AZURE_TOKEN}}, state=state)
        overrides = {"homelab-backup:keyVault": {"urlTemplate": key_vault.url_template}, **overrides}
        run = run_program("vps", overrides=overrides, mocks=mocks)
        return run.one("tls:index/selfSignedCert:SelfSignedCert", "kopia-tls-cert").outputs["certPem"]

    first = certificate()
    assert certificate() == first
    host = stack_config("vps")["homelab-backup:host"]
    assert certificate(**{"homelab-backup:host": {**host, "deployAddress": "192.168.7.9"}}) != first, "new inputs"


def test_the_adapter_applies_in_the_programs_dependency_order(vps):
    """The e2e adapter tier orders by the dependencies the program registers, as the engine does."""
    from testbed.adapter import DYNAMIC_PROVIDERS, dependency_order

    applied = [r for r in vps.resources if r.typ in DYNAMIC_PROVIDERS or r.typ == CONTAINER]
    order = [r.name for r in dependency_order(applied)]
    assert order.index("openlist-data-dir") < order.index("openlist-container")
    # Kopia's endpoint is OpenList's container name: its storage file and container come after it.
    assert order.index("openlist-container") < order.index("kopia-config-repository-config")
    assert order[-1] == "kopia-container"


def test_notification_profiles_become_secret_files_and_restart_kopia_when_they_change(key_vault):
    notifications = [
        {"name": "ntfy", "webhook": {"url": "config:ntfyUrl"}},
        {"name": "mail", "email": {**MAIL, "username": "kopia", "password": "config:smtpPassword"}},
        {"name": "relay", "email": MAIL},  # a relay without login: no secret at all
    ]

    def run_with(url: str) -> ProgramRun:
        secrets = {"ntfyUrl": url, "smtpPassword": "value-of-smtpPassword"}
        return run_committed_stack("vps", key_vault, secrets, **{"homelab-backup:notifications": notifications})

    run = run_with("https://ntfy.example/value-of-ntfyUrl")
    assert json.loads(file_content(run, render.notification_file("relay")))["method"]["config"]["smtpPassword"] == ""
    for name in ("ntfy", "mail"):
        resource = run.one(REMOTE_FILE, f"kopia-config-{render.notification_file(name).replace('.', '-')}")
        assert plain_strings(resource.inputs["content"]) == [], "the file holds the URL or the SMTP password"
        assert {"content", "sha256"} <= set(resource.options["additional_secret_outputs"])
    assert json.loads(file_content(run, render.notification_file("ntfy")))["method"]["config"]["endpoint"] == (
        "https://ntfy.example/value-of-ntfyUrl"
    )
    plain = [s for r in run.resources for s in plain_strings(r.inputs) + plain_strings(r.outputs)]
    assert not [s for s in plain if "value-of-ntfyUrl" in s or "value-of-smtpPassword" in s]
    digest = labels_of(run.one(CONTAINER, "kopia-container"))["homelab-backup.config-sha256"]
    changed = labels_of(run_with("https://ntfy.example/other").one(CONTAINER, "kopia-container"))
    assert changed["homelab-backup.config-sha256"] != digest, "a new URL restarts Kopia, which applies it"


def with_previous_repository_password(stack: str) -> dict:
    """The stack's kopia key with kopia.secrets.previousRepositoryPassword, as declared during a change."""
    kopia = copy.deepcopy(stack_config(stack)["homelab-backup:kopia"])
    kopia["secrets"]["previousRepositoryPassword"] = "config:previousRepoPassword"
    return {"homelab-backup:kopia": kopia}


def test_the_previous_repository_password_reaches_the_owner_in_its_own_secret_file_and_restarts_nothing(key_vault):
    """Read by the start script only when the declared password does not open the repository: removing it once
    the password changed must not restart Kopia (a snapshot would be interrupted for nothing)."""
    previous = "previous-repo-pass-Bb6"
    before = run_committed_stack("sakamoto", key_vault)  # no change under way
    during = run_committed_stack(
        "sakamoto", key_vault, {"previousRepoPassword": previous}, **with_previous_repository_password("sakamoto")
    )
    resource = during.one(REMOTE_FILE, f"kopia-config-{render.PREVIOUS_PASSWORD_ENV.replace('.', '-')}")
    assert plain_strings(resource.inputs["content"]) == [], "the file holds a password"
    assert {"content", "sha256"} <= set(resource.options["additional_secret_outputs"])
    assert unwrap_all(resource.inputs["content"]) == render.render_previous_password_env(previous)
    plain = [s for r in during.resources for s in plain_strings(r.inputs) + plain_strings(r.outputs)]
    assert not [s for s in plain if previous in s]
    assert not [r for r in before.by_type(REMOTE_FILE) if "previous" in r.name], "declared only during a change"
    # The restart label covers every other file (keyed by secrets.env), not this one.
    files = {
        unwrap_all(f.inputs["path"]).rsplit("/", 1)[1]: unwrap_all(f.inputs["content"])
        for f in during.by_type(REMOTE_FILE)
    }
    assert render.PREVIOUS_PASSWORD_ENV in files
    del files[render.PREVIOUS_PASSWORD_ENV]
    assert labels_of(during.one(CONTAINER, "kopia-container"))["homelab-backup.config-sha256"] == (
        render.content_digest(files, key=files[render.SECRETS_ENV])
    )


def test_only_the_maintenance_owner_may_declare_the_previous_repository_password(key_vault):
    message = refused(
        "vps", key_vault, overrides=with_previous_repository_password("vps"), secrets={"previousRepoPassword": "x"}
    )
    assert "homelab-backup:kopia.secrets.previousRepositoryPassword: only the maintenance owner (shelken@sakamoto)" in (
        message
    )


MAIL = {"smtpServer": "smtp.example.net", "from": "kopia@example.net", "to": ["me@example.net"]}


# ---------------------------------------------------------------- every bad input refused before anything changes


def refused(stack: str, key_vault, **kwargs) -> str:
    """The program run on its entry path fails with one RunError, before it declares any resource."""
    mocks = RecordingMocks({"azure-native:authorization:getClientToken": {"token": AZURE_TOKEN}})
    overrides = {"homelab-backup:keyVault": {"urlTemplate": key_vault.url_template}, **kwargs.pop("overrides", {})}
    with pytest.raises(pulumi.RunError) as error:
        run_program(stack, overrides=overrides, mocks=mocks, **kwargs)
    assert mocks.resources == [], f"declared before failing: {[r.name for r in mocks.resources]}"
    message = str(error.value)
    assert "Traceback" not in message
    for secret in [*ALL_SECRET_VALUES, AZURE_TOKEN]:
        assert secret not in message
    return message


def test_every_secret_problem_is_one_message_before_any_resource(key_vault):
    """A missing field, an empty value and a bad endpoint: all listed, each with its key and reference."""
    from tests.unit.conftest import SAKAMOTO_SECRETS, dotenv

    values = {k: v for k, v in SAKAMOTO_SECRETS.items() if k != "KOPIA_SERVER_PASSWORD"}
    values |= {"OPENLIST_S3_ENDPOINT": "openlist.cluster.lan:5246", "OPENLIST_S3_ACCESS_KEY_ID": '""'}
    key_vault.secrets["shelken-homelab"]["compose-sakamoto"] = dotenv(values)
    message = refused("sakamoto", key_vault)
    ref = "azure://shelken-homelab/compose-sakamoto"
    assert message.startswith("cannot read the stack's secrets (3 problems); nothing was changed:\n")
    assert f"homelab-backup:kopia.secrets.serverPassword: {ref}/KOPIA_SERVER_PASSWORD: no field" in message
    assert f"homelab-backup:kopia.s3.accessKeyId: {ref}/OPENLIST_S3_ACCESS_KEY_ID: field" in message
    assert f"homelab-backup:kopia.s3.endpoint: {ref}/OPENLIST_S3_ENDPOINT: the value is not an S3 endpoint" in message
    assert "openlist.cluster.lan" not in message


def test_a_missing_key_vault_secret_and_an_unreachable_vault_are_reported_the_same_way(key_vault):
    del key_vault.secrets["shelken-homelab"]["compose-vps"]
    message = refused("vps", key_vault)
    assert "(8 problems)" in message
    assert (
        "homelab-backup:kopia.secrets.repositoryPassword: azure://shelken-homelab/compose-vps/KOPIA_REPO_PASSWORD:"
        in message
    )
    assert message.count("Key Vault answered HTTP 404") == 8
    assert key_vault.requests.count("/shelken-homelab/secrets/compose-vps") == 1
    message = refused(
        "vps", key_vault, overrides={"homelab-backup:keyVault": {"urlTemplate": "http://127.0.0.1:9/{vault}"}}
    )
    assert "cannot reach Key Vault at http://127.0.0.1:9/shelken-homelab" in message


@pytest.mark.parametrize("field_value", [None, True, 5246, {"a": "b"}])
def test_a_json_field_that_is_not_a_string_is_refused(key_vault, field_value):
    """`null` used to become the repository password "null"."""
    key_vault.secrets["shelken-homelab"]["compose-vps"] = json.dumps(
        {**VPS_SECRETS, "KOPIA_REPO_PASSWORD": field_value}
    )
    message = refused("vps", key_vault)
    assert (
        "homelab-backup:kopia.secrets.repositoryPassword: azure://shelken-homelab/compose-vps/KOPIA_REPO_PASSWORD:"
        " field 'KOPIA_REPO_PASSWORD' is" in message
    )
    assert "not a string" in message


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("KOPIA_REPO_PASSWORD", "kopia.secrets.repositoryPassword"),
        ("OPENLIST_S3_ACCESS_KEY_ID", "kopia.s3.accessKeyId"),
        ("OPENLIST_S3_SECRET_ACCESS_KEY", "kopia.s3.secretAccessKey"),
        ("KOPIA_SERVER_USERNAME", "kopia.secrets.serverUsername"),
        ("OPENLIST_ADMIN_PASSWORD", "openlist.adminPassword"),
        ("CLOUD189_PASSWORD", "openlist.storage.secretFields.password"),
    ],
)
def test_a_secret_ending_in_a_line_break_is_refused_saying_how_to_store_it(key_vault, field, key):
    """What `az keyvault secret set --file` stores: the newline would have become part of the password."""
    key_vault.secrets["shelken-homelab"]["compose-vps"] = json.dumps({**VPS_SECRETS, field: VPS_SECRETS[field] + "\n"})
    message = refused("vps", key_vault)
    assert "(1 problem)" in message
    assert (
        f"homelab-backup:{key}: azure://shelken-homelab/compose-vps/{field}: the value ends in a line break" in message
    )
    assert "az keyvault secret set --value" in message


def test_a_whole_secret_stored_from_a_file_with_its_newline_is_refused(key_vault):
    """A whole Key Vault secret (no field), as `az keyvault secret set --file password.txt` stores it."""
    kopia = stack_config("vps")["homelab-backup:kopia"]
    key_vault.secrets["shelken-homelab"]["repo-password"] = "repo-pass-Vq7w\n"
    secrets = {**kopia["secrets"], "repositoryPassword": "azure://shelken-homelab/repo-password"}
    message = refused("vps", key_vault, overrides={"homelab-backup:kopia": {**kopia, "secrets": secrets}})
    assert (
        "homelab-backup:kopia.secrets.repositoryPassword: azure://shelken-homelab/repo-password: the value" in message
    )


def test_a_secret_holding_a_lone_surrogate_is_refused_before_any_resource(key_vault):
    """JSON may spell half a UTF-16 pair; it used to end in a traceback once files were rendered."""
    text = json.dumps(VPS_SECRETS).replace('"repo-pass-Vq7w"', '"repo-pass-\\ud800"')
    key_vault.secrets["shelken-homelab"]["compose-vps"] = text
    message = refused("vps", key_vault)
    assert (
        "homelab-backup:kopia.secrets.repositoryPassword: azure://shelken-homelab/compose-vps/KOPIA_REPO_PASSWORD:"
        in message
    )
    assert "lone UTF-16 surrogate" in message


def test_a_webhook_url_without_its_scheme_is_refused_before_any_resource(key_vault):
    profiles = [{"name": "alerts", "webhook": {"url": "config:alertUrl"}}]
    message = refused(
        "vps",
        key_vault,
        overrides={"homelab-backup:notifications": profiles},
        secrets={"alertUrl": "ntfy.example.net/backups-Tt5"},
    )
    assert "homelab-backup:notifications[0].webhook.url: config:alertUrl: the URL must be http(s)://" in message
    assert "backups-Tt5" not in message


def test_webhook_headers_may_end_in_a_line_break(key_vault):
    profiles = [{"name": "alerts", "webhook": {"url": "config:alertUrl", "headers": "config:alertHeaders"}}]
    run = run_committed_stack(
        "vps",
        key_vault,
        secrets={"alertUrl": "https://ntfy.example.net/backups", "alertHeaders": "Priority: high\nTags: kopia\n"},
        **{"homelab-backup:notifications": profiles},
    )
    profile = json.loads(file_content(run, render.notification_file("alerts")))
    assert profile["method"]["config"]["headers"] == "Priority: high\nTags: kopia\n"


def test_dotenv_values_are_read_as_compose_reads_them(key_vault):
    from tests.unit.conftest import dotenv

    values = {**VPS_SECRETS, "KOPIA_SERVER_PASSWORD": '"ui pass-Lm3k" # the UI login'}
    key_vault.secrets["shelken-homelab"]["compose-vps"] = dotenv(values)
    run = run_committed_stack("vps", key_vault)
    assert "export KOPIA_SERVER_PASSWORD='ui pass-Lm3k'\n" in file_content(run, render.SECRETS_ENV)


def test_a_config_reference_to_a_plain_value_is_refused_with_the_command_that_fixes_it(key_vault):
    kopia = stack_config("sakamoto")["homelab-backup:kopia"]
    refs = {"repositoryPassword": "config:repoPassword", "serverUsername": "config:uiUser"}
    message = refused(
        "sakamoto",
        key_vault,
        overrides={
            "homelab-backup:kopia": {**kopia, "secrets": {**kopia["secrets"], **refs}},
            "homelab-backup:repoPassword": "plain-Repo-Pw9",  # `pulumi config set` without --secret
        },
        secrets={"uiUser": "secret-User-Uu1"},
    )
    assert "homelab-backup:kopia.secrets.repositoryPassword: config:repoPassword:" in message
    assert "stored in plain text" in message
    assert "`pulumi config set --secret repoPassword`" in message
    assert "plain-Repo-Pw9" not in message and "secret-User-Uu1" not in message
    assert "uiUser" not in message  # the secret one is fine


def test_a_project_key_that_is_not_json_is_reported_without_its_value(key_vault):
    """Pulumi's own `get_object` type error printed the value, which may be a secret pasted in the wrong place."""
    message = refused("vps", key_vault, overrides={"homelab-backup:host": "hunter2-Secret-Hh7"})
    assert "homelab-backup:host: Input should be a valid dictionary" in message
    assert "hunter2" not in message


def test_an_unknown_top_level_key_is_an_error(key_vault):
    message = refused("vps", key_vault, overrides={"homelab-backup:kopai": {"sources": []}})
    assert "homelab-backup:kopai: unknown key (check its spelling)" in message


def test_a_copied_stack_file_cannot_deploy_a_second_host_of_the_same_name(key_vault):
    """Pulumi.sakamoto.yaml copied to Pulumi.nas.yaml: a second shelken@sakamoto, maintenance owner included."""
    message = refused("sakamoto", key_vault, as_stack="nas")
    assert "homelab-backup:host.name: 'sakamoto' is not this stack's name 'nas'" in message


@pytest.mark.parametrize("stack", ["e2e-vps", "e2e-sakamoto"])
def test_the_e2e_stacks_say_which_host_they_deploy(stack):
    secrets = {
        k: f"v-{k}"
        for k in ("repoPassword", "serverUsername", "serverPassword", "serverControlPassword", "s3AccessKeyId")
    }
    secrets |= {"s3SecretAccessKey": "v-s3", "s3Endpoint": "http://hle2e-openlist:5246", "heartbeatUrl": "http://h/p"}
    secrets["alertWebhookUrl"] = "http://h/alerts"
    secrets["openlistAdminPassword"] = "v-openlist"
    run = run_program(stack, secrets=secrets)
    assert run.outputs["kopia_identity"] == f"shelken@{stack.removeprefix('e2e-')}"
    with pytest.raises(pulumi.RunError, match="names stack '" + stack):
        run_program(stack, secrets=secrets, as_stack=f"{stack}-copy")


@pytest.mark.parametrize("stack", committed_stacks())
def test_committed_placeholders_stop_the_deploy_naming_what_to_set(stack, key_vault):
    message = refused(stack, key_vault, placeholders=True)
    assert message.startswith("invalid stack config (")
    assert "homelab-backup:host.ssh.hostKey: is a placeholder ('SET-ME:ssh-ed25519" in message
    assert "ssh-keyscan -t ed25519" in message
    assert "homelab-backup:host.deployAddress: is a placeholder" in message


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda h, k: h.update(configDir="/opt/compose/vps/kopia\n"), "host.configDir"),
        (lambda h, k: h["ssh"].update(port=True), "host.ssh.port"),
        (lambda h, k: h.update(deployAddress="0.0.0.0"), "host.deployAddress"),  # noqa: S104 (refused)
        (lambda h, k: h.update(kopiaDataDir="/opt/compose/vps/kopia/state"), "host.kopiaDataDir"),
        (lambda h, k: h.update(dataDir="/opt/data"), "kopia.sources[0].hostPath"),  # OpenList's database
        (lambda h, k: k["sources"].append({"hostPath": "/opt/data/sub", "path": "/backup/sub"}), "kopia.sources[1]"),
        (lambda h, k: k["sources"][0].update(path="/etc"), "kopia.sources[0].path"),
        (lambda h, k: k.update(server={"tlsValidityDays": 365000}), "kopia.server.tlsValidityDays"),
    ],
)
def test_bad_config_values_stop_the_deploy_before_any_resource(key_vault, edit, key):
    host = copy.deepcopy(stack_config("vps")["homelab-backup:host"])
    kopia = copy.deepcopy(stack_config("vps")["homelab-backup:kopia"])
    edit(host, kopia)
    message = refused("vps", key_vault, overrides={"homelab-backup:host": host, "homelab-backup:kopia": kopia})
    assert f"homelab-backup:{key}" in message


def test_retention_without_bounds_stops_the_deploy(key_vault):
    policy = stack_config("vps")["homelab-backup:policy"]
    retention = {"keepDaily": 10**9}
    message = refused("vps", key_vault, overrides={"homelab-backup:policy": {**policy, "retention": retention}})
    assert "homelab-backup:policy.retention.keepDaily: Input should be less than or equal to 10000" in message


def test_config_other_than_the_defaults_reaches_the_rendered_files_and_the_container(key_vault):
    """Values a rendering bug could drop on the way (the render tests build their parameters by hand)."""
    project = {k: stack_config("sakamoto")[f"homelab-backup:{k}"] for k in ("policy", "repository")}
    host, kopia = (stack_config("sakamoto")[f"homelab-backup:{k}"] for k in ("host", "kopia"))
    run = run_committed_stack(
        "sakamoto",  # the maintenance owner: it applies the maintenance schedule
        key_vault,
        **{
            "homelab-backup:policy": {**project["policy"], "parallelFileReads": 3},
            "homelab-backup:repository": {
                **project["repository"],
                "maintenance": {"quickInterval": "2h", "fullInterval": "48h"},
            },
            "homelab-backup:kopia": {**kopia, "cache": {"contentMB": 1234, "metadataMB": 4321}},
            "homelab-backup:host": {**host, "deployAddress": "192.168.7.9"},
        },
    )
    assert {
        p["upload"]["maxParallelFileReads"] for p in json.loads(file_content(run, render.POLICY_JSON)).values()
    } == {3}
    container = run.one(CONTAINER, "kopia-container")
    script = container.inputs["entrypoints"][2]
    assert "--content-cache-size-mb=1234 --metadata-cache-size-mb=4321" in script
    assert "kopia maintenance set --owner=me --quick-interval=2h --full-interval=48h" in script
    # The health check's `curl --cacert` reaches the server on 127.0.0.1; clients use the deploy address.
    cert = run.one("tls:index/selfSignedCert:SelfSignedCert", "kopia-tls-cert")
    assert sorted(cert.inputs["ipAddresses"]) == ["127.0.0.1", "192.168.7.9"]
    # The restart label is keyed by secrets.env, over every config file.
    files = {
        unwrap_all(f.inputs["path"]).rsplit("/", 1)[1]: unwrap_all(f.inputs["content"])
        for f in run.by_type(REMOTE_FILE)
    }
    assert labels_of(container)["homelab-backup.config-sha256"] == render.content_digest(
        files, key=files[render.SECRETS_ENV]
    )


def test_each_kopia_is_created_after_its_gateway_holds_the_keys_in_force(vps, sakamoto):
    """Before, the gateway may serve S3 without authentication, and the restart that puts the keys in force
    would cut Kopia's uploads short (seen on real parts: a 0-byte index blob left on the drive, which every
    host then failed to open the repository on)."""
    for run, settings in ((vps, "openlist-settings"), (sakamoto, "openlist-gateway-settings")):
        container = run.one(CONTAINER, "kopia-container")
        assert any(d.endswith(f"::{settings}") for d in container.options["depends_on"]), run
    # The endpoint, given through the gateway, is still a secret wherever it lands.
    files = sakamoto.by_type(REMOTE_FILE)
    assert any("openlist.cluster.lan:5246" in json.dumps(unwrap_all(f.inputs)) for f in files)
    assert not [f.name for f in files if "openlist.cluster.lan" in " ".join(plain_strings(f.inputs))]
