"""`search.run --data DIR` without `--study`: plan the study once, keep the plan with the study, and
resume with the stored plan (a study that exists is never re-planned).

The plan's text and fingerprint are user attrs of the Optuna study (so every worker and every later
run reads the same plan) and artifacts of its MLflow parent run (`plan/study.toml`,
`plan/fingerprint.json`). A copy is written beside the storage for the user to read or edit; an
edited copy runs with `--study FILE` (and a new `--study-name`, since the space is the study's identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import tomllib
from rich.console import Console
from rich.markup import escape

from search.plan.decisions import PlanError
from search.plan.plan_toml import plan_table, render_toml
from search.plan.planner import DEFAULT_HOURS, PlanRequest, make_plan
from search.study.definition import StudyDef, parse_study
from search.study.storage import is_journal, open_storage

PLAN_ATTR = "plan_toml"
FINGERPRINT_ATTR = "plan_fingerprint"


@dataclass
class StoredPlan:
    """A planned study's definition, the plan's text and fingerprint, and whether it was planned just now."""

    sdef: StudyDef
    text: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fresh: bool = True


def plan_file(storage: str, name: str) -> Path:
    """Where the readable copy goes: `plans/NAME.toml` beside a SQLite or journal file, else ./studies/plans/."""
    if storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):]).parent / "plans" / f"{name}.toml"
    if is_journal(storage):
        return Path(storage).parent / "plans" / f"{name}.toml"
    return Path("studies") / "plans" / f"{name}.toml"


def stored_plan(storage: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """The plan stored with the study `name`, or None when there is no such study (or it was not planned)."""
    opened = open_storage(storage)
    if name not in optuna.get_all_study_names(opened):
        return None
    attrs = optuna.load_study(study_name=name, storage=opened).user_attrs
    return (attrs[PLAN_ATTR], attrs.get(FINGERPRINT_ATTR, {})) if PLAN_ATTR in attrs else None


def planned_definition(data: str, storage: str, *, study_name: str | None, device: str, memory_gb: float | None,
                       timeout: float | None, worker: bool, console: Console, workers: int = 1) -> StoredPlan:
    """The stored plan of the study (resume), else a new plan for `data` on `device` (printed); `workers`:
    the processes `search.run --workers` starts (the RAM rule counts their copies of the dataset)."""
    req = PlanRequest(data=data, device="cuda" if device.startswith("cuda") else device, memory_gb=memory_gb,
                      hours=(timeout / 3600) if timeout else DEFAULT_HOURS, name=study_name, workers=max(1, workers))
    name = req.study_name
    path = plan_file(storage, name)
    stored = stored_plan(storage, name)
    if stored is not None:
        text, fingerprint = stored
        if not worker:
            console.print(f"study {name!r} exists: resuming with its stored plan (not re-planned); "
                          f"a copy is in {escape(str(path))}")
        if not path.exists():
            _write(path, text)
        return StoredPlan(_definition(text, path), text, fingerprint, fresh=False)
    if worker:
        raise PlanError(f"worker: study {name!r} has no stored plan in {storage}; its parent process plans it first")
    plan = make_plan(req)
    plan.command = f"python -m search.run --data {data} (no --study: planned for {req.device}, " \
                   f"{req.seconds / 3600:g} h)"
    text = render_toml(plan)
    console.print(plan_table(plan))
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    _write(path, text)
    console.print(f"planned study {name!r}, written to {escape(str(path))}; it is stored with the study, and a "
                  "rerun of this command resumes it")
    return StoredPlan(_definition(text, path), text, plan.fingerprint)


def store_plan(study: optuna.Study, plan: StoredPlan) -> None:
    """Keep the plan with a new study, before any worker or later run looks for it."""
    if PLAN_ATTR not in study.user_attrs:
        study.set_user_attr(PLAN_ATTR, plan.text)
        study.set_user_attr(FINGERPRINT_ATTR, plan.fingerprint)


def _definition(text: str, path: Path) -> StudyDef:
    return parse_study(tomllib.loads(text), path)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
