"""What `azd provision` really passes to infra/main.bicep, for every azd variable never set and set
to "" (issue 19), checked against the template's parameter decorators and its fail() checks.

The model follows azd's own code (Azure/azure-dev, cli/azd/pkg/infra/provisioning/bicep/
bicep_provider.go, azd >= 1.15.0), step by step:
1. `loadParameters` substitutes each parameter of main.parameters.json on its own, with
   github.com/drone/envsubst. The lookup returns the variable's value, or "" when it is not defined
   (`env.Getenv`), and `evalParamEnvSubst` notes whether any variable it met is undefined
   (`env.LookupEnv`). drone/envsubst's `${NAME=default}`, `${NAME:=default}` and `${NAME:-default}`
   all apply `toDefault`, which uses the default when the value is EMPTY: the lookup cannot tell
   "unset" from "", so an empty variable takes the default too. (`${NAME-default}` is not a
   default in drone/envsubst at all: its parser accepts `=` or `:` after the name.)
2. A string parameter that comes out "" with an undefined variable in it is dropped: the template's
   own default applies. A variable set to "" is defined, so its "" is kept.
3. `ensureParameters` / `armParameterFileValue` convert by the template's type: an int parameter
   takes strconv.ParseInt of the string (anything unparsable, "" included, is dropped and the
   default applies); a bool one strconv.ParseBool; a string "" is kept when the parameter's default
   is a different string, and dropped (default) otherwise.
4. AZURE_PRINCIPAL_ID and AZURE_PRINCIPAL_TYPE are always supplied by azd itself.
Then ARM checks the values against the decorators; this test does that with the decorators as
pycep-parser reads them."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from databricks_jobs.settings import SETTINGS as DATABRICKS_SETTINGS
from messaging.settings import DEFAULTS as CALLER_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "infra" / "main.bicep"
PARAMETERS = ROOT / "infra" / "main.parameters.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

pycep = pytest.importorskip("pycep")

# What azd itself provides on every run (step 4), and what `azd up` asks for once and stores.
AZD_PROVIDED = {"AZURE_PRINCIPAL_ID": "00000000-0000-0000-0000-000000000001", "AZURE_PRINCIPAL_TYPE": "User"}
BASE_ENV = {
    **AZD_PROVIDED,
    "AZURE_ENV_NAME": "dbx-prod",
    "AZURE_LOCATION": "westeurope",
    "DATABRICKS_HOST": "https://adb-1234567890123456.7.azuredatabricks.net",
}

# Variables for which "" is a value of its own, different from the default, and passed on as such
# (the parameters file gives them no `=default`): the code reads "" as "off".
EMPTY_IS_A_VALUE = {
    "WORKFLOW_INVALID_EVENT_QUEUE": "invalid events are only logged (messaging/settings.py)",
}

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(=|:=|:-)([^${}]*))?\}")
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


class UnsupportedSyntax(ValueError):
    pass


def azd_substitute(text: str, env: dict[str, str]) -> tuple[str, bool]:
    """drone/envsubst as azd calls it (step 1): (result, whether an undefined variable was met).
    Refuses any `$` form outside the modelled ones, so a new form fails here instead of being
    modelled wrongly."""
    has_unset = False

    def substitute(match: re.Match) -> str:
        nonlocal has_unset
        name, operator, default = match.groups()
        if name not in env:
            has_unset = True
        value = env.get(name, "")
        return default if operator and value == "" else value

    result = _REFERENCE.sub(substitute, text)
    if "$" in _REFERENCE.sub("", text):
        raise UnsupportedSyntax(f"{text!r} uses substitution syntax the model does not cover")
    return result, has_unset


@functools.lru_cache(maxsize=1)
def template_parameters() -> dict[str, dict]:
    return pycep.BicepParser().parse(file_path=MAIN)["parameters"]


def azd_arm_parameters(env: dict[str, str], parameters_file: Path = PARAMETERS) -> dict:
    """The parameters azd sends to ARM (steps 1-4); a required parameter left without a value raises,
    as azd would prompt for it."""
    template = template_parameters()
    sent = {}
    for name, entry in json.loads(parameters_file.read_text("utf-8"))["parameters"].items():
        raw = entry["value"]
        if not isinstance(raw, str):
            sent[name] = raw  # objects: no variables in them
            continue
        value, has_unset = azd_substitute(raw, {**env, **AZD_PROVIDED})
        if value == "" and has_unset:
            continue  # step 2
        kind, default = template[name]["type"], template[name].get("default")
        if kind == "int":
            if re.fullmatch(r"[+-]?[0-9]+", value):
                sent[name] = int(value)
        elif kind == "bool":
            if value in _BOOLS:
                sent[name] = _BOOLS[value]
        elif value != "" or (isinstance(default, str) and default != ""):
            sent[name] = value
    missing = [n for n, p in template.items() if "default" not in p and n not in sent]
    if missing:
        raise LookupError(f"azd would prompt for {missing}")
    return sent


def effective_parameters(sent: dict) -> dict:
    values = {name: param.get("default") for name, param in template_parameters().items()}
    values.update(sent)
    return values


def decorator_violations(values: dict) -> list[str]:
    """What ARM (the decorators) and the template's fail() checks refuse in `values`."""
    problems = []
    for name, param in template_parameters().items():
        value = values[name]
        kind = param["type"]
        if not isinstance(value, {"int": int, "bool": bool, "string": str, "object": dict}[kind]) or \
                (kind == "int" and isinstance(value, bool)):
            problems.append(f"{name}: {value!r} is not a {kind}")
            continue
        for decorator in param["decorators"]:
            check, argument = decorator["type"], decorator.get("argument")
            if check == "allowed" and value not in argument:
                problems.append(f"{name}: {value!r} not in @allowed")
            elif check == "min_value" and value < argument:
                problems.append(f"{name}: {value} < @minValue({argument})")
            elif check == "max_value" and value > argument:
                problems.append(f"{name}: {value} > @maxValue({argument})")
            elif check == "min_length" and len(value) < argument:
                problems.append(f"{name}: {value!r} shorter than @minLength({argument})")
            elif check == "max_length" and len(value) > argument:
                problems.append(f"{name}: {value!r} longer than @maxLength({argument})")
    # The template's fail() checks (their expressions are pinned by test_the_fail_checks_are_in_the_template).
    hub = values["taskHubName"]
    if isinstance(hub, str) and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", hub):
        problems.append(f"taskHubName: {hub!r} is not letters and digits starting with a letter")
    if isinstance(values["durableAlwaysReadyInstances"], int) and isinstance(values["maximumInstanceCount"], int) \
            and values["durableAlwaysReadyInstances"] > values["maximumInstanceCount"]:
        problems.append("durableAlwaysReadyInstances > maximumInstanceCount")
    return problems


