"""Fault injection: what the client's retry policy must survive."""

import time

import pytest
import requests

from jobs_emulator import Faults


def test_scripted_429_and_503_carry_retry_after_then_the_call_succeeds(make_emulator):
    emu, api = make_emulator(faults={"retry_after": 7})
    emu.faults.script("429", "503", "500")
    first, second, third = api.get("list"), api.get("list"), api.get("list")
    assert (first.status_code, first.headers["Retry-After"], first.json()["error_code"]) == (
        429, "7", "REQUEST_LIMIT_EXCEEDED")
    assert (second.status_code, second.headers["Retry-After"], second.json()["error_code"]) == (
        503, "7", "TEMPORARILY_UNAVAILABLE")
    assert third.status_code == 500 and "Retry-After" not in third.headers
    assert api.get("list").status_code == 200
    assert [e["fault"] for e in emu.request_log] == ["429", "503", "500", None]


def test_dropped_connection_gets_no_response(make_emulator):
    emu, api = make_emulator()
    emu.faults.script("drop")
    with pytest.raises(requests.ConnectionError):
        api.get("list")
    assert api.get("list").status_code == 200  # the next request is served normally
    assert emu.request_log[0]["status"] is None and emu.request_log[0]["fault"] == "drop"


def test_drop_after_processing_loses_the_reply_but_not_the_run(make_emulator):
    emu, api = make_emulator()
    job_id = api.create_job()
    emu.faults.script("drop_after", path="*/run-now")
    body = {"job_id": job_id, "idempotency_token": "retry-me"}
    with pytest.raises(requests.ConnectionError):
        api.post("run-now", body)
    run_id = api.ok(api.post("run-now", body))["run_id"]  # the retry finds the run created before
    assert list(emu.runs) == [run_id]


def test_slow_response(make_emulator):
    emu, api = make_emulator(faults={"slow_seconds": 0.2})
    emu.faults.script("slow")
    started = time.perf_counter()
    assert api.get("list").status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_random_faults_are_reproducible_with_a_seed_and_filterable_by_path(make_emulator):
    def pattern(seed):
        faults = Faults(rate=0.5, kinds=("429", "500", "503"), seed=seed, paths=["*/runs/get"])
        emu, api = make_emulator(faults=faults)
        job_id = api.create_job()
        codes = [api.get("runs/get", run_id=1).status_code for _ in range(40)]
        listed = [api.get("list").status_code for _ in range(20)]
        assert set(listed) == {200}  # other paths are untouched
        return codes

    first = pattern(seed=42)
    assert first == pattern(seed=42)
    assert {429, 500, 503} <= set(first) and 400 in first  # 400: no run 1, when no fault hit


def test_faults_never_hide_an_auth_failure_or_the_sdk_probe(make_emulator):
    emu, api = make_emulator(faults={"rate": 1.0})
    r = requests.get(f"{emu.base_url}/api/2.2/jobs/list", timeout=5)
    assert r.status_code == 401
    assert requests.get(f"{emu.base_url}/.well-known/databricks-config", timeout=5).status_code == 404


def test_fault_settings_are_validated():
    with pytest.raises(ValueError):
        Faults(kinds=("418",))
    with pytest.raises(ValueError):
        Faults(rate=2)
    with pytest.raises(ValueError):
        Faults().script("teapot")
