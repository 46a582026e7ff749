"""Does searching pay? The default study's search against its ablations and its own baseline, at an
equal epoch budget, on the same sampler seeds, every champion scored on an unseen test split.

Run from the repository root:

    python -m benchmarks.search_value --seeds 30 31 32 33 34 --budget-epochs 250 \\
        --out benchmarks/results/<date>-cpu/search-value
    python -m benchmarks.search_value --tiny      # a tiny study, two seeds, in this process (CI)

Per sampler seed S, four arms, each a fresh study in its own Optuna and MLflow SQLite storages under
`--work`, all stopped by the same `--total-epochs B` (pruned trials count the epochs they trained) and
no clock:

- (a) `search`: the study as written (TPE and its pruner), `--seed S`;
- (a+) `final`: the same search with its final training: the study with `[confirm] top = 1, seeds = 1,
  share = F` (`--final-share`, default 1/3), so its trials train (1 - F) x B epochs and search.run then
  retrains the best configuration for F x B; the champion is that retrained model;
- (b) `random`: the same with `--sampler random`;
- (c) `no-pruning`: the same with `--pruner none`;
- (d) `baseline`: the study's `[baseline]` configuration alone, trained `--baseline-seeds K` times
  (trial seeds S*100+j) for B // K epochs each with no pruning; its champion is the best of the K on val.

Each champion (the study's best trial by val mIoU, or the final training's model) is scored with
`python -m search.evaluate` on a test split that neither the search nor the baseline saw: the
embedded dataset's generator run with
`--test-seed` (default 1000; the studies train on generator seed 0). Written to `--out`:
search-value.json (per seed and arm: test and val mIoU, trials by state, epochs trained, the
commands) and search-value.md (the per-seed table, the medians and the goals). The JSON is
rewritten after every arm, so an interrupted run keeps what it measured, and `--resume` runs only the
seeds and arms it lacks (same study content, budget and test split, or it refuses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomllib

from benchmarks.machine import machine_info
from benchmarks.realdata import REPO, Arm, arm_result, evaluate, run_module
from search.plan.plan_toml import toml_key, toml_value
from search.study.definition import resolve_study_path
from search.workers import core_share
from seg.synth.writer import generate_dataset

ARMS = ("search", "final", "random", "no-pruning", "baseline")
FINAL_SHARE = 1 / 3  # arm (a+): one baseline run's length of the budget (B // --baseline-seeds) retrains the best
ARM_FLAGS = {"search": [], "random": ["--sampler", "random"], "no-pruning": ["--pruner", "none"]}
NO_CLOCK_S = 7 * 24 * 3600  # --timeout: the epoch budget, not the study file's clock, ends every arm
TIE = 0.005  # |Δ test mIoU| below this is a tie
GOAL_MEDIAN_GAIN = 0.02  # (a) over (b): median Δ test mIoU
GOAL_SEEDS = 5  # (a) over (b) is judged on at least this many seeds
TEST_IMAGES = 100
TINY = {"seeds": [0, 1], "budget_epochs": 4, "baseline_seeds": 2, "test_images": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_value", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="default", help="the study file or its name in studies/ (default: default)")
    p.add_argument("--seeds", type=int, nargs="+", help="sampler seeds, one row each (default 30-34)")
    p.add_argument("--budget-epochs", type=int, help="epochs every arm trains in all, --total-epochs (default 250)")
    p.add_argument("--baseline-seeds", type=int, help="how many seeds the baseline's budget is split over "
                                                      "(default 3)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="the arms to run (default all)")
    p.add_argument("--final-share", type=float, default=FINAL_SHARE,
                   help="arm final: the part of the budget that retrains the search's best (default 1/3)")
    p.add_argument("--test-seed", type=int, default=1000, help="generator seed of the test split (default 1000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--parallel", type=int, default=1,
                   help="arms run at once, each with an equal share of the cores (OMP_NUM_THREADS); the budget "
                        "is in epochs, so sharing the machine changes wall times only (default 1)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<date>-<device>/"
                                            "search-value)")
    p.add_argument("--work", type=Path, help="storages, logs and evaluations (default: a new temp folder, kept)")
    p.add_argument("--resume", action="store_true", help="keep the seeds and arms already in --out's "
                                                         "search-value.json and run only the others "
                                                         "(of the seeds named here)")
    p.add_argument("--tiny", action="store_true", help="a tiny copy of the study (8 training images, 2 epochs a "
                                                       "trial), seeds 0 and 1, 4 epochs an arm, in this process")
    args = p.parse_args(argv)
    tiny = TINY if args.tiny else {"seeds": [30, 31, 32, 33, 34], "budget_epochs": 250, "baseline_seeds": 3,
                                   "test_images": TEST_IMAGES}
    args.seeds = args.seeds or tiny["seeds"]
    args.budget_epochs = args.budget_epochs or tiny["budget_epochs"]
    args.baseline_seeds = args.baseline_seeds or tiny["baseline_seeds"]
    args.test_images = tiny["test_images"]
    if not 0 < args.final_share < 1:
        p.error(f"--final-share {args.final_share}: expected a fraction, 0 < share < 1")
    if args.parallel < 1:
        p.error(f"--parallel {args.parallel}: expected 1 or more")
    if args.budget_epochs < args.baseline_seeds:
        p.error(f"--budget-epochs {args.budget_epochs} is less than --baseline-seeds {args.baseline_seeds}; "
                "expected at least one epoch per baseline seed")
    return args


def dump_toml(doc: dict[str, Any], tables_of_tables: tuple[str, ...] = ("space", "baseline")) -> str:
    """A study dict back as TOML: `space.*` and `baseline.*` as [a.b] tables, other tables flat."""
    lines: list[str] = []
    for name, table in doc.items():
        subtables = table.items() if name in tables_of_tables else [(None, table)]
        for sub, body in subtables:
            lines += ["", f"[{name}.{toml_key(sub)}]" if sub else f"[{name}]"]
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines).lstrip() + "\n"


def tiny_study(study: Path, folder: Path) -> Path:
    """The study with 8 training and 4 val images of the embedded data, trials of at most 2 epochs and a
    pruner that may cut after the first: the same arms and code paths in seconds."""
    doc = tomllib.loads(study.read_text())
    doc["study"]["name"] = f"{doc['study']['name']}-tiny"
    doc["data"].update(synth_train=8, synth_val=4)
    doc["budget"].update(max_epochs=2)
    doc["budget"].pop("timeout_s", None)
    doc["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    path = folder / "tiny-study.toml"
    path.write_text(dump_toml(doc))
    return path


def final_study(study: Path, folder: Path, share: float) -> Path:
    """The study with a final training: [confirm] top 1, seeds 1 and `share` of the epoch budget."""
    doc = tomllib.loads(study.read_text())
    doc["confirm"] = {"top": 1, "seeds": 1, "share": share}
    path = folder / "final-study.toml"
    path.write_text(dump_toml(doc))
    return path


def write_test_split(folder: Path, seed: int, images: int) -> Path:
    """`images` scenes of the embedded generator (its default sizes and knobs) with their own seed, in
    ROOT/images + ROOT/labels."""
    generate_dataset(folder, seed=seed, n_train=0, n_val=images)
    return folder / "val"


def arm_commands(
    arm: str, study: Path, seed: int, args: argparse.Namespace, folder: Path
) -> list[tuple[str, list[str]]]:
    """(study name, search.run arguments) for each study the arm runs."""
    common = ["--device", args.device, "--timeout", str(NO_CLOCK_S),
              "--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlruns/mlflow.db"]
    if arm == "final":  # no --confirm 0: search.run retrains its best with the study's share of the epochs
        name = f"value-final-s{seed}"
        return [(name, ["--study", str(final_study(study, folder, args.final_share)), *common, "--study-name", name,
                        "--seed", str(seed), "--total-epochs", str(args.budget_epochs), "--total-trials", "100000"])]
    common = ["--study", str(study), "--confirm", "0", *common]
    if arm != "baseline":
        name = f"value-{arm}-s{seed}"
        return [(name, [*common, "--study-name", name, "--seed", str(seed), "--total-epochs",
                        str(args.budget_epochs), "--total-trials", "100000", *ARM_FLAGS[arm]])]
    epochs = args.budget_epochs // args.baseline_seeds
    # --trials 1 with the [baseline] enqueued as trial 0: the fixed configuration, trained with seed S*100+j.
    return [(f"value-baseline-s{seed}-{j}",
             [*common, "--study-name", f"value-baseline-s{seed}-{j}", "--seed", str(seed * 100 + j), "--trials", "1",
              "--epochs", str(epochs), "--pruner", "none"]) for j in range(args.baseline_seeds)]


def _thread_env(parallel: int) -> dict[str, str] | None:
    """One share of the cores per arm running at once (as search.workers gives its workers)."""
    if parallel == 1:
        return None
    return {"OMP_NUM_THREADS": str(core_share(parallel))}


def run_arm(arm: str, study: Path, seed: int, test: Path, args: argparse.Namespace, work: Path,
            out: Path) -> dict[str, Any]:
    folder = work / f"s{seed}" / arm
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    studies = []
    for name, run_args in arm_commands(arm, study, seed, args, folder):
        step = run_module("search.run", run_args, folder / f"{name}.log", limit_s=24 * 3600, in_process=args.tiny,
                          extra_env=_thread_env(args.parallel))
        studies.append(arm_result(Arm(arm, folder, name), step))
    done = [s for s in studies if s.get("best_val_miou") is not None]
    result: dict[str, Any] = {
        "commands": [s["command"] for s in studies], "rc": [s["rc"] for s in studies],
        "trials": sum(len(s.get("trials", [])) for s in studies),
        "complete": sum(s.get("counts", {}).get("complete", 0) for s in studies),
        "pruned": sum(s.get("counts", {}).get("pruned", 0) for s in studies),
        "failed": sum(s.get("counts", {}).get("failed", 0) for s in studies),
        "epochs": sum(s.get("epochs_trained", 0) for s in studies),
        "wall_s": round(sum(s["wall_s"] for s in studies), 1),
        "val_miou": None, "test_miou": None, "champion": None}
    if not done:
        result["error"] = "no complete trial"
        return result
    best = max(done, key=lambda s: s["best_val_miou"])
    result.update(val_miou=best["best_val_miou"], champion=f"trial {best['best_trial']} of {best['study']}")
    if arm == "final":  # the champion is the final training's model (search.evaluate scores it by its URI)
        final = best.get("final")
        if not final or not final.get("champion"):
            result.update(error="no final training finished", val_miou=None, champion=None)
            return result
        result.update(val_miou=final["final_val_miou"], epochs=result["epochs"] + final["epochs"] * final["runs"],
                      final_share=args.final_share,
                      champion=f"trial {final['trial']} of {best['study']} retrained {final['epochs']} epochs")
    # Named per seed and arm: search.evaluate's evaluation.json lands in --out as evaluation-s<S>-<arm>.json.
    step = evaluate(Arm(f"s{seed}-{arm}", folder, best["study"]), test, args, out)
    result["evaluate"] = step["command"]
    if "evaluation" in step:
        result["test_miou"] = round(step["evaluation"]["miou"], 4)
    return result


def summary(rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per arm and the issue's three goals, on the seeds where both arms have a test score."""
    def scores(arm: str, key: str = "test_miou") -> list[float]:
        return [r[arm][key] for r in rows.values() if r.get(arm, {}).get(key) is not None]

    medians = {arm: {key: statistics.median(scores(arm, key)) if scores(arm, key) else None
                     for key in ("test_miou", "val_miou", "trials", "epochs")} for arm in ARMS}

    def paired(other: str, arm: str = "search") -> dict[str, Any]:
        deltas = [r[arm]["test_miou"] - r[other]["test_miou"] for r in rows.values()
                  if r.get(arm, {}).get("test_miou") is not None and r.get(other, {}).get("test_miou") is not None]
        if not deltas:
            return {"seeds": 0}
        return {"seeds": len(deltas), "wins": sum(d >= TIE for d in deltas), "ties": sum(abs(d) < TIE for d in deltas),
                "losses": sum(d <= -TIE for d in deltas), "median_delta": round(statistics.median(deltas), 4),
                "deltas": [round(d, 4) for d in deltas]}

    vs = {other: paired(other) for other in ("final", "random", "no-pruning", "baseline")}
    final_vs = {other: paired(other, "final") for other in ("random", "no-pruning", "baseline")}
    goals = {
        # Stated for at least 5 seeds: on fewer (an interrupted run) it is not measured, whatever the wins.
        "search beats random on >= 4 of 5 seeds, median >= +0.02":
            None if vs["random"]["seeds"] < GOAL_SEEDS else
            vs["random"]["wins"] * 5 >= 4 * vs["random"]["seeds"]
            and vs["random"]["median_delta"] >= GOAL_MEDIAN_GAIN,
        "search >= no-pruning (median test mIoU)": _at_least(medians, "no-pruning"),
        "search >= baseline (median test mIoU)": _at_least(medians, "baseline"),
        "search with its final training >= baseline (median test mIoU)": _at_least(medians, "baseline", "final"),
    }
    return {"medians": medians, "search_vs": vs, "final_vs": final_vs, "goals": goals}


