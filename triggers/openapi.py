"""`GET /api/openapi.json`: the HTTP API description (spec/http-api.openapi.json, OpenAPI 3.1).

`?format=swagger2` answers the same description as OpenAPI 2.0, because Logic Apps and Power
Automate custom connectors import 2.0 only. Both carry the app's absolute server URL, built from
the host name the platform configures (`WEBSITE_HOSTNAME`), never from the request's Host header:
a client choosing the Host would otherwise choose where a connector imported from the document
sends its function key. Without that setting the server URL is relative. Anonymous: it holds no
secret; answered `Cache-Control: private`, so no shared cache keeps a copy.

The request body schema is a copy of workflow/input.schema.json; `python -m triggers.openapi`
refreshes the copy (a test fails when they differ).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "spec" / "http-api.openapi.json"
INPUT_SCHEMA_PATH = ROOT / "workflow" / "input.schema.json"
ROUTE = "openapi.json"
API_PREFIX = "/api"
# Set by the platform (App Service, and Core Tools locally), not an app setting of ours.
PLATFORM_HOST_NAME = "WEBSITE_HOSTNAME"

bp = df.Blueprint()


DATABRICKS_SCHEMA_PATH = ROOT / "workflow" / "schemas" / "databricks.schema.json"
DATABRICKS_PREFIX = "Databricks."  # component names of the Databricks shapes: Databricks.Task, ...


def _rebased(schema: Any, prefix_map: dict) -> Any:
    """`schema` with each `$ref` rewritten by `prefix_map` (old prefix -> new prefix)."""
    if isinstance(schema, list):
        return [_rebased(s, prefix_map) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            for old, new in prefix_map.items():
                if value.startswith(old):
                    value = new + value[len(old):]
                    break
        out[key] = _rebased(value, prefix_map)
    return out


def input_schema_for_openapi() -> dict:
    """The request body schemas as OpenAPI components: `WorkflowInput` and the Databricks shapes it
    references, each `$ref` pointing inside the document. ($id would rebase references inside the
    document; $schema is implied by 3.1.)"""
    target = f"#/components/schemas/{DATABRICKS_PREFIX}"
    schema = json.loads(INPUT_SCHEMA_PATH.read_text("utf-8"))
    databricks = json.loads(DATABRICKS_SCHEMA_PATH.read_text("utf-8"))
    components = {"WorkflowInput": _rebased({k: v for k, v in schema.items() if k not in ("$schema", "$id")},
                                            {"databricks.schema.json#/$defs/": target})}
    for name, definition in databricks["$defs"].items():
        components[DATABRICKS_PREFIX + name] = _rebased(definition, {"#/$defs/": target})
    return components


@lru_cache(maxsize=1)
def load_document() -> dict:
    return json.loads(SPEC_PATH.read_text("utf-8"))


# -- OpenAPI 3.1 -> 2.0 -----------------------------------------------------------------------

# JSON Schema keywords OpenAPI 2.0 schema objects do not have.
_UNSUPPORTED_2 = {"propertyNames", "const", "examples", "$schema", "$id", "contentEncoding", "contentMediaType",
                  "unevaluatedProperties", "dependentRequired", "dependentSchemas", "if", "then", "else", "not",
                  "$comment", "minContains", "maxContains", "contains", "prefixItems", "patternProperties"}
_PARAM_SCHEMA_KEYS = ("type", "format", "pattern", "enum", "default", "minLength", "maxLength", "minimum", "maximum")


def _schema_2(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_schema_2(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key, value in schema.items():
        if key in _UNSUPPORTED_2:
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) == 1:
                out["type"] = kinds[0]
            if "null" in value:
                out["x-nullable"] = True
        elif key in ("anyOf", "oneOf"):
            # 2.0 has neither: keep the one non-null alternative, or allow anything.
            options = [s for s in value if s.get("type") != "null"]
            if len(options) == 1:
                out.update(_schema_2(options[0]))
            if len(options) != len(value):
                out["x-nullable"] = True
        elif key in ("properties", "definitions"):
            out[key] = {name: _schema_2(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _schema_2(value)
        elif key == "allOf":
            # Rules 2.0 cannot express leave empty items behind; the app still checks them.
            kept = [item for item in _schema_2(value) if any(not k.startswith("x-") for k in item)]
            if kept:
                out[key] = kept
        else:
            out[key] = value
    return out


def _parameter_2(param: dict) -> dict:
    out = {k: v for k, v in param.items() if k != "schema"}
    schema = _schema_2(param.get("schema") or {})
    out.update({k: schema[k] for k in _PARAM_SCHEMA_KEYS if k in schema})
    out.setdefault("type", "string")
    return out


def _header_2(header: dict) -> dict:
    schema = _schema_2(header.get("schema") or {})
    out = {k: schema[k] for k in _PARAM_SCHEMA_KEYS if k in schema}
    out.setdefault("type", "string")
    if header.get("description"):
        out["description"] = header["description"]
    return out


def _response_2(response: dict) -> dict:
    out: dict = {"description": response.get("description", "")}
    content = (response.get("content") or {}).get("application/json")
    if content and "schema" in content:
        out["schema"] = _schema_2(content["schema"])
    if response.get("headers"):
        out["headers"] = {name: _header_2(h) for name, h in response["headers"].items()}
    return out


def _security_scheme_2(scheme: dict) -> dict:
    if scheme.get("type") == "http" and scheme.get("scheme") == "basic":
        return {"type": "basic", "description": scheme.get("description", "")}
    if scheme.get("type") == "oauth2":
        # OpenAPI 2.0 has one flow per scheme: a custom connector's Entra ID connection signs users in
        # (accessCode, the authorization code flow).
        flow = scheme["flows"]["authorizationCode"]
        return {"type": "oauth2", "flow": "accessCode", "authorizationUrl": flow["authorizationUrl"],
                "tokenUrl": flow["tokenUrl"], "scopes": flow.get("scopes", {}),
                "description": scheme.get("description", "")}
    return {k: v for k, v in scheme.items() if k in ("type", "in", "name", "description")}


def to_swagger2(doc: dict, base_url: str) -> dict:
    """The OpenAPI 2.0 form of `doc` for an app served at `base_url` (scheme://host)."""
    parts = urlsplit(base_url)
    paths: dict = {}
    for path, item in doc["paths"].items():
        paths[path] = {}
        for method, op in item.items():
            new = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
            params = [_parameter_2(p) for p in op.get("parameters", [])]
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            if body:
                params.append({"name": "body", "in": "body", "required": bool(op["requestBody"].get("required")),
                               "x-ms-summary": "Request", "schema": _schema_2(body["schema"])})
            if params:
                new["parameters"] = params
            new["responses"] = {code: _response_2(r) for code, r in op["responses"].items()}
            paths[path][method] = new
    components = doc.get("components") or {}
    located = {"host": parts.netloc, "schemes": [parts.scheme]} if parts.netloc else {}  # else: the serving host
    return {
        "swagger": "2.0",
        "info": doc["info"],
        **located,
        "basePath": API_PREFIX,
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {name: _security_scheme_2(s) for name, s in components.get("securitySchemes", {}).items()},
        "security": doc.get("security", []),
        "paths": paths,
        "definitions": {name: _schema_2(s) for name, s in components.get("schemas", {}).items()},
    }


def document_for(base_url: str, fmt: str = "openapi3") -> dict:
    doc = copy.deepcopy(load_document())
    if fmt == "swagger2":
        return to_swagger2(doc, base_url)
    doc["servers"] = [{"url": base_url.rstrip("/") + API_PREFIX}]
    return doc


@bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    fmt = req.params.get("format") or "openapi3"
    if fmt not in ("openapi3", "swagger2"):
        return func.HttpResponse(json.dumps({"error": "'format' must be openapi3 or swagger2", "field": "format"}),
                                 status_code=400, mimetype="application/json")
    body = document_for(configured_base_url(), fmt)
    return func.HttpResponse(json.dumps(body, indent=2), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "private, max-age=300"})


