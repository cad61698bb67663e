"""One stack's whole config: the shared keys and the host's, and what follows from both."""

from __future__ import annotations

from pydantic import Field

from components.config.fields import Model
from components.config.host import Host, Kopia, OpenList
from components.config.project import (
    Images,
    KeyVault,
    NotificationProfile,
    Policy,
    Repository,
    Schedule,
    SourceTarget,
)


def identity(username: str, hostname: str) -> str:
    """A host's Kopia identity, `user@host`: what its snapshots and policies are filed under."""
    return f"{username}@{hostname}"


def is_maintenance_owner(maintenance_owner: str, host_identity: str) -> bool:
    """Only the maintenance owner runs maintenance, and only it may create the repository."""
    return maintenance_owner == host_identity


class StackConfig(Model):
    images: Images
    repository: Repository
    policy: Policy
    schedule: Schedule
    key_vault: KeyVault = Field(default_factory=KeyVault, alias="keyVault")
    notifications: list[NotificationProfile] = Field(
        default_factory=list,
        description="Kopia notification profiles; they live in the repository and serve every host, so declare "
        "them in Pulumi.yaml",
    )
    host: Host
    kopia: Kopia
    openlist: OpenList | None = None

    @property
    def identity(self) -> str:
        return identity(self.repository.username, self.host.name)

    @property
    def max_snapshot_age_seconds(self) -> int:
        """A source whose last snapshot is older is stale: two intervals plus the health margin."""
        return 2 * self.schedule.interval_seconds + self.kopia.health.margin_seconds

    @property
    def max_drill_age_seconds(self) -> int:
        """A restore drill older than this is overdue: two drill intervals plus the health margin."""
        return 2 * self.kopia.drill.interval_seconds + self.kopia.health.margin_seconds

    @property
    def host_sources(self) -> list[SourceTarget]:
        """The policy's sources that this host backs up."""
        return [s for s in self.policy.sources if s.host == self.host.name]

    @property
    def is_maintenance_owner(self) -> bool:
        return is_maintenance_owner(self.repository.maintenance_owner, self.identity)

    @property
    def deploys_openlist(self) -> bool:
        """This stack runs an OpenList container (not only configures another's)."""
        return self.openlist is not None and self.openlist.deployed
