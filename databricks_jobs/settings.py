"""The `DATABRICKS_*` application settings, and `AZURE_CLOUD` (clouds.py), which the credentials use.

Read at first use (`get_settings()`), never at import, so a bad value fails the first activity
with a `ConfigurationError` that names the setting instead of failing the worker's indexing.
`check_configuration()` runs the same validation without caching and without any network call,
for the start route to refuse work (503, naming the setting) that could only fail later.
`SETTINGS` is the one list of names, defaults and meanings; documentation is checked against it.

Every value is stripped; blank means the default. A value that is still an App Service Key Vault
reference (`@Microsoft.KeyVault(...)`, left in place when the platform cannot resolve it) is refused
for every setting, and `DATABRICKS_TOKEN` goes through `secret_values.clean_secret`."""
from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

from . import clouds
from .errors import ConfigurationError
from .process_wide import ProcessWide
from .secret_values import KEY_VAULT_REFERENCE_PREFIX, clean_secret

AUTH_MANAGED_IDENTITY = "managed_identity"
AUTH_DEFAULT_AZURE_CREDENTIAL = "default_azure_credential"
AUTH_KEY_VAULT = "key_vault"
AUTH_PAT = "pat"
AUTH_MODES = (AUTH_MANAGED_IDENTITY, AUTH_DEFAULT_AZURE_CREDENTIAL, AUTH_KEY_VAULT, AUTH_PAT)
ENTRA_AUTH_MODES = (AUTH_MANAGED_IDENTITY, AUTH_DEFAULT_AZURE_CREDENTIAL)

JOBS_API_VERSIONS = ("2.1", "2.2")

# Entra ID client ids are GUIDs.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Key Vault object names: 1-127 characters, alphanumerics and dashes
# (https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#objects-identifiers-and-versioning).
_KEY_VAULT_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_WORKSPACE_RESOURCE_ID = re.compile(
    r"/subscriptions/[^/\s]+/resourceGroups/[^/\s]+/providers/Microsoft\.Databricks/workspaces/[^/\s]+",
    re.IGNORECASE)
# Identifiers sent in request bodies: printable ASCII, no spaces.
_PLAIN_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,256}")


class Setting(NamedTuple):
    name: str
    default: Optional[str]  # None: no default (required, or optional and unset)
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABRICKS_HOST", None,
            "Workspace URL, e.g. `https://adb-1234567890123456.7.azuredatabricks.net`. Required. "
            "Must be https unless the host is loopback (127.0.0.0/8, ::1, localhost)."),
    Setting("DATABRICKS_JOBS_API_VERSION", "2.1", "Jobs API version: `2.1` or `2.2`."),
    Setting("DATABRICKS_AUTH", AUTH_MANAGED_IDENTITY,
            "How the app authenticates: `managed_identity`, `default_azure_credential`, "
            "`key_vault` (a PAT kept in Key Vault) or `pat` (`DATABRICKS_TOKEN`)."),
    Setting("DATABRICKS_MANAGED_IDENTITY_CLIENT_ID", None,
            "Client id of a user-assigned managed identity; unset uses the system-assigned one. "
            "Also used for Key Vault access with `key_vault`."),
    Setting("DATABRICKS_KEY_VAULT_URL", None,
            "Vault URL, e.g. `https://my-vault.vault.azure.net`. Required with `key_vault`."),
    Setting("DATABRICKS_KEY_VAULT_SECRET_NAME", None,
            "Name of the secret holding the PAT. Required with `key_vault`."),
    Setting("DATABRICKS_KEY_VAULT_CACHE_SECONDS", "3600",
            "How long a PAT read from Key Vault is reused before it is read again."),
    Setting("DATABRICKS_TOKEN", None,
            "PAT for `pat`. Local development, or an App Service Key Vault reference "
            "`@Microsoft.KeyVault(SecretUri=...)` that the platform resolves. Required with `pat`."),
    Setting("DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID", None,
            "ARM resource id of the workspace. When set (Entra ID auth only), requests carry "
            "`X-Databricks-Azure-Workspace-Resource-Id` and an Azure management token, for an identity "
            "that has a role on the workspace resource but is not yet a workspace user."),
    Setting("DATABRICKS_NOTIFICATION_DESTINATION_ID", None,
            "Notification destination id; when set, created jobs notify it on start, success and failure."),
    Setting("DATABRICKS_HTTP_TIMEOUT_SECONDS", "30", "Connect and read timeout of one HTTP request."),
    Setting("DATABRICKS_RETRY_MAX_SECONDS", "120",
            "Upper bound on the time one call spends retrying throttling and transient failures."),
    Setting(clouds.SETTING, clouds.DEFAULT,
            "Azure cloud the app runs in: `AzureCloud` (public), `AzureUSGovernment` or `AzureChinaCloud`. "
            "Picks the Azure Resource Manager token audience and the storage host suffix used with "
            "`<connection>__accountName`; infra/ sets it from the deployment's cloud."),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}


