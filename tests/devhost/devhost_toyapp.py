"""A toy function app for the devhost tests (a uniquely named module, not conftest, so other
test folders' conftest modules cannot shadow it).

Registered through a ``df.Blueprint`` like the real app's features; it exercises every construct
the replay host supports.
"""
import json
import uuid
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()
FLAKY_CALLS = {"count": 0}
QUEUE_SEEN = []
EVENTGRID_SEEN = []
HELLO_CALLS = []
TIMER_SEEN = []


@bp.activity_trigger(input_name="name")
def hello(name: str) -> str:
    HELLO_CALLS.append(name)
    return f"Hello {name}!"


@bp.activity_trigger(input_name="text")
def explode(text: str) -> str:
    raise ValueError(text)


@bp.activity_trigger(input_name="payload")
def flaky(payload: dict) -> str:
    FLAKY_CALLS["count"] += 1
    if FLAKY_CALLS["count"] <= payload["fail_times"]:
        raise ValueError(f"boom {FLAKY_CALLS['count']}")
    return f"ok after {FLAKY_CALLS['count']}"


@bp.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    results = []
    for city in context.get_input():
        results.append((yield context.call_activity("hello", city)))
    return results


@bp.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=5000, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.get_input()))


@bp.orchestration_trigger(context_name="context")
def catches_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("flaky", {"fail_times": 99})
    except Exception as exc:
        return {"caught": str(exc)}


@bp.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(seconds=seconds))
    return {"start": start.isoformat(), "end": context.current_utc_datetime.isoformat()}


@bp.orchestration_trigger(context_name="context")
def timer_or_event(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    approval = context.wait_for_external_event("approve")
    winner = yield context.task_any([timer, approval])
    if winner == approval:
        timer.cancel()
        return {"winner": "event", "data": approval.result}
    return {"winner": "timer", "at": context.current_utc_datetime.isoformat()}


@bp.orchestration_trigger(context_name="context")
def late_waiter(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("hello", "first")
    data = yield context.wait_for_external_event("go")
    return {"first": first, "go": data}


@bp.orchestration_trigger(context_name="context")
def gather(context: df.DurableOrchestrationContext):
    tasks = [context.call_activity("hello", n) for n in context.get_input()]
    return (yield context.task_all(tasks))


@bp.orchestration_trigger(context_name="context")
def status_steps(context: df.DurableOrchestrationContext):
    context.set_custom_status({"step": "one"})
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=10))
    context.set_custom_status({"step": "two"})
    yield context.wait_for_external_event("next")
    return "done"


@bp.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    state = context.get_input() or {"n": 0}
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=10))
    state = {"n": state["n"] + 1}
    context.set_custom_status(state)
    if state["n"] < 3:
        context.continue_as_new(state)
        return None
    return state


@bp.orchestration_trigger(context_name="context")
def day_poller(context: df.DurableOrchestrationContext):
    """Polls every 5 minutes for 24 h, continuing as new every 20 polls to bound history."""
    state = context.get_input()
    for _ in range(20):
        if state["polls"] >= state["total"]:
            return {"polls": state["polls"], "end": context.current_utc_datetime.isoformat()}
        timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
        cancel = context.wait_for_external_event("cancel")
        winner = yield context.task_any([timer, cancel])
        if winner == cancel:
            timer.cancel()
            return {"cancelled": True, "polls": state["polls"]}
        state = dict(state, polls=state["polls"] + 1)
        context.set_custom_status({"polls": state["polls"]})
    context.continue_as_new(state)


@bp.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("hello", "a")
    # Wrong on purpose: a fresh random value on every replay.
    second = yield context.call_activity("hello", str(uuid.uuid4()))
    return [first, second]


@bp.orchestration_trigger(context_name="context")
def explodes(context: df.DurableOrchestrationContext):
    yield context.call_activity("hello", "x")
    raise RuntimeError("orchestrator bug")


@bp.orchestration_trigger(context_name="context")
def waits_forever(context: df.DurableOrchestrationContext):
    yield context.wait_for_external_event("never")


# ---- strictness: what the extension does that the old devhost did not

@bp.orchestration_trigger(context_name="context")
def leaves_timer_open(context: df.DurableOrchestrationContext):
    """Returns (or raises, or continues as new) while its timer is neither fired nor cancelled."""
    mode = context.get_input() or "return"
    if mode == "again":
        return "second execution"
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    go = context.wait_for_external_event("go")
    yield context.task_any([timer, go])
    if mode == "raise":
        raise RuntimeError("gave up")
    if mode == "continue":
        context.continue_as_new("again")
        return None
    return "done"


@bp.orchestration_trigger(context_name="context")
def cancels_then_waits(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    first = context.wait_for_external_event("first")
    winner = yield context.task_any([timer, first])
    if winner == first:
        timer.cancel()
    yield context.wait_for_external_event("second")
    return "done"


@bp.orchestration_trigger(context_name="context")
def shared_deadline(context: df.DurableOrchestrationContext):
    """One deadline timer passed to two successive task_any calls."""
    deadline = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    first = yield context.task_any([context.wait_for_external_event("a"), deadline])
    if first == deadline:
        return "no a"
    second = yield context.task_any([context.wait_for_external_event("b"), deadline])
    return "b" if second != deadline else "timeout"


@bp.orchestration_trigger(context_name="context")
def shared_cancel_waiter(context: df.DurableOrchestrationContext):
    """One cancel waiter reused by two task_any calls; the second timer is left running."""
    cancel = context.wait_for_external_event("cancel")
    for _ in range(2):
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=10))
        winner = yield context.task_any([timer, cancel])
        if winner == cancel:
            done = yield context.call_activity("hello", "after cancel")
            return {"result": done, "at": context.current_utc_datetime.isoformat()}
    return {"result": "no cancel", "at": context.current_utc_datetime.isoformat()}


