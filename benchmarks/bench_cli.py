"""Argument parsing, section dispatch and incremental JSON writing for `python -m benchmarks`.

Default output: `benchmarks/results/<date>-<cpu|gpu>/<cpu|gpu>-<date>.json` (the dated results
folder of the package, whatever the working directory) with the markdown tables beside it;
`--tiny` writes `benchmarks-tiny.json` in the temp folder instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_settings import (
    SECTIONS,
    Sizes,
    tiny_pruning_toml,
    tiny_sizes,
    write_study,
)
from benchmarks.machine import machine_info
from search.settings import configure_process
from search.study.samplers_pruners import pruner_arg

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # dated folders: <date>-<cpu|gpu>/


def pruner_label(text: str) -> str:
    """A pruner as `--pruner` takes it, checked here so a typo fails before hours of runs.

    Kept as typed: it is the run's label.
    """
    pruner_arg(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="Benchmark: harness overhead, data pipeline, training speed, "
                                            "fixed cost, concurrency and pruning efficiency; a table and JSON.")
    p.add_argument("--tiny", action="store_true",
                   help="tiny model/data, 1-2 steps, 2 trials, 1 seed (the test suite's)")
    p.add_argument("--json", type=Path, help="write the results here (default: benchmarks/results/<date>-<cpu|gpu>/"
                                             "<cpu|gpu>-<date>.json; with --tiny, a file in the temp folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=f"run only these of {list(SECTIONS)}")
    p.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], metavar="SECTION", help="skip these sections")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--seeds", nargs="+", type=int, help="pruning: sampler seeds (default 0 1 2)")
    p.add_argument("--pruning-trials", type=int, help="pruning: trials per study (default 12)")
    p.add_argument("--pruning-epochs", type=int, help="pruning: max epochs per trial (default 9)")
    p.add_argument("--pruning-total-epochs", type=int,
                   help="pruning: stop each study once its trials trained this many epochs (search.run "
                        "--total-epochs), for python -m benchmarks.equal_budget; no trial limit unless "
                        "--pruning-trials is given too")
    p.add_argument("--pruners", nargs="+", type=pruner_label, metavar="NAME[:KEY=VALUE,...]",
                   help="pruning: pruners to compare, in this order, each a name or a setting as search.run's "
                        "--pruner takes it, e.g. percentile:percentile=40.0,n_startup_trials=3 "
                        "(default: none sha hyperband median)")
    p.add_argument("--pruning-study", help="pruning: study file or name (default: default)")
    p.add_argument("--overhead-epochs", type=int, help="harness overhead: epochs per run (default 3)")
    p.add_argument("--overhead-repeats", type=int, help="harness overhead: bare/harness pairs (default 2)")
    p.add_argument("--speed-steps", type=int, help="training speed: timed steps per variant on CUDA (default 20)")
    p.add_argument("--speed-cpu-steps", type=int, help="training speed: timed steps per variant on CPU (default 2)")
    p.add_argument("--speed-cpu-variants", action="store_true",
                   help="training speed: on CPU also run bf16 / channels_last / compile (slow; labelled CPU)")
    p.add_argument("--concurrency", nargs="+", type=int, help="concurrency: trials at once (default 1 2 4)")
    p.add_argument("--concurrency-steps", type=int, help="concurrency: timed steps per trial (default 20)")
    return p.parse_args(argv)


def sizes_from_args(args: argparse.Namespace, scratch: Path) -> Sizes:
    sizes = tiny_sizes(args.device) if args.tiny else Sizes(tiny=False, device=args.device)
    if args.tiny:
        sizes.pruning_study = str(write_study(tiny_pruning_toml(), scratch, "bench-tiny"))
    overrides = {"seeds": args.seeds, "pruning_trials": args.pruning_trials, "pruning_epochs": args.pruning_epochs,
                 "pruners": args.pruners, "pruning_study": args.pruning_study, "overhead_epochs": args.overhead_epochs,
                 "overhead_repeats": args.overhead_repeats, "speed_steps": args.speed_steps,
                 "speed_cpu_steps": args.speed_cpu_steps, "concurrency": args.concurrency,
                 "concurrency_steps": args.concurrency_steps}
    for key, value in overrides.items():
        if value is not None:
            setattr(sizes, key, tuple(value) if isinstance(value, list) else value)
    if args.pruning_total_epochs is not None:
        sizes.pruning_total_epochs = args.pruning_total_epochs
        if args.pruning_trials is None:
            sizes.pruning_trials = None
    if args.speed_cpu_variants:
        sizes.speed_cpu_variants = True
    _check_sizes(sizes)
    return sizes


def _check_sizes(sizes: Sizes) -> None:
    for name in ("pruning_trials", "pruning_epochs", "pruning_total_epochs", "overhead_epochs", "overhead_repeats",
                 "speed_steps", "speed_cpu_steps", "concurrency_steps"):
        if getattr(sizes, name) is not None and getattr(sizes, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(sizes, name)}; expected an integer >= 1")
    if not sizes.seeds:
        raise ValueError("--seeds needs at least one seed")
    if any(n < 1 for n in sizes.concurrency):
        raise ValueError(f"--concurrency {list(sizes.concurrency)}; expected integers >= 1")


def default_json_path(tiny: bool, device: str) -> Path:
    """`results/<date>-<cpu|gpu>/<cpu|gpu>-<date>.json` in this package; with --tiny, the temp folder."""
    if tiny:
        return Path(tempfile.gettempdir()) / "benchmarks-tiny.json"
    import torch

    # "auto" is labelled by what it resolves to, so a GPU run without --device is not filed as cpu.
    kind = "gpu" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    date = dt.date.today().isoformat()
    return RESULTS_DIR / f"{date}-{kind}" / f"{kind}-{date}.json"


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Atomic rewrite: a crash mid-write never leaves a truncated results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def selected_sections(args: argparse.Namespace) -> list[str]:
    chosen = args.only or list(SECTIONS)
    return [s for s in SECTIONS if s in chosen and s not in args.skip]


def section_runner(name: str) -> Callable[[Sizes, Callable[[dict[str, Any]], None]], dict[str, Any]]:
    """Sections are imported only when they run, so one section's imports never slow another's figures."""
    if name == "overhead":
        from benchmarks.overhead import measure
    elif name == "pipeline":
        from benchmarks.pipeline import measure
    elif name == "speed":
        from benchmarks.speed import measure
    elif name == "fixed_cost":
        from benchmarks.fixed_cost import measure
    elif name == "concurrency":
        from benchmarks.concurrency import measure
    else:
        from benchmarks.pruning import measure_sizes as measure
    return measure


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so temp storages are removed and MLflow runs are ended."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    configure_process()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as scratch:
        try:
            sizes = sizes_from_args(args, Path(scratch))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            return run_sections(args, sizes, "python -m benchmarks " + shlex.join(argv))
        except KeyboardInterrupt as err:
            print("interrupted: the JSON keeps every section and pruning run finished so far", file=sys.stderr)
            return 143 if isinstance(err, Terminated) else 130


def run_sections(args: argparse.Namespace, sizes: Sizes, command: str) -> int:
    from benchmarks.tables import markdown_summary, print_report, print_section

    path = args.json or default_json_path(args.tiny, sizes.device)
    results: dict[str, Any] = {"schema": 1, "command": command,
                               "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                               "tiny": sizes.tiny, "machine": machine_info(sizes.device), "sections": {}}
    for name in SECTIONS:
        if name not in selected_sections(args):
            results["sections"][name] = {"skipped": True, "reason": "not selected (--only/--skip)"}
    write_json(path, results)
    for name in selected_sections(args):
        def keep(partial: dict[str, Any], name: str = name) -> None:
            results["sections"][name] = partial
            write_json(path, results)

        results["sections"][name] = section_runner(name)(sizes, keep)
        results["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json(path, results)
        print_section(name, results["sections"][name])
    print_report(results)
    md = path.with_suffix(".md")
    md.write_text(markdown_summary(results))
    print(f"results written to {path} and {md}")
    return 0

