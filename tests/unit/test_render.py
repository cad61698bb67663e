"""The pure renderers: byte-exact files, values that survive `sh`, fingerprints that match openssl."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import render
from components.config import PROJECT, NotificationProfile, StackConfig, load_stack_config
from testbed.mocks import stack_config

GOLDEN = Path(__file__).parent / "golden"


def load(stack: str) -> StackConfig:
    values = stack_config(stack)
    return load_stack_config({k.removeprefix(f"{PROJECT}:"): v for k, v in values.items() if k.startswith(PROJECT)})


VPS = load("vps")
SAKAMOTO = load("sakamoto")


# ---------------------------------------------------------------- policy.json


def test_policy_json_matches_the_golden_file_byte_for_byte():
    assert (
        render.render_policy_json(SAKAMOTO.policy, SAKAMOTO.schedule).encode() == (GOLDEN / "policy.json").read_bytes()
    )


def test_policy_json_is_identical_on_every_host():
    assert render.render_policy_json(VPS.policy, VPS.schedule) == render.render_policy_json(
        SAKAMOTO.policy, SAKAMOTO.schedule
    )


def test_the_e2e_stacks_render_the_real_policy_with_only_a_shorter_schedule():
    """They override `schedule` alone, so everything else in their policy.json is Pulumi.yaml's."""
    real = json.loads(render.render_policy_json(VPS.policy, VPS.schedule))
    e2e = load("e2e-vps")
    assert json.loads(render.render_policy_json(e2e.policy, e2e.schedule)) == {
        source: {**entry, "scheduling": {"intervalSeconds": 60}} for source, entry in real.items()
    }
    assert real["shelken@vps:/backup/data"]["scheduling"] == {"intervalSeconds": 3600}


def test_policy_json_has_only_fully_qualified_source_keys():
    document = json.loads(render.render_policy_json(VPS.policy, VPS.schedule))
    assert sorted(document) == [
        "shelken@sakamoto:/backup/compose",
        "shelken@sakamoto:/backup/minio",
        "shelken@vps:/backup/data",
    ]
    for key in document:
        user, at, rest = key.partition("@")
        host, colon, path = rest.partition(":")
        assert user and at and host and colon and path.startswith("/"), key
    assert "(global)" not in document
    assert not [k for k in document if k.startswith("@") or k.endswith(("@vps", "@sakamoto"))]


def test_policy_json_leaves_unset_retention_to_the_global_policy():
    for entry in json.loads(render.render_policy_json(VPS.policy, VPS.schedule)).values():
        assert entry["retention"] == {"keepDaily": 7, "keepHourly": 24}  # no keepLatest: null etc.


# ---------------------------------------------------------------- S3 storage


def test_http_endpoint_disables_tls():
    storage = render.s3_storage(VPS.repository, "http://openlist:5246", "key-id", "key-secret")
    assert storage == {
        "type": "s3",
        "config": {
            "bucket": "kopia",
            "prefix": "main/",
            "endpoint": "openlist:5246",
            "accessKeyID": "key-id",
            "secretAccessKey": "key-secret",
            "doNotUseTLS": True,
        },
    }


@pytest.mark.parametrize("url", ["https://s3.example.net", "https://s3.example.net:9000/", " https://s3.example.net "])
def test_https_endpoint_keeps_tls(url):
    storage = render.s3_storage(VPS.repository, url, "key-id", "key-secret")
    assert "doNotUseTLS" not in storage["config"]
    assert storage["config"]["endpoint"].startswith("s3.example.net")
    assert render.parse_s3_endpoint(url).use_tls


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("openlist:5246", "must look like 'http://host:port'"),  # no scheme
        ("s3.example.net", "must look like 'http://host:port'"),
        ("ftp://s3.example.net", "must look like 'http://host:port'"),
        ("http://:5246", "must look like 'http://host:port'"),
        ("http://openlist:5246/kopia", "scheme, host and port only"),  # path
        ("http://openlist:5246?region=x", "scheme, host and port only"),  # query
        ("http://user:s3cr3t@openlist:5246", "scheme, host and port only"),  # userinfo
        ("http://user@openlist:5246", "scheme, host and port only"),
        ("http://:s3cr3t@openlist:5246", "scheme, host and port only"),  # userinfo with an empty user name
    ],
)
def test_endpoint_without_scheme_or_with_path_or_userinfo_is_rejected(url, fragment):
    with pytest.raises(ValueError, match="S3 endpoint") as info:
        render.parse_s3_endpoint(url)
    assert fragment in str(info.value)
    assert "s3cr3t" not in str(info.value)  # the endpoint comes from Key Vault: never echo it


