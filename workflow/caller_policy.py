"""What each caller may run: the WORKFLOW_CALLER_POLICIES document and the decisions made from it.

Pure: no Azure imports, no I/O beyond reading the document once. One JSON document
(schemas/caller-policies.schema.json), keyed by caller id under `callers`, with `sources` mapping
event sources and queues to callers and `default` for callers not listed. In an entry, an allow-list
left out allows nothing; a limit left out is no limit. Without a document nothing is decided here:
the single-team behaviour (anything the app's identity may do) stands.

Every refusal names the request field and the policy rule in JSON terms, e.g.
`'tasks[0].existing_cluster_id' ("0923-x") is not in callers.<oid>.compute.clusterIds`.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from workflow import jobspec

SETTING = "WORKFLOW_CALLER_POLICIES"
SETTINGS: tuple[tuple[str, str, str], ...] = (
    (SETTING, "",
     "What each caller may run: a JSON document (or the path of a JSON file deployed with the app, relative to the "
     "app root) keyed by caller id, with `sources` and `default` (README, \"Callers and policies\"). Validated at "
     "start-up: a bad document answers 503 naming this setting and the JSON path on every start. Empty: one team, "
     "anything the app's identity may do."),
)
_HERE = Path(__file__).resolve().parent
APP_ROOT = _HERE.parent
SCHEMA: dict = json.loads((_HERE / "schemas" / "caller-policies.schema.json").read_text("utf-8"))
MAX_DOCUMENT_BYTES = 1_048_576
SECRET_REFERENCE = re.compile(r"\{\{\s*secrets/([^/}\s]+)/[^}\s]+\s*\}\}")
DEFAULT_RETRY_AFTER_SECONDS = 30


class PolicyDocumentError(ValueError):
    """The document is unreadable or breaks the schema: 503 naming the setting and the JSON path."""

    def __init__(self, problem: str, path: Optional[str] = None):
        self.setting = SETTING
        self.path = path
        where = f" at {path}" if path else ""
        super().__init__(f"Configuration error: {SETTING}{where}: {problem}")


class Refusal(Exception):
    """The policy does not allow this request: 403 (or 429 with Retry-After for a rate), nothing starts."""

    def __init__(self, message: str, field: Optional[str], rule: str, status: int = 403,
                 retry_after: Optional[int] = None):
        super().__init__(message)
        self.message, self.field, self.rule, self.status, self.retry_after = message, field, rule, status, retry_after

    def to_dict(self) -> dict:
        return {"error": self.message, "field": self.field, "rule": self.rule}


def _path(*parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- the document ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One caller's policy and where it comes from (`callers.<id>` or `default`), for messages."""

    rule: str
    value: Mapping[str, Any]

    def at(self, *keys: str) -> str:
        return _path(self.rule, *keys)

    def allow_list(self, *keys: str) -> Optional[Sequence]:
        node: Any = self.value
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    def limit(self, name: str) -> Optional[int]:
        return (self.value.get("limits") or {}).get(name)

    @property
    def admin(self) -> bool:
        return bool(self.value.get("admin"))


@dataclass(frozen=True)
class CallerPolicies:
    document: Mapping[str, Any]

    def listed(self, caller_id: Optional[str]) -> bool:
        return caller_id is not None and caller_id in (self.document.get("callers") or {})

    def entry_for(self, caller_id: Optional[str]) -> Entry:
        callers = self.document.get("callers") or {}
        if caller_id is not None and caller_id in callers:
            return Entry(_path("callers", caller_id), callers[caller_id])
        return Entry("default", self.document.get("default") or {})

    def caller_for_source(self, kind: str, name: str) -> Optional[str]:
        """The caller an event source (`eventgrid`, topic or subscription) or queue acts for."""
        return (self.document.get("sources") or {}).get(f"{kind}:{name}")


def _schema_message(error) -> str:
    from workflow.inputs import _message_of

    return _message_of(error, None).replace("the request ", "", 1)


