"""`load_stack_config`: the committed stacks validate, and every rule reports its exact key and a useful message.

Each rule test mutates a deep copy of a committed stack's config (as the Pulumi CLI
would merge it) and expects exactly the problems that mutation causes, so a rule
that also reports a stray or misplaced key fails here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from components.config import (
    OPENLIST_EMPTY_FOLDER_MARKER,
    PROJECT,
    ConfigError,
    SecretRef,
    StackConfig,
    load_namespace,
    load_stack_config,
    parse_secret_ref,
    secret_references,
)
from components.config.fields import canonical_path, is_within
from testbed.mocks import stack_config

NS = f"{PROJECT}:"


def committed(stack: str) -> dict[str, Any]:
    """The stack's config as `__main__.py` hands it over: project namespace stripped, `pulumi:` keys dropped."""
    return {
        key.removeprefix(NS): value
        for key, value in stack_config(stack).items()
        if key.startswith(NS)  # drops pulumi:disable-default-providers and any other namespace
    }


VPS = committed("vps")
SAKAMOTO = committed("sakamoto")


def mutated(base: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    values = copy.deepcopy(base)
    change(values)
    return values


def problems_of(values: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_stack_config(values)
    return info.value.problems


def assert_only_problem(values: dict[str, Any], key: str, *fragments: str) -> str:
    """Exactly one problem, at `key` (without namespace), whose message holds every fragment."""
    problems = problems_of(values)
    assert [k for k, _ in problems] == [NS + key], problems
    message = problems[0][1]
    for fragment in fragments:
        assert fragment in message, problems
    return message


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """`setter("host.ssh.port", 0)`; list items as `kopia.sources.0.path`."""

    def change(values: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = values
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def deleter(path: str) -> Callable[[dict[str, Any]], None]:
    def change(values: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = values
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[int(last) if isinstance(node, list) else last]

    return change


# ---------------------------------------------------------------- the committed stacks


def test_committed_vps_stack_is_valid():
    config = load_stack_config(VPS)
    assert isinstance(config, StackConfig)
    assert config.identity == "shelken@vps"
    assert config.openlist is not None
    assert config.kopia.s3.endpoint is None
    assert [str(s) for s in config.host_sources] == ["shelken@vps:/backup/data"]
    assert not config.is_maintenance_owner
    assert config.host.kopia_dir == "/opt/kopia"


def test_committed_sakamoto_stack_is_valid():
    config = load_stack_config(SAKAMOTO)
    assert config.identity == "shelken@sakamoto"
    assert config.openlist is not None and not config.deploys_openlist  # the cluster's, configured only
    assert config.kopia.s3.endpoint is not None
    assert [str(s) for s in config.host_sources] == [
        "shelken@sakamoto:/backup/minio",
        "shelken@sakamoto:/backup/compose",
    ]
    assert config.is_maintenance_owner


def test_committed_stacks_share_the_project_keys():
    for key in ("images", "repository", "policy", "keyVault"):
        assert VPS[key] == SAKAMOTO[key], key
    assert not [k for k in VPS if k.startswith("pulumi")]


def test_committed_references_are_parsed_into_vault_secret_field():
    ref = load_stack_config(VPS).kopia.secrets.repository_password
    assert ref == SecretRef(
        "azure://shelken-homelab/compose-vps/KOPIA_REPO_PASSWORD",
        vault="shelken-homelab",
        secret="compose-vps",
        field="KOPIA_REPO_PASSWORD",
    )


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "path",
    ["bogus", "host.ssh.hostkey", "kopia.sources.0.readOnly", "policy.retention.keepDayly", "openlist.port"],
)
def test_unknown_key_anywhere_is_reported_at_its_own_key(path):
    key = path.replace(".0.", "[0].")
    assert_only_problem(mutated(VPS, setter(path, 1)), key, "unknown key (check its spelling)")


@pytest.mark.parametrize(
    "path",
    ["host", "repository.bucket", "kopia.secrets.serverPassword", "kopia.sources.0.hostPath", "host.ssh.hostKey"],
)
def test_missing_required_key(path):
    key = path.replace(".0.", "[0].")
    assert_only_problem(mutated(VPS, deleter(path)), key, "is required")


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("image", ["kopia/kopia", "localhost:5000/kopia/kopia", "kopia/kopia:", ""])
def test_image_without_tag(image):
    assert_only_problem(mutated(VPS, setter("images.kopia", image)), "images.kopia", "with an explicit tag")


def test_image_with_latest_tag():
    values = mutated(VPS, setter("images.openlist", "ghcr.io/openlistteam/openlist-git:latest"))
    assert_only_problem(values, "images.openlist", "must pin a release, not ':latest'")


def test_image_from_registry_with_port_and_tag_is_accepted():
    load_stack_config(mutated(VPS, setter("images.kopia", "registry.lan:5000/kopia/kopia:0.22.3")))


# ---------------------------------------------------------------- repository


@pytest.mark.parametrize("bucket", ["Kopia", "ko", "kopia_bucket", "-kopia", "kopia-", ""])
def test_bucket_name_invalid(bucket):
    values = mutated(VPS, setter("repository.bucket", bucket))
    assert_only_problem(values, "repository.bucket", "must be 3-63 lowercase letters, digits, '.', '-'")


def test_empty_prefix_explains_openlist_empty_folder_marker():
    message = assert_only_problem(
        mutated(VPS, setter("repository.prefix", "")),
        "repository.prefix",
        "must not be empty",
        OPENLIST_EMPTY_FOLDER_MARKER,
        "use e.g. 'main/'",
    )
    assert "kopia repository create" in message


def test_prefix_without_trailing_slash():
    values = mutated(VPS, setter("repository.prefix", "main"))
    assert_only_problem(values, "repository.prefix", "must end with '/' (a folder), e.g. 'main/'")


@pytest.mark.parametrize("prefix", ["/main/", "ma in/", "main//", "a//b/", "main$/", "../", "main/./", "ma*in/"])
def test_prefix_with_leading_slash_empty_or_dot_folder_or_bad_chars(prefix):
    values = mutated(VPS, setter("repository.prefix", prefix))
    assert_only_problem(values, "repository.prefix", "must be folder names of letters, digits", "no leading '/'")


def test_prefix_containing_openlist_empty_folder_marker():
    values = mutated(VPS, setter("repository.prefix", f"main/{OPENLIST_EMPTY_FOLDER_MARKER}/"))
    assert_only_problem(
        values, "repository.prefix", f"must not contain OpenList's empty-folder marker '{OPENLIST_EMPTY_FOLDER_MARKER}'"
    )


def test_prefix_and_bucket_problems_are_reported_separately():
    values = mutated(VPS, setter("repository.prefix", "main"))
    values["repository"]["bucket"] = "K"
    assert [k for k, _ in problems_of(values)] == [NS + "repository.bucket", NS + "repository.prefix"]


def test_nested_prefix_is_accepted():
    load_stack_config(mutated(VPS, setter("repository.prefix", "homelab/kopia.main_1/")))


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize(
    "source", ["vps:/backup/data", "shelken@vps:backup/data", "shelken@vps", "shelken@vps:", "/backup/data", 42]
)
def test_policy_source_not_user_at_host_colon_path(source):
    values = mutated(VPS, setter("policy.sources.2", source))
    problems = problems_of(values)
    assert [k for k, _ in problems] == [NS + "policy.sources[2]"], problems
    if isinstance(source, str):
        assert "must be '<user>@<host>:/<path>', e.g. 'shelken@vps:/backup/data'" in problems[0][1]


def test_policy_source_parts_are_validated_at_their_own_key():
    values = mutated(VPS, setter("policy.sources.2", "shelken@vps:/backup/da ta"))
    assert_only_problem(values, "policy.sources[2].path", "may hold only letters, digits")


def test_compression_not_a_kopia_compressor():
    values = mutated(VPS, setter("policy.compression", "zstd-fast"))
    assert_only_problem(values, "policy.compression", "'zstd-fastest'", "'s2-default'")


def test_interval_below_60_seconds():
    values = mutated(VPS, setter("schedule.intervalSeconds", 59))
    assert_only_problem(values, "schedule.intervalSeconds", "greater than or equal to 60")
    load_stack_config(mutated(VPS, setter("schedule.intervalSeconds", 60)))


@pytest.mark.parametrize("field", ["keepDaily", "keepHourly", "keepLatest", "keepWeekly", "keepMonthly", "keepAnnual"])
def test_retention_negative(field):
    values = mutated(VPS, setter(f"policy.retention.{field}", -1))
    assert_only_problem(values, f"policy.retention.{field}", "greater than or equal to 0")
    load_stack_config(mutated(VPS, setter(f"policy.retention.{field}", 0)))


def test_policy_without_sources():
    assert_only_problem(mutated(VPS, setter("policy.sources", [])), "policy.sources", "at least 1 item")


# ---------------------------------------------------------------- scheduled <-> mounted


def test_mounted_path_that_is_not_the_scheduled_path_is_reported_both_ways():
    """A data dir mounted at /data while the policy schedules /backup/data: the source would not exist."""
    values = mutated(VPS, setter("kopia.sources.0.path", "/data"))
    problems = dict(problems_of(values))
    assert len(problems) == 2, problems
    scheduled = problems[NS + "policy.sources[2]"]
    assert "'shelken@vps:/backup/data' is scheduled but /backup/data is not mounted on host 'vps'" in scheduled
    assert "(mounted: /data)" in scheduled
    assert "add it to kopia.sources" in scheduled
    mounted = problems[NS + "kopia.sources[0].path"]
    assert "/data is mounted but never backed up: add 'shelken@vps:/data' to policy.sources" in mounted


def test_mounted_source_not_in_policy():
    values = mutated(VPS, lambda v: v["kopia"]["sources"].append({"hostPath": "/opt/media", "path": "/backup/media"}))
    assert_only_problem(
        values,
        "kopia.sources[1].path",
        "/backup/media is mounted but never backed up: add 'shelken@vps:/backup/media' to policy.sources",
    )


def test_other_hosts_sources_need_no_mount_here():
    # vps mounts only /backup/data although the policy also schedules sakamoto's two sources.
    assert len(load_stack_config(VPS).policy.sources) == 3


def test_duplicated_policy_source():
    values = mutated(VPS, lambda v: v["policy"]["sources"].append("shelken@vps:/backup/data"))
    assert_only_problem(values, "policy.sources[3]", "'shelken@vps:/backup/data' is listed twice")


def test_policy_source_user_differs_from_repository_username():
    values = mutated(VPS, setter("policy.sources.0", "root@sakamoto:/backup/minio"))
    assert_only_problem(values, "policy.sources[0]", "user 'root' differs from repository.username 'shelken'")


def test_two_sources_mounted_at_the_same_path():
    values = mutated(VPS, lambda v: v["kopia"]["sources"].append({"hostPath": "/opt/other", "path": "/backup/data"}))
    assert_only_problem(values, "kopia.sources[1].path", "/backup/data is mounted twice")


@pytest.mark.parametrize(
    "path", ["/app", "/app/data", "/app/cache", "/", "/bin", "/etc", "/etc/ssl", "/proc", "/sys", "/dev", "/usr/lib"]
)
def test_source_mounted_over_the_containers_own_directories(path):
    def change(values):
        values["kopia"]["sources"][0]["path"] = path
        values["policy"]["sources"][2] = f"shelken@vps:{path}"

    assert_only_problem(
        mutated(VPS, change), "kopia.sources[0].path", f"{path} is inside the container's own directories"
    )


def test_source_path_next_to_app_is_not_inside_it():
    def change(values):
        values["kopia"]["sources"][0]["path"] = "/application"
        values["policy"]["sources"][2] = "shelken@vps:/application"

    load_stack_config(mutated(VPS, change))


@pytest.mark.parametrize(
    ("kopia_data_dir", "host_path", "kopia_dir"),
    [
        ("/opt/data/kopia", "/opt/data", "/opt/data/kopia"),  # explicit kopiaDataDir inside the source
        ("/opt/data", "/opt/data", "/opt/data"),  # the source is Kopia's dir itself
        (None, "/opt/data", "/opt/data/kopia"),  # default <dataDir>/kopia, dataDir is the source (no OpenList)
        ("/opt/kopia", "/opt/kopia/cache", "/opt/kopia"),  # the source inside Kopia's dir
    ],
)
def test_source_host_path_containing_kopia_data_dir(kopia_data_dir, host_path, kopia_dir):
    def change(values):
        if kopia_data_dir is None:
            del values["host"]["kopiaDataDir"]
            values["host"]["dataDir"] = host_path
            del values["openlist"]  # its database under dataDir would be a second problem
            values["kopia"]["s3"]["endpoint"] = "config:s3Endpoint"
        else:
            values["host"]["kopiaDataDir"] = kopia_data_dir
        values["kopia"]["sources"][0]["hostPath"] = host_path

    assert_only_problem(
        mutated(VPS, change),
        "kopia.sources[0].hostPath",
        f"{host_path} overlaps Kopia's own cache/logs ({kopia_dir})",
        "set host.kopiaDataDir outside every source",
    )


def test_source_containing_the_config_dir_would_back_up_the_secrets():
    def change(values):
        values["host"]["configDir"] = "/opt/data/compose/kopia"

    assert_only_problem(
        mutated(VPS, change),
        "kopia.sources[0].hostPath",
        "/opt/data contains host.configDir (/opt/data/compose/kopia)",
        "secrets.env",
    )


def test_whole_filesystem_as_a_source_reports_every_overlap():
    def change(values):
        values["kopia"]["sources"][0]["hostPath"] = "/"

    problems = problems_of(mutated(VPS, change))
    assert [k for k, _ in problems] == [NS + "kopia.sources[0].hostPath"] * 4
    assert "/ holds /dev: kernel interfaces" in problems[0][1]
    assert "Kopia's own cache/logs" in problems[1][1] and "host.configDir" in problems[2][1]
    assert "OpenList's database" in problems[3][1]


def test_source_host_path_next_to_kopia_data_dir_is_fine():
    load_stack_config(mutated(VPS, setter("host.kopiaDataDir", "/opt/data-kopia")))


@pytest.mark.parametrize("owner", ["shelken@nas", "root@sakamoto", "sakamoto", "shelken@", "@sakamoto"])
def test_maintenance_owner_not_username_at_policy_host(owner):
    values = mutated(VPS, setter("repository.maintenanceOwner", owner))
    assert_only_problem(
        values,
        "repository.maintenanceOwner",
        f"'{owner}' must be <username>@<host> of a host in policy.sources (shelken@sakamoto, shelken@vps)",
    )


def test_create_repository_is_off_unless_asked_for_and_allowed_on_the_owners_stack():
    assert load_stack_config(SAKAMOTO).kopia.create_repository is False
    assert load_stack_config(mutated(SAKAMOTO, setter("kopia.createRepository", True))).kopia.create_repository


def test_create_repository_on_another_hosts_stack_is_refused_naming_the_key_and_the_owner():
    values = mutated(VPS, setter("kopia.createRepository", True))
    assert_only_problem(
        values,
        "kopia.createRepository",
        "only the maintenance owner shelken@sakamoto creates the repository, and this stack deploys shelken@vps",
        "pulumi config rm --stack vps --path homelab-backup:kopia.createRepository",
    )


def test_create_repository_is_a_boolean_not_a_string():
    """`pulumi up --config` without --config-path stores "true" as a key of its own (below); with it, a bool."""
    assert_only_problem(mutated(SAKAMOTO, setter("kopia.createRepository", "true")), "kopia.createRepository")


def test_create_repository_set_without_the_path_flag_is_a_key_of_its_own_and_says_so():
    values = namespace(SAKAMOTO, **{NS + "kopia.createRepository": "true"})
    with pytest.raises(ConfigError) as info:
        load_namespace(values, stack="sakamoto", secret_keys=set())
    [(key, message)] = info.value.problems
    assert key == NS + "kopia.createRepository"
    assert (
        "set without the path flag" in message and "pulumi config rm 'homelab-backup:kopia.createRepository'" in message
    )
    assert "pulumi up --config-path --config" in message


# ---------------------------------------------------------------- S3 endpoint and ports


def test_s3_endpoint_set_on_a_stack_that_deploys_openlist():
    values = mutated(VPS, setter("kopia.s3.endpoint", "azure://shelken-homelab/compose-vps/OPENLIST_S3_ENDPOINT"))
    assert_only_problem(values, "kopia.s3.endpoint", "must be omitted on a stack that deploys OpenList")


@pytest.mark.parametrize(("base", "change"), [(SAKAMOTO, deleter("kopia.s3.endpoint")), (VPS, deleter("openlist"))])
def test_s3_endpoint_missing_on_a_stack_without_openlist(base, change):
    values = mutated(base, change)
    assert_only_problem(values, "kopia.s3.endpoint", "is required when this stack does not deploy OpenList")


@pytest.mark.parametrize(
    ("openlist", "kopia_port", "key", "fragment"),
    [
        ({"webPort": 51515}, 51515, "openlist.webPort", "51515 is also kopia.server.port"),
        ({"webPort": 5246}, 51515, "openlist.s3Port", "5246 is also openlist.webPort"),
        ({}, 5244, "openlist.webPort", "5244 is also kopia.server.port"),
    ],
)
def test_colliding_published_ports_are_reported_at_the_colliding_key(openlist, kopia_port, key, fragment):
    def change(values):
        values["openlist"].update(openlist)
        values["kopia"]["server"] = {"port": kopia_port}

    assert_only_problem(mutated(VPS, change), key, "published ports collide", fragment)


def test_kopia_port_of_openlist_is_free_on_a_stack_without_openlist():
    load_stack_config(mutated(SAKAMOTO, setter("kopia.server", {"port": 5244})))


# ---------------------------------------------------------------- ssh

KEY_BASE64 = "AAAAC3NzaC1lZDI1NTE5AAAAIBbYqq2mmgdvGLR0Ni+Ai9hhdSwWAYKwk1M5XNtNQkNr"


@pytest.mark.parametrize(
    "host_key",
    [
        KEY_BASE64,  # no type
        f"vps.example.net ssh-ed25519 {KEY_BASE64}",  # with the host column
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        f"ssh-dss {KEY_BASE64}",  # a type OpenSSH no longer accepts
    ],
)
def test_ssh_host_key_malformed(host_key):
    values = mutated(VPS, setter("host.ssh.hostKey", host_key))
    assert_only_problem(values, "host.ssh.hostKey", "must be '<type> <base64>'", "ssh-keyscan -t ed25519")


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "StrictHostKeyChecking=no"],
        ["-oStrictHostKeyChecking=no"],
        ["-o", "UserKnownHostsFile=/dev/null"],
        ["-o", "ConnectTimeout=10", "-o", "userknownhostsfile=/dev/null"],
        ["-o", "StrictHostKeyChecking no"],  # ssh accepts 'Key value' as well as 'Key=value'
        ["-o", "StrictHostKeyChecking=off"],  # 'off' is ssh's synonym of 'no'
        ["-o", "StrictHostKeyChecking = NO"],
    ],
)
def test_ssh_options_disabling_host_key_checking(options):
    message = assert_only_problem(
        mutated(VPS, setter("host.ssh.options", options)), "host.ssh.options", "must not disable host key checking"
    )
    assert "pin the key with hostKey instead" in message


