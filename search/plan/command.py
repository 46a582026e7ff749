"""Plan a study for your dataset and device, and write it as a study file you can read and edit.

    python -m search.plan --data /path/to/dataset                     # this machine's device, 1 hour
    python -m search.plan --data DIR --device cuda --memory-gb 80 --hours 3 --out studies/mine.toml
    python -m search.plan --hours 0.25                                # the embedded dataset on this machine
    python -m search.run --study studies/mine.toml                    # then run it

It measures the dataset (sizes, label values, class pixel counts, decoded size) and the device
(seconds per image with one probe step per candidate size, or the memory estimate on CUDA), derives
the classes, resize, crop, depth range, widths, batch sizes, loss, epochs, trial count and pruner,
prints each value with why, and writes the study TOML with the same reasons as comments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import tomllib
from rich.console import Console
from rich.markup import escape

from search.plan.decisions import PlanError
from search.plan.plan_toml import plan_table, render_toml
from search.plan.planner import DEFAULT_HOURS, PlanRequest, make_plan
from search.study.definition import parse_study


def parse_args(argv: list[str] | None) -> tuple[PlanRequest, Path | None]:
    p = argparse.ArgumentParser(prog="python -m search.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (ROOT/train|val/images|labels, or ROOT/images|labels); "
                                  "default: the embedded dataset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="the device to plan for")
    p.add_argument("--memory-gb", type=float, help="CUDA memory to plan for (default: the free memory of the "
                                                   "device here; needed for a CUDA device that is not here)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--hours", type=float, help=f"time budget of the whole search (default {DEFAULT_HOURS:g})")
    budget.add_argument("--total-epochs", type=int, help="budget as epochs trained in all, instead of --hours")
    p.add_argument("--ram-gb", type=float, help="memory for the decoded dataset (default: what is available)")
    p.add_argument("--workers", type=int, default=1, help="worker processes the study will run with "
                                                          "(search.run --workers N): each decodes its own copy")
    p.add_argument("--name", help="the study's name (default: plan-<dataset folder>)")
    p.add_argument("--out", type=Path, help="the study file to write (default: studies/<name>.toml)")
    args = p.parse_args(argv)
    try:
        req = PlanRequest(data=args.data, device=args.device, memory_gb=args.memory_gb, hours=args.hours,
                          total_epochs=args.total_epochs, ram_gb=args.ram_gb, name=args.name,
                          workers=args.workers)
    except PlanError as err:
        p.error(str(err))
    return req, args.out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    req, out = parse_args(argv)
    console = Console()
    try:
        plan = make_plan(req)
    except (PlanError, ValueError, FileNotFoundError) as err:  # seg.data's errors are ValueErrors naming the file
        Console(stderr=True).print("[red]error:[/red]", escape(str(err)))
        return 2
    plan.command = f"python -m search.plan {shlex.join(argv)}".strip()
    out = out or Path("studies") / f"{req.study_name}.toml"
    text = render_toml(plan)
    parse_study(tomllib.loads(text), out)  # what is written is a valid study, or this is a bug
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(plan_table(plan))
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"wrote {out}; run it with: python -m search.run --study {out}")
    return 0
