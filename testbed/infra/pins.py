"""Versions, image tags and names the e2e suite and the demo use."""

from __future__ import annotations

from pathlib import Path

from components import openlist as openlist_component
from testbed.mocks import project_config

# ---------------------------------------------------------------- versions and names the program pins

#: The images the program pins (Pulumi.yaml, `images`): the suite builds them under these very tags.
KOPIA_IMAGE, OPENLIST_IMAGE = (project_config("images")[name] for name in ("kopia", "openlist"))
KOPIA_VERSION = KOPIA_IMAGE.rsplit(":", 1)[1]
OPENLIST_VERSION = OPENLIST_IMAGE.rsplit(":", 1)[1]
VERSION_LABEL = "homelab.e2e.version"

#: Every container, network and scratch dir the suite makes starts with this, so leftovers are easy to find.
NAME_PREFIX = "hle2e-"
#: Label on every container and network the suite makes (`docker ps -a --filter label=homelab.e2e`).
RESOURCE_LABEL = "homelab.e2e"

SSH_USER = "homelab-e2e"
# As the program deploys OpenList (components/openlist.py).
OPENLIST_UID = openlist_component.OPENLIST_UID
OPENLIST_DATA_DIR = openlist_component.DATA_DIR
OPENLIST_HTTP_PORT = openlist_component.WEB_PORT_IN_CONTAINER
OPENLIST_S3_PORT = 5246
OPENLIST_SETTING_GROUP_S3 = 9  # internal/model/setting.go: SINGLE, SITE, ..., LDAP, S3

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"

E2E_ENV = "HOMELAB_E2E"
CACHE_ENV = "HOMELAB_E2E_CACHE"
DEFAULT_CACHE = Path("/var/cache/homelab-backup-e2e")
