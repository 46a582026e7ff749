"""The planner's rules on five generated datasets (tests/plankit.py) and on surveys of given shape: each
derived value, that every plan is a valid study, and the seed report's configuration in a seed-like plan.

Plans for a CUDA device that is not here (`device="cuda", memory_gb=...`) cost configurations with
`seg.memory`'s estimate and FLOPs, so their values are exact; CPU plans measure, so their tests check
the rule against the plan's own recorded probes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import optuna
import pytest
import tomllib
from PIL import Image

from search.plan.budget import HYPERBAND_FROM
from search.plan.capacity import BASE_LADDER, MEMORY_SHARE, MIN_EPOCH_STEPS, Sizing, batch_cap, probe_config, top_width
from search.plan.decisions import Plan
from search.plan.plan_toml import render_toml
from search.plan.planner import PlanRequest, make_plan
from search.plan.survey import Survey
from search.study.definition import parse_study
from search.study.space import RunOptions, build_config, check_feasible, sample_values
from seg.memory import GiB, estimate_training_memory
from tests.plankit import VOC_CLASSES

SEARCHED = {"choices": ["ce", "ce_weighted", "dice_ce"]}
# dataset -> (num_classes, names, resize, crop_mode, crop_size, depth range)
EXPECTED = {
    "tiny": (10, None, None, "none", None, {"low": 2, "high": 3}),  # median short side < 64: whole images
    "large": (10, None, None, "random", 512, {"low": 5, "high": 7}),  # 512 / 2**6 = 8 px bottleneck
    "three": (3, None, None, "random", 64, {"low": 2, "high": 4}),
    "voc": (21, list(VOC_CLASSES), [128, 160], "five", 128, {"low": 3, "high": 5}),  # medians 120x155 -> x16
    "dominant": (3, None, None, "random", 64, {"low": 2, "high": 4}),
}


def cuda_plan(root: Path, memory_gb: float = 24, **kwargs) -> Plan:
    return make_plan(PlanRequest(data=str(root), device="cuda", memory_gb=memory_gb, **kwargs))


def _get(plan: Plan, table: str, key: str):
    try:
        return plan.value(table, key)
    except KeyError:
        return None


def _imbalance(root: Path, k: int) -> float:
    """Most / least frequent class among the training labels, counted here with NumPy."""
    counts = np.zeros(256, np.int64)
    for path in (root / "train" / "labels").glob("*.png"):
        with Image.open(path) as img:
            counts += np.bincount(np.asarray(img).ravel(), minlength=256)
    present = counts[:k][counts[:k] > 0]
    return present.max() / present.min()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_dataset_gets_the_values_its_rules_derive(plan_datasets, name):
    k, names, resize, mode, crop, depth = EXPECTED[name]
    plan = cuda_plan(plan_datasets[name])
    assert _get(plan, "data", "num_classes") == k
    assert _get(plan, "data", "class_names") == names
    assert _get(plan, "data", "root") == str(plan_datasets[name].resolve())
    assert _get(plan, "space.transforms", "resize") == resize
    assert _get(plan, "space.transforms", "crop_mode") == mode
    assert _get(plan, "space.transforms", "crop_size") == crop
    assert _get(plan, "space.model", "depth") == depth
    expected_loss = SEARCHED if _imbalance(plan_datasets[name], k) > 10 else "ce"
    assert _get(plan, "space.train", "loss") == expected_loss
    assert {"three": "ce", "dominant": SEARCHED}.get(name, expected_loss) == expected_loss
    assert all(d.why for d in plan.decisions if d.table.startswith("space") or d.table == "budget")


def test_the_five_plans_differ(plan_datasets):
    keys = [("data", "num_classes"), ("space.transforms", "resize"), ("space.transforms", "crop_mode"),
            ("space.transforms", "crop_size"), ("space.model", "depth"), ("space.train", "loss")]
    signatures = {name: repr([_get(cuda_plan(root), *key) for key in keys]) for name, root in plan_datasets.items()}
    assert len(set(signatures.values())) == len(signatures), signatures


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_plan_is_a_valid_study_whose_corners_are_feasible(plan_datasets, name, tmp_path):
    plan = cuda_plan(plan_datasets[name])
    sdef = parse_study(tomllib.loads(render_toml(plan)), tmp_path / "plan.toml")
    assert sdef.data_required and sdef.data["root"] == str(plan_datasets[name].resolve())
    depth = plan.value("space.model", "depth")
    depths = [depth["low"], depth["high"]] if isinstance(depth, dict) else [depth]
    fixed = {d.name: d.value for d in sdef.space if d.fixed}
    for d, base, cap, batch, loss in itertools.product(depths, plan.choices("space.model", "base_channels"),
                                                       plan.choices("space.model", "max_channels"),
                                                       plan.choices("space.train", "batch_size"),
                                                       plan.choices("space.train", "loss")):
        values = {**fixed, "model.depth": d, "model.base_channels": base, "model.max_channels": cap,
                  "train.batch_size": batch, "train.loss": loss}
        check_feasible(build_config(values, sdef, RunOptions(device="cpu"), 0))


@pytest.mark.parametrize("memory_gb", [2, 8, 80])
def test_cuda_widths_and_batches_are_bounded_so_the_largest_config_fits(plan_datasets, memory_gb):
    plan = cuda_plan(plan_datasets["voc"], memory_gb=memory_gb)
    depth, crop = plan.value("space.model", "depth")["high"], plan.value("space.transforms", "crop_size")
    top, batch = plan.choices("space.model", "base_channels")[-1], plan.choices("space.train", "batch_size")[-1]

    def estimate(base: int, b: int) -> float:  # the deepest, widest config of rung `base`, counted here
        cfg = probe_config(Sizing(21, 1, 1), depth, base, top_width(base, depth), b, "cuda")
        return estimate_training_memory(cfg, crop, crop, amp=True).total

    assert estimate(top, batch) <= MEMORY_SHARE * memory_gb * GiB
    if top != BASE_LADDER[-1]:  # the next rung up would not have fitted
        assert estimate(BASE_LADDER[BASE_LADDER.index(top) + 1], plan.choices("space.train", "batch_size")[0]) > \
            MEMORY_SHARE * memory_gb * GiB
    assert plan.choices("space.model", "max_channels")[-1] == top_width(top, depth)


@pytest.mark.parametrize("samples", [2, 15, 16, 19, 63, 64, 367, 5000])
def test_the_batch_cap_leaves_enough_optimizer_steps_an_epoch(samples):
    cap = batch_cap(samples)
    assert cap >= 2 and cap & (cap - 1) == 0  # a power of two, and a pair for BatchNorm
    assert samples // cap >= MIN_EPOCH_STEPS or cap == 2
    assert samples // (2 * cap) < MIN_EPOCH_STEPS  # the largest such


def test_a_small_training_set_trains_at_a_small_batch(plan_datasets):
    # 12 training images: batch 8 would be 1 step an epoch, batch 4 three; a short trial learns nothing
    # from so few steps (the ISBI membranes, 2026-12-06), so the plan takes batch 2 (6 steps).
    plan = cuda_plan(plan_datasets["three"])
    assert plan.choices("space.train", "batch_size") == [2]


def test_less_memory_gives_narrower_widths(plan_datasets):
    tops = [cuda_plan(plan_datasets["voc"], memory_gb=g).choices("space.model", "base_channels")[-1]
            for g in (0.05, 0.5, 80)]
    assert tops == sorted(tops) and tops[0] < tops[-1]


def seed_like_survey(root: Path) -> Survey:
    """About 1,000 photos of 100-500 px per side and 10 classes, as the seed report describes its data."""
    rng = np.random.default_rng(0)
    train = tuple((int(h), int(w)) for h, w in rng.integers(100, 501, (900, 2)))
    val = tuple((int(h), int(w)) for h, w in rng.integers(100, 501, (100, 2)))
    pixels = [0] * 256
    pixels[:10] = [int(4e6 / (c + 1)) for c in range(10)]
    return Survey(source=str(root), root=root, val_fraction=None, train_sizes=train, val_sizes=val,
                  train_files=tuple(f"{root}/train/labels/{i:04d}.png" for i in range(900)),
                  train_pixels=tuple(pixels), val_values=frozenset(range(10)))


def test_a_seed_like_plan_on_80_gb_contains_the_report_configuration(tmp_path):
    root = tmp_path / "photos"
    plan = make_plan(PlanRequest(data=str(root), device="cuda", memory_gb=80, hours=3), survey=seed_like_survey(root))
    assert plan.value("space.transforms", "crop_mode") == "five" and plan.value("space.transforms", "resize")
    # The report: depth 6, widths 32 -> 1024, transposed convolutions, crop 256, Adam (batch 16).
    report = {"model.depth": 6, "model.base_channels": 32, "model.max_channels": 1024, "model.upsample": "transpose",
              "transforms.crop_size": 256, "train.optimizer": "adam", "train.batch_size": 16}
    sdef = parse_study(tomllib.loads(render_toml(plan)), tmp_path / "plan.toml")
    for name, value in report.items():
        dim = sdef.dimension(name)
        if dim.fixed:
            assert dim.value == value, name
        elif dim.choices is not None:
            assert value in dim.choices, name
        else:
            assert dim.low <= value <= dim.high, name
    values = {**{d.name: d.value for d in sdef.space if d.fixed}, **report}
    cfg = build_config(values, sdef, RunOptions(device="cpu"), 0)
    check_feasible(cfg)
    assert cfg.model.level_channels() == (32, 64, 128, 256, 512, 1024)
    assert plan.value("pruner", "name") == "hyperband" and plan.value("budget", "max_epochs") >= 20


@pytest.mark.parametrize("hours, optimizers, schedules", [
    (0.05, ["adam", "adamw", "sgd"], ["cosine", "onecycle"]),
    (3, ["adam", "adamw", "sgd", "rmsprop"], ["none", "cosine", "onecycle"]),
])
def test_short_trials_search_no_rmsprop_and_only_annealing_schedules(tmp_path, hours, optimizers, schedules):
    root = tmp_path / "photos"
    request = PlanRequest(data=str(root), device="cuda", memory_gb=80, hours=hours)
    plan = make_plan(request, survey=seed_like_survey(root))
    assert (plan.value("budget", "max_epochs") < HYPERBAND_FROM) == (hours < 1)
    assert plan.choices("space.train", "optimizer") == optimizers
    assert plan.choices("space.train", "scheduler") == schedules
    # The [baseline] (Adam, one-cycle) stays inside the space, and every sampled trial is one of these.
    assert plan.value("baseline.params", "train.optimizer") == "adam"
    assert plan.value("baseline.params", "train.scheduler") == "onecycle"
    sdef = parse_study(tomllib.loads(render_toml(plan)), tmp_path / "plan.toml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = sample_values(study.ask(), sdef)
        assert values["train.optimizer"] in optimizers and values["train.scheduler"] in schedules
        assert ("train.momentum" in values) == (values["train.optimizer"] in ("sgd", "rmsprop"))
