"""What can be checked of the azd template (azure.yaml, infra/) without a Bicep compiler or Azure.

No Bicep compiler runs here: the Bicep CLI is a native binary that every PyPI/npm wrapper
(e.g. anthonycmartin-bicep-rpc-client, bicep-node) downloads at run time, and this project's
machines reach no such download. So these tests read the templates as text, with a small reader
that understands only what the templates use: declarations at line start, single-quoted strings
(with `${...}` interpolation) and `//` comments. They check the template against the code:
settings, defaults, roles, secrets, and the azd wiring.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from databricks_jobs.settings import AUTH_MODES, JOBS_API_VERSIONS
from tools.settings_table import all_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
PARAMETERS = INFRA / "main.parameters.json"

# Settings the template sets that are not in the app's settings table: the Functions host's own,
# and azure-identity's.
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName": "host storage, identity-based (Functions 'Connecting to host storage with an identity')",
    "AzureWebJobsStorage__blobServiceUri": "the account's own blob endpoint: right in every cloud, unlike an account name alone",
    "AzureWebJobsStorage__queueServiceUri": "the account's own queue endpoint (also the app's queue client's)",
    "AzureWebJobsStorage__tableServiceUri": "the account's own table endpoint (Durable's history and instances tables)",
    "AzureWebJobsStorage__credential": "managedidentity: use a managed identity, not a connection string",
    "AzureWebJobsStorage__clientId": "which user-assigned identity",
    "TASKHUB_NAME": "host.json durableTask.hubName is %TASKHUB_NAME%",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where the host sends telemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra-authenticated telemetry (local auth is off)",
    "AZURE_CLIENT_ID": "azure-identity DefaultAzureCredential's choice of user-assigned identity",
    "PYTHON_ENABLE_OPENTELEMETRY": "the Python worker joins the app's OpenTelemetry spans to the host's trace",
}

# Settings of the app the template deliberately does not set, each with its reason. Empty on
# purpose: the template's appsettings resource replaces the whole set on every `azd provision`,
# so a setting left out here could only be set by hand and would be wiped at the next provision.
NOT_SET_BY_TEMPLATE: dict[str, str] = {}

# Settings holding a secret: the template may only give them a Key Vault reference (or nothing).
SECRET_SETTINGS = {"DATABRICKS_TOKEN", "WORKFLOW_COMPLETION_TOPIC_KEY", "DATABRICKS_WEBHOOK_PASSWORD"}

# App settings Flex Consumption does not support (Functions app settings reference, "Flex
# Consumption plan deprecations"): runtime, version and package live in functionAppConfig.
FLEX_UNSUPPORTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "WEBSITE_TIME_ZONE", "TZ",
    "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}

# Azure built-in role definition ids, from
# https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (MicrosoftDocs/azure-docs
# articles/role-based-access-control/built-in-roles.md), with the resource type each is assigned on.
REQUIRED_APP_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", "Microsoft.KeyVault/vaults"),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
    "d5a91429-5739-47e2-a06b-3470a27159e7": ("EventGrid Data Sender", (
        "Microsoft.EventGrid/topics", "Microsoft.EventGrid/domains", "Microsoft.EventGrid/domains/topics",
        "Microsoft.EventGrid/namespaces", "Microsoft.EventGrid/namespaces/topics")),
}
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"


# ---------------------------------------------------------------------------------------------
# A reader for the Bicep these templates use


def strip_comments(text: str) -> str:
    """The text without `//` and `/* */` comments; strings (which may hold `//`, as URLs do) are kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'":
            end = string_end(text, i)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def string_end(text: str, start: int) -> int:
    """Index just past the single-quoted string starting at `start` (backslash escapes)."""
    i = start + 1
    while text[i] != "'":
        i += 2 if text[i] == "\\" else 1
    return i + 1


def block_after(text: str, start: int) -> str:
    """The `{ ... }` block whose opening brace is the first one at or after `start`; braces in
    strings (interpolations) do not count."""
    i = text.index("{", start)
    depth, begin = 0, i
    while True:
        ch = text[i]
        if ch == "'":
            i = string_end(text, i)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i + 1]
        i += 1


