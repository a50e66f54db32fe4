"""How much of a task's output travels inline, and what is kept aside. Pure: no Azure imports.

runs/get-output returns up to 5 MB of exit value per task (plus an error and a stack trace), and a
job may have hundreds of tasks. Everything an activity returns enters the orchestration history,
the outputs and the status answer, so each task carries only a bounded prefix inline; the whole of
what was cut is written to blob storage by the activity (messaging/result_blobs.py) and served by
`GET /api/workflows/{id}/results/{taskKey}`.

The budget (docs/design.md, "Results of any size"): one task's text fields together get at most
`WORKFLOW_RESULT_INLINE_BYTES`, and all tasks together at most `WORKFLOW_RESULTS_INLINE_TOTAL_BYTES`,
so a task's share shrinks as the job grows (1,000 tasks: 262 bytes each by default). A task spends its
share on `error` first (short, and what a caller needs first), then `notebookResult`, then
`errorTrace`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

# (name, default, meaning): listed in the README settings table (tools/settings_table.py).
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("WORKFLOW_RESULT_INLINE_BYTES", "65536",
     "Most bytes (UTF-8) of one task's `notebookResult`, `error` and `errorTrace` together carried inline in the "
     "outputs, the status answer and the completion event; the whole is kept in `WORKFLOW_RESULTS_CONTAINER` and "
     "served by `GET /api/workflows/{id}/results/{taskKey}`. Integer, 256..1048576."),
    ("WORKFLOW_RESULTS_INLINE_TOTAL_BYTES", "262144",
     "Most bytes of those fields inline over all of a run's tasks: each task's share is this divided by the "
     "number of tasks, at most `WORKFLOW_RESULT_INLINE_BYTES` (1,000 tasks: 262 bytes each), so the outputs of "
     "a large job stay far inside Durable's limits. Integer, 4096..4194304."),
    ("WORKFLOW_RESULTS_CONTAINER", "workflow-results",
     "Blob container that keeps the whole output of each task whose inline copy was cut (created on first use). "
     "Blob names: `<instanceId>/<taskKey>/<task runId>.json`; purge them with a lifecycle rule."),
    ("WORKFLOW_RESULTS_CONNECTION", "AzureWebJobsStorage",
     "Name of the storage connection of that container: a connection string in the setting `<name>` (Azurite "
     "locally), or identity-based `<name>__blobServiceUri` / `<name>__accountName` (+ `<name>__clientId`)."),
)
DEFAULTS = {name: default for name, default, _ in SETTINGS}
RANGES = {"WORKFLOW_RESULT_INLINE_BYTES": (256, 1048576), "WORKFLOW_RESULTS_INLINE_TOTAL_BYTES": (4096, 4194304)}

# Databricks returns the first 5 MB of an exit value (runs/get-output); it states no cap for the
# error and its trace, so the kept copy bounds each of them the same way (and so the results route).
MAX_STORED_FIELD_BYTES = 5 * 1024 * 1024
# The fields a task spends its share on, in order.
TEXT_FIELDS = ("error", "notebookResult", "errorTrace")
RESULTS_ROUTE = "workflows/{instanceId}/results/{taskKey}"


class ResultSettingError(ValueError):
    """A results setting is invalid; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting = setting


