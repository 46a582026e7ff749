"""Baseline rule: a known-good configuration of the planned space, written as `[baseline.params]` and
enqueued as trial 0 (as `studies/seed.toml` enqueues the report's configuration), so the search starts
from a point that trains well and its champion is never worse than it, within noise.

- the middle of the planned depths and base widths, the full channel doubling (the widest cap);
- Adam at lr 1e-3 with a one-cycle schedule (a from-scratch default that trains well in few epochs);
- the class-weighted loss when the loss is searched (the classes are imbalanced, `search.plan.loss`);
- transposed convolutions (the report's), the smaller batch, horizontal flips and mild scale jitter.

Only ranged dimensions are named (a fixed one is already what every trial trains); a value outside
a range the user edited is left for the sampler to choose.
"""

from __future__ import annotations

from typing import Any

from search.plan.decisions import Decision

WHY = {
    "model.depth": "the middle of the planned depths",
    "model.base_channels": "the middle of the planned base widths",
    "model.max_channels": "the full channel doubling",
    "model.upsample": "transposed convolutions, as the report",
    "train.optimizer": "Adam: trains well from scratch with little tuning",
    "train.lr": "Adam's usual 1e-3, the one-cycle peak",
    "train.weight_decay": "light regularisation",
    "train.scheduler": "one-cycle: warm-up then anneal, good in few epochs",
    "train.batch_size": "the smaller batch: more steps an epoch",
    "train.loss": "imbalanced classes: cross-entropy weighted by inverse sqrt frequency",
    "transforms.hflip": "flips: free, label-preserving augmentation",
    "transforms.rotation": "no rotation",
    "transforms.color_jitter": "no colour jitter",
    "transforms.scale_jitter": "mild scale jitter",
}
PREFERRED: dict[str, Any] = {
    "model.upsample": "transpose", "train.optimizer": "adam", "train.lr": 1e-3, "train.weight_decay": 1e-5,
    "train.scheduler": "onecycle", "train.loss": "ce_weighted", "transforms.hflip": 0.5,
    "transforms.rotation": 0.0, "transforms.color_jitter": 0.0, "transforms.scale_jitter": 0.1,
}


def plan_baseline(decisions: list[Decision]) -> list[Decision]:
    """`[baseline.params]` entries for the ranged space entries among `decisions`."""
    out = []
    for d in decisions:
        if not d.table.startswith("space.") or not isinstance(d.value, dict):
            continue
        name = f"{d.table.removeprefix('space.')}.{d.key}"
        value = _pick(name, d.value)
        if value is not None:
            out.append(Decision("baseline.params", name, value, WHY.get(name, "")))
    return out


def _pick(name: str, dim: dict[str, Any]) -> Any:
    choices = dim.get("choices")
    if name == "model.depth" and choices is None:
        return (dim["low"] + dim["high"]) // 2
    if name in ("model.base_channels", "model.depth") and choices:
        return sorted(choices)[(len(choices) - 1) // 2]
    if name == "model.max_channels" and choices:
        return max(choices)
    if name == "train.batch_size" and choices:
        return min(choices)
    if name not in PREFERRED:
        return None
    value = PREFERRED[name]
    if choices is not None:
        return value if value in choices else None
    return value if dim["low"] <= value <= dim["high"] else None
