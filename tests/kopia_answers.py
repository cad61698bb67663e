"""Kopia control API answers (`GET /api/v1/control/sources`) as Kopia 0.22.3 writes them, for tests.

The layout is Kopia's `serverapi.SourcesResponse`, pretty-printed with two spaces like the server does;
times are RFC 3339 in UTC with nanoseconds, or local time with an offset (nextSnapshotTime).
"""

from __future__ import annotations

import datetime
import json

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def iso(moment: datetime.datetime, offset_hours: int = 0) -> str:
    """RFC 3339 as Kopia writes it: UTC with nanoseconds and Z, or local time with an offset."""
    if offset_hours:
        tz = datetime.timezone(datetime.timedelta(hours=offset_hours))
        return moment.astimezone(tz).isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def source_status(source: str, status: str = "IDLE", **changes) -> dict:
    user, rest = source.split("@", 1)
    host, path = rest.split(":", 1)
    info = {"host": host, "userName": user, "path": path}
    last = {
        "id": "k1",
        "source": info,
        "description": "",
        "startTime": iso(changes.pop("last", NOW - datetime.timedelta(minutes=5))),
        "endTime": iso(NOW),
        "stats": {"totalSize": 10, "fileCount": 1, "dirCount": 1, "ignoredErrorCount": 0, "errorCount": 0},
        "rootEntry": {"name": "x", "type": "d", "summ": {"size": 10, "files": 1, "dirs": 1, "numFailed": 0}},
    }
    if "errors" in changes:
        last["stats"]["errorCount"] = changes.pop("errors")
    if changes.pop("incomplete", False):
        last["incomplete"] = "canceled"  # Kopia stores the reason; any value means incomplete
    entry: dict = {"source": info, "status": status, "schedule": {"intervalSeconds": 3600, "runMissed": True}}
    if not changes.pop("no_snapshot", False):
        entry["lastSnapshot"] = last
    if not changes.pop("no_next", False):
        entry["nextSnapshotTime"] = iso(NOW + datetime.timedelta(minutes=55), offset_hours=8)
    assert not changes, changes
    return entry


def answer(*entries: dict) -> str:
    return json.dumps(
        {"localUsername": "shelken", "localHost": "sakamoto", "multiUser": True, "sources": list(entries)}, indent=2
    )
