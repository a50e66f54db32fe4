"""The README and the example settings file describe the code as it is."""
import json
import re
from pathlib import Path

from tools.settings_table import README, all_settings, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_is_generated_from_the_code():
    text = README.read_text("utf-8")
    table = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0].strip()
    assert table == render(), "run `python -m tools.settings_table` to refresh the README table"
    assert len(all_settings()) >= 25


def test_example_local_settings_list_every_setting_and_use_azurite():
    values = json.loads((ROOT / "local.settings.example.json").read_text("utf-8"))["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert {name for name, _, _ in all_settings()} <= set(values)


def test_readme_gives_exactly_the_two_setup_commands():
    text = README.read_text("utf-8")
    assert re.findall(r"^make (\w+)", text, flags=re.M) == ["demo", "test"]


def test_host_json_uses_the_v4_extension_bundle_and_bounded_dequeue():
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    # 4.30.0 or later: orchestration versions (context.version, defaultVersion) need it.
    assert host["extensionBundle"]["version"] == "[4.30.0, 5.0.0)"
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1


def test_requirements_separate_runtime_from_test_dependencies():
    runtime = (ROOT / "requirements.in").read_text("utf-8")
    assert "azure-functions-durable>=1.7,<2" in runtime
    for text in (runtime, (ROOT / "requirements.txt").read_text("utf-8")):
        assert "pytest" not in text and "responses" not in text
    assert "-r requirements.in" in (ROOT / "requirements-dev.txt").read_text("utf-8")


def test_the_deployment_package_keeps_what_the_app_imports_and_drops_the_dev_tools():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text("utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"devhost", "jobs_emulator", "tests", "bench", ".venv"} <= ignored
    runtime = {"function_app.py", "host.json", "requirements.txt", "activities", "orchestrators", "triggers",
               "workflow", "databricks_jobs", "spec"}
    assert not runtime & ignored
    # Nothing the app imports at run time may live in an ignored folder.
    import subprocess
    import sys
    code = ("import sys, function_app; "
            "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"devhost", "jobs_emulator", "bench", "tools", "tests"}
