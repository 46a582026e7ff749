"""Merge pruning benchmarks run as separate processes (one per seed, say) into one result with its tables.

    D=benchmarks/results/<date>-cpu
    python -m benchmarks.merge $D/raw/cpu-pruning-s0-<date>.json $D/raw/cpu-pruning-s1-<date>.json \\
        --json $D/cpu-pruning-<date>.json

The runs must share the study, trial count, max epochs, epoch budget and device; each (seed, pruner) may appear
once. Ratios and gaps are computed per seed against that seed's own "none" run, so files measured
under different conditions (threads, code version) still compare like with like within a seed.
The merged JSON lists its source files with their commands and machine settings, and a markdown
copy of the tables is written beside it. The per-run files go in the dated folder's `raw/`: the
merged file holds their runs, they keep the rest (machine, start and finish times) and can be
replayed seed by seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.pruning import PRUNERS, compare, tables
from benchmarks.tables import markdown_table

SHARED = ("study", "trials", "max_epochs", "total_epochs", "device")


class MergeError(ValueError):
    """Files that cannot be merged; the message names the file and the value."""


def pruning_section(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path}: {exc}") from exc
    section = result.get("sections", {}).get("pruning")
    if not section or not section.get("runs"):
        raise MergeError(f"{path}: no pruning runs (expected a `python -m benchmarks` JSON with a 'pruning' section)")
    return section | {"_command": result.get("command"), "_machine": result.get("machine", {})}


def differing_key(section: dict[str, Any], first: dict[str, Any], keys: Sequence[str] = SHARED) -> str | None:
    """The first of `keys` on which two pruning sections differ (their runs do not compare), or None."""
    return next((key for key in keys if section.get(key) != first.get(key)), None)


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """One pruning section from several files, with the per-pruner summary recomputed over all runs."""
    sections = [(p, pruning_section(p)) for p in paths]
    first_path, first = sections[0]
    seen: dict[tuple[int, str], Path] = {}
    runs: list[dict[str, Any]] = []
    for path, sec in sections:
        if key := differing_key(sec, first):
            raise MergeError(f"{path}: {key}={sec.get(key)!r}, but {first_path} has {first.get(key)!r}")
        for run in sec["runs"]:
            pair = (run["seed"], run["pruner"])
            if pair in seen:
                raise MergeError(f"{path}: seed {pair[0]} pruner {pair[1]!r} is also in {seen[pair]}")
            seen[pair] = path
            runs.append(run | {"source": str(path)})
    # The usual pruners in their usual order, then any other setting (e.g. "percentile:percentile=45.0") as first seen.
    pruners = [p for p in PRUNERS if any(r["pruner"] == p for r in runs)]
    pruners += list(dict.fromkeys(r["pruner"] for r in runs if r["pruner"] not in pruners))
    runs.sort(key=lambda r: (r["seed"], pruners.index(r["pruner"])))
    merged = {key: first.get(key) for key in SHARED} | {
        "seeds": sorted({r["seed"] for r in runs}), "pruners": pruners, "runs": runs,
        "goal": first.get("goal"), "complete": all(sec.get("complete") for _, sec in sections),
        "sources": [{"file": str(p), "command": sec["_command"], "torch_threads": sec["_machine"].get("torch_threads"),
                     "env": sec["_machine"].get("env", {}), "complete": sec.get("complete")} for p, sec in sections]}
    merged["summary"] = compare(runs, pruners)
    merged["tables"] = tables(merged)
    return merged


def markdown(merged: dict[str, Any], command: str) -> str:
    lines = ["# Pruning efficiency (merged)", "", f"- command: `{command}`",
             f"- study {merged['study']}, {merged['trials']} trials of at most {merged['max_epochs']} epochs, "
             f"seeds {merged['seeds']}, device {merged['device']}", "- sources:"]
    lines += [f"  - `{s['file']}`: `{s['command']}` (torch threads {s['torch_threads']}, env {s['env']})"
              for s in merged["sources"]]
    for title, rows in merged["tables"].items():
        lines += ["", f"**{title}**", ""] + markdown_table(rows)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="pruning benchmark JSON files")
    p.add_argument("--json", type=Path, required=True, help="write the merged result here (and .md beside it)")
    args = p.parse_args(argv)
    try:
        merged = merge(args.results)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.merge " + " ".join(map(str, args.results)) + f" --json {args.json}"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "sections": {"pruning": merged}}, indent=2))
    text = markdown(merged, command)
    args.json.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