@pytest.mark.parametrize(
    ("host_key", "fragment"),
    [
        (f"ssh-ed25519 {KEY_BASE64[:-1]}", "its base64 does not decode"),  # a character lost in the copy
        (f"ssh-ed25519 {KEY_BASE64[:-4]}", "its base64 does not decode"),
        (f"ssh-rsa {KEY_BASE64}", "is not a ssh-rsa key"),  # an ed25519 blob under another type
        ("ssh-ed25519 " + "A" * 44, "does not decode to one"),  # base64 of zeros: no key in it
    ],
)
def test_ssh_host_key_whose_base64_is_not_a_key(host_key, fragment):
    assert_only_problem(mutated(VPS, setter("host.ssh.hostKey", host_key)), "host.ssh.hostKey", fragment)


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "StrictHostKeyChecking=accept-new"],
        ["-o", "StrictHostKeyChecking=ask"],
        ["-oStrictHostKeyChecking accept-new"],
        ["-vo", "StrictHostKeyChecking=accept-new"],  # getopt: -v, then -o with the next word
        ["-voStrictHostKeyChecking=no"],
        ["-o", "UserKnownHostsFile=~/.ssh/known_hosts"],
        ["-o", "GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts"],
        ["-o", "KnownHostsCommand=/bin/echo host ssh-ed25519 AAAA"],
        ["-o", "VerifyHostKeyDNS=yes"],
    ],
)
def test_ssh_options_that_weaken_the_pinned_host_key(options):
    message = assert_only_problem(
        mutated(VPS, setter("host.ssh.options", options)), "host.ssh.options", "replace the pinned key"
    )
    assert "pin the key with hostKey instead" in message


