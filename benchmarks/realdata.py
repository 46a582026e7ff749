"""The planned search against the plan's own baseline on a real dataset, scored on its test folder.

Run from the repository root (figures and commands are committed, never the images):

    python -m benchmarks.realdata --data /work/data/camvid --test /work/data/camvid_test --minutes 30 \\
        --out benchmarks/results/<date>-cpu/realdata-camvid
    python -m benchmarks.realdata --tiny          # generated data, the same steps in this process

Two arms (three with `--control`), each in a fresh folder with its own Optuna and MLflow SQLite storages
(`--work`, default a new temp folder, kept for inspection):

1. search: `python -m search.run --data DIR --timeout M*60` (planned for M minutes, of which the plan's
   [confirm] share trains the search's best configuration once more, for as many epochs as fit);
2. baseline: the plan's `[baseline]` configuration alone for the same M minutes, as a one-trial study
   of the same planned TOML (`--trials 1 --pruner none`), trained for as many epochs as fit in M
   minutes: M*60 over the wall seconds per epoch of the same configuration in the search (its trial 0,
   enqueued from [baseline]: the trial's wall time, logging and artifacts included, over its epochs),
   fixed before it starts so its learning-rate schedule spans the whole run; the best epoch on val is kept;
3. control (`--control`): the same `[baseline]` configuration trained for as many epochs as the search's
   final training had. It splits the search-minus-baseline gap in two: search - control is what the
   search's choice of configuration is worth at the final model's length, control - baseline what the
   final model's fewer epochs cost (each with its paired bootstrap interval).

Both champions are then scored on `--test` with `python -m search.evaluate` (the search's: its crowned
final model, `--model models:/NAME@champion`, or its best trial when the search kept no share for a
final training; the baseline's: `--study NAME`), and the
trials are read back through Optuna's and MLflow's clients. Written to `--out`: realdata.json,
realdata.md (test mIoU and per-class IoU of both arms, trials complete/pruned/failed, predicted vs
measured seconds per epoch, and the search-minus-baseline test mIoU with its paired bootstrap interval
over the test images, `benchmarks.paired_bootstrap`), plan.toml, each arm's evaluation.json and the tail
of each command's log.
The JSON is rewritten after every step, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import tomllib

from benchmarks.machine import machine_info
from benchmarks.paired_bootstrap import paired_difference
from benchmarks.realdata_readback import baseline_epoch_seconds, read_final, read_study
from benchmarks.realdata_report import markdown_report, scored_evaluation
from benchmarks.realdata_tiny import write_tiny
from search.plan.stored import plan_file

REPO = Path(__file__).resolve().parent.parent
LOG_TAIL = 300  # lines of each command's output kept in --out
TINY_MINUTES = 1.0  # the plan and set-up take 5-15 s of the search's half; 0.5 left no trial on a slow host
# --tiny's search keeps half of its minute for the final training: the plan's short-budget share (0.8) would leave
# 12 s, most of which the plan and set-up take.
TINY_FINAL_SHARE = 0.5


@dataclass(frozen=True)
class Arm:
    """One arm's study and its own storages, under `folder`."""

    name: str
    folder: Path
    study_name: str

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.folder}/optuna.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.folder}/mlruns/mlflow.db"

    def store_args(self) -> list[str]:
        return ["--storage", self.storage, "--tracking-uri", self.tracking_uri]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realdata", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="the dataset folder, in its own layout (with dataset.toml if needed)")
    p.add_argument("--test", type=Path, help="the labelled test folder both champions are scored on")
    p.add_argument("--minutes", type=float, help="minutes for each arm (default 30; --tiny: 1)")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<date>-<device>/"
                                            "realdata-<data folder name>; --tiny: in the temp folder)")
    p.add_argument("--work", type=Path, help="folder for the storages, plans and evaluations (default: a new "
                                             "temp folder, kept)")
    p.add_argument("--name", help="the dataset's name in study names and the default --out (default: --data's "
                                  "folder name)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of the search; trial seeds follow it")
    p.add_argument("--control", action="store_true", help="also train the [baseline] configuration for the search's "
                                                          "final epochs and score it: configuration vs epochs")
    p.add_argument("--in-process", action="store_true", help="call each command's main() in this process "
                                                             "instead of a subprocess (saves start-up; --tiny)")
    p.add_argument("--final-share", type=float, help="the search's share of its minutes kept for the final training "
                                                     "(search.run --confirm-share; default: the plan's; --tiny: "
                                                     f"{TINY_FINAL_SHARE:g})")
    p.add_argument("--tiny", action="store_true", help="generated 32x48 px data in a temp folder, 1-minute arms, in "
                                                       "process")
    args = p.parse_args(argv)
    if args.tiny and args.final_share is None:
        args.final_share = TINY_FINAL_SHARE
    if not args.tiny and (args.data is None or args.test is None):
        p.error("--data and --test are required (or --tiny)")
    for flag, path in (("--data", args.data), ("--test", args.test)):
        if path is not None and not path.is_dir():
            p.error(f"{flag} {path}: no such folder")
    return args


