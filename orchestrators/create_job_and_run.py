"""The create-job-and-run workflow as a durable orchestrator.

Steps are named after the Arazzo stepIds (spec/azure-databricks-create-job-and-run-workflow.yml):
createJob -> runJobNow -> pollRun (durable timers, no compute held) -> fetchOutput.
Where the document breaks against real Databricks we follow its intent instead (README,
"Departures from the Arazzo document"). Deterministic: the only clock is
`context.current_utc_datetime`; all I/O happens in activities; all policy is in workflow.policy.

Two things reach every step:
- a cancel (external event `cancel`): every activity and every wait races one cancel waiter; before
  run-now it prevents the run, afterwards the run is cancelled on Databricks;
- the deadline: every timer is capped at it and it is checked after every activity, so an outage or
  a retry wait cannot carry the workflow past it.
Either way the run's final state is read back after cancelling it, and the workflow ends with the
caller-facing result state (workflow.policy.RESULT_STATES).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Optional

import azure.durable_functions as df

from orchestrators import versions
from workflow import policy, watch

ORCHESTRATOR_NAME = "create_job_and_run"
CANCEL_EVENT = "cancel"
RUN_FINISHED_EVENT = "runFinished"
EVENT_RAISED = 15  # HistoryEventType.EventRaised

ACTIVITY_RETRY = policy.ActivityRetry()
# Waits after cancelling a run before reading its final state (Databricks cancels asynchronously).
FINAL_STATE_WAITS = (5, 10, 20, 40, 60)
# History per execution stays under HISTORY_BUDGET events: each wait costs at most this many
# (scheduled/created, completed/fired, and the orchestrator started/completed pair around it).
HISTORY_BUDGET = 100
EVENTS_PER_WAIT = 4
# The most one poll can cost (an activity, its retries and their backoff timers, the next timer).
_POLL_WORST_EVENTS = EVENTS_PER_WAIT * (1 + 2 * (ACTIVITY_RETRY.max_attempts - 1) + 1)

log = logging.getLogger(__name__)

bp = df.Blueprint()


class Stopped(Exception):
    """The workflow must stop now: `result` is policy.CANCELED or policy.TIMEDOUT."""

    def __init__(self, result: str, reason: Any = None):
        super().__init__(result)
        self.result = result
        self.reason = reason


class WorkflowFailed(Exception):
    """A step failed: in a way waiting cannot fix (`kind` PERMANENT), or it kept failing until its
    attempts ran out (TRANSIENT). The message names the step and the error, never a stack trace."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _failure(activity: str, exc: Exception) -> WorkflowFailed:
    text = str(exc)
    return WorkflowFailed(f"{activity}: {policy.error_message(text)}", policy.failure_kind(text))