def configured_base_url(env=None) -> str:
    """`https://<WEBSITE_HOSTNAME>` (http for a loopback host, as Core Tools serves it); "" (a
    relative server URL) when the setting is unset or is not a plain host[:port]."""
    from databricks_jobs.settings import is_loopback

    env = os.environ if env is None else env
    value = (env.get(PLATFORM_HOST_NAME) or "").strip()
    try:
        parts = urlsplit("//" + value)
        host = (parts.hostname or "").lower()
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return ""
    if not host or parts.netloc != value or parts.username is not None or parts.path or parts.query or "#" in value:
        return ""
    return f"{'http' if is_loopback(host) else 'https'}://{parts.netloc.lower()}"


def instance_id_parameters(doc: dict) -> list:
    return [p for item in doc["paths"].values() for op in item.values() if isinstance(op, dict)
            for p in op.get("parameters", ()) if p.get("name") == "instanceId" and p.get("in") == "path"]


def sync_input_schema() -> bool:
    """Copy workflow/input.schema.json and the accepted instance-id pattern into the vendored
    document; True when it changed."""
    from triggers.starter import INSTANCE_ID_PATTERN

    doc = json.loads(SPEC_PATH.read_text("utf-8"))
    before = json.dumps(doc, sort_keys=True)
    schemas = doc["components"]["schemas"]
    for name in [n for n in schemas if n.startswith(DATABRICKS_PREFIX)]:
        del schemas[name]
    schemas.update(input_schema_for_openapi())
    for param in instance_id_parameters(doc):
        param["schema"]["pattern"] = INSTANCE_ID_PATTERN.pattern
    if json.dumps(doc, sort_keys=True) == before:
        return False
    SPEC_PATH.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "utf-8")
    load_document.cache_clear()
    return True


if __name__ == "__main__":
    changed = sync_input_schema()
    print(f"{SPEC_PATH.relative_to(ROOT)}: {'refreshed' if changed else 'up to date'}")
    sys.exit(0)
