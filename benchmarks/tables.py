"""The printed side of the benchmark: one rich table per section, from the same dict the JSON holds."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def print_section(name: str, section: dict[str, Any]) -> None:
    if section.get("skipped"):
        console.print(f"[yellow]{name}: skipped[/yellow] ({section.get('reason')})")
        return
    for title, rows in section.get("tables", {}).items():
        if not rows:
            continue
        table = Table(title=f"{name}: {title}")
        columns = list(rows[0])
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*(_fmt(row.get(c)) for c in columns))
        console.print(table)


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    console.print(f"machine: {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads), "
                  f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}")


TITLES = {"overhead": "Harness overhead", "pipeline": "Data pipeline", "speed": "Training speed",
          "fixed_cost": "Per-trial fixed cost", "concurrency": "Concurrency", "pruning": "Pruning efficiency"}


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)).replace("|", "/") for c in columns) + " |" for row in rows]
    return lines


def markdown_summary(results: dict[str, Any]) -> str:
    """The same tables as the console, as markdown, with the machine, date and exact command."""
    m = results["machine"]
    lines = [f"# Benchmark results ({'tiny' if results['tiny'] else 'full size'})", "",
             f"- command: `{results['command']}`",
             f"- started: {results['started']}, finished: {results.get('finished')}",
             f"- CPU: {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads); "
             f"GPU: {m['gpu'] or 'none'}",
             f"- torch {m['torch']}, optuna {m['optuna']}, mlflow {m['mlflow']}, Python {m['python']}", ""]
    for name, section in results["sections"].items():
        lines.append(f"## {TITLES.get(name, name)}")
        lines.append("")
        if section.get("skipped"):
            lines += [f"Not run: {section.get('reason')}.", ""]
            continue
        for title, rows in section.get("tables", {}).items():
            if rows:
                lines += [f"**{title}**", ""] + markdown_table(rows) + [""]
        if "goal" in section and "meets_goal" in section:
            lines += [f"Goal < {section['goal']}: {'met' if section['meets_goal'] else 'not met'}.", ""]
    return "\n".join(lines) + "\n"
