"""The knobs of waiting, measured (`python -m bench.waiting --explore`; not part of `make bench`:
this module has no `run()`, so `python -m bench` skips it).

Each variant runs the real app as bench/waiting.py does, with constants of workflow.policy /
workflow.watch replaced inside the simulation's own process (the code is not changed) or a
setting changed, on the same end times as the defaults it is compared with:

- tick: WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS (5..60 s, divisors of 60), watcher at N = 100 and
  N = 1 (at N = 1 the list cadence follows the run's own schedule, the tick is only its floor);
- own: OWN_SCHEDULE (with WORKFLOW_POLL_INTERVAL_SECONDS as its ceiling): the poll-only cadence and
  the watcher's list cadence for few runs;
- safety: SAFETY_SCHEDULE (with WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS as its ceiling): the
  safety-net polls a workflow makes while signals (watcher or webhooks) are expected;
- horizon: CREDIT_HORIZON_SECONDS, how long the list credit a batch saved lets its tail be listed
  every tick (workflow.watch.list_credit);
- retried: today's defaults with runs whose task fails once and is retried after a pause
  (WAITING_FOR_RETRY takes a run off the active list without ending it).
The first variant of each group is today's default.
Each group writes its own section of docs/benchmarks.md ("waiting-tuning-<group>")."""
from __future__ import annotations

import math
import time
from typing import List, Sequence

from bench import report, waiting

T_ALL = (60, 600, 3600, 28800, 86400)
EXPLORE_END_TIMES = 10
TICKS = (5, 10, 15, 20, 30, 60)
TICK_N = 100
TICK_T = (600, 3600, 86400)
TICK_N1_T = (60, 600, 28800)


def _schedule(first, steady, steady_until, fraction, max_seconds) -> object:
    from workflow.policy import PollSchedule
    return PollSchedule(first_seconds=first, steady_seconds=steady, steady_until=steady_until, fraction=fraction,
                        max_seconds=max_seconds)


# (label, OWN_SCHEDULE fields, poll_interval_seconds); the first is today's default
OWN_VARIANTS = (
    ("default: 30 s to 15 min, then 10 % of age, max 300 s", (30, 30, 900, 0.10, 300), 300),
    ("1.x: 5 s growing to 30 s by 10 min, then 5 % of age, max 300 s", (5, 30, 600, 0.05, 300), 300),
    ("15 s to 15 min, then 10 % of age, max 300 s", (15, 15, 900, 0.10, 300), 300),
    ("30 s to 15 min, then 10 % of age, max 900 s", (30, 30, 900, 0.10, 900), 900),
)
# (label, SAFETY_SCHEDULE fields, webhook_poll_interval_seconds); the first is today's default
SAFETY_VARIANTS = (
    ("default: 1 h, then 400 % of age, max 24 h", (3600, 3600, 0, 4.0, 86400), 86400),
    ("1.x: 300 s, 25 % of age, max 900 s", (300, 300, 0, 0.25, 900), 900),
    ("1800 s, 100 % of age, max 6 h", (1800, 1800, 0, 1.0, 21600), 21600),
)
# workflow.watch.CREDIT_HORIZON_SECONDS: how long a batch's saved credit lets its tail be listed
HORIZONS = (6 * 3600, 3600, 24 * 3600)
HORIZON_N = (10, 25, 100)
HORIZON_T = (3600, 86400)
RETRIED_N = 100
RETRIED_T = (3600, 86400)


def retry_rounds(t: float, n: int) -> tuple:
    """Runs whose first attempt fails around t/2 and whose retry starts at 3t/4 (off the tick grid)
    and lasts 2-30 s: (rounds, retry pause). WAITING_FOR_RETRY takes a run off the active list
    without ending it, and a retry shorter than the list interval may end unseen; the watcher's
    re-signal after the run's own poll interval, or a safety poll, then tells its workflow."""
    firsts = waiting.end_times(t / 2, n)
    retries = [2 + 28 * (i + waiting.STRATUM_OFFSET) / n for i in range(n)]
    return [list(zip(firsts, retries[::-1]))], 0.75 * t + 7.3


def _horizon_label(seconds: int) -> str:
    return f"{'default: ' if seconds == HORIZONS[0] else ''}{seconds // 3600} h of credit"


def _spec(mode: str, n, t: float, *, tick: int = waiting.TICK, end_count: int = EXPLORE_END_TIMES, **extra) -> dict:
    if mode == "watcher":
        groups = max(1, math.ceil(end_count / n))
        ends = waiting.end_times(t, n * groups)
        rounds = [ends[g::groups] for g in range(groups)]
    else:
        rounds = [waiting.end_times(t, end_count)]
    return {"mode": mode, "n": n, "t": t, "rounds": rounds, "tick": tick, **extra}