def parse(text: str) -> CallerPolicies:
    """Validate a document's text against the schema; PolicyDocumentError names the JSON path."""
    from jsonschema import Draft202012Validator
    from workflow.inputs import _first_error, _field_of, json_path

    try:
        document = json.loads(text)
    except ValueError as exc:
        raise PolicyDocumentError(f"is not valid JSON ({exc})") from None
    error = _first_error(Draft202012Validator(SCHEMA).iter_errors(document))
    if error is not None:
        field = _field_of(error)
        raise PolicyDocumentError(_schema_message(error), field or json_path(error.absolute_path) or "$")
    return CallerPolicies(document)


_cache: Dict[str, Any] = {}


def from_env(env: Optional[Mapping[str, str]] = None) -> Optional[CallerPolicies]:
    """The deployment's policies, None without a document; parsed once per distinct setting value."""
    env = os.environ if env is None else env
    raw = (env.get(SETTING) or "").strip()
    if not raw:
        return None
    if raw not in _cache:
        _cache.clear()
        try:
            _cache[raw] = parse(raw if raw.startswith("{") else _read_file(raw))
        except PolicyDocumentError as error:
            _cache[raw] = error
    value = _cache[raw]
    if isinstance(value, PolicyDocumentError):
        raise value
    return value


def _read_file(name: str) -> str:
    path = Path(name) if os.path.isabs(name) else APP_ROOT / name
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise PolicyDocumentError(f"is neither a JSON object nor a readable file ({path}: {exc.strerror})") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise PolicyDocumentError(f"the file {path} is over {MAX_DOCUMENT_BYTES} bytes")
    return raw.decode("utf-8-sig")


# -- who may start at all ----------------------------------------------------------------------------

def may_start(policies: Optional[CallerPolicies], caller_id: Optional[str], roles: frozenset,
              run_role: str, admin_role: str, auth_required: bool) -> Optional[str]:
    """None when the caller may start workflows at all; otherwise why not (403).
    With caller identities on, a caller needs an app role or its own entry under `callers`."""
    if not auth_required:
        return None
    if run_role in roles or admin_role in roles or (policies is not None and policies.listed(caller_id)):
        return None
    listed = f" nor an entry under 'callers' of {SETTING}" if policies is not None else ""
    return f"caller {caller_id} has neither the app role {run_role}{listed}"


# -- what a request may do ---------------------------------------------------------------------------

def _refuse(field: str, value: Any, entry: Entry, *keys: str, what: str = "is not in") -> Refusal:
    rule = entry.at(*keys)
    shown = json.dumps(value) if value is not None else ""
    allowed = entry.allow_list(*keys)
    note = "" if allowed is not None else " (left out: nothing is allowed)"
    return Refusal(f"'{field}' {shown + ' ' if shown else ''}{what} {rule}{note}".replace("  ", " "), field, rule)


def _job_allowed(entry: Entry, job_id: Any, field: str) -> None:
    ids = entry.allow_list("existingJobs", "ids") or ()
    if not isinstance(job_id, int) or job_id not in ids:
        raise _refuse(field, job_id, entry, "existingJobs", "ids")


def check_existing(entry: Entry, body: Mapping[str, Any]) -> None:
    """An existing job, by id or name, BEFORE it is looked up: the answer must not depend on
    whether the job exists."""
    if body.get("jobId") is not None:
        _job_allowed(entry, body["jobId"], "jobId")
        return
    name = body.get("jobName")
    globs = entry.allow_list("existingJobs", "names") or ()
    if not isinstance(name, str) or not any(fnmatch.fnmatchcase(name, g) for g in globs):
        raise _refuse("jobName", name, entry, "existingJobs", "names", what="matches no pattern of")


