"""The Azure clouds the app can run in, and the endpoints that differ between them.

The one place that names cloud-specific host suffixes and audiences: runtime code derives storage
endpoints and the Azure Resource Manager scope from here (tests/infra scans the rest of the runtime
code for such literals). Pure: no Azure imports.

`AZURE_CLOUD` names the cloud as ARM's `environment().name` does (infra/ sets it from there):
`AzureCloud` (public Azure; `AzurePublicCloud`, the older SDK name, is accepted too),
`AzureUSGovernment`, `AzureChinaCloud`. Values from Microsoft's "national clouds" documentation and
the ARM `environment()` function's output for each cloud."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

SETTING = "AZURE_CLOUD"
DEFAULT = "AzureCloud"


@dataclass(frozen=True)
class AzureCloud:
    name: str
    # environment().suffixes.storage: <account>.<service>.<suffix>
    storage_suffix: str
    # environment().authentication.audiences[0], the ARM resource URI; its scope adds "/.default"
    # after the trailing slash (hence the double slash in the scope).
    resource_manager_audience: str

    @property
    def resource_manager_scope(self) -> str:
        return f"{self.resource_manager_audience}/.default"

    def storage_service_uri(self, account: str, service: str) -> str:
        """e.g. https://<account>.queue.core.windows.net for service 'queue'."""
        return f"https://{account}.{service}.{self.storage_suffix}"


CLOUDS: dict[str, AzureCloud] = {
    "AzureCloud": AzureCloud("AzureCloud", "core.windows.net", "https://management.core.windows.net/"),
    "AzureUSGovernment": AzureCloud("AzureUSGovernment", "core.usgovcloudapi.net",
                                    "https://management.core.usgovcloudapi.net/"),
    "AzureChinaCloud": AzureCloud("AzureChinaCloud", "core.chinacloudapi.cn",
                                  "https://management.core.chinacloudapi.cn/"),
}
_ALIASES = {"azurepubliccloud": "AzureCloud"}
PUBLIC = CLOUDS[DEFAULT]


class UnknownCloud(ValueError):
    """`AZURE_CLOUD` names no cloud this module knows; the message starts with the setting's name."""


def cloud_named(value: Optional[str]) -> AzureCloud:
    """The cloud called `value` (case-insensitive); blank means public Azure."""
    text = (value or "").strip()
    if not text:
        return PUBLIC
    by_lower = {name.lower(): cloud for name, cloud in CLOUDS.items()}
    cloud = by_lower.get(text.lower()) or by_lower.get(_ALIASES.get(text.lower(), "").lower())
    if cloud is None:
        raise UnknownCloud(f"{SETTING} {text!r} is not one of {', '.join(CLOUDS)}")
    return cloud


def cloud_from_env(env: Mapping[str, str]) -> AzureCloud:
    return cloud_named(env.get(SETTING))


def service_uri(env: Mapping[str, str], connection: str, service: str) -> str:
    """The `service` ("blob", "queue", "table") endpoint of an identity-based connection, the
    Functions way: `<connection>__<service>ServiceUri`, or `<connection>__accountName` with this
    cloud's storage suffix; "" when neither is set. Raises UnknownCloud for a bad AZURE_CLOUD."""
    uri = (env.get(f"{connection}__{service}ServiceUri") or "").strip()
    account = (env.get(f"{connection}__accountName") or "").strip()
    if uri or not account:
        return uri
    return cloud_from_env(env).storage_service_uri(account, service)
