"""A finished planned study's epoch times predicted again by this checkout's time model, beside the old predictions.

    python -m benchmarks.epoch_time_replay sqlite:////tmp/rd11/kvasir-m30/search/optuna.db realdata-kvasir

A planned study keeps its plan's fitted time model (the fingerprint's `time_model`, the coefficients
its probes measured), and each trial keeps its config, its measured `epoch_seconds` and the
prediction made then (`epoch_seconds_predicted`). This costs each trial's config again with the same
coefficients and the current `EpochTimeModel.predict` on the decoded data (`--data DIR` when the folder
has moved), and prints the measured/predicted ratios then and now. The probes are not rerun, so
a replay checks a change in how an epoch is counted against trials already measured; only a fresh
run measures the plan as a whole. `--refit` also fits the plan's stored probe measurements (the
fingerprint's `probes`) again with this checkout's `StepCost.time_model`, which checks a change in how
the probes are fitted:

    python -m benchmarks.epoch_time_replay sqlite:////tmp/rd20/kvasir-m30-seed3/search/optuna.db realdata-kvasir --refit
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from search.plan.capacity import Sizing, probe_config
from search.plan.device_probe import DeviceSpec, StepCost
from search.plan.epoch_forecast import MEASURED, PREDICTED, data_sizes, time_model_of
from search.plan.epoch_time import PROBED_UPSAMPLE, EpochTimeModel
from search.plan.stored import FINGERPRINT_ATTR
from search.study.lookup import load_named_study
from seg.config import Config
from seg.loaders import resolve_dataset

WITHIN = 0.3  # the goal: predicted within +-30 % of measured


@dataclass(frozen=True)
class Replayed:
    number: int
    state: str
    measured: float
    recorded: float  # predicted when the trial ran
    now: float  # predicted by this checkout

    @property
    def ratios(self) -> tuple[float, float]:
        return self.measured / self.recorded, self.measured / self.now


def refit_model(study: optuna.Study) -> EpochTimeModel:
    """The plan's stored probes fitted again by this checkout (`StepCost.time_model`), not measured again."""
    fingerprint = study.user_attrs.get(FINGERPRINT_ATTR) or {}
    probes, device = fingerprint.get("probes"), (fingerprint.get("device") or {}).get("kind")
    configs = [t.user_attrs["config"] for t in study.trials if "config" in t.user_attrs]
    if not probes or not device or not configs:
        raise ValueError(f"study {study.study_name!r} keeps no plan probes to fit again (not planned with "
                         "search.run --data, or no trial ran)")
    classes = Config.from_dict(configs[0]).model.num_classes
    cost = StepCost(DeviceSpec(device, True, device))
    for r in probes:
        cfg = probe_config(Sizing(classes, 0, 0, r["loss"]), r["depth"], r["base_channels"], r["max_channels"],
                           r["batch"], device).replace(model={"upsample": r.get("upsample", PROBED_UPSAMPLE)})
        cost.record(cfg, (r["input"][0], r["input"][1]), r["seconds_per_image"], r["eval_seconds_per_mpixel"])
    return cost.time_model()


def repredict(study: optuna.Study, data_root: str | None = None, refit: bool = False) -> list[Replayed]:
    """Each trial that recorded a measured and a predicted epoch time, predicted again (`refit`: by the
    plan's probes fitted again, else by the stored model)."""
    model = refit_model(study) if refit else time_model_of(study)
    if model is None:
        raise ValueError(f"study {study.study_name!r} keeps no plan time model (not planned with search.run --data)")
    out = []
    for trial in study.trials:
        attrs = trial.user_attrs
        if not all(k in attrs for k in ("config", MEASURED, PREDICTED)):
            continue
        cfg = Config.from_dict(attrs["config"])
        if data_root is not None:
            cfg = cfg.replace(data={"root": data_root})
        train, val = data_sizes(resolve_dataset(cfg.data))  # decoded once: seg.data caches the dataset
        out.append(Replayed(trial.number, trial.state.name, attrs[MEASURED], attrs[PREDICTED],
                            model.predict(cfg, train, val)))
    return out


def report(rows: Sequence[Replayed]) -> str:
    """A markdown table of the trials, then the first three complete trials' ratios and counts within +-30 %."""
    lines = ["| trial | state | measured s | predicted then | ratio then | predicted now | ratio now |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.number} | {r.state} | {r.measured:.2f} | {r.recorded:.2f} | {r.ratios[0]:.3f} | {r.now:.2f} | "
              f"{r.ratios[1]:.3f} |" for r in rows]
    first = [r for r in rows if r.state == "COMPLETE"][:3]
    for i, when in enumerate(("then", "now")):
        ratios = [r.ratios[i] for r in rows]
        within = sum(abs(x - 1) <= WITHIN for x in ratios)
        lines.append(f"\n{when}: first complete trials {[r.number for r in first]} "
                     f"{[round(r.ratios[i], 3) for r in first]}; all trials: median "
                     f"{statistics.median(ratios):.3f}, {within} of {len(ratios)} within ±{WITHIN:.0%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.epoch_time_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("storage", help="the study's Optuna storage URL")
    p.add_argument("study", help="the study's name")
    p.add_argument("--data", help="the dataset folder, when it is no longer where the trials read it")
    p.add_argument("--refit", action="store_true", help="fit the plan's stored probes again with this checkout "
                                                        "(else: the stored coefficients)")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = repredict(load_named_study(args.study, args.storage), args.data, args.refit)
    if not rows:
        print(f"study {args.study!r} has no trial with a measured and a predicted epoch time", file=sys.stderr)
        return 1
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
