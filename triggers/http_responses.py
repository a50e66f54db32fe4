"""JSON answers shared by the HTTP-triggered functions."""
from __future__ import annotations

import json
from typing import Any, Optional

import azure.functions as func


def json_response(status: int, body: Any, headers: Optional[dict] = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers or {})