@bp.orchestration_trigger(context_name="context")
def catches_explode(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("explode", context.get_input())
    except Exception as exc:
        return str(exc)


@bp.orchestration_trigger(context_name="context")
def calls_missing_activity(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("no_such_activity", 1)
    except Exception as exc:
        return str(exc)


@bp.orchestration_trigger(context_name="context")
def big_status(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    if spec.get("after_activity"):
        yield context.call_activity("hello", "first")
    context.set_custom_status("x" * spec["chars"])
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return "ok"


@bp.orchestration_trigger(context_name="context")
def two_events(context: df.DurableOrchestrationContext):
    a = context.wait_for_external_event("a")
    b = context.wait_for_external_event("b")
    results = yield context.task_all([a, b])
    return results


@bp.orchestration_trigger(context_name="context")
def versioned(context: df.DurableOrchestrationContext):
    state = context.get_input() or {"round": 0}
    if state["round"] == 0:
        context.continue_as_new({"round": 1})
        return None
    return {"version": context.version}


# ---- entities

@bp.entity_trigger(context_name="context", entity_name="Counter")
def counter_entity(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        context.set_state(value + context.get_input())
    elif operation == "fail":
        raise ValueError("refused")
    elif operation == "delete":
        context.destruct_on_exit()
        return  # set_result would make it exist again
    context.set_result(value)


@bp.entity_trigger(context_name="context", entity_name="Journal")
def journal_entity(context: df.DurableEntityContext):
    # Keeps every input in the order the operations ran (to observe delivery order).
    context.set_state(context.get_state(list) + [context.get_input()])


@bp.orchestration_trigger(context_name="context")
def signals_journal(context: df.DurableOrchestrationContext):
    for item in context.get_input():
        context.signal_entity(df.EntityId("Journal", "one"), "append", item)
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return "signalled"


@bp.orchestration_trigger(context_name="context")
def signals_counter(context: df.DurableOrchestrationContext):
    for amount in context.get_input():
        context.signal_entity(df.EntityId("Counter", "shared"), "add", amount)
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    return "signalled"


# ---- a timer trigger with a durable client (like the app's history purge)

@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def every_five_minutes(timer: func.TimerRequest, client: df.DurableOrchestrationClient):
    instance_id = await client.start_new("sequence", None, ["timer"])
    status = await client.get_status(instance_id)
    TIMER_SEEN.append({"past_due": timer.past_due, "instance": instance_id,
                       "status": status.runtime_status.value if status else None})


# Entry points served by devhost serve.
@bp.route(route="start/{name}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["name"], None, body)
    return client.create_check_status_response(req, instance_id)


@bp.route(route="status/{instanceId}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def http_status(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    status = await client.get_status(req.route_params["instanceId"])
    if not status:
        return func.HttpResponse(status_code=404)
    return func.HttpResponse(json.dumps(status.to_json()), mimetype="application/json",
                             headers={"X-Runtime-Status": status.runtime_status.value})


@bp.route(route="echo/{*rest}", methods=["GET", "PUT"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({
        "method": req.method, "route": dict(req.route_params), "params": dict(req.params),
        "body": req.get_body().decode(), "header": req.headers.get("x-test")}),
        status_code=201, mimetype="application/json")


@bp.queue_trigger(arg_name="msg", queue_name="requests", connection="AzureWebJobsStorage")
def on_queue(msg: func.QueueMessage) -> None:
    QUEUE_SEEN.append({"id": msg.id, "body": msg.get_body().decode(),
                       "dequeue_count": msg.dequeue_count})


@bp.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    # The worker hands over a CloudEvent (with .type) when the delivery uses that schema.
    kind = event.type if isinstance(event, func.CloudEvent) else event.event_type
    EVENTGRID_SEEN.append({"id": event.id, "type": kind,
                           "data": event.get_json(), "cls": type(event).__name__})


@bp.orchestration_trigger(context_name="context")
def demo_flow(context: df.DurableOrchestrationContext):
    request = context.get_input()
    for polls in (1, 2):
        context.set_custom_status({"step": "pollRun", "lifeCycleState": "RUNNING",
                                   "polls": polls})
        yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=100))
    return {"jobId": 1, "runId": 2, "resultState": request.get("wantResult", "SUCCESS"),
            "jobName": request["jobName"]}


# The same contract as the app's HTTP API (triggers/http_api.py), for the demo's poller.
@bp.route(route="workflows/create-job-and-run", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def demo_start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    instance_id = await client.start_new("demo_flow", None, req.get_json())
    base = req.url.split("/api/")[0]
    return func.HttpResponse(json.dumps({"id": instance_id}), status_code=202,
                             headers={"Location": f"{base}/api/workflows/{instance_id}",
                                      "Retry-After": "10"})


@bp.route(route="workflows/{instanceId}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def demo_status(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    status = await client.get_status(req.route_params["instanceId"])
    if status.runtime_status.value in ("Pending", "Running", "ContinuedAsNew"):
        return func.HttpResponse(json.dumps({"runtimeStatus": status.runtime_status.value,
                                             "customStatus": status.custom_status}),
                                 status_code=202, headers={"Location": req.url,
                                                           "Retry-After": "10"})
    ok = status.output.get("resultState") == "SUCCESS"
    return func.HttpResponse(json.dumps(status.output), status_code=200 if ok else 424)


def make_app() -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    return app