def test_an_ssh_option_argument_is_not_read_as_an_option():
    options = ["-i", "-oStrictHostKeyChecking=no", "-p2222", "-o", "VerifyHostKeyDNS=no"]  # a key file so named
    assert load_stack_config(mutated(VPS, setter("host.ssh.options", options))).host.ssh.options == options


def test_ssh_options_that_keep_host_key_checking_are_accepted():
    options = ["-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=30"]
    assert load_stack_config(mutated(VPS, setter("host.ssh.options", options))).host.ssh.options == options


def test_host_key_and_options_problems_are_reported_separately():
    values = mutated(VPS, setter("host.ssh.options", ["-o", "StrictHostKeyChecking=no"]))
    values["host"]["ssh"]["hostKey"] = "not-a-key"
    assert [k for k, _ in problems_of(values)] == [NS + "host.ssh.hostKey", NS + "host.ssh.options"]


# ---------------------------------------------------------------- host


@pytest.mark.parametrize("address", ["vps.example.net", "100.64.0.2:80", "100.64.0.256", ""])
def test_deploy_address_not_an_ip(address):
    values = mutated(VPS, setter("host.deployAddress", address))
    assert_only_problem(values, "host.deployAddress", "must be an IP address")


def test_deploy_address_ipv6_is_accepted():
    load_stack_config(mutated(VPS, setter("host.deployAddress", "fd7a:115c:a1e0::2")))


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("host.name", "VPS"),
        ("host.name", "vps_1"),
        ("host.name", "-vps"),
        ("host.name", "vps.example.net"),
        ("host.name", "a" * 64),
        ("policy.sources.2", "shelken@VPS:/backup/data"),
    ],
)
def test_host_name_not_a_dns_label(path, name):
    key = "host.name" if path == "host.name" else "policy.sources[2].host"
    assert_only_problem(mutated(VPS, setter(path, name)), key, "must be a lowercase DNS label")


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("host.dataDir", "host.dataDir"),
        ("host.configDir", "host.configDir"),
        ("host.kopiaDataDir", "host.kopiaDataDir"),
        ("kopia.sources.0.hostPath", "kopia.sources[0].hostPath"),
        ("kopia.sources.0.path", "kopia.sources[0].path"),
    ],
)
def test_relative_path(path, key):
    assert_only_problem(mutated(VPS, setter(path, "opt/data")), key, "must be an absolute path (start with '/')")