def deployed(env: dict[str, str], parameters_file: Path = PARAMETERS) -> tuple[dict, list[str]]:
    values = effective_parameters(azd_arm_parameters(env, parameters_file))
    return values, decorator_violations(values)


def wired_variables() -> dict[str, str]:
    """azd variable -> parameter, for every parameter the file maps to one."""
    found = {}
    for name, entry in json.loads(PARAMETERS.read_text("utf-8"))["parameters"].items():
        if isinstance(entry["value"], str):
            match = _REFERENCE.fullmatch(entry["value"])
            assert match, f"{name}: {entry['value']!r}"
            found[match.group(1)] = name
    return found


OPTIONAL_VARIABLES = sorted(set(wired_variables()) - set(BASE_ENV))


# ---------------------------------------------------------------------------------------------
# The model itself, on azd's and drone/envsubst's documented cases


def test_the_model_follows_drone_envsubst_and_azds_drop_rule():
    assert azd_substitute("${A}", {}) == ("", True)
    assert azd_substitute("${A}", {"A": ""}) == ("", False)
    assert azd_substitute("${A=d}", {}) == ("d", True)
    # toDefault: an empty value takes the default as well (the lookup returns "" either way).
    assert azd_substitute("${A=d}", {"A": ""}) == ("d", False)
    assert azd_substitute("${A:=d}", {"A": ""}) == ("d", False)
    assert azd_substitute("${A:-d}", {"A": "x"}) == ("x", False)
    assert azd_substitute("${A=0 0 3 * * *}", {}) == ("0 0 3 * * *", True)
    assert azd_substitute("x-${A}-${B=b}", {"A": "a"}) == ("x-a-b", True)
    for unsupported in ("${A-d}", "$A", "${A:+x}", "${A/#x/y}"):
        with pytest.raises(UnsupportedSyntax):
            azd_substitute(unsupported, {})


