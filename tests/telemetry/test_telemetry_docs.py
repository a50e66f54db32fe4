"""docs/operations.md and the code cannot drift: every metric is documented with its type, unit and
attributes, and every metric or span name a query uses is one the app records."""
from __future__ import annotations

import re
from pathlib import Path

from telemetry.metrics import METRICS
from telemetry_support import WORKFLOW_END_ATTRIBUTES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text("utf-8")
SPAN_NAMES = {"workflow ended"}


def table_rows():
    rows = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[a-z_.]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_metric_is_documented_with_its_type_unit_and_attributes():
    rows = table_rows()
    assert set(rows) == {m.name for m in METRICS}
    for metric in METRICS:
        name, kind, unit, attributes, _ = rows[metric.name]
        assert kind == metric.kind and unit == f"`{metric.unit}`", metric.name
        for attribute in metric.attributes:
            assert f"`{attribute}`" in attributes, (metric.name, attribute)


def test_queries_use_only_names_the_app_records():
    queries = "\n".join(re.findall(r"```kusto\n(.*?)```", DOC, re.DOTALL))
    used = set(re.findall(r'name (?:==|in \() ?"([^"]+)"', queries))
    used |= {n for group in re.findall(r'name in \(([^)]*)\)', queries) for n in re.findall(r'"([^"]+)"', group)}
    assert used and used <= {m.name for m in METRICS} | SPAN_NAMES
    # The span's attributes: test_telemetry_workflow checks a real one carries all of these.
    assert set(re.findall(r'customDimensions\["((?:workflow|databricks)\.[a-z_]+)"\]', queries)) <= (
        WORKFLOW_END_ATTRIBUTES | {"databricks.request_id", "databricks.attempt", "databricks.error_code"})
