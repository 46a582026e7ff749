"""The confirmation record a study keeps in its `confirm` user attr, and the statistics in it.

`search.confirm` retrains the study's top trials with fresh seeds; after every retrain it rewrites
this record, so the Optuna side can be read without MLflow (the summary, the report and the UI
read it; optuna-dashboard shows it among the study's user attrs). Plain data:

    {"top": 3, "seeds": [1000001, 1000002, 1000003], "rank_by": "...", "complete": true,
     "configs": [{"trial": 7, "search_value": 0.8345, "final_mean": 0.812, "final_sd": 0.010,
                  "best_mean": 0.826, "best_sd": 0.006, "finished": 3, "failed": 0,
                  "runs": [{"seed_index": 1, "seed": 1000001, "run_id": "...", "status": "FINISHED",
                            "final": 0.81, "best": 0.83}, ...]}, ...],      # ranked, best first
     "champion": {"trial": 7, "run_id": "...", "version": "4", "model": "models:/NAME@champion"}}

Configurations with every seed finished come first, ranked by the mean of their *final* val mIoU
over the seeds (the value after the last epoch, which no epoch was picked for), then by the mean of
their best; the seeds are the same for every configuration, so the comparison is paired. A
configuration with fewer finished retrains than seeds (a non-finite loss, an OOM that repeated)
ranks below all of those, whatever its mean: [nan, nan, 0.90] is one lucky draw, not a better
configuration than [0.88, 0.87, 0.89]. It reads "0.9000 over 1 of 3 seeds"; a single value has no
sd (`final_sd` is None) and reads "over 1 seed", never "± 0".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import optuna

from search.tracking.confirm_run import Retrain

CONFIRM_ATTR = "confirm"
CONFIRM_SEED_BASE = 1_000_000  # retrain i (1-based): seed BASE + i, far from the search's seed + trial number
RANK_BY = ("configurations with every seed finished first, then mean final val mIoU over the seeds, "
           "then mean best val mIoU")


def confirm_seeds(count: int) -> list[int]:
    """The fresh training seeds, the same for every configuration (a paired comparison)."""
    return [CONFIRM_SEED_BASE + i for i in range(1, count + 1)]


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for one value, which has none; both None for none)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(trial: optuna.trial.FrozenTrial, retrains: Sequence[Retrain]) -> dict[str, Any]:
    """One configuration's entry: its search value next to its confirmed mean ± sd."""
    ok = [r for r in retrains if r.status == "FINISHED" and r.final is not None and r.best is not None]
    final_mean, final_sd = mean_sd([r.final for r in ok])
    best_mean, best_sd = mean_sd([r.best for r in ok])
    return {"trial": trial.number, "search_value": trial.value, "final_mean": final_mean, "final_sd": final_sd,
            "best_mean": best_mean, "best_sd": best_sd, "finished": len(ok),
            "failed": sum(r.status == "FAILED" for r in retrains),
            "runs": [r.plain() for r in sorted(retrains, key=lambda r: r.seed_index)]}


def ranked(configs: list[dict[str, Any]], maximize: bool, seeds: int) -> list[dict[str, Any]]:
    """Configurations with all `seeds` retrains finished first, best confirmed mean first; then the partial
    ones (more finished seeds first, then by mean); configurations with no finished retrain last."""
    sign = -1.0 if maximize else 1.0

    def key(c: dict[str, Any]) -> tuple[int, int, float, float, int]:
        if c["final_mean"] is None:
            return 2, 0, 0.0, 0.0, c["trial"]
        partial = 0 if c["finished"] >= seeds else 1
        return partial, -c["finished"], sign * c["final_mean"], sign * c["best_mean"], c["trial"]

    return sorted(configs, key=key)


def best_retrain(config: dict[str, Any], maximize: bool) -> dict[str, Any] | None:
    """The configuration's retrain with the best val mIoU: its model is the one crowned."""
    ok = [r for r in config["runs"] if r["status"] == "FINISHED" and r["best"] is not None]
    if not ok:
        return None
    return (max if maximize else min)(ok, key=lambda r: r["best"])


def read_record(study: optuna.Study) -> dict[str, Any] | None:
    """The study's confirmation record, or None when it was never confirmed."""
    record = study.user_attrs.get(CONFIRM_ATTR)
    return record if isinstance(record, dict) and record.get("configs") else None


def plus_minus(mean: float | None, sd: float | None, count: int | None = None) -> str:
    """`0.8800 ± 0.0100`; one value (`count` 1, or no sd) has no ± at all; "-" for none."""
    if mean is None:
        return "-"
    return f"{mean:.4f}" if sd is None or count == 1 else f"{mean:.4f} ± {sd:.4f}"


def seeds_text(finished: int, seeds: int) -> str:
    """`3 seeds`, `1 seed`, or `2 of 3 seeds` when fewer retrains finished than there are seeds."""
    if finished < seeds:
        return f"{finished} of {seeds} seeds"
    return "1 seed" if finished == 1 else f"{finished} seeds"


def confirmed_figure(config: dict[str, Any], seeds: int) -> str:
    """A configuration's confirmed final val mIoU in words: `0.8800 ± 0.0100 over 3 seeds`,
    `0.9000 over 1 of 3 seeds`, `0.9000 over 1 seed`, or `no finished retrain of 3 seeds`."""
    if config["final_mean"] is None:
        return f"no finished retrain of {seeds} seed{'' if seeds == 1 else 's'}"
    return (f"{plus_minus(config['final_mean'], config['final_sd'], config['finished'])} over "
            f"{seeds_text(config['finished'], seeds)}")


def confirmed_text(record: dict[str, Any] | None) -> str | None:
    """One line for the report's header: the champion's confirmed figure, or None when not confirmed."""
    champion = (record or {}).get("champion")
    if not champion:
        return None
    config = next(c for c in record["configs"] if c["trial"] == champion["trial"])
    return (f"trial {config['trial']}: final val mIoU {confirmed_figure(config, len(record['seeds']))} "
            f"(search: {config['search_value']:.4f}); {champion['model']} = version {champion['version']}")