def test_the_validator_refuses_what_arm_would(tmp_path):
    """Without `=default`, an empty variable reaches ARM as "" and an @allowed check refuses it: the
    provisioning failure issue 19 describes (so the checks below can fail)."""
    old_style = json.loads(PARAMETERS.read_text("utf-8"))
    old_style["parameters"]["databricksJobsApiVersion"]["value"] = "${DATABRICKS_JOBS_API_VERSION}"
    old_style["parameters"]["workflowPurgeSchedule"]["value"] = "${WORKFLOW_PURGE_SCHEDULE}"
    path = tmp_path / "main.parameters.json"
    path.write_text(json.dumps(old_style), "utf-8")
    never_set, problems = deployed(BASE_ENV, path)
    assert not problems and never_set["databricksJobsApiVersion"] == "2.1"  # dropped: default
    values, problems = deployed({**BASE_ENV, "DATABRICKS_JOBS_API_VERSION": ""}, path)
    assert values["databricksJobsApiVersion"] == "" and problems == ["databricksJobsApiVersion: '' not in @allowed"]
    # A string setting with no decorator passes "" silently: the app would get an empty schedule.
    values, _ = deployed({**BASE_ENV, "WORKFLOW_PURGE_SCHEDULE": ""}, path)
    assert values["workflowPurgeSchedule"] == ""


# ---------------------------------------------------------------------------------------------
# Every variable, never set and set to ""


def test_with_only_what_azd_up_asks_for_every_parameter_takes_the_templates_default():
    sent = azd_arm_parameters(BASE_ENV)
    values, problems = deployed(BASE_ENV)
    assert not problems, problems
    defaults = {name: p.get("default") for name, p in template_parameters().items()}
    for name, value in sent.items():
        if name in ("environmentName", "location", "principalId", "principalType", "databricksHost"):
            continue
        assert value == defaults[name], f"{name}: the file's default {value!r} differs from the template's {defaults[name]!r}"
    assert values["maximumInstanceCount"] == 100 and values["instanceMemoryMB"] == 2048
    assert values["privateNetworking"] is False and values["taskHubName"] == "DatabricksJobs"


@pytest.mark.parametrize("variable", OPTIONAL_VARIABLES)
def test_a_variable_never_set_or_set_empty_leaves_a_valid_deployment(variable):
    parameter = wired_variables()[variable]
    default = template_parameters()[parameter].get("default")
    never_set, problems = deployed(BASE_ENV)
    assert not problems and never_set[parameter] == default
    emptied, problems = deployed({**BASE_ENV, variable: ""})
    assert not problems, f"`azd env set {variable} \"\"` would fail provisioning: {problems}"
    if variable in EMPTY_IS_A_VALUE:
        assert emptied[parameter] == ""
    else:
        # Empty means the default, as docs/deploy.md says.
        assert emptied[parameter] == default, f"`azd env set {variable} \"\"` gives {emptied[parameter]!r}, not {default!r}"


