"""The management HTTP API, driven by the REAL DurableOrchestrationClient over loopback HTTP."""
import time

import azure.durable_functions as df
import pytest
import requests
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from devhost.functions import run_coroutine


def client_for(server):
    return df.DurableOrchestrationClient(server.management.binding_json(server.base_url))


def wait_status(server, iid, wanted, timeout=5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = server.host.get_status(iid)
        if status and status["runtimeStatus"] == wanted:
            return status
        time.sleep(0.02)
    raise AssertionError(f"{iid} never reached {wanted}: {server.host.get_status(iid)}")


def test_binding_shape(server):
    binding = server.management.binding(server.base_url)
    assert binding["rpcBaseUrl"] == f"{server.base_url}/durabletask/"
    assert binding["managementUrls"]["id"] == "INSTANCEID"
    assert binding["managementUrls"]["statusQueryGetUri"].startswith(
        f"{server.base_url}/runtime/webhooks/durabletask/instances/INSTANCEID?taskHub=")
    assert "{functionName}[/{instanceId}]" in binding["creationUrls"]["createNewInstancePostUri"]


def test_real_client_start_status_raise_event(server):
    client = client_for(server)

    async def scenario():
        iid = await client.start_new("timer_or_event", "evt-1")
        running = await client.get_status(iid, show_input=True)
        await client.raise_event(iid, "approve", {"by": "bob"})
        return iid, running

    iid, running = run_coroutine(scenario(), timeout=10)
    assert iid == "evt-1"
    assert running.instance_id == "evt-1" and running.name == "timer_or_event"
    assert running.runtime_status in (OrchestrationRuntimeStatus.Pending,
                                      OrchestrationRuntimeStatus.Running)
    wait_status(server, iid, "Completed")
    done = run_coroutine(client.get_status(iid), timeout=10)
    assert done.runtime_status == OrchestrationRuntimeStatus.Completed
    # The Python client posts json.dumps(data) as a JSON string, so the orchestrator receives
    # the JSON text, not a dict: the real platform behaves the same (durable-python issue #295).
    assert done.output == {"winner": "event", "data": '{"by": "bob"}'}

    with pytest.raises(Exception, match="is gone"):
        run_coroutine(client.raise_event(iid, "approve", {}), timeout=10)


def test_real_client_input_history_and_terminate(server):
    client = client_for(server)
    iid = run_coroutine(client.start_new("waits_forever", None, {"k": [1, 2]}), timeout=10)
    wait_status(server, iid, "Running")
    status = run_coroutine(client.get_status(iid, show_history=True, show_input=True),
                           timeout=10)
    assert status.input_ == '{"k": [1, 2]}'  # the extension returns the client's JSON text
    assert [e["EventType"] for e in status.historyEvents][:2] == [12, 0]

    with pytest.raises(Exception, match="already exists"):
        run_coroutine(client.start_new("sequence", iid, ["x"]), timeout=10)

    run_coroutine(client.terminate(iid, "no longer needed"), timeout=10)
    status = run_coroutine(client.get_status(iid), timeout=10)
    assert status.runtime_status == OrchestrationRuntimeStatus.Terminated
    assert status.output == "no longer needed"
    run_coroutine(client.terminate(iid, "again"), timeout=10)  # 410 is not an error

    purged = run_coroutine(client.purge_instance_history(iid), timeout=10)
    assert purged.instances_deleted == 1
    assert not run_coroutine(client.get_status(iid), timeout=10)


def test_real_client_errors(server):
    client = client_for(server)
    with pytest.raises(Exception, match="known orchestrator functions"):
        run_coroutine(client.start_new("no_such_orchestrator"), timeout=10)
    assert not run_coroutine(client.get_status("unknown-id"), timeout=10)
    with pytest.raises(Exception, match="No instance with ID"):
        run_coroutine(client.raise_event("unknown-id", "x", 1), timeout=10)
    with pytest.raises(Exception, match="No instance with ID"):
        run_coroutine(client.terminate("unknown-id", "x"), timeout=10)


def test_webhook_status_urls(server):
    iid = server.host.start_new("timer_or_event", "hook-1")
    links = server.management.management_urls(server.base_url, iid)
    r = requests.get(links["statusQueryGetUri"], timeout=5)
    assert r.status_code == 202
    assert r.headers["Location"] == links["statusQueryGetUri"]
    assert r.headers["Retry-After"] == "5"
    assert r.json()["instanceId"] == iid

    r = requests.post(links["sendEventPostUri"].replace("{eventName}", "approve"),
                      data="plain", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 400
    r = requests.post(links["sendEventPostUri"].replace("{eventName}", "approve"),
                      json={"via": "webhook"}, timeout=5)
    assert r.status_code == 202
    wait_status(server, iid, "Completed")
    r = requests.get(links["statusQueryGetUri"], timeout=5)
    assert r.status_code == 200 and "Location" not in r.headers
    assert r.json()["output"] == {"winner": "event", "data": {"via": "webhook"}}
    r = requests.post(links["terminatePostUri"].replace("{text}", "late"), timeout=5)
    assert r.status_code == 410

    unknown = server.management.management_urls(server.base_url, "nope")
    assert requests.get(unknown["statusQueryGetUri"], timeout=5).status_code == 404


def test_failed_instance_status_codes(server):
    iid = server.host.start_new("explodes")
    wait_status(server, iid, "Failed")
    url = server.management.management_urls(server.base_url, iid)["statusQueryGetUri"]
    assert requests.get(url, timeout=5).status_code == 200
    r = requests.get(url + "&returnInternalServerErrorOnFailure=true", timeout=5)
    assert r.status_code == 500 and "orchestrator bug" in r.json()["output"]


def test_suspend_holds_events_and_timers_until_resume_with_the_real_client(server):
    host = server.host
    host.stop()  # driven in the foreground
    client = df.DurableOrchestrationClient(server.management.binding_json(server.base_url))
    iid = host.start_new("timer_or_event")
    host.run_until_idle()
    run_coroutine(client.suspend(iid, "hold"), timeout=10)
    assert host.get_status(iid)["runtimeStatus"] == "Suspended"
    run_coroutine(client.raise_event(iid, "approve", {"ok": True}), timeout=10)  # accepted, held
    host.run_until_idle()
    assert host.get_status(iid)["runtimeStatus"] == "Suspended"
    run_coroutine(client.resume(iid, "go on"), timeout=10)
    status = host.run_until_complete(iid)
    assert status["output"]["winner"] == "event"  # the held event, not the 60 s timer
    kinds = [e["EventType"] for e in host.history(iid)]
    assert kinds.index(19) < kinds.index(20)  # ExecutionSuspended, then ExecutionResumed
    from devhost import InstanceGoneError
    with pytest.raises(InstanceGoneError):
        host.suspend(iid, "too late")  # the management API answers 410
