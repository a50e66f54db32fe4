"""Azure Databricks Jobs API client: the only module that speaks HTTP to Databricks.

One pooled `requests.Session`; every call goes through `JobsClient._send`, the one place that sees
each HTTP attempt (method, path, status, attempt number, retry wait, Databricks request id): it logs
it and hands it to the optional `attempt_observer` (the hook for telemetry spans).

Retry policy (urllib3's `Retry` decides, `_send` drives the loop so it sees every attempt):
- which calls: GETs, and the POSTs that are idempotent (run-now and runs/submit with their
  idempotency token, runs/repair with its latest_repair_id, runs/cancel, jobs/delete, jobs/reset,
  jobs/update) are retried on 429, 500, 502, 503, 504, refused or dropped connections and read
  timeouts. jobs/create has no idempotency token, so it is retried only where Databricks cannot
  have acted on it: a 429 (refused before any work) or a connection that was never established.
  Any other 4xx is final.
- how long: `Retry-After` is honoured on 429 and 503 only (RFC 9110 gives it meaning there; a
  gateway's 502 + Retry-After backs off like any 5xx); otherwise exponential backoff (0.5 s x 2^n,
  at most 30 s, plus up to 0.25 s jitter); at most 10 retries, and never past `retry_max_seconds`
  spent retrying one call: a wait that would cross it is not taken, the last answer is reported.
- what is reported: the last HTTP answer as `DatabricksApiError(status, error_code, message)`, or,
  with no answer, `DatabricksApiError(0, "TRANSPORT_ERROR", ...)` whose message is built from the
  exception TYPE, the method, the path (no query) and the attempt count, never the exception text.
  Every message is scrubbed of the token that was sent (`secret_values.scrub`).
A 401 drops the cached token once and repeats the call once."""
from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import InvalidHeader, MaxRetryError, ProtocolError, ResponseError
from urllib3.util.retry import Retry

from . import start_budget
from .credentials import TokenProvider, get_token_provider
from .errors import TRANSPORT_ERROR_CODE, TRANSPORT_ERROR_STATUS, ConfigurationError, CredentialError, DatabricksApiError
from .process_wide import ProcessWide
from .secret_values import clean_secret, scrub, scrubbed_logger
from .settings import Settings, get_settings, validate_host

log = scrubbed_logger(__name__)

USER_AGENT = "durable-databricks-jobs/1.0"
MAX_IDEMPOTENCY_TOKEN_LENGTH = 64
# jobs/list: at most 25 per page in 2.1, 100 in 2.2 ("greater than 0 and less or equal to 100",
# the SDK's list). The lookup of saved jobs always asks through 2.2, whatever version the app is set
# to: a name with 500 leftovers costs 5 pages, not 20.
LIST_PAGE_SIZE = 100
LIST_API_VERSION = "2.2"
# Who the app is (SCIM Me): the creator_user_name of every job it creates.
SCIM_ME_PATH = "/api/2.0/preview/scim/v2/Me"
# jobs/runs/list: "Number of runs to return. Maximum is 25." (the Jobs OpenAPI description in spec/).
RUNS_PAGE_SIZE = 25
# jobs/runs/list `run_type`: SUBMIT_RUN is a one-time run (runs/submit), WORKFLOW_RUN a notebook's
# dbutils.notebook.run.
RUN_TYPES = ("JOB_RUN", "WORKFLOW_RUN", "SUBMIT_RUN")
# Messages are carried into orchestration history; an HTML error page must not flood it.
MAX_ERROR_MESSAGE_CHARS = 2000
REQUEST_ID_HEADER = "x-request-id"

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# POSTs that may be repeated without a second effect (see the module docstring).
IDEMPOTENT_POSTS = frozenset({
    "jobs/run-now", "jobs/runs/submit", "jobs/runs/repair", "jobs/runs/cancel",
    "jobs/delete", "jobs/reset", "jobs/update",
})

