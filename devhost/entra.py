"""devhost plays Microsoft Entra ID (DEVELOPMENT TOOL): OpenID metadata, a key set and tokens.

``python -m devhost serve --auth`` starts ``DevEntra`` on loopback and points the app's token
validation at it (``WORKFLOW_AUTH_TENANT_ID``, ``WORKFLOW_AUTH_AUDIENCE``,
``WORKFLOW_AUTH_METADATA_URL``); ``python -m devhost token --oid <id> [--appid <id>] [--role <r>]...``
prints an access token signed with devhost's development key. The app validates these tokens with
the same code as Entra's (callers/identity.py): only the metadata URL differs.

The tokens look like Entra's access tokens: v2 (issuer ``https://login.microsoftonline.com/<tid>/v2.0``,
``azp``) or, with ``--v1``, v1 (``https://sts.windows.net/<tid>/``, ``appid``); ``oid``, ``tid``,
``roles``, ``aud``, ``iat``/``nbf``/``exp``, header ``kid``. The metadata names the v2 issuer with
``{tenantid}`` as Entra's multi-tenant documents do.

The development key is an RSA key generated on first use and kept in ``.devhost/entra-dev-key.pem``
under the current (app) directory (``DEVHOST_ENTRA_KEY_FILE`` to move it). It protects nothing:
never give it to anything but a local app.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger("devhost.entra")

DEV_TENANT_ID = "11111111-1111-4111-8111-111111111111"
DEV_AUDIENCE = "api://devhost-workflows"
DEV_APP_ID = "22222222-2222-4222-8222-222222222222"  # the client application when --appid is not given
KEY_FILE_SETTING = "DEVHOST_ENTRA_KEY_FILE"
DEFAULT_KEY_FILE = Path(".devhost") / "entra-dev-key.pem"


def key_file() -> Path:
    return Path(os.environ.get(KEY_FILE_SETTING) or DEFAULT_KEY_FILE)


def load_or_create_key(path: Optional[Path] = None):
    """The development RSA key, created (2048 bits) and saved on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = Path(path or key_file())
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)  # two processes creating it at once: one key wins, both read it
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def key_id(key) -> str:
    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def jwks(key) -> dict:
    import jwt

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": key_id(key), "use": "sig", "alg": "RS256"}]}


def issue_token(oid: str, *, app_id: str = DEV_APP_ID, roles: Iterable[str] = (), tenant_id: str = DEV_TENANT_ID,
                audience: str = DEV_AUDIENCE, lifetime_seconds: int = 3600, v1: bool = False,
                now: Optional[float] = None, key=None) -> str:
    """An access token as Entra would issue it for this caller, signed with the development key."""
    import jwt

    key = key or load_or_create_key()
    now = int(time.time() if now is None else now)
    issuer = f"https://sts.windows.net/{tenant_id}/" if v1 else f"https://login.microsoftonline.com/{tenant_id}/v2.0"
    claims = {"aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime_seconds,
              "oid": oid, "sub": oid, "tid": tenant_id, "ver": "1.0" if v1 else "2.0",
              ("appid" if v1 else "azp"): app_id}
    roles = list(roles)
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": key_id(key)})


class DevEntra:
    """The metadata document and key set on loopback; ``start()`` returns the metadata URL."""

    def __init__(self, key=None, tenant_id: str = DEV_TENANT_ID, port: int = 0):
        self.key = key or load_or_create_key()
        self.tenant_id = tenant_id
        self._port = port
        self._httpd: Optional[ThreadingHTTPServer] = None
        self.requests: list = []  # paths asked for, newest last (tests count key fetches)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    def _answer(self, path: str):
        self.requests.append(path)
        if path == f"/{self.tenant_id}/v2.0/.well-known/openid-configuration":
            return 200, {"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
                         "jwks_uri": f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys",
                         "id_token_signing_alg_values_supported": ["RS256"],
                         "token_endpoint": f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"}
        if path == f"/{self.tenant_id}/discovery/v2.0/keys":
            return 200, jwks(self.key)
        return 404, {"error": "not_found"}

    def start(self) -> str:
        entra = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                status, body = entra._answer(self.path.split("?", 1)[0])
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, fmt, *args):
                log.debug(fmt, *args)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name="devhost-entra", daemon=True).start()
        return self.metadata_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def app_settings(self, audience: str = DEV_AUDIENCE) -> dict:
        """The settings that point the app's token validation at this stand-in."""
        return {"WORKFLOW_AUTH_TENANT_ID": self.tenant_id, "WORKFLOW_AUTH_AUDIENCE": audience,
                "WORKFLOW_AUTH_METADATA_URL": self.metadata_url}