def experiments() -> List[dict]:
    out: List[dict] = []
    for tick in TICKS:
        for t in TICK_T:
            out.append({**_spec("watcher", TICK_N, t, tick=tick), "group": "tick", "variant": f"tick {tick} s"})
        for t in TICK_N1_T:
            out.append({**_spec("watcher", 1, t, tick=tick), "group": "tick", "variant": f"tick {tick} s"})
    for label, fields, ceiling in OWN_VARIANTS:
        for t in T_ALL:
            for mode, n in (("watcher", 1), ("poll", None)):
                out.append({**_spec(mode, n, t), "group": "own", "variant": label,
                            "policy": {"OWN_SCHEDULE": _schedule(*fields)},
                            "settings": {"poll_interval_seconds": ceiling}})
    for label, fields, ceiling in SAFETY_VARIANTS:
        for t in T_ALL:
            for mode, n in (("webhook", None), ("watcher", 1)):
                out.append({**_spec(mode, n, t), "group": "safety", "variant": label,
                            "policy": {"SAFETY_SCHEDULE": _schedule(*fields)},
                            "settings": {"webhook_poll_interval_seconds": ceiling}})
    for horizon in HORIZONS:
        for n in HORIZON_N:
            for t in HORIZON_T:
                out.append({**_spec("watcher", n, t), "group": "horizon", "variant": _horizon_label(horizon),
                            "watch": {"CREDIT_HORIZON_SECONDS": horizon}})
    for t in RETRIED_T:
        rounds, pause = retry_rounds(t, RETRIED_N)
        out.append({"mode": "watcher", "n": RETRIED_N, "t": t, "rounds": rounds, "tick": waiting.TICK,
                    "retry_pause": pause, "group": "retried", "variant": "default"})
    return sorted(out, key=waiting.cost, reverse=True)


TITLES = {
    "tick": "Watcher tick (WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS)",
    "own": "OWN_SCHEDULE (the poll-only cadence, and the watcher's list cadence for few runs)",
    "safety": "SAFETY_SCHEDULE (safety-net polls while signals are expected)",
    "horizon": "CREDIT_HORIZON_SECONDS (how long a batch's unspent list credit lasts its tail)",
    "retried": "runs retried once (the first attempt fails at about T/2, the retry starts at 3T/4 and lasts 2-30 s)",
}


def table(rows: Sequence[dict]) -> str:
    lines = ["| variant | system | N | T | calls/run | % of Airflow | mean lag s | Airflow mean lag s | max lag s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["mode"], r["n"] or 0, r["t"], r["variant_index"])):
        air = r["airflow"]
        lines.append(f"| {r['variant']} | {r['mode']} | {r['n'] or 'any'} | {waiting.label_t(r['t'])} | "
                     f"{r['calls_per_run']:.2f} | {r['calls_per_run'] / air['calls_per_run']:.1%} | "
                     f"{waiting.seconds(r['mean_lag'])} | {waiting.seconds(air['mean_lag'])} | "
                     f"{waiting.seconds(r['max_lag'])} |")
    return "\n".join(lines)


GROUPS = ("tick", "own", "safety", "horizon", "retried")


def explore(selected: Sequence[str] = GROUPS) -> bool:
    unknown = set(selected) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown groups {sorted(unknown)}; choose from {GROUPS}")
    started = time.perf_counter()
    chosen = [e for e in experiments() if e["group"] in selected]
    variant_order = {label: i for i, (label, _, _) in enumerate(OWN_VARIANTS + SAFETY_VARIANTS)}
    variant_order.update({f"tick {t} s": i for i, t in enumerate(TICKS)})
    variant_order.update({_horizon_label(h): i for i, h in enumerate(HORIZONS)})
    variant_order["default"] = 0
    rows = []
    for result in waiting.run_all(chosen):
        r = waiting.row(result)
        spec = result["spec"]
        r.update(group=spec["group"], variant=spec["variant"], variant_index=variant_order[spec["variant"]])
        rows.append(r)
    wall = time.perf_counter() - started
    for group in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if not mine:
            continue
        text = table(mine)
        print(f"== {TITLES[group]}\n{text}\n")
        if waiting.WRITE_DOCS:
            report.write_section(f"waiting-tuning-{group}", (
                f"### Tuning: {TITLES[group]}\n\n`python -m bench.waiting --explore {group}`: {EXPLORE_END_TIMES} end "
                "times per T (N = 1 in rounds), the constants replaced inside each simulation's process (the code is "
                "unchanged), Airflow on the same end times.\n\n" + text), waiting.DOCS_DIR or report.DOCS_DIR)
    print(f"wall time: {wall:.0f} s")
    return True
