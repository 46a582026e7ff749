"""Pruning at equal epoch budgets: what a pruner buys for the same compute, per seed, with its uncertainty.

    D=benchmarks/results/<date>-cpu/raw
    python -m benchmarks --only pruning --pruners none --seeds 4 --threads 1 --pruning-epochs 16 \\
        --pruning-total-epochs 230 --json $D/eq-none-s4.json          # one core each, two runs at a time
    python -m benchmarks --only pruning --pruners percentile:percentile=30.0,n_startup_trials=2,n_warmup_steps=2 \\
        --seeds 4 --threads 1 --pruning-epochs 16 --pruning-total-epochs 230 --json $D/eq-pct-s4.json
    python -m benchmarks.equal_budget $D/eq-*-s*.json --json benchmarks/results/<date>-cpu/equal-budget.json
    python -m benchmarks.equal_budget --tiny                           # seconds: a tiny measurement, analysed

Both arms are pruning benchmark runs of one seed that stop at an epoch budget (`--pruning-total-epochs`,
i.e. `search.run --total-epochs`), not at a trial count. The study's answer after B epochs is its
best complete trial among those that finished within the first B epochs (trials in the order they
ran, one process); a run that stopped before B has no answer at B. For every budget B (default 50,
60, ..., 230 epochs) and seed, Δ(B) = best(pruned, B) − best(unpruned, B): the unpruned arm's
prefixes give every smaller budget, and so do the pruned arm's (a trial that would cross B is cut
by the budget there, so it is not complete at B either way). Per seed: the mean of Δ over the
budgets ("area") and Δ at the largest budget. Across seeds: wins/ties/losses (a tie is |Δ| < --tie),
the mean, the median and a paired bootstrap 95 % confidence interval of the mean (seeds resampled
with their pair). The goal: area > 0 on at least 4 of 5 seeds (80 %) with a mean ≥ +0.03, and at the
largest budget a mean Δ ≥ 0 with no seed below −0.02.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.merge import MergeError, pruning_section
from benchmarks.tables import markdown_table

BUDGETS = tuple(range(50, 231, 10))
TIE = 0.005
AREA_GOAL, FINAL_FLOOR = 0.03, -0.02
BOOTSTRAP = 10_000


def best_at(curves: Sequence[dict[str, Any]], budget: int) -> float | None:
    """The study's answer after `budget` epochs: its best complete trial among those finished within them;
    None when the run stopped before it had trained `budget` epochs."""
    ordered = sorted(curves, key=lambda c: c["number"])
    if sum(len(c["values"]) for c in ordered) < budget:
        return None
    spent, best = 0, None
    for curve in ordered:
        spent += len(curve["values"])
        if spent > budget:
            break
        if curve["state"] == "COMPLETE" and curve["values"]:
            best = max(curve["values"]) if best is None else max(best, max(curve["values"]))
    return best


def seed_deltas(pruned: Sequence[dict[str, Any]], unpruned: Sequence[dict[str, Any]],
                budgets: Sequence[int]) -> dict[str, Any]:
    """Δ(B) per budget, the area (None unless every budget has a Δ) and Δ at the largest budget."""
    deltas = {}
    for b in budgets:
        p, u = best_at(pruned, b), best_at(unpruned, b)
        deltas[b] = None if p is None or u is None else round(p - u, 4)
    known = [d for d in deltas.values() if d is not None]
    area = round(statistics.fmean(known), 4) if known and len(known) == len(deltas) else None
    last = max(budgets)
    return {"deltas": deltas, "area": area, "final": deltas[last], "pruned_best": best_at(pruned, last),
            "unpruned_best": best_at(unpruned, last), "epoch1_cuts": epoch1_cuts(pruned)}


def epoch1_cuts(curves: Sequence[dict[str, Any]]) -> int:
    """Trials pruned on their first epoch's value (a poor predictor of the end on the default study)."""
    return sum(c["state"] == "PRUNED" and len(c["values"]) == 1 for c in curves)