def _tasks_with_paths(body: Mapping[str, Any]) -> Iterator[Tuple[dict, Dict[str, str]]]:
    """Each task and the request path of its fields (the seed's single-notebook fields included)."""
    if "tasks" in body:
        for i, task in enumerate(body["tasks"]):
            yield task, {k: _path("tasks", i, k) for k in task}
    elif "notebookPath" in body:
        task = jobspec.tasks_of(body)[0]
        yield task, {"notebook_task": "notebookPath", "existing_cluster_id": "existingClusterId",
                     "new_cluster": "newCluster", "libraries": "libraries", "task_key": "taskKey"}


def _check_cluster(entry: Entry, spec: Mapping[str, Any], field: str) -> None:
    policy_id = spec.get("policy_id")
    if policy_id is None or policy_id not in (entry.allow_list("compute", "policyIds") or ()):
        raise _refuse(_path(field, "policy_id"), policy_id, entry, "compute", "policyIds",
                      what="(a new cluster must name a cluster policy) is not in")
    for key in ("instance_pool_id", "driver_instance_pool_id"):
        if spec.get(key) is not None and spec[key] not in (entry.allow_list("compute", "instancePoolIds") or ()):
            raise _refuse(_path(field, key), spec[key], entry, "compute", "instancePoolIds")


def _check_path(entry: Entry, path: Any, field: str, from_git: bool) -> None:
    if from_git:
        return  # a path inside the repository, which gitUrls allowed
    prefixes = entry.allow_list("create", "pathPrefixes") or ()
    if not isinstance(path, str) or not any(path.startswith(p) for p in prefixes):
        raise _refuse(field, path, entry, "create", "pathPrefixes", what="starts with no prefix of")


def check_create(entry: Entry, body: Mapping[str, Any]) -> None:
    """A job to create or a one-time run: what it runs, on which compute, with which libraries."""
    source = jobspec.job_source(body)
    create = entry.value.get("create")
    trigger_field = "jobSource" if source == jobspec.ONE_TIME else ("tasks" if "tasks" in body else "notebookPath")
    if create is None:
        raise Refusal(f"'{trigger_field}' defines a job to run, which {entry.at('create')} does not allow "
                      f"(left out: nothing is allowed)", trigger_field, entry.at("create"))
    if source == jobspec.ONE_TIME and not create.get("oneTime"):
        raise Refusal(f"'jobSource' \"oneTime\" is not allowed by {entry.at('create', 'oneTime')}", "jobSource",
                      entry.at("create", "oneTime"))
    git = body.get("gitSource")
    if git and git.get("git_url") not in (entry.allow_list("create", "gitUrls") or ()):
        raise _refuse("gitSource.git_url", git.get("git_url"), entry, "create", "gitUrls")
    libraries_ok = bool(create.get("libraries"))
    for j, environment in enumerate(body.get("environments") or ()):
        if (environment.get("spec") or {}).get("dependencies") and not libraries_ok:
            field = _path("environments", j, "spec", "dependencies")
            raise Refusal(f"'{field}' installs libraries, which {entry.at('create', 'libraries')} does not allow",
                          field, entry.at("create", "libraries"))
    for j, cluster in enumerate(body.get("jobClusters") or ()):
        _check_cluster(entry, cluster.get("new_cluster") or {}, _path("jobClusters", j, "new_cluster"))
    for task, paths in _tasks_with_paths(body):
        _check_task(entry, task, paths, bool(git), libraries_ok)


