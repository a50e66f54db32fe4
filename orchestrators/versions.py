"""Orchestration versions: which code path a workflow instance replays on.

The version is a property of the code, so it ships with it: host.json's `defaultVersion` equals
CURRENT (a test keeps them equal), the starters pass it to `start_new`, and the extension's
`versionMatchStrategy: CurrentOrOlder` with `versionFailureStrategy: Reject` keeps a worker from
running instances newer than its code (an old worker still draining during a rolling deploy leaves
them for a new one). continue_as_new keeps an instance's version, so a workflow stays on one code
path from start to end.

Bump CURRENT (and host.json) whenever a change to the orchestrator would make the recorded
histories of the current version replay differently (tests/versions fail when it would); keep the
previous path frozen under orchestrators/v<N>/ until no instance of it is left (README, "Upgrading")."""
from __future__ import annotations

from typing import Optional

CURRENT = "2.0"
RELEASE_1 = "1.0"  # and "": instances started before versions were recorded


def runs_release_1(version: Optional[str]) -> bool:
    return (version or "").strip() in ("", RELEASE_1)
