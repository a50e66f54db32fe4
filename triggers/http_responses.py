"""JSON answers shared by the HTTP-triggered functions."""
from __future__ import annotations

import json
from typing import Any, Optional

import azure.functions as func


def json_response(status: int, body: Any, headers: Optional[dict] = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers or {})


# Every route takes every method, so that a wrong one gets 405 + Allow from the app instead of the
# host's empty 404 (the Functions host answers 404 when no function takes the method).
ROUTE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def method_not_allowed(*allowed: str) -> func.HttpResponse:
    return json_response(405, {"error": f"method not allowed; use {' or '.join(allowed)}", "field": None},
                         {"Allow": ", ".join(allowed)})
