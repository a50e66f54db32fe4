"""``python -m devhost serve`` / ``demo``: start-up, URLs, environment and the Location poller."""
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devhost.demo import run_demo
from devhost.serve import DEV_TOKEN, load_local_settings, start_stack

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def test_demo_follows_location_and_prints_outputs_last(app, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.2.azuredatabricks.net")  # no emulator
    out = io.StringIO()
    code = run_demo(app, request_body={"jobName": "toy"}, max_retry_after=0.05, out=out)
    lines = out.getvalue().strip().splitlines()
    assert code == 0
    assert lines[0].split()[-1].startswith("http://127.0.0.1:")
    assert any("runtimeStatus=Running step=pollRun lifeCycleState=RUNNING" in l for l in lines)
    assert json.loads(lines[-1]) == {"jobId": 1, "runId": 2, "resultState": "SUCCESS",
                                     "jobName": "toy"}


def test_demo_exit_status_reflects_result_state(app, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.2.azuredatabricks.net")
    out = io.StringIO()
    code = run_demo(app, request_body={"jobName": "toy", "wantResult": "FAILED"},
                    max_retry_after=0.05, out=out)
    assert code == 1
    assert json.loads(out.getvalue().strip().splitlines()[-1])["resultState"] == "FAILED"


def test_embedded_emulator_is_wired_before_the_app_runs(app):
    server, emulator, emulator_url = start_stack(app, port=0)
    try:
        assert emulator is not None and emulator_url.startswith("http://127.0.0.1:")
        assert os.environ["DATABRICKS_HOST"] == emulator_url
        assert os.environ["DATABRICKS_AUTH"] == "pat"
        assert os.environ["DATABRICKS_TOKEN"] == DEV_TOKEN
        # ... and its notification destination calls the app's webhook route with the app's credentials.
        destination = emulator.notification_destinations[os.environ["DATABRICKS_NOTIFICATION_DESTINATION_ID"]]
        assert destination.url == server.base_url + "/api/databricks/notifications"
        assert (destination.username, destination.password) == (
            os.environ["DATABRICKS_WEBHOOK_USERNAME"], os.environ["DATABRICKS_WEBHOOK_PASSWORD"])
        assert len(destination.password) >= 24
    finally:
        server.stop()
        emulator.stop()


def test_webhook_settings_already_given_are_left_alone(app, monkeypatch):
    monkeypatch.setenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", "my-destination")
    server, emulator, _ = start_stack(app, port=0)
    try:
        assert emulator.notification_destinations == {}
        assert os.environ["DATABRICKS_NOTIFICATION_DESTINATION_ID"] == "my-destination"
        assert "DATABRICKS_WEBHOOK_PASSWORD" not in os.environ
    finally:
        server.stop()
        emulator.stop()


def test_serve_cli_prints_app_url_first_and_stops_on_sigterm(tmp_path):
    (tmp_path / "toyapp.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from devhost_toyapp import make_app\n"
        "app = make_app()\n")
    env = dict(os.environ, DATABRICKS_HOST="https://adb-1.2.azuredatabricks.net",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", "0",
                             "--app", "toyapp:app"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[:2] == ["devhost", "app"]
        base = first[-1]
        r = requests.post(f"{base}/api/start/sequence", json=["cli"], timeout=10)
        assert r.status_code == 202
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_local_settings_values_become_environment_unless_already_set(tmp_path):
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False, "Values": {"A_SETTING": "from-file", "KEPT": "from-file"}}))
    environ = {"KEPT": "from-env"}
    applied = load_local_settings(str(tmp_path), environ)
    assert environ == {"A_SETTING": "from-file", "KEPT": "from-env"}
    assert applied == {"A_SETTING": "from-file"}
    assert load_local_settings(str(tmp_path / "missing"), {}) == {}
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(ValueError, match="encrypted"):
        load_local_settings(str(tmp_path), {})


def test_serve_reads_local_settings_logs_workflow_events_and_never_prints_secrets(tmp_path):
    (tmp_path / "toyapp.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from devhost_toyapp import make_app\n"
        "app = make_app()\n")
    secret = "dapi0123456789abcdef0123456789abcdef"
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "DATABRICKS_HOST": "https://adb-1.2.azuredatabricks.net", "DATABRICKS_AUTH": "pat",
        "DATABRICKS_TOKEN": secret}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "DEVHOST_"))}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", "0",
                             "--app", "toyapp:app"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().split()[-1]
        lines = [proc.stdout.readline() for _ in range(3)]
        r = requests.post(f"{base}/api/start/sequence", json=["cli"], timeout=10)
        iid = r.json()["id"]
        for _ in range(500):
            if requests.get(f"{base}/api/status/{iid}", timeout=5).status_code == 200:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    stdout = "".join(lines) + out
    assert "databricks        https://adb-1.2.azuredatabricks.net (auth: pat)" in stdout
    assert "settings          3 value(s) from local.settings.json" in stdout
    assert secret not in stdout and secret not in err
    # The default level shows one line per workflow event, like the host console.
    assert f"sequence (Orchestrator) instance {iid} started." in err
    assert f"sequence (Orchestrator) instance {iid} completed. RuntimeStatus: Completed." in err
    assert "Hello cli" not in err  # no inputs or outputs


def test_log_level_is_accepted_after_the_verb():
    from devhost.__main__ import build_parser
    args = build_parser().parse_args(["serve", "--log-level", "INFO", "--port", "0"])
    assert args.log_level == "INFO"
    args = build_parser().parse_args(["--log-level", "DEBUG", "serve"])
    assert args.log_level == "DEBUG"
    assert build_parser().parse_args(["serve"]).log_level is None


def test_demo_starts_the_request_file_it_is_given(tmp_path, monkeypatch, capsys):
    from devhost import __main__ as cli
    from devhost import demo

    started = []
    monkeypatch.setattr(demo, "run_demo", lambda app, request_body=None, **kwargs: started.append(request_body) or 0)
    body = tmp_path / "shape.json"
    body.write_text('{"jobId": 7}', "utf-8")
    assert cli.main(["demo", "--request", str(body)]) == 0
    assert cli.main(["demo"]) == 0
    assert started == [{"jobId": 7}, None]  # None: the seed's request
    for content, message in (("[1]", "must hold a JSON object"), ("{", "is not JSON"), (None, "cannot read")):
        path = tmp_path / "bad.json"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content, "utf-8")
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", "--request", str(path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