_AZURE_WORKSPACE_HOST = re.compile(r"^adb-(\d+)\.\d+\.azuredatabricks\.net$")


@dataclass(frozen=True)
class Settings:
    host: str
    jobs_api_version: str
    auth: str
    managed_identity_client_id: Optional[str]
    key_vault_url: Optional[str]
    key_vault_secret_name: Optional[str]
    key_vault_cache_seconds: float
    azure_workspace_resource_id: Optional[str]
    notification_destination_id: Optional[str]
    http_timeout_seconds: float
    retry_max_seconds: float
    token: Optional[str] = field(default=None, repr=False)  # never printed
    cloud: clouds.AzureCloud = clouds.PUBLIC

    @property
    def api_base_url(self) -> str:
        return f"{self.host}/api/{self.jobs_api_version}"

    def run_page_url(self, job_id: int, run_id: int) -> str:
        """The run's page in the workspace, as runs/get reports it (`run_page_url`), without a call:
        an Azure workspace's id is in its host name (adb-<id>.<n>.azuredatabricks.net)."""
        workspace = _AZURE_WORKSPACE_HOST.match(urlsplit(self.host).hostname or "")
        query = f"?o={workspace.group(1)}" if workspace else ""
        return f"{self.host}/{query}#job/{int(job_id)}/run/{int(run_id)}"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """Settings read and validated from `environ` (default: the process environment).

        Raises `ConfigurationError` naming the first setting that is missing or invalid. No network."""
        env = os.environ if environ is None else environ

        def get(name: str) -> Optional[str]:
            value = env.get(name)
            if value is None or not value.strip():
                return _DEFAULTS[name]
            value = value.strip()
            if value.lower().startswith(KEY_VAULT_REFERENCE_PREFIX.lower()):
                clean_secret(name, value)  # raises the unresolved-reference error, naming the setting
            return value

        auth = (get("DATABRICKS_AUTH") or "").lower()
        if auth not in AUTH_MODES:
            raise ConfigurationError("DATABRICKS_AUTH", f"unknown auth mode {auth!r}; use one of {', '.join(AUTH_MODES)}")

        version = get("DATABRICKS_JOBS_API_VERSION")
        if version not in JOBS_API_VERSIONS:
            raise ConfigurationError("DATABRICKS_JOBS_API_VERSION", f"{version!r} is not one of {', '.join(JOBS_API_VERSIONS)}")

        host = validate_host(get("DATABRICKS_HOST"))
        client_id = get("DATABRICKS_MANAGED_IDENTITY_CLIENT_ID")
        if client_id is not None and not _GUID.fullmatch(client_id):
            raise ConfigurationError("DATABRICKS_MANAGED_IDENTITY_CLIENT_ID",
                                     "must be the client id (a GUID) of a user-assigned managed identity")
        key_vault_url = get("DATABRICKS_KEY_VAULT_URL")
        if key_vault_url is not None:
            key_vault_url = validate_key_vault_url(key_vault_url)
        secret_name = get("DATABRICKS_KEY_VAULT_SECRET_NAME")
        if secret_name is not None and not _KEY_VAULT_SECRET_NAME.fullmatch(secret_name):
            raise ConfigurationError("DATABRICKS_KEY_VAULT_SECRET_NAME",
                                     "must be a Key Vault secret name: 1-127 letters, digits and dashes")
        resource_id = get("DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID")
        if resource_id is not None and not _WORKSPACE_RESOURCE_ID.fullmatch(resource_id):
            raise ConfigurationError(
                "DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID",
                "must be the workspace's ARM resource id, /subscriptions/<id>/resourceGroups/<group>/providers/"
                "Microsoft.Databricks/workspaces/<name>")
        destination = get("DATABRICKS_NOTIFICATION_DESTINATION_ID")
        if destination is not None and not _PLAIN_IDENTIFIER.fullmatch(destination):
            raise ConfigurationError("DATABRICKS_NOTIFICATION_DESTINATION_ID",
                                     "must be a notification destination id: printable characters without spaces")
        # An unresolved Key Vault reference fails in every mode (get() refuses it: the platform could
        # not read a secret someone configured); the value itself is cleaned and kept only in the
        # mode that sends it, so no other mode holds a PAT in memory or fails on one it never sends.
        try:
            cloud = clouds.cloud_named(get(clouds.SETTING))
        except clouds.UnknownCloud as exc:
            raise ConfigurationError(clouds.SETTING, str(exc).split(" ", 1)[1]) from None
        token = get("DATABRICKS_TOKEN")
        token = clean_secret("DATABRICKS_TOKEN", token) if auth == AUTH_PAT else None

        settings = cls(
            host=host,
            jobs_api_version=version,
            auth=auth,
            managed_identity_client_id=client_id,
            key_vault_url=key_vault_url,
            key_vault_secret_name=secret_name,
            key_vault_cache_seconds=_positive_number("DATABRICKS_KEY_VAULT_CACHE_SECONDS", get("DATABRICKS_KEY_VAULT_CACHE_SECONDS")),
            token=token,
            azure_workspace_resource_id=resource_id,
            notification_destination_id=destination,
            http_timeout_seconds=_positive_number("DATABRICKS_HTTP_TIMEOUT_SECONDS", get("DATABRICKS_HTTP_TIMEOUT_SECONDS")),
            retry_max_seconds=_positive_number("DATABRICKS_RETRY_MAX_SECONDS", get("DATABRICKS_RETRY_MAX_SECONDS")),
            cloud=cloud,
        )
        settings._check_auth()
        return settings

    def _check_auth(self) -> None:
        """What each auth mode needs besides well-formed values."""
        if self.auth == AUTH_PAT and not self.token:
            raise ConfigurationError("DATABRICKS_TOKEN", "is required when DATABRICKS_AUTH=pat")
        if self.auth == AUTH_KEY_VAULT:
            if not self.key_vault_url:
                raise ConfigurationError("DATABRICKS_KEY_VAULT_URL", "is required when DATABRICKS_AUTH=key_vault")
            if not self.key_vault_secret_name:
                raise ConfigurationError("DATABRICKS_KEY_VAULT_SECRET_NAME", "is required when DATABRICKS_AUTH=key_vault")
        if self.azure_workspace_resource_id and self.auth not in ENTRA_AUTH_MODES:
            # The management token comes from an Entra ID credential; a PAT has none to offer.
            raise ConfigurationError(
                "DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID",
                f"needs DATABRICKS_AUTH={' or '.join(ENTRA_AUTH_MODES)}, not {self.auth}",
            )


