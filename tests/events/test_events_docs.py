"""docs/callers.md documents every setting the callers add, with its default."""
import re
from pathlib import Path

from messaging.settings import SETTINGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "callers.md"


def test_settings_table_matches_the_settings_list():
    text = DOC.read_text("utf-8")
    table = text.split("<!-- caller-settings:start -->")[1].split("<!-- caller-settings:end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        name, default, meaning = [c.strip() for c in line.strip("|").split(" | ", 2)]
        rows[name.strip("`")] = (default, meaning)
    assert list(rows) == [name for name, _, _ in SETTINGS]
    for name, default, meaning in SETTINGS:
        assert rows[name][0] == (f"`{default}`" if default else "(unset)"), name
        assert rows[name][1] == meaning, name


def test_every_setting_read_by_the_callers_is_listed():
    source = "".join(p.read_text("utf-8") for p in (DOC.parents[1] / "triggers").glob("*.py"))
    source += (DOC.parents[1] / "activities" / "notifications.py").read_text("utf-8")
    read = set(re.findall(r'get\("([A-Z_]+)"', source))
    from tools.settings_table import all_settings

    assert read <= {name for name, _, _ in all_settings()}
