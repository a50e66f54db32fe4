"""Issue 15 offline: the Bicep's Entra ID parameters and app roles, and the README section that
documents them (no Bicep CLI: the template text and pycep-parser, as in test_infra.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from callers.identity import ADMIN_ROLE, RUN_ROLE
from workflow import caller_policy

ROOT = Path(__file__).resolve().parents[2]
MAIN = (ROOT / "infra" / "main.bicep").read_text("utf-8")
ENTRA = (ROOT / "infra" / "modules" / "entra-app.bicep").read_text("utf-8")
README = (ROOT / "README.md").read_text("utf-8")
CALLERS_DOC = (ROOT / "docs" / "callers.md").read_text("utf-8")
PARAMETERS = json.loads((ROOT / "infra" / "main.parameters.json").read_text("utf-8"))["parameters"]


def test_the_template_takes_the_tenant_and_audience_and_sets_the_auth_settings():
    for param in ("entraAppRegistration", "workflowAuthTenantId", "workflowAuthAudience", "workflowAuthMetadataUrl",
                  "workflowCallerPolicies"):
        assert re.search(rf"^param {param} ", MAIN, re.M), param
        assert param in PARAMETERS, param
    for setting in ("WORKFLOW_AUTH_TENANT_ID", "WORKFLOW_AUTH_AUDIENCE", "WORKFLOW_AUTH_METADATA_URL",
                    "WORKFLOW_CALLER_POLICIES"):
        assert re.search(rf"^\s+{setting}: ", MAIN, re.M), setting
    assert re.search(r"^module entraApp 'modules/entra-app.bicep' = if \(entraAppRegistration == 'true'\)", MAIN, re.M)


def test_the_app_registration_declares_the_roles_the_code_checks_and_requires_assignment():
    roles = re.findall(r"value: '([^']+)'", ENTRA)
    assert sorted(roles) == sorted([RUN_ROLE, ADMIN_ROLE])
    assert "appRoleAssignmentRequired: true" in ENTRA and "identifierUris: [identifierUri]" in ENTRA
    assert "extension microsoftGraphV1" in ENTRA
    config = json.loads((ROOT / "infra" / "bicepconfig.json").read_text("utf-8"))
    assert config["extensions"]["microsoftGraphV1"].startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")


def _section() -> str:
    return README.split("## Callers and policies", 1)[1].split("\n## ", 1)[0]


def test_readme_documents_the_bicep_parameters_and_a_two_team_policy_that_validates():
    section = _section()
    flat = " ".join(section.split())
    for name in ("ENTRA_APP_REGISTRATION", "workflowAuthTenantId", "workflowAuthAudience", "workflowCallerPolicies",
                 "WORKFLOW_API_AUDIENCE", RUN_ROLE, ADMIN_ROLE, "Service principal: User", "Managed identity"):
        assert name in flat, name
    example = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    policies = caller_policy.parse(example)
    assert len(policies.document["callers"]) == 2 and policies.document["sources"]
    outputs = set(re.findall(r"^output (\w+) ", MAIN, re.M))
    assert {"WORKFLOW_API_AUDIENCE", "WORKFLOW_API_APP_ROLES"} <= outputs


def test_the_logic_apps_example_calls_with_its_managed_identity_and_no_key_in_any_url():
    action = re.search(r'```json\n("Run_notebook".*?)```', CALLERS_DOC, re.S).group(1)
    parsed = json.loads("{" + action + "}")["Run_notebook"]["inputs"]
    assert parsed["authentication"]["type"] == "ManagedServiceIdentity" and parsed["authentication"]["audience"]
    logic_apps = CALLERS_DOC.split("## HTTP and Logic Apps", 1)[1].split("\n## ", 1)[0]
    for text in (logic_apps, _section()):
        assert not re.search(r"https?://\S*[?&]code=", text) and "x-functions-key" not in json.dumps(parsed)
