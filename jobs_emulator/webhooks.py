"""Job webhook notifications as Databricks sends them: a JSON POST with HTTP Basic auth."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

# No proxies: deliveries go to the URL as given (usually loopback), whatever *_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Destination:
    """A notification destination of type generic webhook."""

    url: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def coerce(cls, value) -> "Destination":
        if isinstance(value, Destination):
            return value
        if isinstance(value, str):
            return cls(url=value)
        return cls(url=value["url"], username=value.get("username"), password=value.get("password"))

    def __repr__(self) -> str:  # never show the password
        return f"Destination(url={self.url!r}, username={self.username!r})"


def payload(event_type: str, workspace_id, run_id, job_id, job_name: str, ids_as_strings: bool) -> dict:
    # The documented example uses strings for ids, captured real payloads use numbers; both are
    # selectable so receivers can be tested against either.
    conv = str if ids_as_strings else (lambda v: v)
    return {
        "event_type": event_type,
        "workspace_id": conv(workspace_id),
        "run": {"run_id": conv(run_id)},
        "job": {"job_id": conv(job_id), "name": job_name},
    }


def post(dest: Destination, body: dict, timeout: float) -> tuple[int | None, str | None]:
    """POST once; (HTTP status or None, error text or None)."""
    headers = {"Content-Type": "application/json", "User-Agent": "jobs-emulator-webhook/1"}
    if dest.username is not None or dest.password is not None:
        creds = f"{dest.username or ''}:{dest.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(creds).decode()
    request = urllib.request.Request(dest.url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError) as exc:  # URLError is an OSError
        return None, f"{type(exc).__name__}: {exc}"