def check_configuration(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Validate every `DATABRICKS_*` setting and what the auth mode needs, without any network call
    and without caching; the settings on success, else `ConfigurationError` naming the setting.

    For the start route: a workflow that could only fail on its first activity is refused at once
    (503 naming the setting). Credentials themselves (is the identity enabled, may it read the
    vault) can only be proven by fetching a token; those failures come as `CredentialError`."""
    return Settings.from_env(environ)


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 or localhost, judged on the parsed host name (never a string prefix)."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def validate_host(value: Optional[str]) -> str:
    """The normalised workspace base URL (`scheme://host[:port]`); https unless loopback."""
    name = "DATABRICKS_HOST"
    if not value:
        raise ConfigurationError(name, "is required, e.g. https://adb-1234567890123456.7.azuredatabricks.net")
    value = value.strip()
    if "://" not in value:
        value = "https://" + value
    try:
        parts = urlsplit(value)
        hostname = (parts.hostname or "").lower()
        parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigurationError(name, f"{value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not hostname:
        raise ConfigurationError(name, f"{value!r} is not an http(s) URL with a host name")
    if parts.scheme == "http" and not is_loopback(hostname):
        raise ConfigurationError(name, f"must use https ({value!r}): only a loopback host may use http, so a token is never sent in clear")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/"):
        raise ConfigurationError(name, f"must be the workspace base URL only, without path, query or credentials ({parts.scheme}://{parts.hostname}...)")
    if any(ch.isspace() for ch in value):
        raise ConfigurationError(name, "must not contain spaces")
    return f"{parts.scheme}://{parts.netloc}"


def validate_key_vault_url(value: str) -> str:
    """The vault URL as `https://<host>[:port]`; anything else names DATABRICKS_KEY_VAULT_URL."""
    name = "DATABRICKS_KEY_VAULT_URL"
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        parts.port
    except ValueError:
        raise ConfigurationError(name, "is not a valid URL, e.g. https://my-vault.vault.azure.net") from None
    if parts.scheme != "https" or not hostname:
        raise ConfigurationError(name, "must be an https URL, e.g. https://my-vault.vault.azure.net")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/") \
            or any(ch.isspace() for ch in value):
        raise ConfigurationError(
            name, f"must be the vault URL only (https://{hostname}), without path, query or spaces; "
                  "the secret is named by DATABRICKS_KEY_VAULT_SECRET_NAME")
    return f"https://{parts.netloc}"


def _positive_number(name: str, value: Optional[str]) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(name, f"{value!r} is not a number") from None
    if not (number > 0 and math.isfinite(number)):
        raise ConfigurationError(name, f"must be a finite number greater than 0, got {value!r}")
    return number


_settings: ProcessWide[Settings] = ProcessWide(Settings.from_env)


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return _settings.get()


def reset_settings() -> None:
    """Forget the cached settings (tests, or after changing the environment)."""
    _settings.reset()