def run_module(module: str, args: list[str], log: Path, limit_s: float, in_process: bool = False,
               extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`python -m module args` from the repository root, output to `log`; its exit code and wall time.
    `in_process`: the module's `main(args)` in this process instead (no interpreter start-up; --tiny).
    `extra_env`: set in the subprocess's environment (e.g. its thread count)."""
    start = time.perf_counter()
    with log.open("w") as out:
        if in_process:
            rc = _main_in_process(module, args, out)
        else:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", **(extra_env or {})}
            try:
                rc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, timeout=limit_s).returncode
            except subprocess.TimeoutExpired:
                rc = None
    return {"command": shlex.join(["python", "-m", module, *args]), "rc": rc,
            "wall_s": round(time.perf_counter() - start, 1), "log": str(log)}


def _main_in_process(module: str, args: list[str], out: TextIO) -> int | None:
    """The module's `main(args)` with its output in `out`; the SIGTERM handler it installs is put back."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return importlib.import_module(module).main(args)
    except SystemExit as err:  # argparse
        return err.code if isinstance(err.code, int) else 1
    except Exception:  # as a subprocess would: the traceback in its log, exit code 1, the benchmark goes on
        out.write(traceback.format_exc())
        return 1
    finally:
        signal.signal(signal.SIGTERM, handler)


def keep_log_tail(step: dict[str, Any], out: Path) -> None:
    """The last lines of a command's output beside the results (the full log stays in --work)."""
    lines = Path(step["log"]).read_text(errors="replace").splitlines()
    (out / Path(step["log"]).name).write_text("\n".join(lines[-LOG_TAIL:]) + "\n")


