"""What getJobRunOutput returns for one task: its output cut to the task's inline share
(workflow/results.py), the whole written to blob storage (messaging/result_blobs.py) when something
was cut. Runs inside the activity, so only the bounded summary enters the orchestration history.

At least once: the blob's name comes from the instance id, the task key and the task run id, and a
repeat overwrites it with the same bytes."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

from databricks_jobs.errors import ConfigurationError
from workflow import results


def bounded_output(summary: Mapping[str, Any], share: int, instance_id: Optional[str]) -> Dict[str, Any]:
    inline, document = results.cap_task_output(summary, share)
    if document is None or not instance_id:
        return inline  # whole inline (or an older orchestrator that names no instance: cut only)
    from messaging import result_blobs

    name = results.blob_name(instance_id, str(summary["taskKey"]), int(summary["runId"]))
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    del document
    try:
        result_blobs.write(name, data)
    except result_blobs.ResultStoreConfigurationError as error:
        raise ConfigurationError("WORKFLOW_RESULTS_CONNECTION", str(error)) from None
    inline["resultPath"] = results.result_path(instance_id, str(summary["taskKey"]))
    return inline