def test_storage_token_decodes_to_version_and_storage_without_password():
    storage = render.s3_storage(VPS.repository, "http://openlist:5246", "key-id", "key-secret")
    token = render.render_storage_token(storage)
    assert token.endswith("\n") and token.count("\n") == 1
    text = token.strip()
    assert "=" not in text and "+" not in text and "/" not in text  # base64url without padding
    decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    assert decoded == {"version": "1", "storage": storage}
    assert "password" not in json.dumps(decoded).lower()


@pytest.mark.parametrize("secret", ["a", "ab", "abc", "abcd", "p+/?~~~"])  # every padding length, url-unsafe bytes
def test_storage_token_round_trips_for_every_padding_length(secret):
    storage = render.s3_storage(VPS.repository, "https://s3.example.net", "id", secret)
    text = render.render_storage_token(storage).strip()
    assert json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))["storage"] == storage


def test_repository_config_holds_only_storage():
    storage = render.s3_storage(VPS.repository, "http://openlist:5246", "key-id", "key-secret")
    text = render.render_repository_config(storage)
    assert text.endswith("}\n")
    assert json.loads(text) == {"storage": storage}


# ---------------------------------------------------------------- secrets.env

AWKWARD_VALUES = {
    "PLAIN": "plain-Value_1",
    "SINGLE_QUOTE": "it's",
    "ONLY_QUOTES": "''",
    "DOUBLE_QUOTE": 'say "hi"',
    "DOLLAR": "$HOME ${PATH} $1 $$",
    "BACKTICK": "`id` $(id)",
    "SPACES": "  a  b  ",
    "NEWLINES": "line1\nline2\n\n",
    "BACKSLASH": "a\\b\\\\n\\",
    "GLOB": "* ? [a-z]",
    "SEMICOLON": "a; rm -rf /tmp/x && echo pwned | cat",
    "PERCENT": "%s %d %%",
    "DASH": "-n",
    "TAB_CR": "a\tb\rc",
    "UNICODE": "密码 ✓",
    "EMPTY": "",
    "HASH": "# not a comment",
    "EQUALS": "a=b=c",
}


def test_secrets_env_gives_back_every_value_exactly_under_sh(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(render.render_secrets_env(AWKWARD_VALUES))
    for name, value in AWKWARD_VALUES.items():
        result = subprocess.run(
            ["sh", "-c", f'. "$1"; printf %s "${name}"', "sh", str(path)],
            capture_output=True,
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.stdout == value.encode(), name
        assert result.stderr == b"", name


def test_secrets_env_exports_the_variables(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(render.render_secrets_env({"KOPIA_PASSWORD": "it's $x"}))
    result = subprocess.run(
        ["sh", "-c", '. "$1"; exec sh -c \'printf %s "$KOPIA_PASSWORD"\'', "sh", str(path)],
        capture_output=True,
        check=True,
    )
    assert result.stdout == b"it's $x"


def test_secrets_env_is_sorted_with_a_warning_header():
    text = render.render_secrets_env({"B": "2", "A": "1"})
    assert text == (
        "# Written by Pulumi (homelab-backup). Secret: mode 0600, never commit or print.\nexport A='1'\nexport B='2'\n"
    )


@pytest.mark.parametrize("name", ["", "A-B", "A B", "A=B", "$(id)", "A;B", "1ABC", "9", "PASSWÖRD"])
def test_secrets_env_rejects_invalid_variable_names(name):
    with pytest.raises(ValueError, match="invalid variable name"):
        render.render_secrets_env({name: "value"})


def test_secrets_env_rejects_nul():
    with pytest.raises(ValueError, match="NUL") as info:
        render.render_secrets_env({"KOPIA_PASSWORD": "hunter2\x00x"})
    assert "hunter2" not in str(info.value)


def test_kopia_secret_variables_use_kopias_env_names():
    assert render.kopia_secret_variables("repo", "user", "ui", "control") == {
        "KOPIA_PASSWORD": "repo",
        "KOPIA_SERVER_USERNAME": "user",
        "KOPIA_SERVER_PASSWORD": "ui",
        "KOPIA_SERVER_CONTROL_USER": render.SERVER_CONTROL_USER,
        "KOPIA_SERVER_CONTROL_PASSWORD": "control",
    }


# ---------------------------------------------------------------- TLS fingerprint


@pytest.fixture(scope="module")
def certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kopia")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_fingerprint_is_sha256_of_the_der_bytes(certificate):
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    expected = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert render.pem_sha256_fingerprint(pem) == expected
    assert render.pem_sha256_fingerprint(pem.replace("\n", "\r\n")) == expected
    assert render.pem_sha256_fingerprint(f"subject=CN = kopia\n\n  {pem}\n") == expected


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
def test_fingerprint_matches_openssl(certificate, tmp_path):
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "tls.crt").write_text(pem)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    openssl = out.strip().split("=", 1)[1].replace(":", "").lower()
    assert render.pem_sha256_fingerprint(pem) == openssl


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a certificate",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",  # no END line
        "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
    ],
)
def test_fingerprint_rejects_non_pem(text):
    with pytest.raises(ValueError):
        render.pem_sha256_fingerprint(text)