def run_search(arm: Arm, data: Path, seconds: float, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    share = [] if args.final_share is None else ["--confirm-share", f"{args.final_share:g}"]
    step = run_module("search.run", ["--data", str(data), "--timeout", f"{seconds:g}", "--study-name",
                                     arm.study_name, "--device", args.device,
                                     "--seed", str(args.seed), *arm.store_args(), *share],
                      arm.folder / "search.log", limit_s=2 * seconds + 1800, in_process=args.in_process)
    keep_log_tail(step, out)
    plan = plan_file(arm.storage, arm.study_name)  # the readable copy search.run writes beside the storage
    step["plan"] = str(plan) if plan.exists() else None
    if plan.exists():
        shutil.copyfile(plan, out / "plan.toml")
    return step


def plan_summary(plan: Path) -> dict[str, Any]:
    """The plan's decisions the results are read against: scale, crop, widths, depths, epochs, trials."""
    raw = tomllib.loads(plan.read_text())
    space = raw.get("space", {})
    return {"num_classes": raw.get("data", {}).get("num_classes"), "scale": raw.get("data", {}).get("scale", 1.0),
            "crop": space.get("transforms", {}).get("crop_size"), "depth": space.get("model", {}).get("depth"),
            "base_channels": space.get("model", {}).get("base_channels"),
            "max_channels": space.get("model", {}).get("max_channels"),
            "max_epochs": raw.get("budget", {}).get("max_epochs"), "trials": raw.get("budget", {}).get("trials")}


def plan_baseline(plan: Path) -> dict[str, Any] | None:
    """The planned study's [baseline.params], or None when the plan has none."""
    return tomllib.loads(plan.read_text()).get("baseline", {}).get("params")


def run_baseline(arm: Arm, data: Path, plan: Path, epochs: int, args: argparse.Namespace,
                 out: Path) -> dict[str, Any]:
    step = run_module("search.run", ["--study", str(plan), "--study-name", arm.study_name, "--data", str(data),
                                     "--trials", "1", "--epochs", str(epochs), "--total-epochs", str(epochs),
                                     "--pruner", "none", "--confirm", "0", "--device", args.device,
                                     "--seed", str(args.seed), *arm.store_args()],
                      arm.folder / f"{arm.name}.log", limit_s=3 * 3600, in_process=args.in_process)
    keep_log_tail(step, out)
    return step


def run_control(arm: Arm, data: Path, plan: Path | None, arms: dict[str, Any], args: argparse.Namespace,
                out: Path) -> dict[str, Any]:
    """The [baseline] configuration trained for the search's final epochs, or why it was not run (the
    baseline arm's reason when that was not run either)."""
    base, epochs = arms["baseline"], (arms["search"].get("final") or {}).get("epochs")
    if base.get("skipped") or not epochs:
        return {"skipped": True, "reason": base.get("reason") or "the search had no final training"}
    step = run_baseline(arm, data, plan, epochs, args, out)
    return {**arm_result(arm, step), "params": base["params"], "epochs_planned": epochs,
            "epochs_from": "the search's final training"}


def split_gap(arms: dict[str, Any]) -> dict[str, Any]:
    """The search-minus-baseline gap in two, each a paired bootstrap over the test images (None when an arm
    has no score): the search's configuration against the [baseline] one at the final's epochs
    (search - control), and those epochs against the baseline arm's (control - baseline)."""
    pair = {"configuration": ("search", "control"), "epochs": ("control", "baseline")}
    return {part: difference(arms, a, b) for part, (a, b) in pair.items()}


def difference(arms: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """Arm a's test mIoU minus arm b's with its paired bootstrap interval; None unless both were scored."""
    ea, eb = scored_evaluation(arms.get(a, {})), scored_evaluation(arms.get(b, {}))
    return paired_difference(ea, eb) if ea and eb else None


def evaluate(arm: Arm, test: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Score the arm's champion on the test folder with search.evaluate; its evaluation.json, copied to --out."""
    if importlib.util.find_spec("search.evaluate") is None:
        return {"skipped": True, "reason": "search.evaluate is not in this tree"}
    folder = arm.folder / "evaluation"
    final = final_model(arm)
    source = ["--model", final] if final else ["--study", arm.study_name]
    step = run_module("search.evaluate", [*source, "--data", str(test), "--out", str(folder),
                                          "--device", args.device, *arm.store_args()],
                      arm.folder / f"evaluate-{arm.name}.log", limit_s=3600, in_process=args.in_process)
    keep_log_tail(step, out)
    result = folder / "evaluation.json"
    if step["rc"] == 0 and result.exists():
        shutil.copyfile(result, out / f"evaluation-{arm.name}.json")
        step["evaluation"] = json.loads(result.read_text())
    return step


def final_model(arm: Arm) -> str | None:
    """The model URI the search's final training crowned, or None (no final training, or none finished)."""
    try:
        champion = (read_final(arm.storage, arm.study_name) or {}).get("champion")
    except KeyError:
        return None
    return champion["model"] if champion else None


def arm_result(arm: Arm, step: dict[str, Any]) -> dict[str, Any]:
    """The command's outcome and, when its study exists, what its storages hold (and its final training)."""
    try:
        result = {**step, **read_study(arm.storage, arm.tracking_uri, arm.study_name)}
    except KeyError as err:  # optuna: the study was never created
        return {**step, "error": f"no study {arm.study_name!r} in {arm.storage}: {err}"}
    final = read_final(arm.storage, arm.study_name)
    return {**result, "final": final} if final else result


def write_results(results: dict[str, Any], out: Path) -> None:
    (out / "realdata.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "realdata.md").write_text(markdown_report(results))


def resolve(args: argparse.Namespace) -> tuple[Path, Path, float, Path, Path, str]:
    """(data, test, minutes, out, work, name) with --tiny's and the defaults filled in."""
    if args.tiny:
        work = args.work or Path(tempfile.mkdtemp(prefix="realdata-tiny-"))
        data, test = write_tiny(work / "tiny-data")
        return data, test, args.minutes or TINY_MINUTES, args.out or work / "out", work, "tiny"
    name = args.name or args.data.resolve().name
    device = "gpu" if args.device.startswith("cuda") else "cpu"
    out = args.out or REPO / "benchmarks" / "results" / f"{dt.date.today()}-{device}" / f"realdata-{name}"
    work = args.work or Path(tempfile.mkdtemp(prefix=f"realdata-{name}-"))
    return args.data.resolve(), args.test.resolve(), args.minutes or 30.0, out, work, name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.in_process = args.in_process or args.tiny
    data, test, minutes, out, work, name = resolve(args)
    out.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    search = Arm("search", work / "search", f"realdata-{name}")
    base = Arm("baseline", work / "baseline", f"realdata-{name}-baseline")
    control = Arm("control", work / "control", f"realdata-{name}-control")
    arms = (search, base, control) if args.control else (search, base)
    for arm in arms:
        arm.folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks.realdata", *(sys.argv[1:] if argv is None else argv)]),
        "started": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(args.device),
        "dataset": name, "data": str(data), "test": str(test), "minutes": minutes, "work": str(work), "arms": {}}
    print(f"realdata: {name}, {minutes:g} min per arm; storages and logs in {work}", flush=True)

    step = run_search(search, data, seconds, args, out)
    results["arms"]["search"] = arm_result(search, step)
    write_results(results, out)
    plan = Path(step["plan"]) if step.get("plan") else None
    params = plan_baseline(plan) if plan else None
    results["plan"] = plan_summary(plan) if plan else None
    epoch_s, why = baseline_epoch_seconds(results["arms"]["search"]) if "trials" in results["arms"]["search"] \
        else (None, "the search left no study")
    if params is None or epoch_s is None:
        reason = "the search wrote no plan" if plan is None else "the plan has no [baseline]" if params is None \
            else why
        results["arms"]["baseline"] = {"skipped": True, "reason": reason}
    else:
        epochs = max(1, math.floor(seconds / epoch_s))
        step = run_baseline(base, data, plan, epochs, args, out)
        results["arms"]["baseline"] = {**arm_result(base, step), "params": params, "epochs_planned": epochs,
                                       "epoch_seconds_used": epoch_s, "epochs_from": why}
    write_results(results, out)
    if args.control:
        results["arms"]["control"] = run_control(control, data, plan, results["arms"], args, out)
        write_results(results, out)

    for arm in arms:
        if "trials" in results["arms"][arm.name]:
            results["arms"][arm.name]["test"] = evaluate(arm, test, args, out)
            write_results(results, out)
    if gap := difference(results["arms"], "search", "baseline"):
        results["test_difference"] = gap
    if args.control:
        results["gap"] = split_gap(results["arms"])
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    write_results(results, out)
    print((out / "realdata.md").read_text())
    print(f"written: {out / 'realdata.json'} and realdata.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