def _int(env: Mapping[str, str], name: str) -> int:
    raw = (env.get(name) or "").strip() or DEFAULTS[name]
    low, high = RANGES[name]
    try:
        value = int(raw)
    except ValueError:
        raise ResultSettingError(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ResultSettingError(name, f"must be between {low} and {high}, got {value}")
    return value


def task_share(task_count: int, env: Optional[Mapping[str, str]] = None) -> int:
    """Inline bytes one task may use when the run has `task_count` tasks."""
    env = os.environ if env is None else env
    per_task, total = _int(env, "WORKFLOW_RESULT_INLINE_BYTES"), _int(env, "WORKFLOW_RESULTS_INLINE_TOTAL_BYTES")
    return min(per_task, total // max(1, int(task_count)))


def utf8_prefix(text: str, limit: int) -> Tuple[str, int]:
    """The longest prefix of `text` of at most `limit` UTF-8 bytes that does not split a character,
    and the size of the whole text in bytes."""
    if text.isascii():  # the common case, without a second copy of a 5 MB text
        return text[:max(0, limit)], len(text)
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, len(raw)
    return raw[:max(0, limit)].decode("utf-8", errors="ignore"), len(raw)


def cap_task_output(summary: Mapping[str, Any], share: int) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(inline summary, kept document or None). The inline summary has each text field cut to what
    is left of `share`, `notebookResultBytes` and `notebookResultTruncated` always, `errorTruncated` /
    `errorTraceTruncated` when cut. The document (everything that was returned, each field at most
    MAX_STORED_FIELD_BYTES) is given only when something was cut: it is what the results route serves."""
    inline: Dict[str, Any] = {k: v for k, v in summary.items() if k not in TEXT_FIELDS and k != "truncated"}
    at_source = bool(summary.get("truncated"))
    cut = False
    left = max(0, int(share))
    for name in TEXT_FIELDS:
        value = summary.get(name)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        shown, size = utf8_prefix(text, left)
        left -= len(shown.encode("utf-8"))
        inline[name] = shown
        if name == "notebookResult":
            inline["notebookResultBytes"] = size
        if len(shown) < len(text):
            cut = True
            inline[f"{name}Truncated"] = True
    inline.setdefault("notebookResultBytes", 0)
    inline["notebookResultTruncated"] = bool(inline.get("notebookResultTruncated") or at_source)
    if at_source:
        inline["notebookResultTruncatedAtSource"] = True  # Databricks kept only the first 5 MB
    if not cut:
        return inline, None
    document: Dict[str, Any] = {k: summary[k] for k in ("taskKey", "runId") if k in summary}
    for name in TEXT_FIELDS:
        value = summary.get(name)
        if value is not None:
            document[name] = utf8_prefix(value if isinstance(value, str) else json.dumps(value),
                                         MAX_STORED_FIELD_BYTES)[0]
    if at_source:
        document["notebookResultTruncatedAtSource"] = True
    return inline, document


def blob_name(instance_id: str, task_key: str, run_id: int) -> str:
    """Where a task's kept output lives. The task run id is unique in the workspace, so an instance
    id started again after a purge never finds an old run's blob; an activity that runs twice
    writes the same blob again."""
    return f"{quote(instance_id, safe='')}/{quote(task_key, safe='')}/{int(run_id)}.json"


def result_path(instance_id: str, task_key: str) -> str:
    """The route that serves a task's whole output (relative to the app's host)."""
    return "/api/" + RESULTS_ROUTE.format(instanceId=quote(instance_id, safe=""), taskKey=quote(task_key, safe=""))


def document_from_entry(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """The results route's answer for a task whose inline copy is whole (nothing was kept aside)."""
    document = {k: entry[k] for k in ("taskKey", "runId") if k in entry}
    for name in TEXT_FIELDS:
        if entry.get(name) is not None:
            document[name] = entry[name]
    if entry.get("notebookResultTruncatedAtSource"):
        document["notebookResultTruncatedAtSource"] = True
    return document


def parse_range(header: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """(offset, length) of a single `Range: bytes=a-b` (or `a-`, `-n`) over `size` bytes; None for
    no header; ValueError when it cannot be satisfied (416)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError("only one range of bytes is served")
    first, _, last = spec.strip().partition("-")
    if not first.strip():
        if not last.strip().isdigit() or int(last) == 0:
            raise ValueError("bad suffix range")
        length = min(int(last), size)
        return size - length, length
    if not first.strip().isdigit() or (last.strip() and not last.strip().isdigit()):
        raise ValueError("bad range")
    start = int(first)
    end = min(int(last), size - 1) if last.strip() else size - 1
    if start >= size or end < start:
        raise ValueError("range outside the result")
    return start, end - start + 1