class _Run:
    """One execution of the workflow: the context, the carried progress and this execution's waiters."""

    def __init__(self, context: df.DurableOrchestrationContext, envelope: dict):
        self.context = context
        self.envelope = envelope
        self.request, self.options = envelope["request"], envelope["options"]
        self.progress = envelope.get("progress") or self._new_progress()
        self.deadline = datetime.fromisoformat(self.progress["deadline"])
        self.events = 2  # OrchestratorStarted + ExecutionStarted
        # ONE waiter per event name for the whole execution, raced by every wait. SDK 1.7 hands a
        # raised event to the newest waiter of its name even when that waiter's task_any is over,
        # so a fresh waiter per wait would swallow a cancel that arrives while an activity runs.
        self.cancel = context.wait_for_external_event(CANCEL_EVENT)
        self.finished = None  # the runFinished waiter, once signals may come (poll_run)
        self.signal_taken = False

    def _new_progress(self) -> dict:
        now = self.context.current_utc_datetime
        return {
            "startedAt": now.isoformat(),
            "deadline": (now + timedelta(seconds=self.request["timeoutSeconds"])).isoformat(),
            "polls": 0, "failedPolls": 0, "jobId": self.request.get("jobId"), "runId": None, "run": None,
            # runFinished signals come from the run watcher (when on) or Databricks webhooks.
            "signals": bool(self.options.get("watcher")), "repairs": [],
            # Names this workflow run's job, run-now token and completion event; stable on replay.
            "runKey": self.context.new_uuid(),
        }

    # -- waiting ------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def cancel_requested(self) -> bool:
        return self.cancel.is_completed or "cancel" in self.progress

    def check(self) -> None:
        """Stop if a cancel arrived or the deadline passed (checked between steps)."""
        if self.cancel_requested():
            raise Stopped(policy.CANCELED, self.progress.get("cancel") or self.cancel.result)
        if self.now() >= self.deadline:
            raise Stopped(policy.TIMEDOUT)

    def race(self, task):
        """Wait for `task` or a cancel, whichever comes first; the task's value (or its error).
        A pending runFinished waiter rides along, so the SDK matches a signal that arrives while the
        task runs to it (waiters only receive events once yielded)."""
        self.check()
        watching = [] if self.finished is None or self.finished.is_completed else [self.finished]
        while True:
            self.events += EVENTS_PER_WAIT
            winner = yield self.context.task_any([task, self.cancel] + watching)
            if winner is task:
                return (yield task)
            if winner is self.cancel:
                raise Stopped(policy.CANCELED, self.cancel.result)
            watching = []  # the signal came first: keep waiting for the task (take_signal acts on it)

    def sleep(self, seconds: float, *, wake_on_finish: bool = False):
        """Wait `seconds` (never past the deadline) unless cancelled; a runFinished signal not yet
        acted on ends the wait early when `wake_on_finish`."""
        self.check()
        timer = self.context.create_timer(min(self.now() + timedelta(seconds=seconds), self.deadline))
        waits = [timer, self.cancel]
        if wake_on_finish and self.finished is not None and not self.signal_taken:
            waits.append(self.finished)
        self.events += EVENTS_PER_WAIT
        winner = yield self.context.task_any(waits)
        if winner is not timer:
            timer.cancel()  # or the instance stays Running until it fires
        self.check()

    def call(self, activity: str, payload: dict, on_failure=None):
        """Call an activity, retrying what can heal on durable timers with exponential backoff;
        what cannot heal raises at once. Interrupted by a cancel or the deadline. `on_failure` sees
        each failed attempt (e.g. to show it in the custom status while the retries wait)."""
        attempt = 1
        while True:
            try:
                return (yield from self.race(self.context.call_activity(activity, payload)))
            except Stopped:
                raise
            except Exception as exc:  # the engine re-raises activity failures as plain Exception
                failure = _failure(activity, exc)
                if on_failure is not None:
                    on_failure(failure)
                if failure.kind == policy.PERMANENT or attempt >= ACTIVITY_RETRY.max_attempts:
                    raise failure from None
                attempt += 1
                yield from self.sleep(ACTIVITY_RETRY.delay_before(attempt))

    def call_after_end(self, activity: str, payload: dict):
        """An activity after the run has ended (cancel, final state, notify, delete): no longer
        interrupted by a cancel or the deadline, still retried while it can heal."""
        attempt = 1
        while True:
            try:
                self.events += EVENTS_PER_WAIT
                return (yield self.context.call_activity(activity, payload))
            except Exception as exc:
                failure = _failure(activity, exc)
                if failure.kind == policy.PERMANENT or attempt >= ACTIVITY_RETRY.max_attempts:
                    raise failure from None
                attempt += 1
                self.events += EVENTS_PER_WAIT
                yield self.context.create_timer(self.now() + timedelta(seconds=ACTIVITY_RETRY.delay_before(attempt)))

    def show(self, step: str) -> None:
        p = self.progress
        elapsed = self.now() - datetime.fromisoformat(p["startedAt"])
        self.context.set_custom_status(policy.progress_status(
            step=step, run=p.get("run"), polls=p["polls"], elapsed_seconds=int(elapsed.total_seconds()),
            job_id=p.get("jobId"), run_id=p.get("runId"), failed_polls=p.get("failedPolls", 0),
            started_at=p["startedAt"], repairs=len(p["repairs"]),
        ))

    # -- the steps ----------------------------------------------------------------------------

    def create_job(self, stale_job_id: Optional[int] = None):
        """createJob: the saved job for this definition, created only when none exists yet."""
        self.show("createJob")
        payload = {"instanceId": self.context.instance_id, "runKey": self.progress["runKey"],
                   "job": self.request["job"], "private": self.request.get("deleteJobOnCompletion", False)}
        if stale_job_id is not None:
            payload["staleJobId"] = stale_job_id
        self.progress["createSent"] = True  # a private job may exist from here on, even if we stop
        job = yield from self.call("createJob", payload)
        self.progress["jobId"] = job["jobId"]
        self.progress["signals"] = self.progress["signals"] or bool(job.get("webhooks"))

    def run_job_now(self):
        """runJobNow (or, for a one-time run, runs/submit): start THE run of this workflow run."""
        self.show("runJobNow")
        r, p = self.request, self.progress
        if r["jobSource"] == "oneTime":
            activity, payload = "submitRun", {"runKey": p["runKey"], "submit": r["submit"]}
        else:
            activity = "runJobNow"
            payload = {"runKey": p["runKey"], "jobId": p["jobId"], "notebookParams": r.get("notebookParams") or {},
                       "jobParameters": r.get("jobParameters") or {}, "waitsForSlot": True,
                       "at": self.now().timestamp()}
            if r.get("runQueue") is not None:
                payload["queue"] = r["runQueue"]
        self.check()  # a cancel that came before run-now prevents the run
        waiting_for_slot = False
        try:
            run = yield from self.call(activity, payload)
            while run.get("notBefore") is not None:
                # The start budget's slot (databricks_jobs/start_budget.py): waited for here, on a
                # durable timer, so a burst of starts holds no worker; then run-now with that slot.
                waiting_for_slot = True
                yield from self.sleep(max(float(run["notBefore"]) - self.now().timestamp(), 0.0))
                waiting_for_slot = False
                payload = {**payload, "slot": run["notBefore"], "at": self.now().timestamp()}
                run = yield from self.call(activity, payload)
        except Stopped:
            if waiting_for_slot:
                raise  # stopped while waiting for its slot: no run-now was sent, no run to stop
            # An attempt was sent and may have started the run. The run key is its idempotency
            # token, so one more call returns that run (or starts it) and it can be cancelled:
            # nothing is left running that the caller asked to stop. Urgent: past the start budget.
            try:
                run = yield from self.call_after_end(activity, {**payload, "urgent": True})
                p["runId"] = run["runId"]
            except WorkflowFailed:
                pass  # Databricks refused it: there is no run to stop
            raise
        except WorkflowFailed as failure:
            if not (r["jobSource"] == "create" and "does not exist" in str(failure) and not p.get("recreated")):
                raise
            # The shared job was deleted under us (by hand, or a cleanup): make it again, once.
            p["recreated"] = True
            yield from self.create_job(stale_job_id=p["jobId"])
            yield from self.run_job_now()
            return
        p["runId"] = run["runId"]
        if run.get("runPageUrl"):
            p["run"] = {"runPageUrl": run["runPageUrl"]}
        if activity == "submitRun":
            p["signals"] = p["signals"] or bool(run.get("webhooks"))
        self.register()

    def register(self) -> None:
        """Tell the registry of awaited runs which run this workflow waits for, so the run watcher
        and the webhook endpoint can find it (one fire-and-forget signal, once per workflow run)."""
        p = self.progress
        self.context.signal_entity(df.EntityId(watch.REGISTRY_ENTITY, watch.shard_of(p["runId"])), "watch", {
            "runId": p["runId"], "instanceId": self.context.instance_id, "jobId": p["jobId"],
            "since": self.now().timestamp()})
        self.events += 1

    def unregister(self) -> None:
        p = self.progress
        if p.get("runId") is not None:
            self.context.signal_entity(df.EntityId(watch.REGISTRY_ENTITY, watch.shard_of(p["runId"])), "unwatch",
                                       {"runId": p["runId"]})

    def poll_run(self):
        """pollRun: the terminal run summary, or None when this execution should continue as new.

        Every poll comes after a wait on the poll schedule (none at age 0: a run that has just been
        started has not ended), cut short by a `runFinished` signal (a Databricks webhook, or the
        workspace run watcher) when one may come.
        A signal is confirmed with runs/get, the source of truth; if the run has not really ended
        (BLOCKED, WAITING_FOR_RETRY) the execution continues as new, so a fresh waiter catches the
        next signal and no poll follows another back to back."""
        p = self.progress
        ceiling = self.options["webhookPollIntervalSeconds"] if p["signals"] else self.request["pollIntervalSeconds"]
        schedule = policy.poll_schedule(signals=p["signals"], max_seconds=ceiling,
                                       workflow_key=self.context.instance_id)
        if p["signals"] and self.finished is None:
            self.finished = self.context.wait_for_external_event(RUN_FINISHED_EVENT)
        self.show("pollRun")
        polls_here = 0
        while True:
            if polls_here >= self.options["pollsPerExecution"] or self.events + _POLL_WORST_EVENTS > HISTORY_BUDGET:
                return None
            signalled = self.take_signal()
            if not signalled:
                elapsed = (self.now() - datetime.fromisoformat(p["startedAt"])).total_seconds()
                yield from self.sleep(schedule.delay_at(elapsed), wake_on_finish=True)
                signalled = self.take_signal()
            run = yield from self.get_run()
            polls_here += 1
            self.show("pollRun")
            if run is not None and policy.is_terminal(run):
                return run
            if signalled:
                return None

    def take_signal(self) -> bool:
        """True once per execution if a runFinished signal is waiting to be acted on."""
        if self.progress.pop("signalPending", False):
            return True
        if self.finished is not None and self.finished.is_completed and not self.signal_taken:
            self.signal_taken = True
            return True
        return False

    def get_run(self):
        """One poll; None when Databricks did not answer. A long run should outlive an outage
        (Databricks advises retrying 5xx for up to 10 minutes), so until the deadline a failed poll
        just waits for the next one; an error waiting cannot fix ends the workflow."""
        p = self.progress

        def count(failure: WorkflowFailed) -> None:
            if failure.kind == policy.TRANSIENT:
                p["failedPolls"] = p.get("failedPolls", 0) + 1  # shown while the retries wait
                self.show("pollRun")

        p["polls"] += 1
        try:
            run = yield from self.call("getJobRun", {"runId": p["runId"]}, on_failure=count)
        except WorkflowFailed as failure:
            if failure.kind == policy.PERMANENT:
                raise
            return None
        p["run"] = run
        return run

    def fetch_output(self, run: dict):
        """fetchOutput: get-output of every task that ran (latest attempt), with TASK run ids (the
        job run id is refused for multi-task runs, which is every job made by jobs/create). Failed
        tasks are fetched for their error and trace. The run has ended, so its outcome stands
        whatever happens here: a cancel has nothing left to stop. Each task's output stands on its
        own: a task whose get-output failed transiently is asked again on the retry schedule (only
        those tasks), and a task whose output cannot be fetched gets `outputError` while the others
        keep theirs."""
        tasks = policy.tasks_that_ran(run)
        if not tasks:
            return {}
        self.show("fetchOutput")
        pending = [{"taskKey": t["taskKey"], "runId": t["runId"]} for t in tasks]
        results: dict = {}
        attempt = 1
        while pending:
            try:
                # instanceId names the kept copies of outputs too large to carry inline; taskCount sets
                # each task's inline share (workflow/results.py).
                fetched = yield from self.call_after_end("getJobRunOutput", {
                    "tasks": pending, "instanceId": self.context.instance_id, "taskCount": len(tasks)})
            except WorkflowFailed as failure:  # what affects every task (credentials, configuration)
                for task in pending:
                    results[task["taskKey"]] = {**task, "outputError": str(failure)}
                break
            retry = []
            for output in fetched["tasks"]:
                kind = output.pop("outputErrorKind", None)
                if "outputError" in output and kind == policy.TRANSIENT and attempt < ACTIVITY_RETRY.max_attempts:
                    retry.append({"taskKey": output["taskKey"], "runId": output["runId"]})
                else:
                    results[output["taskKey"]] = output
            pending = retry
            if pending:
                attempt += 1
                self.events += EVENTS_PER_WAIT
                yield self.context.create_timer(self.now() + timedelta(seconds=ACTIVITY_RETRY.delay_before(attempt)))
        return results

    def delete_private_job(self):
        """A private job (deleteJobOnCompletion) is deleted however the workflow ends: success,
        failure, cancel or deadline. If the workflow stopped while createJob ran, the job that call
        may have made is looked up (by the run key's tag) first. True, False (could not be deleted:
        a leftover job is only clutter) or None (no private job)."""
        r, p = self.request, self.progress
        if not (r.get("deleteJobOnCompletion") and r["jobSource"] == "create"):
            return None
        job_id = p.get("jobId")
        if job_id is None:
            if not p.get("createSent"):
                return None
            try:
                found = yield from self.call_after_end("createJob", {
                    "instanceId": self.context.instance_id, "runKey": p["runKey"], "job": r["job"],
                    "private": True, "lookupOnly": True})
            except WorkflowFailed:
                return False
            job_id = found.get("jobId")
            if job_id is None:
                return None
        self.show("deleteJob")
        try:
            yield from self.call_after_end("deleteJob", {"jobId": job_id})
            return True
        except WorkflowFailed:
            return False

    def repair(self, run: dict):
        """Rerun the failed tasks of the ended run (runs/repair); the workflow keeps waiting."""
        p = self.progress
        self.show("repairRun")
        repaired = yield from self.call("repairRun", {"runId": p["runId"], "repairsSeen": len(p["repairs"])})
        p["repairs"].append({"repairId": repaired["repairId"], "failedTasks": policy.failed_task_keys(run),
                             "resultStateBefore": policy.result_state(run)})
        # The failed attempt's state no longer describes the run; the next poll will.
        p["run"] = {"runPageUrl": (p.get("run") or {}).get("runPageUrl")}

    def stop_run(self, stop: Stopped) -> dict:
        """Cancel the run (if there is one) and read back its final state."""
        p = self.progress
        if p.get("runId") is None:
            return {}
        self.show("cancelRun")
        try:
            yield from self.call_after_end("cancelRun", {"runId": p["runId"]})
        except WorkflowFailed:
            pass  # still read its state: it may have ended on its own
        run = p.get("run") or {}
        for wait in FINAL_STATE_WAITS:
            try:
                run = yield from self.call_after_end("getJobRun", {"runId": p["runId"]})
            except WorkflowFailed:
                break  # keep the last state we know
            p["run"] = run
            if policy.is_terminal(run):
                break
            self.events += EVENTS_PER_WAIT
            yield self.context.create_timer(self.now() + timedelta(seconds=wait))
        return run

    # -- continue_as_new ----------------------------------------------------------------------

    def carry_unconsumed_events(self) -> None:
        """An event delivered in the same batch as the completion that ends this execution is in its
        history but was never handed to our waiter, and continue_as_new would drop it (Python has
        no preserveUnprocessedEvents). History is replayed identically, so reading it is
        deterministic: carry such a cancel, or a runFinished signal not acted on, into the next
        execution's input."""
        raised = [e for e in self.context.histories if getattr(e, "event_type", None) == EVENT_RAISED]
        cancels = [e for e in raised if getattr(e, "Name", None) == CANCEL_EVENT]
        if cancels and "cancel" not in self.progress:
            self.progress["cancel"] = _event_input(cancels[0])
        signals = sum(1 for e in raised if getattr(e, "Name", None) == RUN_FINISHED_EVENT)
        if signals > (1 if self.signal_taken else 0):
            self.progress["signalPending"] = True

    def continue_as_new(self) -> None:
        self.carry_unconsumed_events()
        self.context.continue_as_new({**self.envelope, "progress": self.progress})


