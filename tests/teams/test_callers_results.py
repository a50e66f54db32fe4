"""The results route (issue 17 §1) through devhost with --auth: a task's whole output, kept in blob
storage (Azurite), served to the workflow's owner only; another caller gets 404 as for an unknown id."""
from __future__ import annotations

import json

import requests

from callers_support import A, B, CLUSTER
from jobs_emulator import Behavior, Scenario

START = "/api/workflows/create-job-and-run"
BIG = "é" + "x" * 300_000  # over the 64 KB share; a 2-byte character first


def call(teams, method, path, who=None, headers=None):
    headers = dict(headers or {})
    if who is not None:
        headers["Authorization"] = f"Bearer {teams.tokens[who]}"
    return requests.request(method, teams.base_url + path, headers=headers, timeout=10)


def _finished_workflow(teams) -> tuple:
    teams.emulator.scenario = Scenario(rules=[
        ("*/load", Behavior(phases=(("RUNNING", 60),), notebook_result=BIG)),
        ("*/check", Behavior(phases=(("RUNNING", 60),), notebook_result="fine")),
    ])
    body = {"jobName": "team-a-load", "taskKey": "load", "tasks": [
        {"task_key": k, "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": f"/Workspace/Teams/a/{k}"}}
        for k in ("load", "check")]}
    started = requests.post(teams.base_url + START, json=body, timeout=10,
                            headers={"Authorization": f"Bearer {teams.tokens[A]}"})
    assert started.status_code == 202, started.text
    iid = started.json()["id"]
    teams.host.run_until_complete(iid)
    return iid, call(teams, "GET", f"/api/workflows/{iid}", A).json()


def test_the_owner_fetches_a_tasks_whole_result_and_nobody_else_can(teams, results_storage):
    iid, outputs = _finished_workflow(teams)
    load = {t["taskKey"]: t for t in outputs["tasks"]}["load"]
    assert load["notebookResultTruncated"] is True and load["notebookResultBytes"] == len(BIG.encode("utf-8"))
    path = load["resultPath"]
    assert path == f"/api/workflows/{iid}/results/load" and outputs["resultPath"] == path

    whole = call(teams, "GET", path, A)
    assert whole.status_code == 200 and whole.headers["Content-Type"].startswith("application/json")
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.json()["notebookResult"] == BIG and whole.json()["taskKey"] == "load"

    # In pieces: a Range is read from storage alone.
    first = call(teams, "GET", path, A, {"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == whole.content[:100]
    assert first.headers["Content-Range"] == f"bytes 0-99/{len(whole.content)}"
    tail = call(teams, "GET", path, A, {"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    beyond = call(teams, "GET", path, A, {"Range": f"bytes={len(whole.content)}-"})
    assert beyond.status_code == 416 and beyond.json()["field"] == "Range"

    # A task whose output was whole inline is served from the outputs (nothing was kept aside).
    check = call(teams, "GET", f"/api/workflows/{iid}/results/check", A)
    assert check.status_code == 200 and check.json()["notebookResult"] == "fine"
    assert len(results_storage.names()) == 1

    # Another caller: exactly as for an unknown workflow.
    unknown = call(teams, "GET", "/api/workflows/0123456789abcdef0123456789abcdef/results/load", B)
    theirs = call(teams, "GET", path, B)
    assert unknown.status_code == theirs.status_code == 404
    assert theirs.json() == {"error": f"no workflow instance '{iid}'", "field": "instanceId"}
    assert call(teams, "GET", path).status_code == 401  # no token at all
    assert call(teams, "GET", f"/api/workflows/{iid}/results/nope", A).status_code == 404
    assert call(teams, "GET", f"/api/workflows/{iid}/results/bad%20key", A).status_code == 400
    assert call(teams, "POST", path, A).status_code == 405


def test_a_kept_result_that_was_removed_answers_404_naming_the_task(teams, results_storage):
    from messaging import result_blobs

    iid, _ = _finished_workflow(teams)
    [name] = results_storage.names()
    result_blobs.container_client().delete_blob(name)  # e.g. a lifecycle rule purged it
    gone = call(teams, "GET", f"/api/workflows/{iid}/results/load", A)
    assert gone.status_code == 404 and gone.json()["field"] == "taskKey"


def test_results_of_a_running_workflow_answer_409(teams, results_storage):
    teams.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    body = {"jobName": "team-a-load", "taskKey": "main", "notebookPath": "/Workspace/Teams/a/load",
            "existingClusterId": CLUSTER}
    iid = requests.post(teams.base_url + START, json=body, timeout=10,
                        headers={"Authorization": f"Bearer {teams.tokens[A]}"}).json()["id"]
    teams.host.run_until_idle()
    running = call(teams, "GET", f"/api/workflows/{iid}/results/main", A)
    assert running.status_code == 409 and running.headers["Retry-After"]
    assert call(teams, "GET", f"/api/workflows/{iid}/results/main", B).status_code == 404
