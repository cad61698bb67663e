"""homelab-backup: Kopia on every host, OpenList on the VPS, one Pulumi stack per host."""
