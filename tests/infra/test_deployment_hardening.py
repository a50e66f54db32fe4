"""Offline checks of the deployment's hardening and of what issue 19 found late in real deployments:
Flex regions, sovereign-cloud endpoints, Durable queue polling, telemetry mode, Key Vault purge
protection, Log Analytics local auth, the private-networking mode, the azd version."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"
MAIN = INFRA / "main.bicep"

pycep = pytest.importorskip("pycep")


def parse(path: Path) -> dict:
    return pycep.BicepParser().parse(file_path=path)


def text_without_comments(path: Path) -> str:
    return "\n".join(line.split("//", 1)[0] if "'" not in line.split("//", 1)[0] or line.count("'") % 2 == 0
                     else line for line in path.read_text("utf-8").splitlines())


def condition(expression) -> dict:
    """pycep's `a ? b : c` node as {condition, true_value, false_value}."""
    return expression["operator"]["operands"] if isinstance(expression, dict) and \
        expression.get("operator", {}).get("type") == "conditional" else {}


# ---------------------------------------------------------------------------------------------
# Regions

# Regions of Microsoft's Flex Consumption Durable Functions azd sample
# (Azure-Samples/durable-functions-quickstart-python-azd, infra/main.bicep), less its canary region
# eastus2euap, which no customer subscription can deploy to.
FLEX_REGIONS = {
    "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "centralindia", "centralus",
    "eastasia", "eastus", "eastus2", "francecentral", "germanywestcentral", "italynorth", "japaneast",
    "koreacentral", "northcentralus", "northeurope", "norwayeast", "southafricanorth", "southcentralus",
    "southeastasia", "southindia", "spaincentral", "swedencentral", "uaenorth", "uksouth", "ukwest",
    "westcentralus", "westeurope", "westus", "westus2", "westus3",
}


def test_only_flex_consumption_regions_are_allowed():
    location = parse(MAIN)["parameters"]["location"]
    allowed = [d["argument"] for d in location["decorators"] if d["type"] == "allowed"]
    assert allowed and set(allowed[0]) == FLEX_REGIONS and len(allowed[0]) == len(FLEX_REGIONS)
    # azd's region prompt honours @allowed together with the location metadata.
    assert any(d["type"] == "metadata" and d["argument"] == {"azd": {"type": "location"}} for d in location["decorators"])


# ---------------------------------------------------------------------------------------------
# Sovereign clouds

RUNTIME = [ROOT / "function_app.py", *[p for package in ("activities", "databricks_jobs", "entities", "messaging",
                                                          "orchestrators", "telemetry", "triggers", "workflow")
                                        for p in sorted((ROOT / package).rglob("*.py"))]]
# The one module allowed to name them (databricks_jobs/clouds.py).
CLOUD_TABLE = ROOT / "databricks_jobs" / "clouds.py"
CLOUD_LITERALS = re.compile(
    r"core\.windows\.net|core\.usgovcloudapi\.net|core\.chinacloudapi\.cn|management\.azure\.com|"
    r"management\.core\.|management\.usgovcloudapi\.net|management\.chinacloudapi\.cn", re.I)


def cloud_literals(text: str) -> list[str]:
    return CLOUD_LITERALS.findall(text)


def test_the_scanner_finds_cloud_literals():
    assert cloud_literals('f"https://{account}.queue.core.windows.net"')
    assert cloud_literals('SCOPE = "https://management.core.windows.net//.default"')
    assert cloud_literals("https://management.azure.com/subscriptions")
    assert not cloud_literals("cloud.storage_service_uri(account, 'queue')")


def test_no_runtime_code_names_a_clouds_storage_suffix_or_resource_manager_host():
    assert CLOUD_TABLE in RUNTIME and len(RUNTIME) > 40
    found = {str(p.relative_to(ROOT)): cloud_literals(p.read_text("utf-8")) for p in RUNTIME if p != CLOUD_TABLE}
    assert not {k: v for k, v in found.items() if v}, "derive these from databricks_jobs/clouds.py (AZURE_CLOUD)"
    assert cloud_literals(CLOUD_TABLE.read_text("utf-8"))