# ---------------------------------------------------------------- change detection

FILES = {"policy.json": "{}\n", "secrets.env": "export A='1'\n", "repository.config": '{"storage": {}}\n'}


def test_content_digest_changes_when_any_file_changes():
    base = render.content_digest(FILES, key="k")
    for name in FILES:
        assert render.content_digest({**FILES, name: FILES[name] + " "}, key="k") != base, name
    assert render.content_digest({**FILES, "tls.crt": ""}, key="k") != base  # a file added
    assert render.content_digest({k: v for k, v in FILES.items() if k != "policy.json"}, key="k") != base  # removed
    renamed = {("policy2.json" if k == "policy.json" else k): v for k, v in FILES.items()}
    assert render.content_digest(renamed, key="k") != base


def test_content_digest_ignores_mapping_order():
    reordered = dict(reversed(list(FILES.items())))
    assert list(reordered) != list(FILES)
    assert render.content_digest(reordered, key="k") == render.content_digest(FILES, key="k")
    assert len(render.content_digest(FILES, key="k")) == 64


def test_content_digest_does_not_confuse_name_and_content_boundaries():
    assert render.content_digest({"a": "bc"}, key="k") != render.content_digest({"ab": "c"}, key="k")


def test_content_digest_is_keyed_so_a_plain_label_reveals_nothing_of_the_files():
    # Without the key, nobody can test a guessed password against the label on the host.
    assert render.content_digest(FILES, key="k") != render.content_digest(FILES, key="other")
    unkeyed = hashlib.sha256()
    for name in sorted(FILES):
        unkeyed.update(name.encode() + b"\x00" + FILES[name].encode() + b"\x00")
    assert render.content_digest(FILES, key="") != unkeyed.hexdigest()


# ---------------------------------------------------------------- start script

PARAMS = render.StartScriptParams(
    hostname="vps",
    username="shelken",
    maintenance_owner="shelken@sakamoto",
    port=51515,
    tls=True,
    refresh_interval="5m",
    sources=("shelken@vps:/backup/data",),
)


def test_start_script_renders_for_valid_params():
    script = render.render_start_script(PARAMS)
    assert script.startswith("#!/bin/sh\n")
    assert re.search(r"@[A-Z_]+@", script) is None  # every marker replaced
    assert "--override-hostname=vps --override-username=shelken" in script


@pytest.mark.parametrize(
    "change",
    [
        {"hostname": "vps;reboot"},
        {"hostname": ""},
        {"username": "shel ken"},
        {"maintenance_owner": "shelken@sakamoto$(id)"},
        {"refresh_interval": "5m --insecure"},
        {"refresh_interval": "`id`"},
        {"sources": ("shelken@vps:/backup/my data",)},
        {"sources": ("shelken@vps:/backup/data'",)},
        {"deploy_dir": "/tmp/a b"},
        {"state_dir": "/tmp/$HOME"},
        {"cache_dir": "/tmp/a\nb"},
    ],
)
def test_start_script_rejects_values_that_are_not_shell_safe(change):
    params = render.StartScriptParams(**{**PARAMS.__dict__, **change})
    with pytest.raises(ValueError, match=r"cannot be placed unquoted in kopia-(start|ui-api)\.sh"):
        render.render_start_script(params)


@pytest.mark.parametrize(
    "change",
    [
        {"hostname": "vps\nid"},  # the identity is in a comment line: a newline would end it
        {"username": "shel$(id)ken"},
        {"sources": ('shelken@vps:/backup/data" $(id) "',)},  # awk's -v expected="..." is double-quoted
        {"deploy_dir": "/tmp/a b"},
        {"state_dir": "/tmp/`id`"},
    ],
)
def test_health_check_refuses_values_that_are_not_shell_safe_like_the_start_script(change):
    params = render.StartScriptParams(**{**PARAMS.__dict__, **change})
    with pytest.raises(ValueError, match=r"cannot be placed unquoted in kopia-(health|drill-verdict|ui-api)\.sh"):
        render.render_healthcheck(params)


@pytest.mark.parametrize("state_dir", ["/srv/kopia/state; rm -rf ~", "/srv/$(id)/state", "/srv/my kopia/state"])
def test_drill_verdict_refuses_a_state_dir_that_is_not_shell_safe(state_dir):
    """`scripts/status` runs this snippet over SSH with the stack's kopiaDataDir in it."""
    with pytest.raises(ValueError, match=r"cannot be placed unquoted in kopia-drill-verdict\.sh"):
        render.render_drill_verdict(state_dir, 3600)


# ---------------------------------------------------------------- homepage labels