@pytest.mark.parametrize(
    "path",
    [
        "/opt/my data",
        "/opt/$(reboot)",
        "/opt/a;b",
        "/opt/`id`",
        "/opt/a'b",
        '/opt/a"b',
        "/opt/a\nb",
        "/opt/*",
        "/opt/~",
    ],
)
def test_path_with_spaces_or_shell_metacharacters(path):
    values = mutated(VPS, setter("host.configDir", path))
    assert_only_problem(values, "host.configDir", "may hold only letters, digits and '/._+@-'")


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/opt/../etc", "/etc"),
        ("/opt/./compose", "/opt/compose"),
        ("/..", "/"),
        ("/opt//compose", "/opt/compose"),
        ("//opt/compose", "/opt/compose"),
        ("/opt/compose/", "/opt/compose"),
    ],
)
def test_path_not_in_canonical_form(path, canonical):
    values = mutated(VPS, setter("host.configDir", path))
    assert_only_problem(values, "host.configDir", f"must be written in canonical form, '{canonical}'")


def test_path_with_trailing_slash():
    assert_only_problem(mutated(VPS, setter("host.dataDir", "/opt/data/")), "host.dataDir", "no trailing '/'")


def test_paths_are_compared_in_canonical_form():
    assert is_within("/opt//data/./kopia", "/opt/data/")
    assert is_within("/opt/data", "//opt/data")
    assert is_within("/opt/data/x/../kopia", "/opt/data")
    assert not is_within("/opt/database", "/opt/data")
    assert canonical_path("//opt/./data//x/..//") == "/opt/data"


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        # the config dir inside a source (/opt/data), spelled another way
        ("host.configDir", "/opt/data//compose/kopia", "host.configDir"),
        # Kopia's data dir inside a source
        ("host.kopiaDataDir", "/opt/data//kopia", "host.kopiaDataDir"),
        ("host.kopiaDataDir", "/opt/data/./kopia", "host.kopiaDataDir"),
        # a source over the container's own directories
        ("kopia.sources.0.path", "//app", "kopia.sources[0].path"),
        ("kopia.sources.0.path", "/app/", "kopia.sources[0].path"),
    ],
)
def test_a_path_spelled_another_way_does_not_bypass_the_overlap_rules(path, value, key):
    assert_only_problem(mutated(VPS, setter(path, value)), key, "must be written in canonical form")


