"""A plan as text: the commented study TOML (`key = value  # why`), and the same reasons as a table."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table

from search.plan.decisions import TABLES, Plan

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (`"model.depth"`)."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A plain value as TOML: numbers, strings, booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(plan: Plan) -> str:
    """The study file: a header, then each table with one commented line per decision."""
    lines = [f"# Planned by `{plan.command or 'python -m search.plan'}`: every derived value says why,",
             "# from the dataset and the device as measured then. Edit freely, then run it with",
             "#   python -m search.run --study THIS_FILE",
             *(f"# warning: {w}" for w in plan.warnings)]
    for table in TABLES:
        rows = [d for d in plan.decisions if d.table == table]
        if not rows:
            continue
        lines += ["", f"[{table}]"]
        for d in rows:
            if d.key is None:
                lines.append(f"# {d.why}")
            else:
                lines.append(f"{toml_key(d.key)} = {toml_value(d.value)}" + (f"  # {d.why}" if d.why else ""))
    return "\n".join(lines) + "\n"


def plan_table(plan: Plan) -> Table:
    """Setting, value and why for each derived value (the fixed defaults of the space are left out)."""
    table = Table(title="The plan", show_lines=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold", max_width=40)
    table.add_column("why", overflow="fold")
    for d in plan.decisions:
        if d.why and not d.why.startswith("as the default") and d.table != "plan":  # [plan]: numbers for search.run
            setting = f"[{d.table}]" if d.key is None else f"{d.table}.{d.key}"
            table.add_row(escape(setting), escape("" if d.key is None else toml_value(d.value)), escape(d.why))
    return table
