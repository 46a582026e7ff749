"""The live `rich` display of a running study, the end-of-run summary and the confirmation table."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import optuna
from rich.console import Console
from rich.live import Live
from rich.table import Table

from search.objective import Progress
from search.study.confirm_record import plus_minus, read_record, seeds_text
from search.study.quota import epochs_trained
from search.tracking.client import RUN_ID_ATTR


def state_counts(study: optuna.Study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no complete trial yet
        return None


class LiveDisplay:
    """A table refreshed on every epoch on a terminal; one line per trial otherwise (CI, logs)."""

    def __init__(self, study: optuna.Study, progress: Progress, console: Console | None = None,
                 label: str | None = None) -> None:
        self.study, self.progress = study, progress
        self.console = console or Console()
        self.start = time.monotonic()
        self.label = f"[{label}] " if label else ""
        self.interactive = self.console.is_terminal and label is None  # a worker of several prints lines
        self.live: Live | None = None
        self.counts: Counter = state_counts(study)
        self.best = best_value(study)
        progress.on_change = self.refresh

    def __enter__(self) -> LiveDisplay:
        if self.interactive:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: update the counts (local, no storage query per epoch)."""
        self.counts[trial.state.name] += 1
        if trial.state == optuna.trial.TrialState.COMPLETE:
            self.best = best_value(study)
        if not self.interactive:
            value = f"{trial.value:.4f}" if trial.value is not None else "-"
            reason = trial.user_attrs.get("fail_reason", "")
            print(f"{self.label}trial {trial.number:3d} {trial.state.name:8s} value {value}  epochs "
                  f"{trial.user_attrs.get('epochs_trained', 0)}  {reason}  | {self._counts_text()}", flush=True)
        self.refresh()

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def _counts_text(self) -> str:
        c = self.counts
        return f"complete {c['COMPLETE']}  pruned {c['PRUNED']}  failed {c['FAIL']}"

    def _table(self) -> Table:
        p = self.progress
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        table = Table(title=f"study {self.study.study_name}", show_header=False)
        table.add_row("trial in progress", "-" if p.trial is None else f"{p.trial}  (epoch {p.epoch}/{p.epochs})")
        table.add_row("current val mIoU", fmt(p.current_miou))
        table.add_row("best val mIoU", fmt(self.best))
        table.add_row("trials", self._counts_text())
        table.add_row("elapsed", f"{time.monotonic() - self.start:.0f}s")
        return table


def print_summary(console: Console, study: optuna.Study, storage: str, tracking_uri: str, elapsed: float,
                  confirm_next: bool = True) -> None:
    """Counts, the best trial (and its confirmation), and the next commands, which name the study as the
    storage knows it; `confirm_next`: suggest `search.confirm` (False when this run confirms anyway)."""
    counts = state_counts(study)
    trials = study.get_trials(deepcopy=False)
    console.print(f"\n[bold]Study {study.study_name}[/bold] finished in {elapsed:.0f}s: "
                  f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed; "
                  f"{epochs_trained(trials)} epochs trained in all")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    record = read_record(study)
    if complete:
        best = study.best_trial
        console.print(f"best trial {best.number}: val mIoU {best.value:.4f} (search), "
                      f"MLflow run {best.user_attrs.get(RUN_ID_ATTR)}")
        if record:
            print_confirmation(console, record)
    else:
        console.print("no trial completed yet")
    # soft_wrap: commands must stay on one line so they can be copied.
    if tracking_uri.startswith(("http://", "https://")):
        # search.ui serves database stores; a tracking server already is the MLflow UI.
        console.print(f"\nlook at the results: MLflow at {tracking_uri}, and the study in optuna-dashboard:")
        console.print(f"  optuna-dashboard {storage}", soft_wrap=True)
    else:
        console.print("\nlook at the results (the MLflow UI and optuna-dashboard; Ctrl-C stops both):")
        console.print(f"  python -m search.ui --study {study.study_name} --storage {storage} "
                      f"--tracking-uri {tracking_uri}", soft_wrap=True)
    if complete and confirm_next and not record:
        console.print("next: confirm the top trials with fresh seeds before trusting the best "
                      "(it moves the registry's champion to the best confirmed mean):")
        console.print(f"  python -m search.confirm --study {study.study_name} --top 3 --seeds 3 --storage {storage} "
                      f"--tracking-uri {tracking_uri}", soft_wrap=True)
    if complete:
        console.print("predict with the best trial:")
        console.print(f"  python -m search.predict --study {study.study_name} --storage {storage} "
                      f"--tracking-uri {tracking_uri} IMAGES... --out predictions/", soft_wrap=True)
        console.print("score it on a labelled test folder (logs test_miou to its run and model):")
        console.print(f"  python -m search.evaluate --study {study.study_name} --storage {storage} "
                      f"--tracking-uri {tracking_uri} --data TEST_FOLDER --out evaluation/", soft_wrap=True)
        if record and record.get("champion"):
            console.print("or with the confirmed champion:")
            console.print(f"  python -m search.predict --model {record['champion']['model']} --tracking-uri "
                          f"{tracking_uri} IMAGES... --out predictions/", soft_wrap=True)


def print_confirmation(console: Console, record: dict[str, Any]) -> None:
    """Each confirmed configuration: its search value next to its confirmed mean ± sd, the champion marked."""
    seeds = record["seeds"]
    champion = (record.get("champion") or {}).get("trial")
    epochs = f", {record['epochs']} epochs each" if record.get("epochs") else ""
    table = Table(title=f"val mIoU confirmed with {len(seeds)} fresh seeds{epochs}, ranked by the {record['rank_by']}")
    for column in ("trial", "search", "final, mean ± sd", "best, mean ± sd", "retrains", ""):
        table.add_column(column)
    for c in record["configs"]:
        retrains = seeds_text(c["finished"], len(seeds)) + (f", {c['failed']} failed" if c["failed"] else "")
        n = c["finished"]
        table.add_row(str(c["trial"]), f"{c['search_value']:.4f}", plus_minus(c["final_mean"], c["final_sd"], n),
                      plus_minus(c["best_mean"], c["best_sd"], n), retrains,
                      "champion" if c["trial"] == champion else "")
    console.print(table)
    if kept := record.get("kept_baseline"):
        console.print(f"kept the [baseline] (trial {kept['baseline_trial']}, {kept['baseline_value']:.4f}): trial "
                      f"{kept['trial']} led it by {kept['lead']:.4f} ({kept['value']:.4f}), not more than the "
                      f"margin {kept['margin']:g} ([confirm] margin)", markup=False)
    if champion is not None:
        c = record["champion"]
        console.print(f"{c['model']} -> version {c['version']}: trial {champion}'s retrain with seed {c['seed']} "
                      f"(MLflow run {c['run_id']})")
    elif not record.get("complete"):
        console.print("the confirmation is incomplete: rerun search.confirm to finish it")
