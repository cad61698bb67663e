"""End-to-end test infrastructure: a real Docker engine, sshd, Kopia and OpenList on this machine.

One module per job (pins, gate, process, cache, dockerd, gobuild, images, ssh, runlock, receivers,
cleanup, openlist, kopia); this package re-exports them, so tests, the demo and the benchmark write
`infra.<name>`. `tests/e2e/conftest.py` only wires it into pytest.

Why it looks the way it does:

* No registry can be reached, so both images the program pins (`kopia/kopia:0.22.3`,
  `ghcr.io/openlistteam/openlist-git:v4.2.5`) are built here `FROM scratch` out of a static
  busybox and the real upstream binaries, compiled from the Go module proxy. The images
  carry the tags the program pins, so `docker.RemoteImage` finds them locally and never pulls.
* Go builds take minutes, so binaries are cached by version under
  `${HOMELAB_E2E_CACHE:-/var/cache/homelab-backup-e2e}/bin` and images are rebuilt only when
  their `homelab.e2e.version` label no longer matches the binary inside.
* The program reaches hosts with pulumi-docker over `ssh://`, which runs the local `ssh`
  client (`ssh ... docker system dial-stdio`). `SshHost` is a real sshd on 127.0.0.1 with a
  pinned host key, and `SshDocker` drives the real docker CLI the same way, so a wrong host
  key or a stopped sshd fails exactly like it would against a real host.
* Every setup step reports its duration as `[e2e setup] <step>: <seconds>s` so a slow run
  shows where the time went; `conftest.py` routes these lines past pytest's capture.
"""

from testbed.infra.cache import (  # noqa: F401
    cache_dir,
    cache_lock,
)
from testbed.infra.cleanup import (  # noqa: F401
    ResourceTracker,
    make_session_workdir,
)
from testbed.infra.dockerd import (  # noqa: F401
    DockerEngine,
    bridge_gateway,
    choose_bridge_address,
    docker_info_ok,
    ensure_docker_engine,
)
from testbed.infra.gate import (  # noqa: F401
    E2EError,
    busybox_path,
    check_prerequisites,
    e2e_mode,
    go_executable,
    is_static_elf,
    missing_prerequisites,
    require_or_skip,
)
from testbed.infra.gobuild import (  # noqa: F401
    BUILD_RECIPE,
    KOPIA_BUILD,
    MC_BUILD,
    MINIO_BUILD,
    OPENLIST_BUILD,
    PULUMI_BUILD,
    PULUMI_VERSION,
    GoBuild,
    build_go_binary,
    ensure_go_binary,
    ensure_kopia_binary,
    ensure_openlist_binary,
    module_dir,
    run_long,
)
from testbed.infra.images import (  # noqa: F401
    DEBIAN_MIRROR_ENV,
    DEBIAN_PACKAGES,
    DEBIAN_SUITE,
    E2EImages,
    MinioImages,
    build_image,
    ensure_debian_base,
    ensure_image,
    ensure_images,
    ensure_minio_images,
    ensure_postgres_image,
    file_sha256,
    image_label,
    image_version_label,
)
from testbed.infra.kopia import (  # noqa: F401
    KopiaCli,
)
from testbed.infra.openlist import (  # noqa: F401
    OpenListAdmin,
    OpenListContainer,
    OpenListError,
    OpenListS3,
    configure_openlist_s3,
    container_logs,
    s3_anonymous_get,
    s3_port_answers,
    start_openlist,
    wait_openlist,
)
from testbed.infra.pins import (  # noqa: F401
    CACHE_ENV,
    DEFAULT_CACHE,
    E2E_ENV,
    IMAGES_DIR,
    KOPIA_IMAGE,
    KOPIA_VERSION,
    NAME_PREFIX,
    OPENLIST_DATA_DIR,
    OPENLIST_HTTP_PORT,
    OPENLIST_IMAGE,
    OPENLIST_S3_PORT,
    OPENLIST_SETTING_GROUP_S3,
    OPENLIST_UID,
    OPENLIST_VERSION,
    RESOURCE_LABEL,
    SSH_USER,
    VERSION_LABEL,
)
from testbed.infra.process import (  # noqa: F401
    CommandError,
    DockerRunner,
    containers_mounting,
    docker,
    free_port,
    progress,
    run,
    run_in_terminal,
    say,
    set_progress_writer,
    tail_file,
    timed,
    unique_name,
    wait_until,
)
from testbed.infra.receivers import (  # noqa: F401
    HttpReceiver,
    Login,
    SmtpReceiver,
)
from testbed.infra.runlock import (  # noqa: F401
    RUN_LOCK,
    exclusive_run,
)
from testbed.infra.ssh import (  # noqa: F401
    SSHD_CONFIG,
    SshAgent,
    SshDocker,
    SshHost,
    SshServer,
    authorized_keys_file,
    ensure_ssh_user,
    known_hosts_line,
    make_sftp_key,
    operator_agent,
    pinned_ssh_opts,
    public_key,
    replace_sftp_key,
    sftp_list,
    ssh_run,
)