def test_the_templates_take_cloud_endpoints_from_the_deployment_not_from_literals():
    for path in INFRA.rglob("*.bicep"):
        code = "\n".join(line for line in path.read_text("utf-8").splitlines() if not line.lstrip().startswith("//"))
        assert not cloud_literals(code), path.name
        assert "vault.azure.net" not in code and "vaultcore.azure.net" not in code, path.name
    storage = MODULES.joinpath("storage.bicep").read_text("utf-8")
    assert "var endpoints = storage.properties.primaryEndpoints" in storage
    for service in ("blob", "queue", "table"):
        assert f"output {service}ServiceUri string = substring(endpoints.{service}, 0, length(endpoints.{service}) - 1)" in storage


# ---------------------------------------------------------------------------------------------
# host.json


def timespan(text: str) -> timedelta:
    hours, minutes, seconds = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def test_durable_queues_are_polled_at_least_every_10_seconds():
    """Durable's guidance for Flex Consumption: maxQueuePollingInterval of 10 s or less (the default
    30 s delays every timer, activity result and signal of a quiet app by up to 30 s)."""
    provider = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["durableTask"]["storageProvider"]
    interval = timespan(provider["maxQueuePollingInterval"])
    assert timedelta(0) < interval <= timedelta(seconds=10)


def test_host_json_names_the_storage_connection_with_the_current_key():
    provider = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["durableTask"]["storageProvider"]
    assert provider["connectionName"] == "AzureWebJobsStorage"
    assert "connectionStringName" not in provider  # obsolete name


def test_the_host_stays_in_the_telemetry_mode_that_forwards_worker_logs():
    """PYTHON_ENABLE_OPENTELEMETRY=true makes the worker parent the app's spans under the host's
    invocation. In the host's OpenTelemetry mode it would also make the host drop the worker's log
    records (azure-functions-host filters them when the worker reports WorkerOpenTelemetryEnabled),
    while telemetry/setup.py keeps the distro's log export off because the host forwards them: the
    two must not meet, or the app's log lines vanish from `traces`."""
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    assert str(host.get("telemetryMode", "ApplicationInsights")).lower() != "opentelemetry"
    assert "PYTHON_ENABLE_OPENTELEMETRY: 'true'" in MAIN.read_text("utf-8")
    assert "disable_logging=True" in (ROOT / "telemetry" / "setup.py").read_text("utf-8")
    operations = (ROOT / "docs" / "operations.md").read_text("utf-8")
    assert "telemetryMode" in operations and "traces" in operations and "AppTraces" in operations


# ---------------------------------------------------------------------------------------------
# Key Vault, Log Analytics


def resource(path: Path, type_name: str) -> dict:
    found = [r for r in parse(path)["resources"].values() if r["type"] == type_name and not r["existing"]]
    assert len(found) == 1, (path.name, type_name)
    return found[0]["config"]


def test_key_vault_has_purge_protection_and_the_longest_soft_delete():
    vault = resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enablePurgeProtection"] is True and vault["enableSoftDelete"] is True
    assert vault["softDeleteRetentionInDays"] == 90
    deploy = (ROOT / "docs" / "deploy.md").read_text("utf-8")
    assert "purge protection" in deploy.lower()


