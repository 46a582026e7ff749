"""Plan a study for a dataset and a device, rule by rule: survey -> classes -> geometry -> memory ->
loss -> capacity (with the width floor and `data.scale`) -> time model -> budget -> baseline. Each
rule returns decisions (a study-file key, its value and why); `search.plan.plan_toml` writes them as
a study file, and the rest of the space is the usual one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from search.plan.baseline import plan_baseline
from search.plan.budget import FINAL_SHARE, HYPERBAND_FROM, plan_budget
from search.plan.busy_cpu import busy_warning, usable_threads
from search.plan.capacity import (
    Capacity,
    Sizing,
    plan_capacity,
    probe_config,
    samples_of,
    scale_decision,
    val_pixels_of,
)
from search.plan.classes import plan_classes
from search.plan.decisions import Decision, Plan, PlanError
from search.plan.device_probe import StepCost, device_spec
from search.plan.epoch_time import OTHER_UPSAMPLES, PROBED_UPSAMPLE, EpochTimeModel
from search.plan.geometry import plan_geometry
from search.plan.loss import plan_loss
from search.plan.ram import GB, plan_ram
from search.plan.survey import Survey, survey_dataset
from seg.loaders import trained_samples
from seg.runtime import uses_channels_last

UPSAMPLES = (PROBED_UPSAMPLE, *OTHER_UPSAMPLES)  # the space's upsampling types

DEFAULT_HOURS = 1.0


@dataclass(frozen=True)
class PlanRequest:
    """The planner's inputs: `search.plan`'s flags, or `search.run --data DIR` without `--study`."""

    data: str | None = None  # the dataset folder; None: the embedded dataset
    device: str = "auto"
    memory_gb: float | None = None
    hours: float | None = None  # the time budget (default DEFAULT_HOURS unless total_epochs)
    total_epochs: int | None = None
    ram_gb: float | None = None  # memory for the decoded dataset (default: what is available)
    name: str | None = None
    workers: int = 1  # search.run --workers N: each process decodes its own copy of the dataset

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise PlanError(f"--workers {self.workers}: expected a positive number of worker processes")
        if self.hours is not None and self.total_epochs is not None:
            raise PlanError("give --hours or --total-epochs, not both")
        if self.hours is not None and not self.hours > 0:
            raise PlanError(f"--hours {self.hours}: expected a positive number of hours")
        if self.total_epochs is not None and self.total_epochs < 1:
            raise PlanError(f"--total-epochs {self.total_epochs}: expected a positive number of epochs")

    @property
    def seconds(self) -> float | None:
        """The time budget in seconds; None when the budget is in epochs."""
        if self.total_epochs is not None:
            return None
        return 3600 * (self.hours if self.hours is not None else DEFAULT_HOURS)

    @property
    def study_name(self) -> str:
        if self.name:
            return self.name
        if self.data is None:
            return "plan-embedded"
        return "plan-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(self.data).resolve().name).strip("-") or "data")


def make_plan(req: PlanRequest, survey: Survey | None = None) -> Plan:
    """The plan for `req`; `survey` skips reading the dataset (it must describe `req.data`)."""
    survey = survey or survey_dataset(req.data)
    classes = plan_classes(survey)
    geo = plan_geometry(survey)
    ram = plan_ram(survey, None if req.ram_gb is None else int(req.ram_gb * GB),
                   "available" if req.ram_gb is None else f"given (--ram-gb {req.ram_gb:g})", workers=req.workers)
    loss = plan_loss(survey, classes.num_classes, classes.names)
    spec = device_spec(req.device, req.memory_gb)
    cost = StepCost(spec, req.seconds)
    # The probes time the costliest loss the space may sample (Dice + CE when the loss is searched).
    sizing = Sizing(classes.num_classes, samples_of(geo), len(survey.val_sizes),
                    "ce" if loss.value == "ce" else "dice_ce")
    # The models are sized for the search's part of a budget split at budget.FINAL_SHARE, also when a short
    # budget keeps more for the final training (budget.final_share): the final model is the one scored.
    search_s = None if req.seconds is None else req.seconds * (1 - FINAL_SHARE)
    cap = plan_capacity(survey, spec, cost, sizing, search_s, geo)
    model, epoch_s, epoch_why = _typical_epoch(cap, cost, sizing, spec.kind)
    budget = plan_budget(epoch_s, epoch_why, seconds=req.seconds, total_epochs=req.total_epochs)
    scale = scale_decision(cap, spec, search_s)
    space = [*cap.geometry.decisions(), *cap.decisions, loss, *_usual_space(budget.max_epochs)]
    decisions = [
        *_study_and_data(req, survey), *([scale] if scale else []),
        *classes.decisions, ram,
        *budget.decisions,
        *space,
        *plan_baseline(space),
        Decision("plan", "time_model", model.to_dict(), "seconds an epoch on this device, fitted to the plan's probes: "
                 "search.run --study THIS_FILE predicts each trial's epoch time with it (delete to stop)"),
    ]
    share = cost.cpu_share()
    fingerprint = {**survey.fingerprint(), "device": {"kind": spec.kind, "label": spec.label, "here": spec.present,
                                                      "memory_bytes": spec.memory, "cost": cost.how,
                                                      "probe_cpu_share": None if share is None else round(share, 3),
                                                      "probes_retimed_busy": cost.retimed},
                   "probes": cost.records(), "typical_epoch_seconds": round(epoch_s, 3),
                   "time_model": model.to_dict(), "data_scale": cap.scale,
                   "padded_train_images": cap.geometry.padded,
                   "capacity": {"bound": cap.bound, "unit": "bytes" if spec.kind == "cuda" else "epoch seconds",
                                "width_floor": cap.floor, "traded": list(cap.traded),
                                "largest_config_cost_by_base": {str(b): c for b, c in cap.costs}}}
    busy = busy_warning(share, usable_threads())
    warnings = [*classes.warnings, *budget.warnings, *([busy] if busy else [])]
    return Plan(decisions, fingerprint, warnings=warnings)


def _typical_epoch(cap: Capacity, cost: StepCost, sizing: Sizing, device: str) -> tuple[EpochTimeModel, float, str]:
    """The fitted time model, and the mean epoch seconds of the space's configurations under it (every
    depth, base width, cap and upsampling type; the smaller batch, which on a CPU costs a little more per image)."""
    low, high = cap.geometry.depth_range
    batch = cap.batch_choices[0]
    geo = cap.geometry
    grid = [probe_config(sizing, d, b, max(c, b), batch, device)
            for d in range(low, high + 1) for b in cap.base_choices for c in cap.max_choices]
    # The smallest and the largest configuration of each memory layout in the space are probed, so
    # the model has both ends of each measured (grid order: depth, then width, then cap); each again with
    # every other upsampling type, for its cost over the transposed convolution's.
    for layout in (False, True):
        same = [cfg for cfg in grid if uses_channels_last(cfg, device) == layout]
        for cfg in same[:1] + same[-1:]:
            cost.seconds_per_image(cfg, geo.input_hw)
            for up in OTHER_UPSAMPLES:
                cost.seconds_per_image(cfg.replace(model={"upsample": up}), geo.input_hw)
    model = cost.time_model()
    val_pixels = val_pixels_of(geo, grid[0])
    samples = trained_samples(samples_of(geo), batch)
    seconds = [model.epoch_seconds(cfg.replace(model={"upsample": up}), geo.input_hw, samples, val_pixels)
               for cfg in grid for up in UPSAMPLES]
    mean = sum(seconds) / len(seconds)
    small, large = min(seconds), max(seconds)
    return model, mean, (f"{mean:.1f} s an epoch on average over the space (smallest config {small:.1f}, largest "
                         f"{large:.1f}; training with the data path and loss, and validation of "
                         f"{val_pixels / 1e6:.2g} Mpx), {cost.how}")


def _study_and_data(req: PlanRequest, survey: Survey) -> list[Decision]:
    out = [Decision("study", "name", req.study_name, "the study's default name in the storage"),
           Decision("study", "metric", "val_miou"), Decision("study", "direction", "maximize")]
    if survey.root is None:
        return [*out, Decision("data", None, why="no root: the embedded dataset")]
    out += [Decision("study", "data_required", True, "planned for this folder: refuse the embedded dataset"),
            Decision("data", "root", str(survey.root), f"{len(survey.train_sizes)} training and "
                                                       f"{len(survey.val_sizes)} validation images")]
    if survey.val_fraction is not None:
        out.append(Decision("data", "val_fraction", survey.val_fraction, "a flat images/ + labels/ folder: "
                                                                         "this share goes to validation"))
    return out


def _usual_space(max_epochs: int) -> list[Decision]:
    """The dimensions no measurement decides: the default study's, with a wider learning rate for long
    trials. Short trials leave out what they cannot rank: a constant rate (the final training keeps the
    trial's schedule over tens of times its epochs, where a rate that never anneals ends worse) and
    RMSprop (most of its short trials never left the one-class start); docs/performance.md, "Real photos"."""
    long = max_epochs >= HYPERBAND_FROM
    lr_low = 1e-4 if long else 1e-3
    same = "as the default and seed studies"
    optimizers, schedules = ["adam", "adamw", "sgd", "rmsprop"], ["none", "cosine", "onecycle"]
    optimizer_why, momentum_why, schedule_why = same, "sampled for sgd and rmsprop only", same
    if not long:
        short = f"trials of {max_epochs} < {HYPERBAND_FROM} epochs"
        optimizers, schedules = ["adam", "adamw", "sgd"], ["cosine", "onecycle"]
        optimizer_why = f"{short}: no RMSprop, whose short trials mostly stay on one class"
        momentum_why = "sampled for sgd only"
        schedule_why = f"{short}: a schedule that anneals, as the final training then does too"
    return [
        Decision("space.model", "upsample", {"choices": list(UPSAMPLES)}, same),
        Decision("space.model", "norm", "batch", "BatchNorm, as the report"),
        Decision("space.train", "optimizer", {"choices": optimizers}, optimizer_why),
        Decision("space.train", "lr", {"low": lr_low, "high": 1e-2, "log": True},
                 "long trials can afford small steps" if long else "short trials need a quick start"),
        Decision("space.train", "weight_decay", {"low": 1e-6, "high": 1e-3, "log": True}, same),
        Decision("space.train", "momentum", {"low": 0.85, "high": 0.99}, momentum_why),
        Decision("space.train", "nesterov", {"choices": [False, True]}, "sampled for sgd only"),
        Decision("space.train", "scheduler", {"choices": schedules}, schedule_why),
        Decision("space.transforms", "hflip", {"choices": [0.0, 0.5]}, same),
        Decision("space.transforms", "rotation", {"low": 0.0, "high": 15.0}, same),
        Decision("space.transforms", "color_jitter", {"low": 0.0, "high": 0.2}, same),
        Decision("space.transforms", "scale_jitter", {"low": 0.0, "high": 0.2}, same),
    ]
