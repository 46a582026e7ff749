"""The MLflow side of a confirmation: one child run of the study's parent run per retrain.

A retrain's run is named `confirm-007-seed-2` (trial 7's configuration, the second fresh seed) and
carries `run_kind=confirm`, `confirm_trial`, `confirm_seed_index` and `confirm_seed` as tags, the
full config as params and `config.json`, the per-epoch metrics of a trial run, and the artifacts
of a complete trial (checkpoint, figures, the pyfunc `model/`). It ends
- FINISHED, with `final_val_miou` and `best_val_miou` as tags (set before the status, so a
  FINISHED run always has them);
- FAILED (`confirm-007-seed-2-failed`, `fail_reason`): a non-finite loss, which the same seed would
  repeat, so it is not retried (`confirm_state=FAILED`); out of memory, which another process may
  have caused, is retried once after the other retrains (`confirm_state=RETRY`, also on a rerun)
  and is final (`FAILED`) only when it repeats; a bug also fails the run but is retried;
- KILLED (`confirm-007-seed-2-killed`): interrupted (Ctrl-C, SIGTERM), or left RUNNING by a process
  that died (ended by the next confirm); retried.
The runs are the record of what is done: a rerun skips the retrains that have a FINISHED run or a
FAILED one marked `confirm_state=FAILED`.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search.tracking.artifacts import log_trial_artifacts
from search.tracking.client import Tracker
from search.tracking.epoch_metrics import epoch_metrics
from search.tracking.pyfunc import input_example, log_pyfunc_model
from seg.config import Config
from seg.data import SegmentationData
from seg.train import EpochResult, FitResult, save_result


@dataclass(frozen=True)
class Retrain:
    """One finished retrain: a configuration (its trial) trained from scratch with one fresh seed."""

    trial: int
    seed_index: int  # 1..S, as in the run name confirm-007-seed-2
    seed: int
    run_id: str
    status: str  # FINISHED; FAILED (nan, an OOM that repeated): final; RETRY: out of memory once
    final: float | None  # val mIoU after the last epoch
    best: float | None  # best val mIoU over the epochs (the checkpoint's)

    def plain(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "trial"}


KIND_TAG, CONFIRM_KIND = "run_kind", "confirm"
FINAL_STATES = ("FINISHED", "FAILED")  # confirm_state of a retrain that is done (not retried)
RETRY = "RETRY"  # confirm_state of an attempt that is retried: out of memory once, interrupted, a bug
OOM_REASON = "oom:"  # how an out-of-memory attempt's fail_reason starts

Key = tuple[int, int]  # (trial number, seed index)


def confirm_run_name(trial: int, seed_index: int, outcome: str = "") -> str:
    """`confirm-007-seed-2`, or with `-failed` / `-killed` for an attempt that did not finish."""
    return f"confirm-{trial:03d}-seed-{seed_index}" + (f"-{outcome}" if outcome else "")


def _float(text: str | None) -> float | None:
    return None if text in (None, "", "None") else float(text)


class ConfirmRuns:
    """The confirm runs of one study: what is done, and each retrain's run from start to end."""

    def __init__(self, tracker: Tracker, experiment_id: str, parent_id: str, study_name: str) -> None:
        self.tracker, self.experiment_id, self.parent_id = tracker, experiment_id, parent_id
        self.study_name = study_name
        self.current: tuple[Key, int] | None = None  # (key, seed) of the retrain in progress
        self.out_of_memory: set[Key] = set()  # retrains whose earlier attempt ran out of memory (by `done`)
        self.epochs: dict[int, tuple[int, dict[str, float]]] = {}  # epoch -> (timestamp, metrics) of the retrain

    def done(self, epochs: dict[int, int]) -> dict[Key, Retrain]:
        """Retrains with a final result. A run a dead process left RUNNING is ended KILLED here first.

        `epochs`: trial number -> the epochs its retrains train now; a run of another length (its
        `train.epochs` param) is a different experiment and is not counted.
        """
        out: dict[Key, Retrain] = {}
        self.out_of_memory = set()
        for run in self.tracker.child_runs(self.experiment_id, self.parent_id, {KIND_TAG: CONFIRM_KIND}):
            tags, status = run.data.tags, run.info.status
            key = (int(tags["confirm_trial"]), int(tags["confirm_seed_index"]))
            if status == "RUNNING":
                self.tracker.terminate(run.info.run_id, "KILLED", name=confirm_run_name(*key, "killed"),
                                       tags={"confirm_state": "KILLED",
                                             "fail_reason": "orphaned: its confirm process ended first"})
                continue
            if key[0] in epochs and run.data.params.get("train.epochs") != str(epochs[key[0]]):
                continue
            if tags.get("confirm_state") == RETRY and tags.get("fail_reason", "").startswith(OOM_REASON):
                self.out_of_memory.add(key)
            if status != tags.get("confirm_state") or status not in FINAL_STATES:
                continue  # interrupted, a bug or out of memory once: retrained
            if key not in out or out[key].status != "FINISHED":
                out[key] = Retrain(key[0], key[1], int(tags["confirm_seed"]), run.info.run_id, status,
                                   _float(tags.get("final_val_miou")), _float(tags.get("best_val_miou")))
        return out

    def start(self, key: Key, seed: int, cfg: Config, search_value: float | None) -> str:
        trial, index = key
        self.current = (key, seed)
        run_id = self.tracker.start_run(
            self.experiment_id, confirm_run_name(trial, index),
            {KIND_TAG: CONFIRM_KIND, "confirm_trial": trial, "confirm_seed_index": index, "confirm_seed": seed,
             "confirm_state": "RUNNING", "study_name": self.study_name, "search_value": search_value},
            parent_id=self.parent_id)
        self.tracker.log_params(run_id, {**cfg.flatten(), "trial_number": trial, "study_name": self.study_name,
                                         "confirm_seed_index": index})
        self.tracker.log_dict(run_id, cfg.to_dict(), "config.json")
        return run_id

    def abort(self, reason: str, status: str) -> None:
        """Interrupted (KILLED) or a bug (FAILED): end the retrain's run wherever it stopped, even inside
        `start`; it is retried. A signal that came just after the run ended finds nothing open."""
        if self.current is not None:
            key, seed = self.current
            for run_id in [r for r in self.tracker.open_runs if r != self.parent_id]:
                self.fail(run_id, key, seed, reason, status=status, final=False)
        self.current = None

    def log_epoch(self, run_id: str, record: EpochResult, class_names: tuple[str, ...]) -> None:
        if record.epoch == 0:
            self.epochs.clear()
        metrics = epoch_metrics(record, class_names)
        self.epochs[record.epoch] = (self.tracker.log_metrics(run_id, metrics, step=record.epoch), metrics)

    def finish(self, run_id: str, key: Key, seed: int, cfg: Config, result: FitResult, data: SegmentationData,
               class_names: tuple[str, ...]) -> Retrain:
        """Artifacts (the checkpoint of the best epoch and its model), then the results, then FINISHED."""
        best_epoch = result.best_epoch
        with tempfile.TemporaryDirectory(prefix="confirm-") as tmp:
            ckpt = save_result(Path(tmp) / "best.pt", cfg, result, class_names)
            log_trial_artifacts(self.tracker, run_id, ckpt, data, result)
            model_id = log_pyfunc_model(self.tracker, self.experiment_id, run_id, ckpt, input_example(data),
                                        cfg.flatten(), {"trial_number": key[0], "study_name": self.study_name,
                                                        "confirm_seed": seed, "best_epoch": best_epoch},
                                        step=best_epoch)
        if best_epoch in self.epochs:  # the best epoch's points, as logged, become the model's metrics
            stamp, metrics = self.epochs[best_epoch]
            self.tracker.log_metrics(run_id, metrics, step=best_epoch, timestamp=stamp, model_id=model_id)
        final, best = result.history[-1].val_miou, result.best_miou
        tags: dict[str, Any] = {"confirm_state": "FINISHED", "final_val_miou": final, "best_val_miou": best,
                                "best_epoch": result.best_epoch, "epochs_trained": len(result.history)}
        self.tracker.terminate(run_id, "FINISHED", name=confirm_run_name(*key), tags=tags)
        self.current = None
        return Retrain(key[0], key[1], seed, run_id, "FINISHED", final, best)

    def fail(self, run_id: str, key: Key, seed: int, reason: str, status: str = "FAILED",
             final: bool = True) -> Retrain:
        """End the run FAILED or KILLED; `final`: a result (not retried), else retried by the next confirm."""
        state = status if final else RETRY
        outcome = "failed" if status == "FAILED" else "killed"
        self.tracker.terminate(run_id, status, name=confirm_run_name(*key, outcome),
                               tags={"confirm_state": state, "fail_reason": reason[:4000]})
        self.current = None
        return Retrain(key[0], key[1], seed, run_id, state, None, None)