def test_empty_means_off_only_where_the_code_reads_empty_as_off():
    assert set(EMPTY_IS_A_VALUE) <= set(wired_variables())
    for variable in EMPTY_IS_A_VALUE:
        default = CALLER_DEFAULTS[variable]
        assert default, f"{variable}: an empty default needs no exception"
    # Everywhere else the code reads blank as its default (databricks_jobs/settings.py says so), so
    # "" in the environment and "" in the app would agree anyway; the file's defaults keep azd and
    # ARM's decorators out of it.
    assert not set(EMPTY_IS_A_VALUE) & {s.name for s in DATABRICKS_SETTINGS}


@pytest.mark.parametrize("variable, value, accepted", [
    ("FUNCTION_MAXIMUM_INSTANCE_COUNT", "40", True),
    ("FUNCTION_MAXIMUM_INSTANCE_COUNT", "1000", True),
    ("FUNCTION_MAXIMUM_INSTANCE_COUNT", "39", False),
    ("FUNCTION_MAXIMUM_INSTANCE_COUNT", "1001", False),
    ("FUNCTION_INSTANCE_MEMORY_MB", "4096", True),
    ("FUNCTION_INSTANCE_MEMORY_MB", "1024", False),
    ("FUNCTION_DURABLE_ALWAYS_READY_INSTANCES", "0", True),
    ("FUNCTION_DURABLE_ALWAYS_READY_INSTANCES", "101", False),  # more than the 100 instances allowed
    ("TASKHUB_NAME", "Jobs2", True),
    ("TASKHUB_NAME", "jobs-prod", False),
    ("TASKHUB_NAME", "2jobs", False),
    ("TASKHUB_NAME", "ab", False),
    ("AZURE_LOCATION", "swedencentral", True),
    ("AZURE_LOCATION", "eastus2euap", False),
    ("AZURE_LOCATION", "westindia", False),
    ("DATABRICKS_AUTH", "key_vault", True),
    ("DATABRICKS_AUTH", "token", False),
    ("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "7", False),
    ("PRIVATE_NETWORKING", "true", True),
])
def test_values_outside_the_ranges_fail_at_the_template_before_anything_is_created(variable, value, accepted):
    _, problems = deployed({**BASE_ENV, variable: value})
    assert (not problems) == accepted, problems


def test_a_value_azd_cannot_convert_is_dropped_for_the_default():
    """azd ignores an int it cannot parse (strconv.ParseInt fails: the parameter is dropped), so a
    typo silently means the default; docs/deploy.md warns about it."""
    values, problems = deployed({**BASE_ENV, "FUNCTION_MAXIMUM_INSTANCE_COUNT": "two hundred"})
    assert not problems and values["maximumInstanceCount"] == 100
    assert "whole number" in DEPLOY_DOC.read_text("utf-8")


def test_the_fail_checks_are_in_the_template():
    text = MAIN.read_text("utf-8")
    assert "var checkedTaskHubName = (empty(taskHubNameBadCharacters) && contains(letters, toLower(first(taskHubName)))) ? taskHubName : fail(" in text
    assert "c => !contains('${letters}0123456789', toLower(c))" in text
    assert "var checkedAlwaysReadyInstances = durableAlwaysReadyInstances <= maximumInstanceCount ? durableAlwaysReadyInstances : fail(" in text
    assert "TASKHUB_NAME: checkedTaskHubName" in text
    assert "durableAlwaysReadyInstances: checkedAlwaysReadyInstances" in text


# ---------------------------------------------------------------------------------------------
# The documentation says the same


def test_deploy_doc_states_the_azd_version_and_how_to_return_to_a_default():
    doc = DEPLOY_DOC.read_text("utf-8")
    assert "1.18.0" in doc and "mid-2025" not in doc
    # The old, wrong advice is gone; the right ones are there.
    assert "azd treats an empty value as unset" not in doc
    assert ".azure/<environment>/.env" in doc
    for variable in EMPTY_IS_A_VALUE:
        assert variable in doc