def _check_task(entry: Entry, task: Mapping[str, Any], paths: Dict[str, str], has_git: bool,
                libraries_ok: bool) -> None:
    for kind, key in (("notebook_task", "notebook_path"), ("spark_python_task", "python_file")):
        spec = task.get(kind)
        if isinstance(spec, Mapping):
            from_git = spec.get("source") == "GIT" or (spec.get("source") is None and has_git)
            field = paths[kind] if paths[kind] == "notebookPath" else _path(paths[kind], key)
            _check_path(entry, spec.get(key), field, from_git)
    sql = task.get("sql_task")
    if isinstance(sql, Mapping) and isinstance(sql.get("file"), Mapping):
        file = sql["file"]
        from_git = file.get("source") == "GIT" or (file.get("source") is None and has_git)
        _check_path(entry, file.get("path"), _path(paths["sql_task"], "file", "path"), from_git)
    if isinstance(task.get("run_job_task"), Mapping):
        _job_allowed(entry, task["run_job_task"].get("job_id"), _path(paths["run_job_task"], "job_id"))
    if task.get("existing_cluster_id") is not None:
        if task["existing_cluster_id"] not in (entry.allow_list("compute", "clusterIds") or ()):
            raise _refuse(paths["existing_cluster_id"], task["existing_cluster_id"], entry, "compute", "clusterIds")
    if isinstance(task.get("new_cluster"), Mapping):
        _check_cluster(entry, task["new_cluster"], paths["new_cluster"])
    serverless = not any(task.get(k) for k in ("existing_cluster_id", "new_cluster", "job_cluster_key")) and not any(
        k in task for k in ("sql_task", "run_job_task"))
    if serverless and not (entry.value.get("compute") or {}).get("serverless"):
        field = paths.get("task_key", "tasks")
        raise Refusal(f"'{field}' {json.dumps(task.get('task_key'))} runs on serverless compute, which "
                      f"{entry.at('compute', 'serverless')} does not allow", field, entry.at("compute", "serverless"))
    if task.get("libraries") and not libraries_ok:
        raise Refusal(f"'{paths['libraries']}' installs libraries, which {entry.at('create', 'libraries')} does "
                      f"not allow", paths["libraries"], entry.at("create", "libraries"))
    destinations = entry.allow_list("notificationDestinations") or ()
    for event, hooks in (task.get("webhook_notifications") or {}).items():
        for k, hook in enumerate(hooks or ()):
            if isinstance(hook, Mapping) and hook.get("id") not in destinations:
                raise _refuse(_path(paths["webhook_notifications"], event, k, "id"), hook.get("id"), entry,
                              "notificationDestinations")
    if isinstance(sql, Mapping) and isinstance(sql.get("alert"), Mapping):
        for k, sub in enumerate(sql["alert"].get("subscriptions") or ()):
            if isinstance(sub, Mapping) and sub.get("destination_id") is not None \
                    and sub["destination_id"] not in destinations:
                raise _refuse(_path(paths["sql_task"], "alert", "subscriptions", k, "destination_id"),
                              sub["destination_id"], entry, "notificationDestinations")


def _strings(value: Any, parts: List[Any]) -> Iterator[Tuple[List[Any], str]]:
    stack = [(value, parts)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            yield at, item
        elif isinstance(item, Mapping):
            stack.extend((v, at + [k]) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, at + [i]) for i, v in enumerate(item))


def check_secret_scopes(entry: Entry, body: Mapping[str, Any]) -> None:
    scopes = entry.allow_list("secretScopes") or ()
    for parts, text in sorted(_strings(body, []), key=lambda p: [str(x) for x in p[0]]):
        for scope in SECRET_REFERENCE.findall(text):
            if scope not in scopes:
                field = _path(*parts)
                raise Refusal(f"'{field}' refers to the secret scope {json.dumps(scope)}, which is not in "
                              f"{entry.at('secretScopes')}", field, entry.at("secretScopes"))


def check_request(entry: Entry, body: Mapping[str, Any]) -> None:
    """Everything the policy says about one validated request (defaults resolved); Refusal otherwise."""
    if entry.admin:
        return
    ceiling = entry.limit("maxTimeoutSeconds")
    if ceiling is not None and body.get("timeoutSeconds", 0) > ceiling:
        raise Refusal(f"'timeoutSeconds' {body['timeoutSeconds']} is over {entry.at('limits', 'maxTimeoutSeconds')} "
                      f"({ceiling})", "timeoutSeconds", entry.at("limits", "maxTimeoutSeconds"))
    if jobspec.job_source(body) == jobspec.EXISTING:
        check_existing(entry, body)
    else:
        check_create(entry, body)
    check_secret_scopes(entry, body)