def test_a_source_mounted_twice_under_another_spelling_is_refused():
    values = mutated(VPS, lambda v: v["kopia"]["sources"].append({"hostPath": "/opt/data//", "path": "/backup/x"}))
    assert_only_problem(values, "kopia.sources[1].hostPath", "must be written in canonical form, '/opt/data'")


def test_a_path_component_longer_than_a_file_name_can_be_is_refused():
    values = mutated(VPS, setter("host.configDir", f"/opt/{'a' * 256}"))
    assert_only_problem(values, "host.configDir", "has a component longer than 255 bytes")
    load_stack_config(mutated(VPS, setter("host.configDir", f"/opt/{'a' * 255}")))


def test_a_path_longer_than_linux_allows_is_refused():
    values = mutated(VPS, setter("host.configDir", "/opt" + "/abcdefgh" * 512))
    assert_only_problem(values, "host.configDir", "4096 bytes or longer")


def problems_at(values: dict[str, Any], key: str) -> list[str]:
    return [message for k, message in problems_of(values) if k == NS + key]


@pytest.mark.parametrize("key", ["configDir", "dataDir", "kopiaDataDir"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("/run", "is in /run: kernel interfaces and runtime state (the Docker socket)"),
        ("/var/run/kopia", "is in /var/run"),
        ("/proc/1", "is in /proc"),
        ("/dev/shm/kopia", "is in /dev"),
        ("/sys", "is in /sys"),
        ("/usr/local/kopia", "is in /usr, which the system (or Docker) owns"),
        ("/boot", "is in /boot"),
        ("/lib64", "is in /lib64"),
        ("/tmp/kopia", "is in /tmp"),
        ("/var/lib/docker", "is in /var/lib/docker"),
        ("/var/lib/docker/volumes/kopia/_data", "is in /var/lib/docker"),
        ("/", "/ is a directory other services or users share"),
        ("/opt", "/opt is a directory other services or users share"),
        ("/etc", "/etc is a directory"),
        ("/home", "/home is a directory"),
        ("/var", "/var is a directory"),
        ("/var/lib", "/var/lib is a directory"),
        ("/srv", "/srv is a directory"),
    ],
)
def test_a_system_or_shared_directory_is_refused_as_a_config_or_data_dir(key, value, fragment):
    messages = problems_at(mutated(VPS, setter(f"host.{key}", value)), f"host.{key}")
    assert [m for m in messages if fragment in m and "directory of this stack's own" in m], messages


@pytest.mark.parametrize("value", ["/etc/homelab-backup", "/home/shelken/kopia", "/srv/kopia", "/var/tmp/kopia"])
def test_a_directory_of_its_own_inside_a_shared_one_is_accepted(value):
    load_stack_config(mutated(VPS, setter("host.configDir", value)))
    load_stack_config(mutated(VPS, setter("host.kopiaDataDir", value)))


@pytest.mark.parametrize(
    ("host_path", "fragment"),
    [
        ("/run", "/run is in /run: kernel interfaces and runtime state, the Docker socket among them"),
        ("/run/docker", "is in /run"),
        ("/var/run", "is in /var/run"),
        ("/proc", "is in /proc"),
        ("/sys/fs", "is in /sys"),
        ("/dev", "is in /dev"),
        ("/var", "/var holds /var/run"),
        ("/var/lib", "/var/lib holds Docker's whole state"),
        ("/var/lib/docker", "/var/lib/docker holds Docker's whole state"),
    ],
)
def test_a_virtual_or_docker_state_directory_is_refused_as_a_source(host_path, fragment):
    messages = problems_at(mutated(VPS, setter("kopia.sources.0.hostPath", host_path)), "kopia.sources[0].hostPath")
    assert [m for m in messages if fragment in m], messages


@pytest.mark.parametrize("host_path", ["/home", "/etc", "/srv", "/var/lib/docker/volumes/minio/_data"])
def test_trees_worth_a_backup_are_accepted_as_sources(host_path):
    load_stack_config(mutated(VPS, setter("kopia.sources.0.hostPath", host_path)))


def test_a_config_dir_holding_the_data_dir_is_refused():
    """OpenList's database (S3 keys, the 189 login) would be mounted into the Kopia container."""
    values = mutated(VPS, setter("host.configDir", "/opt/services"))
    assert_only_problem(values, "host.configDir", "/opt/services holds host.dataDir (/opt/services)", "of its own")
    values = mutated(VPS, setter("host.configDir", "/opt/srv"))
    values["host"]["dataDir"] = "/opt/srv/data"
    assert_only_problem(values, "host.configDir", "holds host.dataDir (/opt/srv/data)")


def test_a_config_dir_holding_a_source_is_refused():
    values = mutated(VPS, setter("kopia.sources.0.hostPath", "/opt/compose/vps/kopia/data"))
    assert_only_problem(values, "host.configDir", "holds kopia.sources[0].hostPath (/opt/compose/vps/kopia/data)")


# ---------------------------------------------------------------- secret references


@pytest.mark.parametrize(
    "path",
    ["kopia.s3.accessKeyId", "kopia.s3.secretAccessKey", "kopia.secrets.repositoryPassword"],
)
def test_secret_reference_that_is_a_literal_value(path):
    values = mutated(VPS, setter(path, "hunter2"))
    with pytest.raises(ConfigError) as info:
        load_stack_config(values)
    assert [k for k, _ in info.value.problems] == [NS + path]
    message = info.value.problems[0][1]
    assert "must be a secret reference: 'azure://<vault>/<secret>[/<field>]'" in message
    assert "or 'config:<key>'" in message
    assert "never the secret value itself" in message
    assert "hunter2" not in str(info.value)  # the literal is never echoed back


@pytest.mark.parametrize(
    "ref",
    [
        "azure://shelken_homelab/compose-vps/KOPIA_REPO_PASSWORD",  # '_' in the vault name
        "azure://ab/compose-vps",  # vault name shorter than 3
        "azure://shelken-homelab-with-a-too-long-name/x",  # vault name longer than 24
        "azure://1homelab/compose-vps",  # vault name starting with a digit
        "azure://shelken-homelab/compose_vps",  # '_' in the secret name
        "azure://shelken-homelab",  # no secret
        "azure://shelken-homelab/compose-vps/a/b",  # a field with '/'
        "azure://shelken-homelab/compose-vps/",  # an empty field
        "https://shelken-homelab.vault.azure.net/secrets/compose-vps",
        "config:",
        "config:a b",
    ],
)
def test_malformed_secret_reference(ref):
    values = mutated(VPS, setter("kopia.secrets.serverPassword", ref))
    assert_only_problem(values, "kopia.secrets.serverPassword", "must be a secret reference")