def _event_input(event) -> Any:
    import json
    raw = getattr(event, "Input", None)
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None


def _workflow(run: _Run):
    """The steps; the outputs, or None after continue_as_new."""
    p, r = run.progress, run.request
    try:
        run.check()
        if p["runId"] is None:
            if p["jobId"] is None and r["jobSource"] == "create":
                yield from run.create_job()
            yield from run.run_job_now()
        final = yield from run.poll_run()
        if final is not None and policy.should_repair(final, len(p["repairs"]), r["repair"]["maxAttempts"]):
            yield from run.repair(final)
            final = None  # this execution's runFinished waiter is spent: a fresh one waits for the repair
        if final is None:
            run.continue_as_new()
            return None
        result = policy.result_state(final)
    except Stopped as stop:
        final = yield from run.stop_run(stop)
        own = policy.result_state(final)
        flag = "cancelRequested" if stop.result == policy.CANCELED else "deadlineExceeded"
        if own is None or own == policy.CANCELED:
            outputs = policy.outputs(job_id=p["jobId"], run_id=p["runId"], result=stop.result, run=final,
                                     repairs=p["repairs"])
            outputs[flag] = True
            return outputs
        # The run ended on its own before the cancel took effect: report it as it ended.
        result = own
    task_outputs = yield from run.fetch_output(final)
    return policy.outputs(job_id=p["jobId"], run_id=p["runId"], result=result, run=final,
                          task_outputs=task_outputs, output_task_key=r.get("taskKey"), repairs=p["repairs"])