def check_rates(entry: Entry, running: int, started_last_minute: Sequence[float], now: float) -> None:
    """The caller's rate limits, from counts of its workflows: 429 + Retry-After naming the limit."""
    limit = entry.limit("concurrentWorkflows")
    if limit is not None and running >= limit:
        raise Refusal(f"{running} workflows of this caller are running; {entry.at('limits', 'concurrentWorkflows')} "
                      f"is {limit}", None, entry.at("limits", "concurrentWorkflows"), status=429,
                      retry_after=DEFAULT_RETRY_AFTER_SECONDS)
    limit = entry.limit("startsPerMinute")
    if limit is not None and len(started_last_minute) >= limit:
        oldest = min(started_last_minute) if started_last_minute else now
        wait = max(1, int(oldest + 60 - now) + 1)
        raise Refusal(f"{len(started_last_minute)} workflows of this caller started in the last minute; "
                      f"{entry.at('limits', 'startsPerMinute')} is {limit}", None,
                      entry.at("limits", "startsPerMinute"), status=429, retry_after=wait)


def saved_job_definition(plan: Mapping[str, Any]) -> Optional[str]:
    """The definition a start would keep a saved job for (its fingerprint), or None when it keeps
    none: an existing job, a one-time run, or a private job (deleted when its workflow ends)."""
    if plan.get("jobSource") != "create" or plan.get("deleteJobOnCompletion") or not plan.get("job"):
        return None
    return jobspec.fingerprint(plan["job"])


def check_saved_jobs(entry: Entry, known: Sequence[str], definition: Optional[str]) -> None:
    """`limits.savedJobs`: a ceiling on the job definitions the app keeps a saved job for on this
    caller's behalf. A definition it already has is always allowed (it reuses that job); a new one
    past the ceiling is refused with 403 naming the limit."""
    limit = entry.limit("savedJobs")
    if limit is None or entry.admin or definition is None or definition in known:
        return
    if len(known) >= limit:
        raise Refusal(f"this caller already has {len(known)} saved job definitions; "
                      f"{entry.at('limits', 'savedJobs')} is {limit}: reuse one of them, or ask for a higher limit",
                      "tasks", entry.at("limits", "savedJobs"), status=403)


def needs_counts(entry: Entry) -> bool:
    return not entry.admin and (entry.limit("concurrentWorkflows") is not None
                                or entry.limit("startsPerMinute") is not None)


# -- what the app adds ---------------------------------------------------------------------------------

def apply_to_plan(entry: Entry, plan: dict) -> dict:
    """The caller's `runAs`, `tags` and `budgetPolicyId` on what the workflow creates: the job settings
    (so callers never share a job by accident: they are part of its fingerprint) or the one-time run."""
    plan = dict(plan)
    run_as, tags, budget = entry.value.get("runAs"), entry.value.get("tags") or {}, entry.value.get("budgetPolicyId")
    if plan.get("job"):
        job = dict(plan["job"])
        if run_as:
            job["run_as"] = {"service_principal_name": run_as}
        if tags:
            job["tags"] = {**(job.get("tags") or {}), **tags}  # the policy's tags win over the caller's
        if budget:
            job["budget_policy_id"] = budget
        plan["job"] = job
    if plan.get("submit"):
        submit = dict(plan["submit"])
        if run_as:
            submit["run_as"] = {"service_principal_name": run_as}
        if budget:
            submit["budget_policy_id"] = budget
        if tags:  # runs/submit takes no job tags: new clusters carry them as custom tags instead
            tasks = []
            for task in submit["tasks"]:
                if isinstance(task.get("new_cluster"), dict):
                    cluster = dict(task["new_cluster"])
                    cluster["custom_tags"] = {**(cluster.get("custom_tags") or {}), **tags}
                    task = {**task, "new_cluster": cluster}
                tasks.append(task)
            submit["tasks"] = tasks
        plan["submit"] = submit
    return plan
