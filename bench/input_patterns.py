"""Input patterns: every pattern a caller's text meets runs in linear time.

A caller controls the strings of a request (HTTP body, queue message, Event Grid data) and, through
the invalid-event copy and error texts, some of what `scrub` reads. A backtracking pattern that is
tried at every position of a long run can take time quadratic in the input: before this benchmark,
a 60 KB body of "eyJ" repeated (under the 64 KiB limit) held a worker for over a second.

Each case times a pathological input against a benign input of the same size, through the real
code path (`parse_json_body` + `validate_request`, or `scrub`), the two alternating and the best of
REPETITIONS kept. The ratio is what the pathological shape costs over an ordinary one: linear
patterns keep it a small constant at any size, a quadratic one grows with the size. The growth is
how that ratio changes when both inputs grow fourfold (SIZE against SIZE / 4): about 1 when
linear, 4 when quadratic; being a ratio of ratios, it holds on a busy machine. Targets: every ratio <=
TARGET_RATIO and every growth <= TARGET_GROWTH at SIZE characters.

    python -m bench.input_patterns"""
from __future__ import annotations

import json
import time
from typing import Callable, List, Tuple

SIZE = 60_000  # characters of caller text: just under the 64 KiB body limit
REPETITIONS = 5
TARGET_RATIO = 10.0
TARGET_GROWTH = 2.0

_BASE = {"jobName": "bench", "taskKey": "main", "notebookPath": "/Workspace/bench"}


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _body(**fields) -> bytes:
    return json.dumps({**_BASE, **fields}).encode("utf-8")


def _param(text: str) -> bytes:
    return _body(notebookParams={"day": text})


def _library(text: str) -> bytes:
    task = {"task_key": "main", "notebook_task": {"notebook_path": "/Workspace/bench"}, "libraries": [{"whl": text}]}
    return json.dumps({"jobName": "bench", "tasks": [task]}).encode("utf-8")


def _strip_nones(raw: bytes) -> bytes:
    return json.dumps({k: v for k, v in json.loads(raw).items() if v is not None}).encode("utf-8")


def _git_url(text: str) -> bytes:
    return _strip_nones(_body(gitSource={"git_url": text, "git_provider": "gitHub", "git_branch": "main"}))


def _param_name(text: str) -> bytes:
    return _body(notebookParams={text: "x"})


def _notebook_path(text: str) -> bytes:
    return _body(notebookPath=text)


def cases(size: int) -> List[Tuple[str, str, Callable[[str], object], str, str]]:
    """(case, path, function, pathological text, benign text of the same length)."""
    from databricks_jobs.secret_values import scrub
    from workflow.inputs import InputError, parse_json_body, validate_request
    from workflow.settings import WorkflowSettings

    settings = WorkflowSettings.from_env({})

    def validated(make: Callable[[str], bytes]) -> Callable[[str], object]:
        def check(text: str):
            try:
                return validate_request(parse_json_body(_strip_nones(make(text)), 1 << 30), settings)
            except InputError as refused:
                return refused
        return check

    benign = _repeat("abcdefgh", size)
    return [
        ("JWT shape, 'eyJ' repeated", "HTTP body: a parameter value", validated(_param), _repeat("eyJ", size), benign),
        ("JWT shape, 'eyJ-' repeated", "HTTP body: a parameter value", validated(_param), _repeat("eyJ-", size), benign),
        ("JWT shape, 'eyJ.eyJ' and a long tail", "HTTP body: a parameter value", validated(_param),
         "eyJabcdefgh.eyJ" + _repeat("a", size - 15), benign),
        ("bearer and spaces", "HTTP body: a parameter value", validated(_param), "bearer" + _repeat(" ", size - 7) + "!",
         benign),
        ("scheme-like word", "HTTP body: a library URL", validated(_library), _repeat("a", size), _repeat("a/", size)),
        ("user info of colons", "HTTP body: a library URL", validated(_library), "a://" + _repeat(":", size - 4),
         _repeat("a/", size)),
        ("user info without '@'", "HTTP body: a Git URL", validated(_git_url), "https://" + _repeat("a", size - 8),
         "https:/" + _repeat("a", size - 7)),
        ("long parameter name", "HTTP body: a parameter name", validated(_param_name), _repeat("a", size), benign),
        ("long path of segments", "HTTP body: notebookPath", validated(_notebook_path), _repeat("/a", size) + "\x01",
         _repeat("/a", size) + "b"),
        ("JWT shape, 'eyJ-' repeated", "scrub", scrub, _repeat("eyJ-", size), benign),
        ("dotted word", "scrub", scrub, _repeat("a.", size), benign),
        ("URL scheme of dotted words", "scrub", scrub, _repeat("a.", size) + "://x", benign),
        ("user info of colons", "scrub", scrub, "a://" + _repeat(":", size - 4), benign),
        ("named secret and spaces", "scrub", scrub, "password" + _repeat(" ", size - 8), benign),
    ]


def _timed(function: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    function(text)
    return time.perf_counter() - started


def measure(size: int = None, repetitions: int = None) -> List[dict]:
    size = SIZE if size is None else size
    repetitions = REPETITIONS if repetitions is None else repetitions
    rows = []
    for (name, path, function, hostile, benign), (*_, quarter, benign_quarter) in zip(cases(size), cases(size // 4)):
        function(benign)  # warm: the validator is built on first use
        texts = {"hostile": hostile, "benign": benign, "quarter": quarter, "benign_quarter": benign_quarter}
        best = {key: [] for key in texts}
        for _ in range(repetitions):  # alternated, so drift on the machine hits each alike
            for key, text in texts.items():
                best[key].append(_timed(function, text))
        hostile_s, benign_s, quarter_s, benign_quarter_s = (max(min(best[key]), 1e-6) for key in texts)
        ratio = hostile_s / benign_s
        rows.append({"case": name, "path": path, "chars": len(hostile), "hostile_s": hostile_s, "benign_s": benign_s,
                     "ratio": ratio, "growth": ratio / (quarter_s / benign_quarter_s)})
    return rows


def run(size: int = None) -> bool:
    rows = measure(size)
    print(f"{'path':30} {'case':40} {'chars':>7} {'hostile ms':>11} {'benign ms':>10} {'ratio':>6} {'growth':>6}")
    for row in rows:
        print(f"{row['path']:30} {row['case']:40} {row['chars']:>7} {row['hostile_s'] * 1000:>11.2f} "
              f"{row['benign_s'] * 1000:>10.2f} {row['ratio']:>6.2f} {row['growth']:>6.2f}")
    worst = max(rows, key=lambda r: r["ratio"])
    steepest = max(rows, key=lambda r: r["growth"])
    met = worst["ratio"] <= TARGET_RATIO and steepest["growth"] <= TARGET_GROWTH
    print(f"worst ratio: {worst['ratio']:.2f} ({worst['path']}: {worst['case']}); target <= {TARGET_RATIO}")
    print(f"steepest growth: {steepest['growth']:.2f} ({steepest['path']}: {steepest['case']}); "
          f"target <= {TARGET_GROWTH}")
    print("targets " + ("met" if met else "MISSED"))
    return met


if __name__ == "__main__":
    import sys

    sys.exit(0 if run() else 1)