def _notify(run: _Run, outputs: dict):
    """Event- and queue-started workflows have no caller polling them: report the end. A failed
    notification never changes the run's outcome; it is reported beside it."""
    run.show("notifyCompletion")
    try:
        yield from run.call_after_end("notifyCompletion", {
            "instanceId": run.context.instance_id, "eventId": run.progress["runKey"], "outputs": outputs})
        return None
    except WorkflowFailed as failure:
        return str(failure)


@bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR_NAME)
def create_job_and_run(context: df.DurableOrchestrationContext):
    if versions.runs_release_1(context.version):
        problem = versions.release_1_input_problem(context.get_input())
        if problem:
            # An extension bundle without orchestration versions: fail now, naming the bundle,
            # rather than run a later release's input on 1.0's code.
            raise WorkflowFailed(problem, policy.PERMANENT)
        # Started by release 1.0: it finishes on that release's code (orchestrators/versions.py),
        # loaded only when such a workflow is still running.
        from orchestrators.v1.workflow import orchestrate as orchestrate_release_1
        return (yield from orchestrate_release_1(context))
    run = _Run(context, context.get_input())
    notify = run.options.get("notify")
    p = run.progress
    try:
        outputs = yield from _workflow(run)
    except WorkflowFailed as failure:
        run.unregister()
        deleted = yield from run.delete_private_job()
        if notify:
            # A caller that started us by event or message learns of a failed workflow too.
            failed = policy.failure_outputs(job_id=p["jobId"], run_id=p["runId"], error=str(failure))
            if deleted is not None:
                failed["jobDeleted"] = deleted
            yield from _notify(run, failed)
        if not context.is_replaying:
            log.warning("workflow %s failed: %s", context.instance_id, failure)
            from telemetry.workflow import workflow_failed  # on first use: cold start
            workflow_failed(context, p, str(failure))
        raise
    if outputs is None:
        return None  # continued as new
    run.unregister()
    # After the output is fetched (a deleted job's runs can no longer be read).
    deleted = yield from run.delete_private_job()
    if deleted is not None:
        outputs["jobDeleted"] = deleted
    if notify:
        error = yield from _notify(run, outputs)
        if error:
            outputs["notificationFailed"] = True
            outputs["notificationError"] = policy.error_message(error)
    run.show("done")
    if not context.is_replaying:  # once per workflow, not once per replay
        log.info("workflow %s: job %s run %s ended %s after %s polls", context.instance_id, p["jobId"],
                 p["runId"], outputs["resultState"], p["polls"])
        from telemetry.workflow import workflow_ended  # on first use: cold start
        workflow_ended(context, p, outputs)
    return outputs