def test_secret_reference_that_is_not_a_string():
    values = mutated(VPS, setter("kopia.secrets.serverPassword", 12345))
    assert_only_problem(values, "kopia.secrets.serverPassword", "must be a secret reference string")


def test_config_references_are_accepted():
    def change(values):
        values["kopia"]["secrets"]["repositoryPassword"] = "config:kopiaPassword"
        values["kopia"]["s3"]["accessKeyId"] = "config:s3.access-key_id"

    config = load_stack_config(mutated(VPS, change))
    assert config.kopia.secrets.repository_password == SecretRef("config:kopiaPassword", config_key="kopiaPassword")
    assert config.kopia.s3.access_key_id.config_key == "s3.access-key_id"


@pytest.mark.parametrize("value", ["config:sshPrivateKey", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret"])
def test_ssh_private_key_is_refused_with_the_way_that_works(value):
    # The Docker provider's ssh cannot take a key from Pulumi: agent or `-i` serve every resource.
    values = mutated(VPS, setter("host.ssh.privateKey", value))
    assert_only_problem(values, "host.ssh.privateKey", "ssh-add")
    with pytest.raises(ConfigError) as info:
        load_stack_config(values)
    assert "['-i', '<key file>']" in str(info.value)
    assert "secret" not in str(info.value).split("privateKey", 1)[1].split("\n")[0].replace("secret reference", "")


def test_azure_reference_without_field_reads_the_whole_secret():
    assert parse_secret_ref("azure://shelken-homelab/kopia-password") == SecretRef(
        "azure://shelken-homelab/kopia-password", vault="shelken-homelab", secret="kopia-password"
    )


# ---------------------------------------------------------------- other field rules found in the models


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        ("repository.username", "Shelken", "repository.username", "must be a lowercase user name"),
        ("host.ssh.user", "root user", "host.ssh.user", "must be a lowercase user name"),
        ("host.ssh.port", 0, "host.ssh.port", "greater than or equal to 1"),
        ("host.ssh.port", 65536, "host.ssh.port", "less than or equal to 65535"),
        ("host.ssh.address", "", "host.ssh.address", "must be a host name or an IP address"),
        ("host.ssh.address", "-oProxyCommand=x", "host.ssh.address", "must be a host name or an IP address"),
        ("host.network.name", "-homelab", "host.network.name", "should match pattern"),
        ("kopia.containerName", "kopia server", "kopia.containerName", "should match pattern"),
        ("kopia.server", {"port": 0}, "kopia.server.port", "greater than or equal to 1"),
        ("kopia.server", {"refreshInterval": "5"}, "kopia.server.refreshInterval", "should match pattern"),
        ("kopia.server", {"tlsValidityDays": 59}, "kopia.server.tlsValidityDays", "greater than or equal to 60"),
        ("kopia.sources", [], "kopia.sources", "at least 1 item"),
        ("openlist.s3Port", 70000, "openlist.s3Port", "less than or equal to 65535"),
        ("openlist.containerName", "open list", "openlist.containerName", "should match pattern"),
    ],
)
def test_field_constraints(path, value, key, fragment):
    assert_only_problem(mutated(VPS, setter(path, value)), key, fragment)


# ---------------------------------------------------------------- every problem at once


def test_several_independent_errors_are_all_reported():
    def change(values):
        values["images"]["kopia"] = "kopia/kopia:latest"
        values["repository"]["bucket"] = "Kopia_Bucket"
        values["repository"]["prefix"] = ""
        values["policy"]["sources"][1] = "sakamoto:/backup/compose"  # malformed source
        values["host"]["deployAddress"] = "vps.example.net"
        values["host"]["ssh"]["options"] = ["-o", "StrictHostKeyChecking=no"]
        values["host"]["ssh"]["sshKey"] = "unknown"
        values["kopia"]["s3"]["accessKeyId"] = "hunter2"

    with pytest.raises(ConfigError) as info:
        load_stack_config(mutated(VPS, change))
    keys = [key for key, _ in info.value.problems]
    expected = [
        "images.kopia",
        "repository.bucket",
        "repository.prefix",
        "policy.sources[1]",
        "host.deployAddress",
        "host.ssh.options",
        "host.ssh.sshKey",
        "kopia.s3.accessKeyId",
    ]
    assert sorted(keys) == sorted(NS + k for k in expected)

    message = str(info.value)
    assert message.startswith(f"invalid stack config ({len(expected)} problems):\n")
    for key, problem in info.value.problems:
        assert f"  - {key}: {problem}\n" in message
    assert "Fix them in Pulumi.yaml (images, repository, policy, schedule, keyVault" in message
    assert "or in Pulumi.<stack>.yaml (host, kopia, openlist), then preview again." in message
    assert "would replace the whole shared object" in message
    assert "hunter2" not in message


def test_several_consistency_errors_are_all_reported():
    def change(values):
        values["kopia"]["sources"][0]["path"] = "/data"  # 2 problems: scheduled-not-mounted, mounted-not-scheduled
        values["repository"]["maintenanceOwner"] = "shelken@nas"
        values["openlist"]["webPort"] = 51515
        values["kopia"]["s3"]["endpoint"] = "config:s3Endpoint"

    problems = problems_of(mutated(VPS, change))
    assert sorted(k for k, _ in problems) == sorted(
        NS + k
        for k in [
            "policy.sources[2]",
            "kopia.sources[0].path",
            "repository.maintenanceOwner",
            "kopia.s3.endpoint",
            "openlist.webPort",
        ]
    )


def test_one_problem_is_counted_in_the_singular():
    with pytest.raises(ConfigError) as info:
        load_stack_config(mutated(VPS, setter("host.name", "VPS")))
    assert str(info.value).startswith("invalid stack config (1 problem):\n  - homelab-backup:host.name: ")


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("https://vault.azure.net", "exactly once"),
        ("https://{vault}.{vault}.net", "exactly once"),
        ("https://{vault}.vault.azure.net/{x}", "no other braces"),
        ("http://{vault}.vault.azure.net", "must be https://"),
    ],
)
def test_key_vault_url_template_is_checked(template, fragment):
    assert_only_problem(mutated(VPS, setter("keyVault.urlTemplate", template)), "keyVault.urlTemplate", fragment)


def test_key_vault_url_template_may_be_plain_http_only_on_loopback():
    config = load_stack_config(mutated(VPS, setter("keyVault.urlTemplate", "http://127.0.0.1:8200/{vault}")))
    assert config.key_vault.url_template == "http://127.0.0.1:8200/{vault}"