def object_entries(block: str) -> dict[str, str]:
    """`key: expression` lines directly inside an object block (one per line, as written here)."""
    entries, depth = {}, 0
    for line in block.splitlines():
        stripped = line.strip()
        match = re.match(r"^'?([A-Za-z_][\w-]*)'?\s*:\s*(.+)$", stripped)
        if depth == 1 and match:
            entries[match.group(1)] = match.group(2).strip()
        depth += count_outside_strings(line, "{[") - count_outside_strings(line, "}]")
    return entries


def count_outside_strings(line: str, chars: str) -> int:
    count, i = 0, 0
    while i < len(line):
        if line[i] == "'":
            i = string_end(line, i)
            continue
        count += line[i] in chars
        i += 1
    return count


def allowed_values(listing: str) -> list:
    """The items of an @allowed([...]) list: quoted strings, or whole numbers."""
    strings = re.findall(r"'([^']*)'", listing)
    return strings if strings else [int(item) for item in re.split(r"[,\s]+", listing.strip()) if item]


class Bicep:
    def __init__(self, path: Path):
        self.path = path
        self.raw = path.read_text("utf-8")
        self.text = strip_comments(self.raw)

    def params(self) -> dict[str, dict]:
        found = {}
        lines = self.text.splitlines()
        for index, line in enumerate(lines):
            match = re.match(r"^param\s+(\w+)\s+(\w+)(?:\s*=\s*(.+))?$", line.strip())
            if not match:
                continue
            decorators, back = [], index - 1
            while back >= 0 and not lines[back].startswith(("param ", "var ", "resource ", "module ", "output ")) \
                    and lines[back].strip():
                decorators.insert(0, lines[back])
                back -= 1
            allowed = re.search(r"@allowed\(\[(.*?)\]\)", "\n".join(decorators), re.S)
            found[match.group(1)] = {
                "type": match.group(2),
                "default": match.group(3),
                "allowed": allowed_values(allowed.group(1)) if allowed else None,
                "decorators": "\n".join(decorators),
            }
        return found

    def var_object(self, name: str) -> dict[str, str]:
        match = re.search(rf"^var\s+{name}\s*=\s*\{{", self.text, re.M)
        assert match, f"{self.path.name}: no var {name}"
        return object_entries(block_after(self.text, match.start()))

    def declarations(self, keyword: str) -> list[dict]:
        """`resource`/`module` declarations: symbol, type or path, condition and body."""
        found = []
        pattern = rf"^{keyword}\s+(\w+)\s+'([^']+)'\s+(?:existing\s+)?=\s*(\[for .*? in .*?:\s*)?(?:if\s*\((.*?)\)\s*)?\{{"
        for match in re.finditer(pattern, self.text, re.M):
            found.append({"symbol": match.group(1), "target": match.group(2), "condition": match.group(4),
                          "body": block_after(self.text, match.start())})
        return found

    def resources(self, type_prefix: str) -> list[dict]:
        return [r for r in self.declarations("resource") if r["target"].split("@")[0] == type_prefix]

    def module_params(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Module symbol -> (module path, params passed)."""
        modules = {}
        for module in self.declarations("module"):
            params_at = module["body"].index("params:")
            modules[module["symbol"]] = (module["target"], object_entries(block_after(module["body"], params_at)))
        return modules


def app_settings() -> dict[str, str]:
    """Setting name -> Bicep expression, from the marked app-settings region of main.bicep."""
    raw = MAIN.read_text("utf-8")
    region = raw.split("// app-settings:start", 1)[1].split("// app-settings:end", 1)[0]
    main = Bicep(MAIN)
    names = re.findall(r"^var\s+(\w+)\s*=\s*\{", strip_comments(region), re.M)
    assert names == ["hostSettings", "appSettings"], names
    settings: dict[str, str] = {}
    for name in names:
        entries = main.var_object(name)
        assert not set(entries) & set(settings), "a setting is set twice"
        settings.update(entries)
    return settings


def bicep_literal(expression: str | None):
    """The Python value of a literal default: 'text' -> str, {} -> dict, None -> None."""
    if expression is None:
        return None
    if expression == "{}":
        return {}
    assert expression.startswith("'") and string_end(expression, 0) == len(expression), expression
    return expression[1:-1].replace("\\'", "'")


def parameters() -> dict:
    return json.loads(PARAMETERS.read_text("utf-8"))["parameters"]


# `${NAME}` or `${NAME=default}`: the only forms main.parameters.json uses (see azd_substitute below).
AZD_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:=([^${}]*))?\}")


def azd_reference(value) -> tuple[str, str | None] | None:
    """(variable, default or None) of a parameters-file value that is one azd reference."""
    match = AZD_REFERENCE.fullmatch(value) if isinstance(value, str) else None
    return (match.group(1), match.group(2)) if match else None


CODE_DEFAULTS = {name: default or "" for name, default, _ in all_settings()}


# ---------------------------------------------------------------------------------------------
# The reader itself (so a broken reader cannot make the checks below pass vacuously)


def test_the_reader_keeps_urls_in_strings_and_finds_nested_blocks():
    text = "var a = {\n  url: 'https://x/${y}' // comment {\n  inner: {\n    b: 'c}'\n  }\n  d: e\n}\n"
    stripped = strip_comments(text)
    assert "'https://x/${y}'" in stripped and "comment" not in stripped
    assert object_entries(block_after(stripped, 0)) == {"url": "'https://x/${y}'", "inner": "{", "d": "e"}


# ---------------------------------------------------------------------------------------------
# Settings


def test_every_app_setting_is_set_by_the_template_or_listed_with_a_reason():
    settings = set(app_settings())
    code = set(CODE_DEFAULTS)
    missing = code - settings - set(NOT_SET_BY_TEMPLATE)
    assert not missing, f"settings the template does not set: {sorted(missing)}"
    assert set(NOT_SET_BY_TEMPLATE) <= code, "NOT_SET_BY_TEMPLATE names a setting the code no longer has"
    assert not set(NOT_SET_BY_TEMPLATE) & settings, "NOT_SET_BY_TEMPLATE names a setting the template sets"


def test_every_setting_the_template_sets_exists_in_the_code_or_is_the_hosts():
    stale = set(app_settings()) - set(CODE_DEFAULTS) - set(HOST_SETTINGS)
    assert not stale, f"the template sets settings the code does not read: {sorted(stale)}"
    assert set(HOST_SETTINGS) <= set(app_settings())


def test_no_setting_that_flex_consumption_rejects_and_no_storage_connection_string():
    settings = set(app_settings())
    assert not settings & FLEX_UNSUPPORTED_SETTINGS
    # Shared keys are off: a connection string in AzureWebJobsStorage could not work, and would be a secret.
    assert "AzureWebJobsStorage" not in settings


def test_each_setting_parameter_defaults_to_the_codes_default_and_takes_the_azd_variable_of_its_name():
    params, wired, checked = Bicep(MAIN).params(), parameters(), 0
    for setting, expression in app_settings().items():
        if setting not in CODE_DEFAULTS:
            continue
        json_setting = re.fullmatch(r"empty\((\w+)\) \? '' : string\(\1\)", expression)
        if json_setting:
            # A JSON setting: an object parameter edited in main.parameters.json (azd's ${VAR}
            # substitution would put the value's quotes into that JSON file unescaped).
            name = json_setting.group(1)
            assert params[name]["type"] == "object" and bicep_literal(params[name]["default"]) == {}
            assert CODE_DEFAULTS[setting] == "" and wired[name]["value"] == {}
            checked += 1
            continue
        if expression not in params:
            continue
        param, checked = params[expression], checked + 1
        assert param["type"] == "string", f"{expression}: app settings are strings"
        default = bicep_literal(param["default"])
        if default is None:
            assert setting == "DATABRICKS_HOST", f"{expression} has no default but the code has one"
        else:
            assert default == CODE_DEFAULTS[setting], \
                f"{expression} defaults to {default!r}, the code to {CODE_DEFAULTS[setting]!r}"
        variable, file_default = azd_reference(wired[expression]["value"]) or (None, None)
        assert variable == setting, f"{expression} should take ${{{setting}}}"
        assert file_default in (None, default), f"{expression}: the parameters file's default {file_default!r} is not the template's"
    assert checked >= 20


def test_parameter_choices_are_the_codes():
    params = Bicep(MAIN).params()
    assert params["databricksAuth"]["allowed"] == list(AUTH_MODES)
    assert params["databricksJobsApiVersion"]["allowed"] == list(JOBS_API_VERSIONS)
    assert set(params["workflowDeleteJobOnCompletion"]["allowed"]) == {"true", "false"}


def test_settings_that_come_from_the_deployment_point_at_its_resources():
    settings = app_settings()
    client_id = "identity.outputs.clientId"
    assert settings["AzureWebJobsStorage__accountName"] == "storage.outputs.name"
    assert settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert settings["AzureWebJobsStorage__clientId"] == client_id
    assert settings["DATABRICKS_MANAGED_IDENTITY_CLIENT_ID"] == client_id
    assert settings["AZURE_CLIENT_ID"] == client_id
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${" + client_id + "};Authorization=AAD'"
    assert settings["DATABRICKS_KEY_VAULT_URL"] == "keyVault.outputs.uri"
    assert settings["TASKHUB_NAME"] == "checkedTaskHubName"
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == f"storage.outputs.{service}ServiceUri"
    assert settings["AZURE_CLOUD"] == "environment().name"


def test_host_json_reads_the_storage_connection_and_task_hub_the_template_sets():
    host = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["durableTask"]
    connection = host["storageProvider"].get("connectionName") or host["storageProvider"]["connectionStringName"]
    settings = app_settings()
    assert f"{connection}__accountName" in settings, "Durable's storage connection is not identity-based"
    assert settings["WORKFLOW_QUEUE_CONNECTION"] == f"'{connection}'"
    assert host["hubName"] == "%TASKHUB_NAME%"
    default = bicep_literal(Bicep(MAIN).params()["taskHubName"]["default"])
    # Durable's task hub rule: letters and digits, starting with a letter, 3 to 45 long.
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", default)


def test_the_apps_queues_are_created_with_their_poison_queue():
    main = Bicep(MAIN)
    params = main.params()
    queue_names = main.module_params()["storage"][1]["queueNames"]
    assert queue_names == "concat(requestQueues, invalidEventQueues, completionQueues)"
    assert re.search(r"^var requestQueues = \[workflowRequestQueue, '\$\{workflowRequestQueue\}-poison'\]$",
                     main.text, re.M)
    assert re.search(r"^var invalidEventQueues = empty\(workflowInvalidEventQueue\) \? \[\] : \[workflowInvalidEventQueue\]$",
                     main.text, re.M)
    assert re.search(r"^var completionQueues = empty\(workflowCompletionQueue\) \? \[\] : \[workflowCompletionQueue\]$",
                     main.text, re.M)
    for name in ("workflowRequestQueue", "workflowInvalidEventQueue"):
        queue = bicep_literal(params[name]["default"])
        # Storage queue names: 3-63 lowercase letters, digits and single hyphens.
        assert re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", queue + "-poison"), queue


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secret_settings_hold_only_key_vault_references_to_secrets_the_template_does_not_create():
    main, settings = Bicep(MAIN), app_settings()
    references = main.var_object("secretReferences")
    names = {key: bicep_literal(value) for key, value in main.var_object("secretNames").items()}
    prefix = re.search(r"^var secretReferencePrefix = (.+)$", main.text, re.M).group(1)
    assert prefix == "'@Microsoft.KeyVault(SecretUri=${keyVault.outputs.uri}secrets/'"
    for key, value in references.items():
        assert value == "'${secretReferencePrefix}${secretNames." + key + "}/)'"
        assert re.fullmatch(r"[0-9A-Za-z-]{1,127}", names[key])
    for setting in SECRET_SETTINGS:
        assert re.fullmatch(r".+ \? secretReferences\.\w+ : ''|empty\(\w+\) \? '' : secretReferences\.\w+",
                            settings[setting]), f"{setting} = {settings[setting]}"
    # A secret setting appears nowhere but as such a reference.
    for setting, expression in settings.items():
        if "secretReferences." in expression:
            assert setting in SECRET_SETTINGS


def test_the_webhook_password_is_only_referenced_when_a_user_name_is_set():
    # An unresolved reference leaves its own text as the value (App Service docs); without this
    # guard that guessable text would be the webhook password.
    assert app_settings()["DATABRICKS_WEBHOOK_PASSWORD"] == \
        "empty(databricksWebhookUsername) ? '' : secretReferences.webhookPassword"


def test_key_vault_references_resolve_with_the_user_assigned_identity():
    app = Bicep(INFRA / "modules" / "functionapp.bicep")
    site = app.resources("Microsoft.Web/sites")[0]["body"]
    assert "keyVaultReferenceIdentity: identityId" in site
    assert "type: 'UserAssigned'" in site and "'${identityId}': {}" in site
    assert Bicep(MAIN).module_params()["functionApp"][1]["identityId"] == "identity.outputs.id"
    vault = Bicep(INFRA / "modules" / "keyvault.bicep").text
    assert "enableRbacAuthorization: true" in vault


def test_the_template_creates_no_secret_and_takes_none_as_a_parameter():
    for path in INFRA.rglob("*.bicep"):
        bicep = Bicep(path)
        assert not bicep.resources("Microsoft.KeyVault/vaults/secrets"), path
        assert not re.search(r"resource\s+\w+\s+'secrets'", bicep.text), path
        assert "@secure()" not in bicep.text, f"{path}: a secret would pass through the template"
        assert "listKeys(" not in bicep.text and "listConnectionStrings(" not in bicep.text, path


SECRET_PATTERNS = {
    "storage account key": re.compile(r"AccountKey=", re.I),
    "SAS token": re.compile(r"SharedAccessSignature=|[?&]sig=[A-Za-z0-9%+/=]{20,}", re.I),
    "Databricks PAT": re.compile(r"\bdapi[0-9a-f]{32}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "instrumentation key": re.compile(r"InstrumentationKey=[0-9a-f-]{36}", re.I),
    "Event Grid key": re.compile(r"aeg-sas-key", re.I),
    "key-like literal": re.compile(r"['\"][A-Za-z0-9+/]{40,}={0,2}['\"]"),
}


def secrets_in(text: str) -> list[str]:
    return [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_the_secret_detector_recognises_secrets():
    samples = [
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==",
        "token: 'dapi" + "0123456789abcdef" * 2 + "'",
        "'" + "Zm9vYmFyYmF6" * 4 + "=='",
        "https://a.blob.core.windows.net/c?sv=2022&sig=" + "A" * 30,
    ]
    assert all(secrets_in(sample) for sample in samples)
    assert not secrets_in("param databricksHost string\nvalue: '${storage.outputs.name}'")


@pytest.mark.parametrize("path", sorted([*INFRA.rglob("*"), ROOT / "azure.yaml"]), ids=lambda p: p.name)
def test_no_literal_that_looks_like_a_secret(path):
    if path.is_file():
        assert not secrets_in(path.read_text("utf-8")), path


# ---------------------------------------------------------------------------------------------
# Roles


def role_assignments() -> list[dict]:
    """Every role assignment in infra/: role id, principal (traced to main.bicep), scope type."""
    main_modules = Bicep(MAIN).module_params()
    found = []
    for path in sorted((INFRA / "modules").glob("*.bicep")):
        bicep = Bicep(path)
        existing = {r["symbol"]: r["target"].split("@")[0] for r in bicep.declarations("resource")}
        roles = {key: bicep_literal(value) for key, value in bicep.var_object("roles").items()} \
            if re.search(r"^var roles\b", bicep.text, re.M) else {}
        callers = [params for target, params in main_modules.values() if target == f"modules/{path.name}"]
        for assignment in bicep.resources("Microsoft.Authorization/roleAssignments"):
            body = object_entries(assignment["body"])
            properties = object_entries(block_after(assignment["body"], assignment["body"].index("properties:")))
            role = re.fullmatch(r"subscriptionResourceId\('Microsoft.Authorization/roleDefinitions', roles\.(\w+)\)",
                                properties["roleDefinitionId"])
            assert role, f"{path.name}: {properties['roleDefinitionId']}"
            assert body["name"].startswith("guid(") and properties["principalId"] in body["name"], \
                "the assignment name must derive from scope, principal and role (idempotent redeploys)"
            principal = properties["principalId"]
            found.append({
                "file": path.name,
                "role": roles[role.group(1)],
                "principal": {params.get(principal) for params in callers},
                "principal_type": properties.get("principalType"),
                "scope": existing.get(body["scope"]),
                "condition": assignment["condition"],
            })
    return found


def test_the_apps_identity_holds_every_role_the_code_needs():
    main_modules = Bicep(MAIN).module_params()
    assert main_modules["identity"][0] == "modules/identity.bicep"
    app_identity = {"identity.outputs.principalId"}
    assignments = role_assignments()
    for role, (name, scopes) in REQUIRED_APP_ROLES.items():
        scopes = (scopes,) if isinstance(scopes, str) else scopes
        granted = [a for a in assignments if a["role"] == role and a["principal"] == app_identity]
        assert granted, f"{name} is not assigned to the app's identity"
        assert all(a["scope"] in scopes and a["principal_type"] == "'ServicePrincipal'" for a in granted), granted
        # One assignment per kind of target, so any of them can be named.
        assert sorted(a["scope"] for a in granted) == sorted(scopes), (name, granted)


def test_the_deployer_may_write_the_secrets_and_nobody_else_gets_a_role():
    assignments = role_assignments()
    deployer = [a for a in assignments if a["principal"] == {"principalId"}]
    assert [(a["role"], a["scope"]) for a in deployer] == [(KEY_VAULT_SECRETS_OFFICER, "Microsoft.KeyVault/vaults")]
    assert deployer[0]["condition"] == "!empty(deployerPrincipalId)"
    others = [a for a in assignments if a["principal"] not in ({"identity.outputs.principalId"}, {"principalId"})]
    assert not others, others


def test_the_event_grid_role_is_assigned_only_when_a_topic_is_named():
    topic = [m for m in Bicep(MAIN).declarations("module") if m["target"] == "modules/eventgrid-sender.bicep"]
    assert len(topic) == 1 and topic[0]["condition"] == "!empty(completionTopicResourceId)"


def test_the_app_starts_after_its_roles_and_private_endpoints_exist():
    function_app = [m for m in Bicep(MAIN).declarations("module") if m["symbol"] == "functionApp"][0]
    depends = re.search(r"dependsOn:\s*\[(.*?)\]", function_app["body"], re.S).group(1).split()
    assert depends == ["roles", "completionTopicSender", "privateNetwork"]


# ---------------------------------------------------------------------------------------------
# Hosting


def test_flex_consumption_linux_python_311_deployed_with_the_identity():
    app = Bicep(INFRA / "modules" / "functionapp.bicep")
    plan = app.resources("Microsoft.Web/serverfarms")[0]["body"]
    assert "tier: 'FlexConsumption'" in plan and "name: 'FC1'" in plan and "reserved: true" in plan
    site = app.resources("Microsoft.Web/sites")[0]["body"]
    assert "kind: 'functionapp,linux'" in site
    runtime = object_entries(block_after(site, site.index("runtime:")))
    assert runtime == {"name": "'python'", "version": "'3.11'"}
    storage = block_after(site, site.index("storage:"))
    assert "type: 'UserAssignedIdentity'" in storage and "userAssignedIdentityResourceId: identityId" in storage
    assert "httpsOnly: true" in site


def test_storage_refuses_shared_keys_and_app_insights_local_auth():
    storage = Bicep(INFRA / "modules" / "storage.bicep").resources("Microsoft.Storage/storageAccounts")[0]["body"]
    assert "allowSharedKeyAccess: false" in storage and "allowBlobPublicAccess: false" in storage
    insights = Bicep(INFRA / "modules" / "monitoring.bicep").resources("Microsoft.Insights/components")[0]["body"]
    assert "DisableLocalAuth: true" in insights


# ---------------------------------------------------------------------------------------------
# azd wiring


def test_parameters_file_names_only_real_parameters_and_fills_every_required_one():
    params, wired = Bicep(MAIN).params(), parameters()
    assert set(wired) <= set(params), f"unknown parameters: {sorted(set(wired) - set(params))}"
    # Every parameter is wired, so every knob can be set with `azd env set`.
    assert set(params) <= set(wired), f"parameters azd cannot set: {sorted(set(params) - set(wired))}"
    for name, param in params.items():
        value = wired[name]["value"]
        if isinstance(value, str):
            assert azd_reference(value), f"{name}: {value!r} is not an azd variable"
        if param["default"] is None:
            # azd asks for a required parameter whose variable is unset (Azure/azure-dev#2896).
            assert value, f"required parameter {name} has no value"
    assert wired["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert wired["location"]["value"] == "${AZURE_LOCATION}"
    assert wired["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_azure_yaml_deploys_the_repository_root_as_a_python_function_app():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text("utf-8"))
    assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", config["name"])
    (service, definition), = config["services"].items()
    assert definition["host"] == "function"
    assert definition["language"] in ("python", "py")
    assert definition["project"] in (".", "./")
    # azd finds the app by its azd-service-name tag.
    assert re.search(rf"^var serviceName = '{service}'$", Bicep(MAIN).text, re.M)
    site = Bicep(INFRA / "modules" / "functionapp.bicep").resources("Microsoft.Web/sites")[0]["body"]
    assert "tags: union(tags, { 'azd-service-name': serviceName })" in site
    assert Bicep(MAIN).module_params()["functionApp"][1]["serviceName"] == "serviceName"


def test_deploy_doc_names_the_secrets_and_variables_the_template_uses():
    doc = (ROOT / "docs" / "deploy.md").read_text("utf-8")
    for name in Bicep(MAIN).var_object("secretNames").values():
        assert bicep_literal(name) in doc
    variables = {azd_reference(value["value"])[0] for value in parameters().values() if isinstance(value["value"], str)}
    mentioned = set(re.findall(r"azd env set ([A-Z][A-Z0-9_]*)", doc))
    assert mentioned, "docs/deploy.md shows no `azd env set`"
    assert mentioned <= variables, f"docs/deploy.md sets variables the template ignores: {sorted(mentioned - variables)}"
    # Names the doc tells the reader to look up exist as deployment outputs (or variables, settings).
    outputs = set(re.findall(r"^output (\w+) ", Bicep(MAIN).text, re.M))
    looked_up = set(re.findall(r"azd env get-value ([A-Z][A-Z0-9_]*)", doc))
    assert looked_up and looked_up <= outputs, sorted(looked_up - outputs)
    named = set(re.findall(r"`((?:AZURE|MANAGED|FUNCTION|DATABRICKS_NOTIFICATIONS)_[A-Z_]+)`", doc))
    assert not named - variables - outputs - set(app_settings()), sorted(named - variables - outputs - set(app_settings()))


# ---------------------------------------------------------------------------------------------
# A real Bicep grammar, where installed


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.bicep")), ids=lambda p: p.name)
def test_templates_parse_with_a_bicep_grammar_that_agrees_with_the_reader(path):
    """pycep-parser (PyPI, pure Python) parses Bicep with a Lark grammar: no compiler or type
    check, but it rejects malformed templates, and its view of parameters and settings must match
    the text reader's above. Skipped until it is in requirements-dev.txt."""
    pycep = pytest.importorskip("pycep")
    parsed = pycep.BicepParser().parse(file_path=path)
    reader = Bicep(path)
    params = reader.params()
    assert set(parsed["parameters"]) == set(params)
    for name, param in parsed["parameters"].items():
        allowed = [d["argument"] for d in param["decorators"] if d["type"] == "allowed"]
        assert (allowed[0] if allowed else None) == params[name]["allowed"], name
        if isinstance(param.get("default"), str):
            assert param["default"] == bicep_literal(params[name]["default"]), name
    if path == MAIN:
        parsed_settings = {**parsed["variables"]["hostSettings"]["value"], **parsed["variables"]["appSettings"]["value"]}
        assert set(parsed_settings) == set(app_settings())