def _at_least(medians: dict[str, dict[str, Any]], other: str, arm: str = "search") -> bool | None:
    a, b = medians[arm]["test_miou"], medians[other]["test_miou"]
    return None if a is None or b is None else a >= b


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Does searching pay? `{results['study']}` at {results['budget_epochs']} epochs per arm", "",
             f"`{results['command']}`", "",
             *(f"Resumed from `{r['command']}` (started {r['started']}); each row's commands in the JSON say "
               "which run measured it." for r in results.get("earlier_runs", [])),
             *([""] if results.get("earlier_runs") else []),
             f"Machine: {results['machine'].get('cpu', '?')}; test split: {results['test_images']} generated "
             f"images, generator seed {results['test_seed']} (the studies train on seed 0).", "",
             "| seed | arm | test mIoU | val mIoU | trials (complete / pruned / failed) | epochs | champion |",
             "|---:|---|---:|---:|---|---:|---|"]
    for seed, row in results["rows"].items():
        for arm, r in row.items():
            counts = f"{r['trials']} ({r['complete']} / {r['pruned']} / {r['failed']})"
            lines.append(f"| {seed} | {arm} | {_fmt(r['test_miou'])} | {_fmt(r['val_miou'])} | {counts} "
                         f"| {r['epochs']} | {r['champion'] or '–'} |")
    s = results.get("summary")
    if s:
        lines += ["", "| arm | median test mIoU | median val mIoU | median trials | median epochs |",
                  "|---|---:|---:|---:|---:|"]
        for arm, m in s["medians"].items():
            lines.append(f"| {arm} | {_fmt(m['test_miou'])} | {_fmt(m['val_miou'])} | {_count(m['trials'])} | "
                         f"{_count(m['epochs'])} |")
        lines += ["", "| arm vs | seeds | W / T / L | median Δ test mIoU | Δ per seed |", "|---|---:|---|---:|---|"]
        for arm, key in (("search", "search_vs"), ("final", "final_vs")):
            for other, v in s.get(key, {}).items():
                if v["seeds"]:
                    lines.append(f"| {arm} vs {other} | {v['seeds']} | {v['wins']} / {v['ties']} / {v['losses']} | "
                                 f"{v['median_delta']:+.4f} | {', '.join(f'{d:+.4f}' for d in v['deltas'])} |")
        lines += ["", *(f"- {goal}: **{'met' if ok else 'not met' if ok is not None else 'not measured'}**"
                        for goal, ok in s["goals"].items())]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: Path) -> None:
    results["summary"] = summary(results["rows"])
    (out / "search-value.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "search-value.md").write_text(markdown(results))


def study_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def earlier_results(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The rows of an interrupted run in `out`, refused unless they were measured with the same settings
    (the study's content, the epoch budget, the baseline's seeds and the test split)."""
    path = out / "search-value.json"
    if not path.exists():
        raise SystemExit(f"search_value: --resume: {path} does not exist; run without --resume to start")
    old = json.loads(path.read_text())
    old_study = Path(old["study"])
    old_sha = old.get("study_sha256") or (study_sha256(old_study) if old_study.exists() else None)
    if old_sha is None:
        raise SystemExit(f"search_value: --resume: {path} names the study {old_study}, which is gone and whose "
                         "hash it does not record; expected the same study file to compare")
    before = {**{k: old.get(k) for k in settings if k != "study_sha256"}, "study_sha256": old_sha}
    differ = [f"{k} {before[k]!r} there, {v!r} now" for k, v in settings.items() if before[k] != v]
    if differ:
        raise SystemExit(f"search_value: --resume: {path} was measured with other settings ({'; '.join(differ)}); "
                         "expected the same, or a new --out")
    return old


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.in_process = args.tiny
    work = args.work or Path(tempfile.mkdtemp(prefix="search-value-"))
    work.mkdir(parents=True, exist_ok=True)
    device = "gpu" if args.device.startswith("cuda") else "cpu"
    out = args.out or (work / "out" if args.tiny else
                       REPO / "benchmarks" / "results" / f"{dt.date.today()}-{device}" / "search-value")
    out.mkdir(parents=True, exist_ok=True)
    study = resolve_study_path(args.study)
    if "baseline" in args.arms and not tomllib.loads(study.read_text()).get("baseline"):
        print(f"search_value: {study} has no [baseline.params]; arm (d) trains the study's [baseline] "
              "(run the other arms with --arms search random no-pruning)", file=sys.stderr)
        return 2
    if args.tiny:
        study = tiny_study(study, work)
    settings = {"study_sha256": study_sha256(study), "budget_epochs": args.budget_epochs,
                "baseline_seeds": args.baseline_seeds, "test_seed": args.test_seed, "test_images": args.test_images}
    old = earlier_results(out, settings) if args.resume else None
    test = write_test_split(work / "test-data", args.test_seed, args.test_images)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks.search_value", *(sys.argv[1:] if argv is None else argv)]),
        "started": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(args.device),
        "study": str(study), "seeds": args.seeds, **settings, "work": str(work), "rows": {}}
    if old:
        # Kept verbatim: each row's own commands say which run, storages and evaluation measured it.
        results["earlier_runs"] = [*old.get("earlier_runs", []),
                                   {k: old.get(k) for k in ("command", "started", "finished", "work", "machine")}]
    print(f"search_value: {len(args.seeds)} seeds x {len(args.arms)} arms, {args.budget_epochs} epochs each; "
          f"storages and logs in {work}", flush=True)
    named = args.seeds  # the seeds this command runs
    if old:  # an earlier run's seeds stay in the table, even those this command does not name
        results["seeds"] = list(dict.fromkeys([*map(int, old["rows"]), *named]))
    for seed in results["seeds"]:  # the table's order, whatever order the arms finish in
        results["rows"][str(seed)] = dict(old["rows"].get(str(seed), {})) if old else {}
    lock = threading.Lock()

    def one(seed: int, arm: str) -> None:
        r = run_arm(arm, study, seed, test, args, work, out)
        with lock:
            results["rows"][str(seed)][arm] = r
            print(f"  seed {seed} {arm}: test {_fmt(r['test_miou'])} val {_fmt(r['val_miou'])} "
                  f"trials {r['trials']} epochs {r['epochs']}", flush=True)
            write_results(results, out)

    jobs = [(seed, arm) for seed in named for arm in args.arms if arm not in results["rows"][str(seed)]]
    if old:
        print(f"search_value: --resume: {sum(map(len, results['rows'].values()))} arms kept from {out}, "
              f"{len(jobs)} to run", flush=True)
    if args.parallel == 1 or args.tiny:  # in the main thread: search.run in process installs signal handlers
        for seed, arm in jobs:
            one(seed, arm)
    else:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for future in [pool.submit(one, seed, arm) for seed, arm in jobs]:
                future.result()
    for row in results["rows"].values():  # arms in ARMS order
        ordered = {arm: row[arm] for arm in ARMS if arm in row}
        row.clear()
        row.update(ordered)
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    write_results(results, out)
    print((out / "search-value.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