def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean, resampling the seeds (each seed's Δ keeps its pair together)."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return round(means[int(0.025 * resamples)], 4), round(means[int(0.975 * resamples) - 1], 4)


def across_seeds(values: Sequence[float], tie: float = TIE) -> dict[str, Any]:
    wins, ties = sum(v >= tie for v in values), sum(abs(v) < tie for v in values)
    return {"w/t/l": f"{wins}/{ties}/{len(values) - wins - ties}", "mean": round(statistics.fmean(values), 4),
            "median": round(statistics.median(values), 4), "ci95": bootstrap_ci(values), "min": min(values)}


def goal_met(areas: Sequence[float], finals: Sequence[float]) -> bool:
    need = math.ceil(0.8 * len(areas))
    return (sum(a > 0 for a in areas) >= need and statistics.fmean(areas) >= AREA_GOAL
            and statistics.fmean(finals) >= 0 and min(finals) >= FINAL_FLOOR)


def compare(runs: Sequence[dict[str, Any]], budgets: Sequence[int] = BUDGETS, tie: float = TIE) -> dict[str, Any]:
    """Every pruner's runs against the unpruned ('none') run of the same seed."""
    base = {r["seed"]: r for r in runs if r["pruner"] == "none"}
    result: dict[str, Any] = {"budgets": list(budgets), "tie": tie, "pruners": {}}
    for pruner in dict.fromkeys(r["pruner"] for r in runs if r["pruner"] != "none"):
        seeds = {r["seed"]: seed_deltas(r["curves"], base[r["seed"]]["curves"], budgets)
                 for r in runs if r["pruner"] == pruner and r["seed"] in base}
        areas = [s["area"] for s in seeds.values() if s["area"] is not None]
        finals = [s["final"] for s in seeds.values() if s["final"] is not None]
        complete = len(areas) == len(finals) == len(seeds) > 0
        result["pruners"][pruner] = {
            "seeds": seeds, "area": across_seeds(areas, tie) if areas else None,
            "final": across_seeds(finals, tie) if finals else None,
            "goal_met": goal_met(areas, finals) if complete else None}
    return result


def load_runs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The pruning runs of every file, each (seed, pruner) once, all with recorded curves."""
    runs, seen = [], {}
    for path in paths:
        for run in pruning_section(path)["runs"]:
            pair = (run["seed"], run["pruner"])
            if "curves" not in run:
                raise MergeError(f"{path}: seed {pair[0]} pruner {pair[1]!r} has no recorded curves")
            if pair in seen:
                raise MergeError(f"{path}: seed {pair[0]} pruner {pair[1]!r} is also in {seen[pair]}")
            seen[pair] = path
            runs.append(run)
    unpaired = sorted({seed for seed, pruner in seen} - {seed for seed, pruner in seen if pruner == "none"})
    if unpaired:
        raise MergeError(f"seed {unpaired[0]} ({seen[next(k for k in seen if k[0] == unpaired[0])]}) has no "
                         "unpruned ('none') run to compare with")
    return runs


def tables(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    last = max(result["budgets"])
    summary, per_seed = [], []
    for pruner, row in result["pruners"].items():
        area, final = row["area"] or {}, row["final"] or {}
        summary.append({"pruner": pruner, "seeds": len(row["seeds"]), "area W/T/L": area.get("w/t/l"),
                        "area mean": area.get("mean"), "area median": area.get("median"),
                        "area 95% CI": area.get("ci95"), f"Δ@{last} W/T/L": final.get("w/t/l"),
                        f"Δ@{last} mean": final.get("mean"), f"Δ@{last} min": final.get("min"),
                        "goal met": row["goal_met"]})
        for seed, s in sorted(row["seeds"].items()):
            per_seed.append({"pruner": pruner, "seed": seed, "area": s["area"], f"Δ@{last}": s["final"],
                             "Δ by budget": " ".join("—" if d is None else f"{d:+.3f}" for d in s["deltas"].values()),
                             f"best pruned@{last}": s["pruned_best"], f"best unpruned@{last}": s["unpruned_best"],
                             "cut after epoch 1": s["epoch1_cuts"]})
    return {"per pruner, across seeds": summary, "per seed": per_seed}


def budgets_arg(text: str) -> tuple[int, ...]:
    """`50:230:10` -> 50, 60, ..., 230."""
    try:
        low, high, step = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW:HIGH:STEP, e.g. 50:230:10") from None
    if not 0 < low <= high or step < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 < LOW <= HIGH and STEP >= 1")
    return tuple(range(low, high + 1, step))


def tiny_runs() -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """Seconds: a tiny study under no pruner and a median pruner, each stopped at 4 epochs, seed 0."""
    import tempfile

    from benchmarks.bench_settings import tiny_pruning_toml, write_study
    from benchmarks.pruning import measure
    from search.settings import configure_process

    configure_process()
    with tempfile.TemporaryDirectory(prefix="equal-budget-tiny-") as tmp:
        study = str(write_study(tiny_pruning_toml(), Path(tmp), "bench-tiny"))
        section = measure(study, ("none", "median:n_startup_trials=1"), (0,), None, 2, "cpu", total_epochs=4)
    return section["runs"], (2, 4)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.equal_budget", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", type=Path, help="pruning benchmark JSON files (both arms of each seed)")
    p.add_argument("--budgets", type=budgets_arg, default=BUDGETS, help="LOW:HIGH:STEP epochs (default 50:230:10)")
    p.add_argument("--tie", type=float, default=TIE, help="|Δ| below this counts as a tie in W/T/L")
    p.add_argument("--tiny", action="store_true", help="run a tiny measurement (seconds) and analyse it")
    p.add_argument("--json", type=Path, help="write the result here (and the tables as .md beside it)")
    args = p.parse_args(argv)
    if args.tiny == bool(args.results):
        p.error("give pruning benchmark JSON files, or --tiny")
    try:
        runs, budgets = tiny_runs() if args.tiny else (load_runs(args.results), args.budgets)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = compare(runs, budgets, args.tie)
    lines = [f"equal-budget comparison at {budgets[0]}..{budgets[-1]} epochs (Δ = best pruned − best unpruned)"]
    for title, rows in tables(result).items():
        lines += ["", f"**{title}**", ""] + (markdown_table(rows) if rows else ["(no pruned run)"])
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sources": [str(p) for p in args.results], **result}, indent=2) + "\n")
        args.json.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