# ---------------------------------------------------------------- notification profiles

WEBHOOK = {"name": "ntfy", "webhook": {"url": "azure://shelken-homelab/homelab-backup/NTFY_URL"}}
EMAIL = {
    "name": "mail",
    "email": {
        "smtpServer": "smtp.example.net",
        "username": "backup",
        "password": "config:smtpPassword",
        "from": "kopia@example.net",
        "to": ["me@example.net"],
    },
}


def test_notification_profiles_default_to_warning_and_name_their_secrets():
    config = load_stack_config({**VPS, "notifications": [WEBHOOK, EMAIL]})
    webhook, email = config.notifications
    assert (webhook.min_severity, webhook.webhook.method, webhook.webhook.format) == ("warning", "POST", "txt")
    assert webhook.secret_keys() == {"url": "webhook.url"}
    assert email.secret_keys() == {"password": "email.password"}
    references = dict(secret_references(config))
    assert str(references[NS + "notifications[0].webhook.url"]) == WEBHOOK["webhook"]["url"]
    assert str(references[NS + "notifications[1].email.password"]) == "config:smtpPassword"
    assert email.email.smtp_port == 587


@pytest.mark.parametrize(
    ("profile", "key", "fragment"),
    [
        ({"name": "both", "webhook": WEBHOOK["webhook"], "email": EMAIL["email"]}, "notifications[0]", "exactly one"),
        ({"name": "none"}, "notifications[0]", "exactly one"),
        ({**WEBHOOK, "webhook": {"url": "https://ntfy.sh/secret-topic"}}, "notifications[0].webhook.url", "reference"),
        ({**WEBHOOK, "name": "Has Spaces"}, "notifications[0].name", "pattern"),
        ({**WEBHOOK, "minSeverity": "loud"}, "notifications[0].minSeverity", "warning"),
        ({**EMAIL, "email": {**EMAIL["email"], "password": None}}, "notifications[0].email", "both"),
        ({**EMAIL, "email": {**EMAIL["email"], "to": []}}, "notifications[0].email.to", "at least 1"),
    ],
)
def test_a_bad_notification_profile_is_named_at_its_key(profile, key, fragment):
    assert_only_problem({**VPS, "notifications": [profile]}, key, fragment)


def test_a_notification_profile_name_declared_twice_is_refused():
    assert_only_problem({**VPS, "notifications": [WEBHOOK, WEBHOOK]}, "notifications[1].name", "declared twice")


# ---------------------------------------------------------------- edges a hostile review found


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("host.configDir", "/opt/compose/vps/kopia\n", "host.configDir"),  # Python's '$' matches before a final '\n'
        ("host.name", "vps\n", "host.name"),
        ("images.kopia", "kopia/kopia:0.22.3\n", "images.kopia"),
        ("repository.bucket", "kopia\n", "repository.bucket"),
        ("host.ssh.hostKey", f"ssh-ed25519 {'A' * 40}\n", "host.ssh.hostKey"),
        ("host.homepageGroup", "VPS\r\nX-Injected: 1", "host.homepageGroup"),  # free text: the generic rule
        ("host.timezone", "Asia/Shanghai\x1b[2J", "host.timezone"),
        ("kopia.secrets.serverPassword", "config:uiPassword\n", "kopia.secrets.serverPassword"),
    ],
)
def test_trailing_newline_and_control_characters_are_refused(path, value, key):
    assert_only_problem(mutated(VPS, setter(path, value)), key)


def test_control_character_in_free_text_names_the_rule():
    values = mutated(VPS, setter("host.homepageGroup", "VPS\n"))
    assert_only_problem(values, "host.homepageGroup", "must not contain control characters")


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("host.ssh.port", True, "host.ssh.port"),
        ("kopia.server", {"port": True}, "kopia.server.port"),
        ("openlist.webPort", False, "openlist.webPort"),
        ("schedule.intervalSeconds", True, "schedule.intervalSeconds"),
        ("policy.retention.keepDaily", True, "policy.retention.keepDaily"),
        ("host.ssh.port", "22", "host.ssh.port"),
        ("host.network", {"create": "yes"}, "host.network.create"),
    ],
)
def test_no_coercion_between_types(path, value, key):
    assert_only_problem(mutated(VPS, setter(path, value)), key, "Input should be a valid")


@pytest.mark.parametrize("field", ["keepDaily", "keepHourly", "keepLatest", "keepWeekly", "keepMonthly", "keepAnnual"])
def test_retention_has_an_upper_bound(field):
    values = mutated(VPS, setter(f"policy.retention.{field}", 10_001))
    assert_only_problem(values, f"policy.retention.{field}", "less than or equal to 10000")
    load_stack_config(mutated(VPS, setter(f"policy.retention.{field}", 10_000)))


def test_certificate_validity_has_an_upper_bound():
    values = mutated(VPS, setter("kopia.server", {"tlsValidityDays": 36500}))
    assert_only_problem(values, "kopia.server.tlsValidityDays", "less than or equal to 7300")


@pytest.mark.parametrize(
    ("host_path", "fragment"),
    [
        ("/opt/minio/data", "is also kopia.sources[0].hostPath"),
        ("/opt/minio/data/buckets", "lies inside kopia.sources[0].hostPath (/opt/minio/data)"),
        ("/opt/minio", "contains kopia.sources[0].hostPath (/opt/minio/data)"),
    ],
)
def test_the_same_host_tree_backed_up_twice(host_path, fragment):
    values = mutated(SAKAMOTO, setter("kopia.sources.1.hostPath", host_path))
    assert_only_problem(values, "kopia.sources[1].hostPath", fragment, "backed up twice")


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])  # noqa: S104 (the values refused)
def test_publishing_on_every_interface_needs_an_explicit_opt_in(address):
    values = mutated(VPS, setter("host.deployAddress", address))
    assert_only_problem(values, "host.deployAddress", "every interface", "host.publishOnAllInterfaces: true")
    values["host"]["publishOnAllInterfaces"] = True
    assert load_stack_config(values).host.deploy_address == address


@pytest.mark.parametrize(
    ("kopia_data_dir", "config_dir"),
    [("/opt/compose/vps/kopia/data", "/opt/compose/vps/kopia"), ("/opt/kopia", "/opt/kopia/config")],
)
def test_kopia_data_dir_and_config_dir_do_not_overlap(kopia_data_dir, config_dir):
    def change(values):
        values["host"]["kopiaDataDir"] = kopia_data_dir
        values["host"]["configDir"] = config_dir

    assert_only_problem(mutated(VPS, change), "host.kopiaDataDir", "overlap host.configDir")


