"""Azure Databricks Jobs API client: the only module that speaks HTTP to Databricks.

One pooled `requests.Session`. Transport retries are urllib3's `Retry` on the session's adapters:
- 429 and 503 wait for `Retry-After`; other 5xx, connection errors and read timeouts back off
  exponentially with jitter; the time spent retrying one call is bounded;
- GETs, and the POSTs that are idempotent (run-now with its idempotency token, runs/cancel, delete),
  are retried; jobs/create has no idempotency token, so it is retried only when Databricks cannot
  have acted on it (connection not established, 429);
- any other 4xx is final.
A 401 drops the cached token once and repeats the call once."""
from __future__ import annotations

import html
import json
import logging
import re
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from .credentials import TokenProvider, get_token_provider
from .errors import TRANSPORT_ERROR_CODE, TRANSPORT_ERROR_STATUS, DatabricksApiError
from .process_wide import ProcessWide
from .settings import Settings, get_settings, validate_host

log = logging.getLogger(__name__)

USER_AGENT = "durable-databricks-jobs/1.0"
MAX_IDEMPOTENCY_TOKEN_LENGTH = 64
# jobs/list accepts up to 25 per page in 2.1 (100 in 2.2); 25 is valid for both.
LIST_PAGE_SIZE = 25
# Messages are carried into orchestration history; an HTML error page must not flood it.
MAX_ERROR_MESSAGE_CHARS = 2000

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

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
    past `max_elapsed_seconds`, and honours `Retry-After` only on 429 and 503 (urllib3 adds 413,
    a 4xx that must not be retried). The wait goes through an injectable `sleep_func`."""

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
        if response is not None and self.respect_retry_after_header:
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
        raise_on_status=False,  # hand back the last response, so its error body is reported
        max_elapsed_seconds=max_elapsed_seconds,
        sleep_func=sleep_func,
        clock=clock,
    )


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


def api_error_from_response(response: requests.Response) -> DatabricksApiError:
    code, message, request_id = parse_error_body(response.status_code, response.text, response.reason or "")
    return DatabricksApiError(response.status_code, code, message, request_id)


class JobsClient:
    """The Jobs API operations the workflow needs, over one pooled session."""

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
    ):
        self.host = validate_host(host)
        self.api_version = api_version
        self.api_url = f"{self.host}/api/{api_version}"
        self._tokens = token_provider
        self._timeout = timeout_seconds
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.trust_env = False  # no .netrc credentials or proxy variables leaking in

        def adapter(**policy: Any) -> HTTPAdapter:
            retry = _retry(max_elapsed_seconds=retry_max_seconds, sleep_func=sleep_func, clock=clock, **policy)
            return HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)

        # requests picks the adapter with the longest matching URL prefix, so each path gets its policy.
        self._session.mount(self.api_url + "/", adapter(
            allowed_methods={"GET"}, status_forcelist=TRANSIENT_STATUSES, read=None))
        idempotent_post = adapter(
            allowed_methods={"GET", "POST"}, status_forcelist=TRANSIENT_STATUSES, read=None)
        for path in ("jobs/run-now", "jobs/runs/cancel", "jobs/delete"):
            self._session.mount(f"{self.api_url}/{path}", idempotent_post)
        # A 429 is a refusal before any work; a read error or 5xx may follow a created job.
        self._session.mount(f"{self.api_url}/jobs/create", adapter(
            allowed_methods={"POST"}, status_forcelist={429}, read=0))

    @classmethod
    def from_settings(cls, settings: Settings, token_provider: TokenProvider, **kwargs: Any) -> "JobsClient":
        return cls(settings.host, token_provider, api_version=settings.jobs_api_version,
                   timeout_seconds=settings.http_timeout_seconds,
                   retry_max_seconds=settings.retry_max_seconds, **kwargs)

    def close(self) -> None:
        self._session.close()

    # -- operations -------------------------------------------------------------------------

    def create_job(self, job_settings: Mapping[str, Any]) -> int:
        """POST jobs/create; the new job id. Not idempotent: callers look for the job first."""
        return int(self._call("POST", "jobs/create", body=dict(job_settings))["job_id"])

    def find_jobs_by_name(self, name: str) -> List[Dict[str, Any]]:
        """Jobs whose name is exactly `name` (Databricks matches case-insensitively), all pages."""
        jobs: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"name": name, "limit": LIST_PAGE_SIZE}
        for page in self._pages("jobs/list", params):
            jobs.extend(j for j in page.get("jobs") or () if (j.get("settings") or {}).get("name") == name)
        return jobs

    def get_job(self, job_id: int) -> Dict[str, Any]:
        """GET jobs/get; with 2.2, follows `next_page_token` and merges the paged settings arrays."""
        return _merged(self._pages("jobs/get", {"job_id": int(job_id)}),
                       ("tasks", "job_clusters", "parameters", "environments"), section="settings")

    def run_now(self, job_id: int, idempotency_token: str,
                notebook_params: Optional[Mapping[str, str]] = None) -> int:
        """POST jobs/run-now; the run id. The same token always returns the same run."""
        if not idempotency_token or len(idempotency_token) > MAX_IDEMPOTENCY_TOKEN_LENGTH:
            raise ValueError(f"idempotency_token must be 1..{MAX_IDEMPOTENCY_TOKEN_LENGTH} characters")
        body: Dict[str, Any] = {"job_id": int(job_id), "idempotency_token": idempotency_token}
        if notebook_params:
            body["notebook_params"] = dict(notebook_params)
        return int(self._call("POST", "jobs/run-now", body=body)["run_id"])

    def get_run(self, run_id: int) -> Dict[str, Any]:
        """GET jobs/runs/get; with 2.2, follows `next_page_token` and merges the paged arrays."""
        return _merged(self._pages("jobs/runs/get", {"run_id": int(run_id)}),
                       ("tasks", "iterations", "job_clusters", "job_parameters", "repair_history"))

    def get_run_output(self, run_id: int) -> Dict[str, Any]:
        """GET jobs/runs/get-output for a TASK run id (a job run id is refused with 400)."""
        return self._call("GET", "jobs/runs/get-output", params={"run_id": int(run_id)})

    def cancel_run(self, run_id: int) -> None:
        """POST jobs/runs/cancel; Databricks cancels asynchronously."""
        self._call("POST", "jobs/runs/cancel", body={"run_id": int(run_id)})

    def delete_job(self, job_id: int) -> None:
        self._call("POST", "jobs/delete", body={"job_id": int(job_id)})

    # -- transport ----------------------------------------------------------------------------

    def _pages(self, path: str, params: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        seen_tokens = set()
        while True:
            page = self._call("GET", path, params=params)
            yield page
            token = page.get("next_page_token")
            if not token or token in seen_tokens:  # a repeated token would loop forever
                return
            seen_tokens.add(token)
            params = {**params, "page_token": token}

    def _call(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
              body: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        response = self._send(method, path, params, body)
        if response.status_code == 401:
            # The token may have been revoked or rotated: fetch a fresh one and try once more.
            self._tokens.invalidate()
            response = self._send(method, path, params, body)
        if not 200 <= response.status_code < 300:
            raise api_error_from_response(response)
        if not response.content:
            return {}
        try:
            payload = response.json()
        except ValueError:
            raise DatabricksApiError(response.status_code, "INVALID_RESPONSE",
                                     f"{method} {path} returned a body that is not JSON") from None
        if not isinstance(payload, dict):
            raise DatabricksApiError(response.status_code, "INVALID_RESPONSE",
                                     f"{method} {path} returned JSON that is not an object")
        return payload

    def _send(self, method: str, path: str, params: Optional[Mapping[str, Any]],
              body: Optional[Mapping[str, Any]]) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._tokens.token()}", **self._tokens.extra_headers()}
        started = time.perf_counter()
        try:
            response = self._session.request(
                method, f"{self.api_url}/{path}", params=params, json=body, headers=headers,
                timeout=self._timeout, allow_redirects=False,  # a redirect would mean a login page, not the API
            )
        except requests.RequestException as exc:
            raise DatabricksApiError(TRANSPORT_ERROR_STATUS, TRANSPORT_ERROR_CODE,
                                     _clip(f"{method} {path} failed: {exc}")) from exc
        log.debug("Databricks %s %s -> %s in %.1f ms", method, path, response.status_code,
                  (time.perf_counter() - started) * 1000)
        return response


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


_client: ProcessWide[JobsClient] = ProcessWide(
    lambda: JobsClient.from_settings(get_settings(), get_token_provider()), close=JobsClient.close)


def get_jobs_client() -> JobsClient:
    """The process-wide client built from the settings and the process-wide token provider."""
    return _client.get()


def reset_jobs_client() -> None:
    """Close and forget the process-wide client (tests)."""
    _client.reset()