# Used when the body carries no error_code (Databricks' own names for these statuses).
_ERROR_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "RESOURCE_CONFLICT",
    429: "TOO_MANY_REQUESTS",
    499: "CANCELLED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class BoundedRetry(Retry):
    """urllib3 `Retry` that also gives up when the next wait would take the time spent retrying
    past `max_elapsed_seconds`, and honours `Retry-After` only on 429 and 503 (urllib3 would also
    honour it on 413, a 4xx that must not be retried, and any status's header would set the wait).
    The wait goes through an injectable `sleep_func`."""

    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    def __init__(self, *args: Any, max_elapsed_seconds: float = 120.0,
                 sleep_func: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 started_at: Optional[float] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # urllib3's is_retry() retries ANY status in RETRY_AFTER_STATUS_CODES that carries a
        # Retry-After, whatever status_forcelist says; keep that within the forcelist, so that a
        # policy without 503 (jobs/create) is not retried on a 503 + Retry-After after all.
        self.RETRY_AFTER_STATUS_CODES = type(self).RETRY_AFTER_STATUS_CODES & frozenset(self.status_forcelist or ())
        self.max_elapsed_seconds = max_elapsed_seconds
        self.sleep_func = sleep_func
        self.clock = clock
        self.started_at = started_at  # time of the first failure of this request
        self.planned_sleep: Optional[float] = None

    def new(self, **kw: Any) -> "BoundedRetry":
        kw.setdefault("max_elapsed_seconds", self.max_elapsed_seconds)
        kw.setdefault("sleep_func", self.sleep_func)
        kw.setdefault("clock", self.clock)
        kw.setdefault("started_at", self.started_at)
        return super().new(**kw)

    def _wait_before_next(self, response: Any) -> float:
        if (response is not None and self.respect_retry_after_header
                and getattr(response, "status", None) in type(self).RETRY_AFTER_STATUS_CODES):
            try:
                retry_after = self.get_retry_after(response)
            except InvalidHeader:
                retry_after = None  # an unparseable Retry-After falls back to the backoff
            if retry_after:
                return retry_after
        return self.get_backoff_time()

    def increment(self, method: Optional[str] = None, url: Optional[str] = None, response: Any = None,
                  error: Optional[Exception] = None, _pool: Any = None, _stacktrace: Any = None) -> "BoundedRetry":
        started_at = self.started_at if self.started_at is not None else self.clock()
        retry = super().increment(method=method, url=url, response=response, error=error,
                                  _pool=_pool, _stacktrace=_stacktrace)
        retry.started_at = started_at
        wait = retry._wait_before_next(response)
        if self.clock() - started_at + wait > self.max_elapsed_seconds:
            reason = error or ResponseError(f"retry time budget of {self.max_elapsed_seconds:g} s exhausted")
            raise MaxRetryError(_pool, url, reason) from reason  # type: ignore[arg-type]
        retry.planned_sleep = wait
        return retry

    def sleep(self, response: Any = None) -> None:
        wait = self.planned_sleep if self.planned_sleep is not None else self._wait_before_next(response)
        if wait > 0:
            self.sleep_func(wait)


def _retry(*, allowed_methods: Iterable[str], status_forcelist: Iterable[int], read: Optional[int],
           max_elapsed_seconds: float, sleep_func: Callable[[float], None], clock: Callable[[], float]) -> BoundedRetry:
    return BoundedRetry(
        total=10,
        read=read,
        other=0,  # e.g. TLS certificate failures: retrying will not fix them
        redirect=0,
        allowed_methods=frozenset(allowed_methods),
        status_forcelist=frozenset(status_forcelist),
        backoff_factor=0.5,
        backoff_max=30.0,
        backoff_jitter=0.25,
        retry_after_max=int(max_elapsed_seconds) + 1,
        raise_on_status=False,
        max_elapsed_seconds=max_elapsed_seconds,
        sleep_func=sleep_func,
        clock=clock,
    )


@dataclass(frozen=True)
class HttpAttempt:
    """One HTTP attempt as `_send` saw it: what telemetry records."""

    method: str
    path: str  # API path without query, e.g. "jobs/runs/get"
    attempt: int  # 1-based within one call
    status: Optional[int]  # None: no HTTP answer
    error_type: Optional[str]  # transport failure type, e.g. "ConnectionError (ProtocolError)"
    retry_wait: Optional[float]  # seconds until the next attempt; None when this was the last
    request_id: Optional[str]  # Databricks' x-request-id
    elapsed_seconds: float
    error_code: Optional[str] = None  # Databricks' error_code of an error answer (status >= 400)


class _Exchange(NamedTuple):
    response: requests.Response
    attempts: int
    secrets: Tuple[str, ...]  # header values sent, scrubbed from any message


def parse_error_body(status: int, body: str, reason: str = "") -> Tuple[str, str, Optional[str]]:
    """(error_code, message, request_id) from a Databricks error response body.

    Handles the documented shapes: `{"error_code", "message", "details"}` (error_code sometimes an
    integer status), legacy `{"error": ...}`, plain text `ERROR_CODE: message`, and HTML pages."""
    default_code = _ERROR_CODE_BY_STATUS.get(status, "UNKNOWN")
    text = (body or "").strip()
    if not text:
        return default_code, reason or "empty response", None
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        code = payload.get("error_code")
        code = code if isinstance(code, str) and code else default_code
        message = payload.get("message") or payload.get("error") or reason or text
        request_id = None
        for detail in payload.get("details") or ():
            if isinstance(detail, dict) and detail.get("request_id"):
                request_id = str(detail["request_id"])
                break
        return code, _clip(str(message)), request_id
    match = re.match(r"([A-Z][A-Z_]+): (.*)", text, re.DOTALL)
    if match:
        return match.group(1), _clip(match.group(2).strip()), None
    for pattern in (r"<pre>(.*?)</pre>", r"<title>(.*?)</title>"):
        match = re.search(pattern, text, re.DOTALL | re.IGNORECASE)
        if match and match.group(1).strip():
            return default_code, _clip(html.unescape(match.group(1).strip())), None
    return default_code, _clip(text), None


def _clip(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[:MAX_ERROR_MESSAGE_CHARS] + "..."


def api_error_from_response(response: requests.Response, secrets: Iterable[str] = ()) -> DatabricksApiError:
    """The DatabricksApiError for an error answer, its message scrubbed of `secrets`."""
    code, message, request_id = parse_error_body(response.status_code, response.text, response.reason or "")
    return DatabricksApiError(response.status_code, code, scrub(message, secrets),
                              request_id or response.headers.get(REQUEST_ID_HEADER))


def newest_repair_id(run: Mapping[str, Any]) -> Optional[int]:
    """The id of the newest repair in a run fetched with `include_history=True` (None: never
    repaired): what the next `repair_run` must pass as `latest_repair_id`."""
    ids = [item.get("id") for item in run.get("repair_history") or ()
           if item.get("type") == "REPAIR" and item.get("id") is not None]
    return int(ids[-1]) if ids else None


def _transport_cause(exc: requests.RequestException) -> Exception:
    """The urllib3 error behind a requests exception, for Retry to classify (connect, read, other)."""
    for arg in exc.args:
        if isinstance(arg, MaxRetryError) and isinstance(arg.reason, Exception):
            return arg.reason
        if isinstance(arg, Urllib3HTTPError):
            return arg
        if isinstance(arg, OSError):
            return ProtocolError("connection failed")  # sent, answer lost: a read error
    return exc  # neither connect nor read: Retry counts it as "other" and does not retry


# requests' refusals to send a request it considers malformed (before any network traffic).
_LOCAL_REFUSALS = (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
                   requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)


def _local_refusal(exc: Exception) -> Exception:
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return CredentialError("DATABRICKS_AUTH", "requests refused a header built from the credentials "
                                                  "(InvalidHeader); the value is not shown")
    return ConfigurationError("DATABRICKS_HOST", f"requests refused the request URL ({type(exc).__name__})")


def _error_type(exc: BaseException, cause: BaseException) -> str:
    return type(exc).__name__ if cause is exc else f"{type(exc).__name__} ({type(cause).__name__})"


def _query(params: Mapping[str, Any]) -> Dict[str, Any]:
    # requests would send True as "True"; the Jobs API reads "true".
    return {k: (("true" if v else "false") if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


def _clean_header_value(value: str) -> Optional[str]:
    try:
        return clean_secret("DATABRICKS_AUTH", value)
    except ConfigurationError:
        return None


def _check_idempotency_token(token: str) -> None:
    if not isinstance(token, str) or not token or len(token) > MAX_IDEMPOTENCY_TOKEN_LENGTH:
        raise ValueError(f"idempotency_token must be 1..{MAX_IDEMPOTENCY_TOKEN_LENGTH} characters")


class JobsClient:
    """The Jobs API operations the app needs, over one pooled session (retry policy: module docstring).

    Errors: `DatabricksApiError` (Databricks answered, or nobody did: status 0), `CredentialError` /
    `ConfigurationError` from the token provider, `ValueError` for a caller's invalid arguments."""

    def __init__(
        self,
        host: str,
        token_provider: TokenProvider,
        *,
        api_version: str = "2.1",
        timeout_seconds: float = 30.0,
        retry_max_seconds: float = 120.0,
        pool_maxsize: int = 32,
        sleep_func: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        attempt_observer: Optional[Callable[[HttpAttempt], None]] = None,
    ):
        self.host = validate_host(host)
        self.api_version = api_version
        self.api_url = f"{self.host}/api/{api_version}"
        self._tokens = token_provider
        self._timeout = timeout_seconds
        self._observer = attempt_observer
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.trust_env = False  # no .netrc credentials or proxy variables leaking in
        # The adapter makes one attempt (requests' default Retry(0, read=False)); _send retries.
        self._session.mount(self.host + "/api/", HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize))

        def policy(**kwargs: Any) -> BoundedRetry:
            return _retry(max_elapsed_seconds=retry_max_seconds, sleep_func=sleep_func, clock=clock, **kwargs)

        self._read_policy = policy(allowed_methods={"GET"}, status_forcelist=TRANSIENT_STATUSES, read=None)
        self._idempotent_policy = policy(allowed_methods={"GET", "POST"}, status_forcelist=TRANSIENT_STATUSES, read=None)
        # A 429 is a refusal before any work; a read error or 5xx may follow a created job.
        self._create_policy = policy(allowed_methods={"POST"}, status_forcelist={429}, read=0)

    @classmethod
    def from_settings(cls, settings: Settings, token_provider: TokenProvider, **kwargs: Any) -> "JobsClient":
        return cls(settings.host, token_provider, api_version=settings.jobs_api_version,
                   timeout_seconds=settings.http_timeout_seconds,
                   retry_max_seconds=settings.retry_max_seconds, **kwargs)

    def close(self) -> None:
        self._session.close()

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, job_settings: Mapping[str, Any]) -> int:
        """POST jobs/create; the new job id. Not idempotent (no token exists): retried only on 429
        and unestablished connections; callers look for the job first (`find_jobs`)."""
        return int(self._call("POST", "jobs/create", body=dict(job_settings))["job_id"])

    def get_job(self, job_id: int) -> Dict[str, Any]:
        """GET jobs/get; with 2.2, follows `next_page_token` and merges the paged settings arrays."""
        return _merged(self._pages("jobs/get", {"job_id": int(job_id)}),
                       ("tasks", "job_clusters", "parameters", "environments"), section="settings")

    def find_jobs_by_name(self, name: str) -> List[Dict[str, Any]]:
        """Jobs whose name is exactly `name` (Databricks matches case-insensitively), all pages."""
        return self.find_jobs(name)

    def find_jobs(self, name: str, *, tag: Optional[Tuple[str, str]] = None,
                  expand_tasks: bool = False) -> List[Dict[str, Any]]:
        """Jobs named exactly `name` (all pages of jobs/list?name=, 100 a page), and when
        `tag=(key, value)` is given, only those whose settings carry that tag: how an at-least-once
        caller finds the job an earlier attempt created. Each job as listed: `job_id`,
        `created_time`, `creator_user_name`, `settings`; with `expand_tasks`, its whole settings
        (a job with more than 100 tasks, jobs, job clusters or environments is read whole with jobs/get)."""
        jobs: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"name": name, "limit": LIST_PAGE_SIZE}
        if expand_tasks:
            params["expand_tasks"] = "true"
        for page in self._pages("jobs/list", params, version=LIST_API_VERSION):
            for job in page.get("jobs") or ():
                settings = job.get("settings") or {}
                if settings.get("name") != name:
                    continue
                if tag is not None and (settings.get("tags") or {}).get(tag[0]) != tag[1]:
                    continue
                if expand_tasks and job.get("has_more"):
                    # jobs/list shows the first 100 elements of each array; jobs/get pages the rest.
                    job = {**job, **self.get_job(int(job["job_id"]))}
                    job.pop("has_more", None)
                jobs.append(job)
        return jobs

    def current_user_name(self) -> str:
        """The app's own identity in the workspace (SCIM Me `userName`; for a service principal, its
        application id): what Databricks records as `creator_user_name` of the jobs it creates."""
        me = self._call("GET", SCIM_ME_PATH)
        name = me.get("userName")
        if not isinstance(name, str) or not name:
            raise DatabricksApiError(200, "INVALID_RESPONSE", f"GET {SCIM_ME_PATH} returned no userName")
        return name

    def reset_job(self, job_id: int, settings: Mapping[str, Any]) -> None:
        """POST jobs/reset: `settings` replace all of the job's settings. Idempotent (retried)."""
        self._call("POST", "jobs/reset", body={"job_id": int(job_id), "new_settings": dict(settings)})

    def update_job(self, job_id: int, new_settings: Mapping[str, Any], fields_to_remove: Sequence[str] = ()) -> None:
        """POST jobs/update: top-level fields of `new_settings` replace the job's (arrays such as
        tasks are merged by key by Databricks); `fields_to_remove` are removed. Idempotent (retried)."""
        body: Dict[str, Any] = {"job_id": int(job_id), "new_settings": dict(new_settings)}
        if fields_to_remove:
            body["fields_to_remove"] = list(fields_to_remove)
        self._call("POST", "jobs/update", body=body)

    def delete_job(self, job_id: int) -> None:
        """POST jobs/delete. A repeat after success is refused with 400 "does not exist" (callers
        treat that as done)."""
        self._call("POST", "jobs/delete", body={"job_id": int(job_id)})

    # -- runs -------------------------------------------------------------------------------

    def run_now(self, job_id: int, idempotency_token: str, notebook_params: Optional[Mapping[str, str]] = None, *,
                job_parameters: Optional[Mapping[str, str]] = None, queue: Optional[bool] = None,
                only: Optional[Sequence[str]] = None) -> int:
        """POST jobs/run-now; the run id. The same token always returns the same run, so the call
        is retried. `notebook_params` (legacy, per notebook widget) and `job_parameters` (job-level
        parameters) cannot be combined (ValueError); `queue` sets queue.enabled for this run;
        `only` runs just those task keys."""
        _check_idempotency_token(idempotency_token)
        if notebook_params and job_parameters:
            raise ValueError("notebook_params and job_parameters cannot be used together; use job_parameters")
        body: Dict[str, Any] = {"job_id": int(job_id), "idempotency_token": idempotency_token}
        if notebook_params:
            body["notebook_params"] = dict(notebook_params)
        if job_parameters:
            body["job_parameters"] = dict(job_parameters)
        if queue is not None:
            body["queue"] = {"enabled": bool(queue)}
        if only:
            body["only"] = list(only)
        return int(self._call("POST", "jobs/run-now", body=body)["run_id"])

    def submit_run(self, body: Mapping[str, Any], idempotency_token: str) -> int:
        """POST jobs/runs/submit (a one-time run, no saved job); the run id. `body` is the request
        (run_name, tasks, ...); the token makes it idempotent like run-now, so it is retried."""
        _check_idempotency_token(idempotency_token)
        request = dict(body)
        if request.get("idempotency_token") not in (None, idempotency_token):
            raise ValueError("body carries a different idempotency_token")
        request["idempotency_token"] = idempotency_token
        return int(self._call("POST", "jobs/runs/submit", body=request)["run_id"])

    def repair_run(self, run_id: int, *, latest_repair_id: Optional[int] = None, rerun_all_failed_tasks: bool = True,
                   rerun_tasks: Optional[Sequence[str]] = None,
                   job_parameters: Optional[Mapping[str, str]] = None) -> int:
        """POST jobs/runs/repair for a job run that has ended; the repair id (pass it as
        `latest_repair_id` to the next repair of the same run). `rerun_tasks`, when given, replaces
        `rerun_all_failed_tasks` (Databricks accepts one of the two).

        Safe to retry: `latest_repair_id` acts as the repair's idempotency key. Once a repair went
        through, Databricks refuses a repeat with the same `latest_repair_id` with a 4xx (400
        INVALID_PARAMETER_VALUE: "The latest repair ID needs to be provided..." or a stale id; the
        run being in progress again is refused too). The client does not rely on the code or text:
        on a 400 or 409 it reads the run's repair history (runs/get include_history=true) and,
        when the newest repair is not `latest_repair_id`, returns that repair's id, so a repeat (a
        lost reply retried here, or the caller's activity running twice) yields the same repair.
        Otherwise the refusal is raised as `DatabricksApiError`. A caller doing this itself
        compares `newest_repair_id(client.get_run(run_id, include_history=True))` with what it sent."""
        body: Dict[str, Any] = {"run_id": int(run_id)}
        if latest_repair_id is not None:
            body["latest_repair_id"] = int(latest_repair_id)
        if rerun_tasks:
            body["rerun_tasks"] = list(rerun_tasks)
        else:
            body["rerun_all_failed_tasks"] = bool(rerun_all_failed_tasks)
        if job_parameters:
            body["job_parameters"] = dict(job_parameters)
        exchange = self._exchange("POST", "jobs/runs/repair", None, body)
        if exchange.response.status_code in (400, 409):
            try:
                newest = newest_repair_id(self.get_run(run_id, include_history=True))
            except DatabricksApiError:
                newest = None  # cannot tell: report Databricks' refusal below
            if newest is not None and newest != latest_repair_id:
                log.info("repair of run %s already went through as repair %s (Databricks refused the repeat with %s)",
                         run_id, newest, exchange.response.status_code)
                return newest
        return int(self._payload("POST", "jobs/runs/repair", exchange)["repair_id"])

    def get_run(self, run_id: int, *, include_history: bool = False) -> Dict[str, Any]:
        """GET jobs/runs/get (with `repair_history` when `include_history`); with 2.2, follows
        `next_page_token` and merges the paged arrays, so every task appears once."""
        params: Dict[str, Any] = {"run_id": int(run_id)}
        if include_history:
            params["include_history"] = True
        return _merged(self._pages("jobs/runs/get", params),
                       ("tasks", "iterations", "job_clusters", "job_parameters", "repair_history"))

    def get_run_output(self, run_id: int) -> Dict[str, Any]:
        """GET jobs/runs/get-output for a TASK run id (a job run id is refused with 400)."""
        return self._call("GET", "jobs/runs/get-output", params={"run_id": int(run_id)})

    def list_runs(self, *, active_only: bool = False, completed_only: bool = False, job_id: Optional[int] = None,
                  run_type: Optional[str] = None, expand_tasks: bool = False,
                  start_time_from_ms: Optional[int] = None,
                  limit: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Runs from GET jobs/runs/list, newest first, across all pages (page_token), 2.1 and 2.2.

        `active_only`: QUEUED, PENDING, RUNNING, TERMINATING runs only (not BLOCKED or
        WAITING_FOR_RETRY); `completed_only`: ended runs only (both: ValueError); `job_id`: one job's
        runs; `run_type`: JOB_RUN, WORKFLOW_RUN or SUBMIT_RUN (one-time runs) only; `expand_tasks`: include tasks (the first 100 per run); `start_time_from_ms`: runs
        started at or after this epoch-milliseconds time; `limit`: stop after this many runs in
        total (None: all). Pages are fetched lazily, 25 runs each."""
        for page in self.list_runs_pages(active_only=active_only, completed_only=completed_only, job_id=job_id,
                                         run_type=run_type, expand_tasks=expand_tasks, start_time_from_ms=start_time_from_ms,
                                         limit=limit):
            yield from page

    def list_runs_pages(self, *, active_only: bool = False, completed_only: bool = False,
                        job_id: Optional[int] = None, run_type: Optional[str] = None, expand_tasks: bool = False,
                        start_time_from_ms: Optional[int] = None,
                        limit: Optional[int] = None) -> Iterator[List[Dict[str, Any]]]:
        """`list_runs` one page (one HTTP call) at a time: each item is that page's runs. Without
        `job_id`, the runs of every job the caller may see and one-time runs, workspace-wide."""
        if active_only and completed_only:
            raise ValueError("active_only and completed_only cannot both be true")
        if run_type is not None and run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {', '.join(RUN_TYPES)} (None: every type)")
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (None: all runs)")
        params: Dict[str, Any] = {
            "limit": min(RUNS_PAGE_SIZE, limit) if limit else RUNS_PAGE_SIZE,
            "active_only": active_only or None, "completed_only": completed_only or None,
            "job_id": int(job_id) if job_id is not None else None, "run_type": run_type,
            "expand_tasks": expand_tasks or None,
            "start_time_from": int(start_time_from_ms) if start_time_from_ms is not None else None,
        }
        remaining = limit
        for page in self._pages("jobs/runs/list", _query(params)):
            runs = list(page.get("runs") or ())
            if remaining is not None:
                runs = runs[:remaining]
                remaining -= len(runs)
            yield runs
            if remaining == 0:
                return

    def list_runs_page(self, *, active_only: bool = False, job_id: Optional[int] = None,
                       run_type: Optional[str] = None,
                       page_token: Optional[str] = None) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """One page of GET jobs/runs/list (one call): (its runs, the next page's token; None on the
        last page). For a caller that decides page by page whether the next is worth its call."""
        if run_type is not None and run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {', '.join(RUN_TYPES)} (None: every type)")
        params = _query({"limit": RUNS_PAGE_SIZE, "active_only": active_only or None,
                         "job_id": int(job_id) if job_id is not None else None, "run_type": run_type,
                         "page_token": page_token})
        page = self._call("GET", "jobs/runs/list", params=params)
        token = page.get("next_page_token") or None
        return list(page.get("runs") or ()), (token if token != page_token else None)

    def cancel_run(self, run_id: int) -> None:
        """POST jobs/runs/cancel; Databricks cancels asynchronously. Idempotent (retried)."""
        self._call("POST", "jobs/runs/cancel", body={"run_id": int(run_id)})

    # -- transport ----------------------------------------------------------------------------

    def _pages(self, path: str, params: Dict[str, Any], *, version: Optional[str] = None) -> Iterator[Dict[str, Any]]:
        seen_tokens = set()
        while True:
            page = self._call("GET", path, params=params, version=version)
            yield page
            token = page.get("next_page_token")
            if not token or token in seen_tokens:  # a repeated token would loop forever
                return
            seen_tokens.add(token)
            params = {**params, "page_token": token}

    def _call(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
              body: Optional[Mapping[str, Any]] = None, version: Optional[str] = None) -> Dict[str, Any]:
        return self._payload(method, path, self._exchange(method, path, params, body, version))

    def _exchange(self, method: str, path: str, params: Optional[Mapping[str, Any]],
                  body: Optional[Mapping[str, Any]], version: Optional[str] = None) -> _Exchange:
        exchange = self._send(method, path, params, body, version)
        if exchange.response.status_code == 401:
            # The token may have been revoked or rotated: fetch a fresh one and try once more.
            self._tokens.invalidate()
            exchange = self._send(method, path, params, body, version)
        return exchange

    def _payload(self, method: str, path: str, exchange: _Exchange) -> Dict[str, Any]:
        response = exchange.response
        if not 200 <= response.status_code < 300:
            raise api_error_from_response(response, exchange.secrets)
        if not response.content:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise DatabricksApiError(response.status_code, "INVALID_RESPONSE",
                                     f"{method} {path} returned a body that is not a JSON object")
        return payload

    def _retry_policy(self, method: str, path: str) -> BoundedRetry:
        if method == "GET":
            return self._read_policy
        if path in IDEMPOTENT_POSTS:
            return self._idempotent_policy
        return self._create_policy  # jobs/create, and any POST not known to be idempotent

    def _auth_headers(self) -> Tuple[Dict[str, str], Tuple[str, ...]]:
        """Authorization and the provider's extra headers, and their values (to scrub from text).
        Values are checked here too, so a provider that returns a value with a newline (which
        `requests` would quote back in an InvalidHeader error) fails without showing it."""
        values = {"Authorization": self._tokens.token(), **self._tokens.extra_headers()}
        checked = {name: _clean_header_value(value) for name, value in values.items()}
        if not all(checked.values()):
            raise CredentialError("DATABRICKS_AUTH", "the token provider returned an empty header value, or one with "
                                                     "whitespace or control characters inside it (not shown)")
        secrets = tuple(checked.values())
        checked["Authorization"] = "Bearer " + checked["Authorization"]
        return checked, secrets

    def _send(self, method: str, path: str, params: Optional[Mapping[str, Any]],
              body: Optional[Mapping[str, Any]], version: Optional[str] = None) -> _Exchange:
        """Every HTTP attempt of one call, with the retry policy for (method, path); the one place
        that sees each attempt (logged at DEBUG, retries at INFO, and given to `attempt_observer`)."""
        retry = self._retry_policy(method, path)
        # `path` is under the Jobs API of the app's version, of `version`, or absolute (/api/...).
        url = (f"{self.host}{path}" if path.startswith("/") else
               f"{self.host}/api/{version}/{path}" if version else f"{self.api_url}/{path}")
        attempt = 0
        while True:
            attempt += 1
            start_budget.pace(self.host, path)  # the workers' shared budget for jobs/list, jobs/create
            headers, secrets = self._auth_headers()
            response: Optional[requests.Response] = None
            cause: Optional[Exception] = None
            error_type: Optional[str] = None
            started = time.perf_counter()
            refusal: Optional[Exception] = None
            try:
                response = self._session.request(
                    method, url, params=_query(params or {}), json=body, headers=headers,
                    timeout=self._timeout, allow_redirects=False,  # a redirect would mean a login page, not the API
                )
            except _LOCAL_REFUSALS as exc:
                # requests refused to send at all: retrying cannot help, and the text quotes the value.
                refusal = _local_refusal(exc)
            except requests.RequestException as exc:
                # Only the exception's TYPE is kept: its text may quote headers or URLs.
                cause = _transport_cause(exc)
                error_type = _error_type(exc, cause)
            if refusal is not None:
                raise refusal  # outside the except block: nothing chains the third-party text
            elapsed = time.perf_counter() - started

            status = response.status_code if response is not None else None
            next_retry: Optional[BoundedRetry] = None
            if response is None or retry.is_retry(method, response.status_code,
                                                  has_retry_after="Retry-After" in response.headers):
                try:
                    next_retry = retry.increment(method, url, response=response.raw if response is not None else None,
                                                 error=cause)
                except (MaxRetryError, Urllib3HTTPError):  # exhausted, out of time, or not retryable
                    next_retry = None
            request_id = response.headers.get(REQUEST_ID_HEADER) if response is not None else None
            error_code = (parse_error_body(response.status_code, response.text, response.reason or "")[0]
                          if response is not None and response.status_code >= 400 else None)
            self._observe(HttpAttempt(method, path, attempt, status, error_type,
                                      next_retry.planned_sleep if next_retry is not None else None,
                                      request_id, elapsed, error_code))
            if next_retry is None:
                if response is None:
                    raise DatabricksApiError(
                        TRANSPORT_ERROR_STATUS, TRANSPORT_ERROR_CODE,
                        f"{method} {path} failed after {attempt} attempt{'s' if attempt > 1 else ''}: {error_type}")
                return _Exchange(response, attempt, secrets)
            retry = next_retry
            retry.sleep()

    def _observe(self, attempt: HttpAttempt) -> None:
        outcome = attempt.status if attempt.status is not None else attempt.error_type
        if attempt.retry_wait is not None:
            log.info("Databricks %s %s -> %s in %.1f ms (attempt %d, request id %s); retrying in %.2f s",
                     attempt.method, attempt.path, outcome, attempt.elapsed_seconds * 1000, attempt.attempt,
                     attempt.request_id, attempt.retry_wait)
        else:
            log.debug("Databricks %s %s -> %s in %.1f ms (attempt %d, request id %s)", attempt.method, attempt.path,
                      outcome, attempt.elapsed_seconds * 1000, attempt.attempt, attempt.request_id)
        if self._observer is not None:
            try:
                self._observer(attempt)
            except Exception as exc:  # telemetry must never break a call
                log.warning("attempt observer failed: %s", type(exc).__name__)


def _merged(pages: Iterator[Dict[str, Any]], keys: Iterable[str], section: Optional[str] = None) -> Dict[str, Any]:
    """The first page with the arrays `keys` of later pages appended (2.2 pages them at 100),
    under `section` of the object when given; paging fields removed."""
    first = next(pages)
    target = first.setdefault(section, {}) if section else first
    for page in pages:
        source = (page.get(section) or {}) if section else page
        for key in keys:
            if source.get(key):
                target.setdefault(key, []).extend(source[key])
    for key in ("next_page_token", "prev_page_token", "has_more"):
        first.pop(key, None)
    return first


def build_jobs_client(**kwargs: Any) -> JobsClient:
    """A client from the settings and the process-wide token provider that reports every HTTP
    attempt to telemetry (a span and metrics; no-ops unless telemetry is configured). `kwargs` go
    to JobsClient (tests: sleep_func, clock)."""
    from telemetry.jobs_api import attempt_observer

    settings = get_settings()
    return JobsClient.from_settings(settings, get_token_provider(),
                                    attempt_observer=attempt_observer(settings.host, settings.jobs_api_version),
                                    **kwargs)


_client: ProcessWide[JobsClient] = ProcessWide(build_jobs_client, close=JobsClient.close)


def get_jobs_client() -> JobsClient:
    """The process-wide client built from the settings and the process-wide token provider."""
    return _client.get()


def reset_jobs_client() -> None:
    """Close and forget the process-wide client (tests)."""
    _client.reset()