def test_openlist_database_inside_a_backed_up_tree():
    """The committed VPS file had it: dataDir /opt/data, backed up whole, held OpenList's live database."""
    assert_only_problem(
        mutated(VPS, setter("host.dataDir", "/opt/data")),
        "kopia.sources[0].hostPath",
        "contains OpenList's database (/opt/data/openlist/data, under host.dataDir)",
        "set host.dataDir outside every source",
    )
    # Without OpenList on the stack, the same data dir holds no database.
    load_stack_config(mutated(SAKAMOTO, setter("host.dataDir", "/opt/minio/data")))


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        ("host.homepageGroup", "", "host.homepageGroup", "must not be empty or blank"),
        ("host.homepageGroup", "  ", "host.homepageGroup", "must not be empty or blank"),
        ("kopia.server", {"refreshInterval": "0s"}, "kopia.server.refreshInterval", "should match pattern"),
        ("kopia.server", {"refreshInterval": "00m"}, "kopia.server.refreshInterval", "should match pattern"),
        (
            "repository.maintenance",
            {"quickInterval": "0h"},
            "repository.maintenance.quickInterval",
            "should match pattern",
        ),
    ],
)
def test_empty_labels_and_zero_intervals_are_refused(path, value, key, fragment):
    assert_only_problem(mutated(VPS, setter(path, value)), key, fragment)


def test_a_blank_restart_command_is_refused():
    values = mutated(SAKAMOTO, setter("openlist.restartCommand", " "))
    assert_only_problem(values, "openlist.restartCommand", "must not be empty or blank")


def test_an_ipv6_admin_url_is_accepted_and_reached_in_brackets():
    from components.config import parse_admin_url
    from components.openlist_config import tunnel_command

    config = load_stack_config(mutated(SAKAMOTO, setter("openlist.adminUrl", "http://[fd00::5]:5244")))
    assert config.openlist is not None and config.openlist.admin_url is not None
    host, port, tls = parse_admin_url(config.openlist.admin_url)
    assert (host, port, tls) == ("fd00::5", 5244, False)
    assert tunnel_command(["ssh", "u@h"], {"/s": (host, port)}) == [
        "ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", "/s:[fd00::5]:5244", "u@h"
    ]  # fmt: skip
    values = mutated(SAKAMOTO, setter("openlist.adminUrl", "http://[10.0.0.5]:5244"))
    assert_only_problem(values, "openlist.adminUrl", "must hold an IPv6 address between '[' and ']'")


@pytest.mark.parametrize(("driver", "valid"), [("115 Cloud", True), ("189CloudPC ", False), ("189 ", False)])
def test_a_driver_name_may_hold_a_space_inside_only(driver, valid):
    values = mutated(SAKAMOTO, setter("openlist.storage.driver", driver))
    if valid:
        load_stack_config(values)
    else:
        assert_only_problem(values, "openlist.storage.driver", "should match pattern")


# ---------------------------------------------------------------- committed placeholders


@pytest.mark.parametrize("stack", ["vps", "sakamoto"])
def test_committed_stack_files_refuse_their_placeholders_naming_what_to_set(stack):
    as_committed = {
        k.removeprefix(NS): v for k, v in stack_config(stack, placeholders=True).items() if k.startswith(NS)
    }
    problems = dict(problems_of(as_committed))
    expected = {
        "host.deployAddress",
        "host.dataDir",
        "host.ssh.address",
        "host.ssh.hostKey",
        "kopia.sources[0].hostPath",
    }
    assert expected <= {k.removeprefix(NS) for k in problems}, problems
    assert all("is a placeholder ('SET-ME:" in m for m in problems.values()), problems
    assert "ssh-keyscan -t ed25519" in problems[NS + "host.ssh.hostKey"]
    assert "published ports bind to" in problems[NS + "host.deployAddress"]


# ---------------------------------------------------------------- the whole namespace


def namespace(values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**{NS + k: v for k, v in values.items()}, "pulumi:disable-default-providers": ["docker"], **extra}


def test_unknown_top_level_key_is_an_error():
    values = namespace(VPS, **{NS + "kopai": "{}", NS + "keyvault": "{}"})
    with pytest.raises(ConfigError) as info:
        load_namespace(values, secret_keys=set())
    assert sorted(k for k, _ in info.value.problems) == [NS + "keyvault", NS + "kopai"]
    assert "unknown key (check its spelling)" in info.value.problems[0][1]


def test_keys_of_config_references_and_secrets_are_not_unknown():
    def change(values):
        values["kopia"]["secrets"]["serverPassword"] = "config:uiPassword"

    values = namespace(mutated(VPS, change), **{NS + "uiPassword": "x", NS + "sharedSecret": "y"})
    load_namespace(values, secret_keys={NS + "sharedSecret"})  # referenced (plain: refused when read), secret


def test_host_must_be_the_stacks_own():
    values = namespace(SAKAMOTO)
    assert load_namespace(values, stack="sakamoto").identity == "shelken@sakamoto"
    with pytest.raises(ConfigError) as info:
        load_namespace(values, stack="nas")  # Pulumi.sakamoto.yaml copied to Pulumi.nas.yaml
    [(key, message)] = info.value.problems
    assert key == NS + "host.name"
    assert "'sakamoto' is not this stack's name 'nas'" in message and "host.stackName: nas" in message


def test_a_stack_named_differently_says_so_and_a_copy_of_it_is_still_refused():
    values = namespace(mutated(VPS, setter("host.stackName", "e2e-vps")))
    assert load_namespace(values, stack="e2e-vps").identity == "shelken@vps"
    with pytest.raises(ConfigError) as info:
        load_namespace(values, stack="e2e-nas")
    assert [k for k, _ in info.value.problems] == [NS + "host.stackName"]
    assert "names stack 'e2e-vps', but this is stack 'e2e-nas'" in info.value.problems[0][1]


def test_an_unknown_key_and_a_rule_across_keys_are_reported_together():
    values = {NS + key: value for key, value in VPS.items()}
    values[NS + "host"] = {**VPS["host"], "deployAddress": "0.0.0.0"}  # noqa: S104 (refused: the point)
    values[NS + "kopiaa"] = {"x": 1}
    with pytest.raises(ConfigError) as info:
        load_namespace(values, secret_keys=set())
    keys = [key for key, _ in info.value.problems]
    assert NS + "kopiaa" in keys and NS + "host.deployAddress" in keys, info.value.problems
