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

from typing import Any, Optional

CURRENT = "2.0"
RELEASE_1 = "1.0"  # and "": instances started before versions were recorded
# context.version and host.json defaultVersion need Durable extension 3.5+, first in this bundle;
# with an older bundle every instance has version "" and would take release 1.0's path.
MIN_EXTENSION_BUNDLE = "4.30.0"
EXTENSION_BUNDLE_RANGE = f"[{MIN_EXTENSION_BUNDLE}, 5.0.0)"


def runs_release_1(version: Optional[str]) -> bool:
    return (version or "").strip() in ("", RELEASE_1)


def release_1_input_problem(envelope: Any) -> Optional[str]:
    """Why an input cannot run on release 1.0's path (None when it can). Release 1.0 took one
    notebook on a cluster; an input shaped for a later release (a `jobSource` and a `job`) landing
    here means the host gave the instance no version: an extension bundle older than 4.30.0."""
    request = (envelope or {}).get("request") if isinstance(envelope, dict) else None
    if isinstance(request, dict) and "notebookPath" in request and "jobSource" not in request:
        return None
    return (f"this workflow's input is shaped for release {CURRENT}, but the Durable extension gave it no "
            f"orchestration version, so it would run on release {RELEASE_1}'s code path. Orchestration "
            f"versions need extension bundle {MIN_EXTENSION_BUNDLE} or later: set host.json "
            f"extensionBundle.version to \"{EXTENSION_BUNDLE_RANGE}\" and start the workflow again.")