def test_homepage_labels_are_the_four_dashboard_labels():
    assert render.homepage_labels("VPS", "kopia", "kopia.svg", "备份服务") == {
        "homepage.group": "VPS",
        "homepage.name": "kopia",
        "homepage.icon": "kopia.svg",
        "homepage.description": "备份服务",
    }


def test_homepage_labels_are_absent_without_a_group():
    assert render.homepage_labels(None, "kopia", "kopia.svg", "备份服务") == {}


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, "0s"), (15, "15s"), (60, "1m0s"), (90, "1m30s"), (120, "2m0s"), (3600, "1h0m0s")]
)
def test_go_duration_is_how_the_docker_provider_reads_durations_back(seconds, expected):
    assert render.go_duration(seconds) == expected


def test_zero_retention_is_rendered_not_dropped():
    """0 means "keep none of these" to Kopia; only unset values inherit from (global)."""
    from components.config import Policy
    from testbed.mocks import project_config

    policy = Policy.model_validate({**project_config("policy"), "retention": {"keepHourly": 0, "keepDaily": 7}})
    retention = json.loads(render.render_policy_json(policy, VPS.schedule))["shelken@vps:/backup/data"]["retention"]
    assert retention["keepHourly"] == 0 and retention["keepDaily"] == 7
    assert "keepWeekly" not in retention


# ---------------------------------------------------------------- notification profiles


def test_a_webhook_profile_is_kopias_own_json_as_its_server_answers_it():
    profile = NotificationProfile.model_validate(
        {"name": "ntfy", "minSeverity": "error", "webhook": {"url": "config:hook", "headers": "config:h"}}
    )
    text = render.render_notification_profile(profile, {"url": "https://ntfy.sh/t?a=<1>&b=2", "headers": "X: y"})
    # Go's encoder: struct fields in order, the sender options as a map with sorted keys, two-space indent,
    # <, > and & escaped, a final newline (internal/server/server.go, notification/sender/sender_config.go).
    assert text == (
        "{\n"
        '  "profile": "homelab-ntfy",\n'
        '  "method": {\n'
        '    "type": "webhook",\n'
        '    "config": {\n'
        '      "endpoint": "https://ntfy.sh/t?a=\\u003c1\\u003e\\u0026b=2",\n'
        '      "format": "txt",\n'
        '      "headers": "X: y",\n'
        '      "method": "POST"\n'
        "    }\n"
        "  },\n"
        '  "minSeverity": 20\n'
        "}\n"
    )
    assert json.loads(text)["method"]["config"]["endpoint"] == "https://ntfy.sh/t?a=<1>&b=2"


def test_an_email_profile_gives_every_option_so_kopia_applies_no_default():
    profile = NotificationProfile.model_validate(
        {
            "name": "mail",
            "email": {"smtpServer": "smtp.example.net", "from": "k@example.net", "to": ["a@example.net", "b@x.io"]},
        }
    )
    document = json.loads(render.render_notification_profile(profile, {}))
    assert document["minSeverity"] == 10  # warning: failed snapshots, not every successful one
    assert document["method"] == {
        "type": "email",
        "config": {
            "cc": "",
            "format": "txt",
            "from": "k@example.net",
            "smtpIdentity": "",
            "smtpPassword": "",
            "smtpPort": 587,
            "smtpServer": "smtp.example.net",
            "smtpUsername": "",
            "to": "a@example.net,b@x.io",
        },
    }
    assert list(document["method"]["config"]) == sorted(document["method"]["config"])


def test_the_readme_gives_the_same_create_and_take_back_commands_as_the_messages():
    """The first deploy's commands are written once in render.py; the README must not drift from them."""
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert render.create_repository_command("sakamoto") in readme
    assert f"pulumi config rm --stack sakamoto --path {render.CREATE_REPOSITORY_KEY}" in readme


def test_the_create_request_reaches_the_start_script_and_the_health_check_naming_the_stack():
    values = stack_config("e2e-sakamoto")
    values["homelab-backup:kopia"] = {**values["homelab-backup:kopia"], "createRepository": True}
    asked = load_stack_config({k.removeprefix(f"{PROJECT}:"): v for k, v in values.items() if k.startswith(PROJECT)})
    params = render.start_script_params(asked)
    assert (params.create_repository, params.stack_name) == (True, "e2e-sakamoto")
    assert "CREATE_REQUESTED=yes" in render.render_start_script(params)
    assert render.create_repository_reminder("e2e-sakamoto") in render.render_healthcheck(params)
    plain = render.start_script_params(SAKAMOTO)
    assert (plain.create_repository, plain.stack_name) == (False, "sakamoto")
    assert "CREATE_REQUESTED=no" in render.render_start_script(plain)
    assert "create_reminder=''" in render.render_healthcheck(plain)
