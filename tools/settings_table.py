"""The README settings table, generated from the settings lists in code so the two cannot drift.

`python -m tools.settings_table` rewrites the table in README.md; a test fails when it is stale."""
from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def all_settings() -> list[tuple[str, str, str]]:
    from callers.identity import SETTINGS as IDENTITY
    from databricks_jobs.settings import SETTINGS as DATABRICKS
    from databricks_jobs.start_budget import SETTINGS as START_BUDGET
    from workflow.caller_policy import SETTINGS as POLICIES
    from messaging.settings import SETTINGS as CALLERS
    from workflow.results import SETTINGS as RESULTS
    from workflow.settings import SETTINGS as WORKFLOW

    rows = [(s[0], s[1], s[2]) for s in (*DATABRICKS, *START_BUDGET, *WORKFLOW, *RESULTS, *CALLERS, *IDENTITY,
                                         *POLICIES)]
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), "a setting is listed twice"
    return rows


def render() -> str:
    lines = ["| name | default | meaning |", "|---|---|---|"]
    for name, default, meaning in all_settings():
        shown = f"`{default}`" if default not in (None, "") else "(unset)"
        escaped = meaning.replace("|", "\\|")
        lines.append(f"| `{name}` | {shown} | {escaped} |")
    return "\n".join(lines)


def rewrite(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"


if __name__ == "__main__":
    README.write_text(rewrite(README.read_text("utf-8")), "utf-8")
    sys.stdout.write(f"rewrote the settings table in {README}\n")