def test_log_analytics_and_application_insights_refuse_local_auth():
    workspace = resource(MODULES / "monitoring.bicep", "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True
    insights = resource(MODULES / "monitoring.bicep", "Microsoft.Insights/components")["properties"]
    assert insights["DisableLocalAuth"] is True


# ---------------------------------------------------------------------------------------------
# Private networking


def test_private_networking_is_a_parameter_off_by_default_that_azd_can_set():
    params = parse(MAIN)["parameters"]
    assert params["privateNetworking"]["type"] == "bool" and params["privateNetworking"]["default"] is False
    wired = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert wired["privateNetworking"]["value"] == "${PRIVATE_NETWORKING=false}"


def test_private_networking_turns_public_access_off_on_storage_and_key_vault():
    modules = parse(MAIN)["modules"]
    for name in ("storage", "keyVault"):
        assert modules[name]["config"]["params"]["publicNetworkAccess"] == {
            "operator": {"type": "not", "operands": {"bool_value": "privateNetworking"}}}, name
    storage = resource(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts")["properties"]
    switch = condition(storage["publicNetworkAccess"])
    assert switch == {"condition": "publicNetworkAccess", "true_value": "Enabled", "false_value": "Disabled"}
    acls = condition(storage["networkAcls"])
    assert acls["false_value"] == {"defaultAction": "Deny", "bypass": "None"}
    vault = resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert condition(vault["publicNetworkAccess"]) == {"condition": "publicNetworkAccess", "true_value": "Enabled",
                                                       "false_value": "Disabled"}
    # The shared-key and anonymous-blob protections hold in both modes.
    assert storage["allowSharedKeyAccess"] is False and storage["allowBlobPublicAccess"] is False


def test_private_networking_integrates_the_app_and_gives_storage_and_key_vault_private_endpoints():
    main = parse(MAIN)
    network = main["modules"]["privateNetwork"]
    assert network["detail"]["path"] == "modules/private-network.bicep"
    assert network["config"]["condition"] == "privateNetworking"
    app_params = main["modules"]["functionApp"]["config"]["params"]
    subnet = condition(app_params["virtualNetworkSubnetId"])
    assert subnet["condition"] == "privateNetworking" and subnet["false_value"] == ""
    assert "privateNetwork" in json.dumps(subnet["true_value"]) and "appSubnetId" in json.dumps(subnet["true_value"])
    assert "virtualNetworkSubnetId: privateNetworking ? privateNetwork.outputs.appSubnetId : ''" in MAIN.read_text("utf-8")
    site = resource(MODULES / "functionapp.bicep", "Microsoft.Web/sites")["properties"]
    assert condition(site["virtualNetworkSubnetId"])["false_value"] == "virtualNetworkSubnetId"

    text = (MODULES / "private-network.bicep").read_text("utf-8")
    # One private endpoint (and private DNS zone) per storage service Durable and the host use, and Key Vault.
    endpoints = re.search(r"^var endpoints = \[(.*?)^\]", text, re.S | re.M).group(1)
    assert re.findall(r"name: '(\w+)'", endpoints) == ["blob", "queue", "table", "vault"]
    assert re.findall(r"target: (\w+)\.id", endpoints) == ["storage", "storage", "storage", "vault"]
    for service in ("blob", "queue", "table"):
        assert f"zone: 'privatelink.{service}.${{environment().suffixes.storage}}'" in endpoints
    assert "var keyVaultZone = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'" in text
    assert "groupIds: [\n            endpoint.name\n          ]" in text
    assert "resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@" in text
    assert "resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@" in text
    # Flex Consumption integrates with a subnet delegated to Microsoft.App/environments.
    assert "serviceName: 'Microsoft.App/environments'" in text
    assert "addressPrefix: cidrSubnet(addressSpace, 24, 0)" in text and "addressPrefix: cidrSubnet(addressSpace, 24, 1)" in text


def test_readme_says_what_each_deployment_mode_protects_against():
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("### Deployment modes", 1)[1].split("\n## ", 1)[0]
    assert "PRIVATE_NETWORKING" in section
    for words in ("protects against", "does not protect against"):
        assert section.count(words) >= 2, words


# ---------------------------------------------------------------------------------------------
# Event Grid targets, azd version


def test_a_domain_topic_target_requires_its_name_as_the_event_source():
    text = MAIN.read_text("utf-8")
    assert "WORKFLOW_COMPLETION_EVENT_SOURCE: completionEventSource" in text
    assert re.search(r"var completionEventSource = \(completionTopicIsDomainTopic && workflowCompletionEventSource "
                     r"!= last\(completionTopicIdParts\)\) \? fail\('WORKFLOW_COMPLETION_EVENT_SOURCE", text)


def test_azure_yaml_requires_azd_1_18_or_later():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text("utf-8"))
    assert config["requiredVersions"]["azd"] == ">= 1.18.0"


def test_the_topic_ids_parts_are_indexed_only_behind_a_conditional():
    """ARM evaluates only the chosen branch of `?:`, not necessarily one side of `&&`: an index into
    the parts of an empty COMPLETION_TOPIC_RESOURCE_ID outside a conditional would fail every
    deployment that names no topic."""
    for path in (MAIN, MODULES / "eventgrid-sender.bicep"):
        for line in path.read_text("utf-8").splitlines():
            code = line.split("//", 1)[0]
            index = re.search(r"\b(completionTopicIdParts|parts)\[", code)
            if not index or code.lstrip().startswith("var parentName"):
                continue  # eventgrid-sender.bicep runs only with an id (its module's condition)
            assert "?" in code[:index.start()], line
