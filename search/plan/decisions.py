"""What a plan is made of: decisions (a study-file key, its value and why) and the error for input it
cannot plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The study file's tables, in the order the plan writes them.
TABLES = ("study", "data", "budget", "sampler", "pruner", "space.model", "space.train", "space.transforms",
          "baseline.params", "confirm", "plan")


class PlanError(ValueError):
    """A dataset, file or value the plan cannot work with; the message names it and says what was expected."""


@dataclass(frozen=True)
class Decision:
    """One line of the planned study: `key = value  # why` in `table`; a note when `key` is None."""

    table: str
    key: str | None
    value: Any = None
    why: str = ""

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"decision table {self.table!r}; expected one of {list(TABLES)}")


@dataclass
class Plan:
    """The decisions of every rule, the survey they came from, and warnings for the user."""

    decisions: list[Decision]
    fingerprint: dict[str, Any]
    command: str = ""
    warnings: list[str] = field(default_factory=list)

    def value(self, table: str, key: str) -> Any:
        """The planned value of `key` in `table` (KeyError when the plan has none)."""
        for d in self.decisions:
            if d.table == table and d.key == key:
                return d.value
        raise KeyError(f"the plan has no {key!r} in [{table}]")

    def choices(self, table: str, key: str) -> list[Any]:
        """The values a space entry can take: its choices, or its one fixed value."""
        value = self.value(table, key)
        return list(value["choices"]) if isinstance(value, dict) and "choices" in value else [value]
