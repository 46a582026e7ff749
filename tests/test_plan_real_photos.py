"""The plan on real photos (issue 24, section 2): the width floor trades resolution (`data.scale`) before
width, one small image does not shrink the crop (it is padded with 255), the RAM rule counts the copies
`--workers` makes, a `[baseline]` is written and enqueued as trial 0, `--total-epochs` is written, and each
trial records the plan's predicted seconds an epoch beside its measured ones (a real tiny study, read
back through Optuna's and MLflow's own clients)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import optuna
import pytest
import tomllib
import torch
from mlflow.tracking import MlflowClient

from benchmarks.epoch_time_replay import report, repredict
from search.plan import device_probe
from search.plan.budget import FINAL_SHARE
from search.plan.capacity import WIDTH_FLOOR
from search.plan.command import main as plan_main
from search.plan.decisions import PlanError
from search.plan.epoch_time import EpochTimeModel, Probe, fit_two
from search.plan.plan_toml import render_toml
from search.plan.planner import PlanRequest, make_plan
from search.plan.ram import plan_ram
from search.plan.survey import Survey
from search.run import main as run_main
from search.study.definition import load_study, parse_study
from seg.batch_augment import random_crop
from seg.config import DataConfig, TransformConfig
from seg.data import IGNORE_INDEX
from seg.gpu_data import stack_split
from seg.loaders import resolve_dataset, train_dataset
from seg.model import forward_flops
from tests.plankit import labelled_folder
from tests.studykit import seed_tracking_db


def _value(plan, table: str, key: str, default=None):
    try:
        return plan.value(table, key)
    except KeyError:
        return default


def _survey(root: Path, train: list[tuple[int, int]], val: list[tuple[int, int]]) -> Survey:
    pixels = [0] * 256
    pixels[:3] = [6_000_000, 3_000_000, 1_000_000]
    return Survey(source=str(root), root=root, val_fraction=None, train_sizes=tuple(train), val_sizes=tuple(val),
                  train_files=tuple(f"{root}/train/labels/{i:03d}.png" for i in range(len(train))),
                  train_pixels=tuple(pixels), val_values=frozenset(range(3)))


@pytest.mark.parametrize("memory_gb, scale", [(0.5, 0.5), (1.0, 0.75), (4.0, None)])
def test_cuda_plans_give_up_resolution_before_width(plan_datasets, memory_gb, scale):
    plan = make_plan(PlanRequest(data=str(plan_datasets["large"]), device="cuda", memory_gb=memory_gb))
    bases = plan.choices("space.model", "base_channels")
    assert min(bases) >= WIDTH_FLOOR["cuda"] == 16
    assert _value(plan, "data", "scale") == scale
    if scale is not None:
        why = next(d.why for d in plan.decisions if d.key == "scale")
        assert "resolution traded for width" in why and "never planned below 16 on cuda" in why
        assert plan.fingerprint["data_scale"] == scale and plan.fingerprint["capacity"]["traded"]
        assert plan.value("space.transforms", "crop_size") < 512  # the crop follows the smaller images


def _flop_timed(cfg, hw, device, timed_s=None):
    """A CPU whose step costs 1 ns per forward FLOP and validation as much per pixel: deterministic."""
    seconds = forward_flops(cfg.model, *hw) * 1e-9
    return seconds, seconds / (hw[0] * hw[1] / 1e6)


def test_a_cpu_plan_on_a_tight_budget_scales_down_and_keeps_base_8(tmp_path, monkeypatch):
    monkeypatch.setattr(device_probe, "_measure", _flop_timed)  # the rule, not this machine's speed
    root = tmp_path / "photos"
    survey = _survey(root, [(256, 320)] * 24, [(256, 320)] * 4)
    roomy = make_plan(PlanRequest(data=str(root), device="cpu", hours=20), survey=survey)
    assert _value(roomy, "data", "scale") is None and min(roomy.choices("space.model", "base_channels")) >= 8
    floor_cost = roomy.fingerprint["capacity"]["largest_config_cost_by_base"]["8"]
    # A budget whose per-epoch bound is a third of the floor's full-resolution epoch: it must give up resolution.
    hours = floor_cost / 3 * 64 / 3600 / (1 - FINAL_SHARE)  # the widths are sized for the search's part
    tight = make_plan(PlanRequest(data=str(root), device="cpu", hours=hours), survey=survey)
    assert min(tight.choices("space.model", "base_channels")) >= WIDTH_FLOOR["cpu"] == 8
    assert _value(tight, "data", "scale") == 0.5  # 0.75 keeps 192 px crops: 56 % of the cost, still over
    assert tight.value("space.transforms", "crop_size") == 128
    why = next(d.why for d in tight.decisions if d.key == "scale")
    assert "resolution traded for width" in why and "base width 8 costs" in why
    sdef = parse_study(tomllib.loads(render_toml(tight)), tmp_path / "tight.toml")
    assert sdef.data["scale"] == 0.5
    with pytest.raises(PlanError, match="width floor allows .base width 8 on cpu"):
        make_plan(PlanRequest(data=str(root), device="cpu", hours=hours / 1000), survey=survey)


def _outlier_folder(root: Path) -> Path:
    """24 training images of 64x80 and one of 20x30 (the last training file), 2 of 64x80 in val."""
    rng = np.random.default_rng(3)
    labels = [rng.integers(0, 3, (64, 80)).astype(np.uint8) for _ in range(24)]
    labels.append(rng.integers(0, 3, (20, 30)).astype(np.uint8))
    labels += [rng.integers(0, 3, (64, 80)).astype(np.uint8) for _ in range(2)]
    return labelled_folder(root, labels, n_val=2)


def test_one_small_image_does_not_shrink_the_crop_and_is_padded_with_255(tmp_path):
    root = _outlier_folder(tmp_path / "outlier")
    plan = make_plan(PlanRequest(data=str(root), device="cuda", memory_gb=8))
    assert plan.value("space.transforms", "crop_mode") == "random"
    assert plan.value("space.transforms", "crop_size") == 64  # not 20: the outlier is left to padding
    assert plan.fingerprint["padded_train_images"] == 1
    why = next(d.why for d in plan.decisions if d.key == "crop_size")
    assert "1 of 25 training image(s) are smaller than the 64 px crop" in why and "(255)" in why
    # Training pads it with the ignore label, on the per-sample loader and on the batched path alike.
    data = resolve_dataset(DataConfig(root=str(root), num_classes=3))
    small = next(i for i, img in enumerate(data.train.images) if img.shape[-2:] == (20, 30))
    tf = TransformConfig(crop_mode="random", crop_size=64, hflip=0.0)
    _, mask = train_dataset(data, tf)[small]
    assert tuple(mask.shape) == (64, 64) and int((mask == IGNORE_INDEX).sum()) == 64 * 64 - 20 * 30
    stacked = stack_split(data.train, tf, torch.device("cpu"), min_side=64)
    idx = torch.tensor([small])
    _, masks = random_crop(stacked.images[idx], stacked.masks[idx], stacked.sizes[idx], 64,
                           torch.Generator().manual_seed(0))
    assert int((masks == IGNORE_INDEX).sum()) == 64 * 64 - 20 * 30


def test_the_ram_rule_counts_a_copy_per_worker_and_the_parent(tmp_path):
    survey = _survey(tmp_path, [(100, 100)] * 8, [(100, 100)] * 2)
    one = survey.decoded_bytes()  # 10 images x 10,000 px x 4 bytes
    ram = int(2 * 3.5 * one)  # half of it holds 3.5 copies
    assert "fits" in plan_ram(survey, ram, workers=1).why
    assert "x 3 copies (--workers 2" in plan_ram(survey, ram, workers=2).why
    with pytest.raises(PlanError, match="x 4 copies .--workers 3.*at most --workers 2"):
        plan_ram(survey, ram, workers=3)
    with pytest.raises(PlanError, match="--workers 0"):
        PlanRequest(data=str(tmp_path), workers=0)


@pytest.mark.parametrize("name, weighted", [("three", False), ("dominant", True)])
def test_the_plan_writes_a_baseline_inside_its_space(plan_datasets, tmp_path, name, weighted):
    plan = make_plan(PlanRequest(data=str(plan_datasets[name]), device="cuda", memory_gb=8))
    sdef = parse_study(tomllib.loads(render_toml(plan)), tmp_path / "plan.toml")
    base = sdef.baseline
    assert base["train.optimizer"] == "adam" and base["train.lr"] == 1e-3 and base["train.scheduler"] == "onecycle"
    bases = plan.choices("space.model", "base_channels")
    assert base["model.base_channels"] == sorted(bases)[(len(bases) - 1) // 2]
    depth = plan.value("space.model", "depth")
    assert base["model.depth"] == (depth["low"] + depth["high"]) // 2
    assert ("train.loss" in base) == weighted and base.get("train.loss", "ce_weighted") == "ce_weighted"
    for key, value in base.items():  # every baseline value lies inside its planned range
        dim = sdef.dimension(key)
        assert value in dim.choices if dim.choices is not None else dim.low <= value <= dim.high, key


def test_total_epochs_is_written_to_the_budget(plan_datasets, tmp_path):
    out = tmp_path / "epochs.toml"
    assert plan_main(["--data", str(plan_datasets["three"]), "--device", "cuda", "--memory-gb", "8",
                      "--total-epochs", "120", "--out", str(out)]) == 0
    assert tomllib.loads(out.read_text())["budget"]["total_epochs"] == 120
    assert load_study(out).total_epochs == 120


def test_the_time_model_fits_its_probes():
    # seconds = 0.02 s/GFLOP + 0.5 s/Mpx, recovered from three probes.
    probes = [Probe(g, p, 0.02 * g + 0.5 * p) for g, p in ((1.0, 0.01), (4.0, 0.01), (2.0, 0.04))]
    a, b = fit_two(probes)
    assert a == pytest.approx(0.02) and b == pytest.approx(0.5)
    assert fit_two([Probe(2.0, 0.01, 0.1)]) in ((0.05, 0.0), (0.0, 10.0))  # one probe: one term, never < 0
    model = EpochTimeModel("cpu", 0.02, 0.5, 0.0, 1.0)
    assert EpochTimeModel.from_dict(model.to_dict()) == model


def test_each_trial_logs_its_predicted_epoch_seconds_and_the_baseline_is_trial_0(plan_datasets, tmp_path):
    storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    seed_tracking_db(tmp_path / "mlruns" / "mlflow.db")
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert run_main(["--data", str(plan_datasets["three"]), "--trials", "2", "--epochs", "2", "--timeout", "300",
                         "--confirm", "0", "--device", "cpu", "--storage", storage, "--tracking-uri", tracking]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    study = optuna.load_study(study_name="plan-three", storage=storage)
    sdef = parse_study(tomllib.loads(study.user_attrs["plan_toml"]), Path("plan.toml"))
    first = study.trials[0]
    assert first.user_attrs.get("baseline") is True
    assert {k: first.params[k] for k in sdef.baseline} == sdef.baseline
    client = MlflowClient(tracking)
    for trial in study.trials:
        predicted = trial.user_attrs["epoch_seconds_predicted"]
        assert predicted > 0
        run_id = trial.user_attrs["mlflow_run_id"]
        logged = client.get_metric_history(run_id, "epoch_seconds_predicted")
        assert [m.value for m in logged] == [pytest.approx(predicted, abs=1e-3)]
        measured = [m.value for m in client.get_metric_history(run_id, "epoch_seconds")]
        assert measured and trial.user_attrs["epoch_seconds"] == pytest.approx(float(np.median(measured)), abs=1e-3)
        assert trial.user_attrs["epoch_time_ratio"] == pytest.approx(trial.user_attrs["epoch_seconds"] / predicted,
                                                                     rel=0.01)
    # The replay benchmark predicts them again from the stored model and configs: the same figures.
    replayed = repredict(study)
    assert [r.number for r in replayed] == [t.number for t in study.trials]
    assert [r.now for r in replayed] == pytest.approx([r.recorded for r in replayed], abs=1e-3)  # kept to 3 places
    assert "within ±30%" in report(replayed)
    # --refit fits the plan's stored probe records again: the same model, so the same predictions.
    refit = repredict(study, refit=True)
    # rel: the refit from stored probe records; abs: the recorded figures are kept to 3 places (0.26 s reads 0.2 %).
    assert [r.now for r in refit] == pytest.approx([r.recorded for r in replayed], rel=1e-3, abs=1e-3)


def test_a_planned_study_file_run_with_study_predicts_epoch_seconds_too(plan_datasets, tmp_path):
    """search.plan --out FILE, then search.run --study FILE: the file's [plan] time model predicts."""
    out = tmp_path / "planned.toml"
    # 0.02 h: a CPU plan with its time model, its probes timed for 0.24 s each (1/300 of the budget)
    args = ["--data", str(plan_datasets["three"]), "--device", "cpu", "--hours", "0.02", "--out", str(out)]
    assert plan_main(args) == 0
    model = tomllib.loads(out.read_text())["plan"]["time_model"]
    assert model["device"] == "cpu" and load_study(out).time_model == model
    storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    seed_tracking_db(tmp_path / "mlruns" / "mlflow.db")
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert run_main(["--study", str(out), "--trials", "1", "--epochs", "1", "--device", "cpu", "--confirm", "0",
                         "--storage", storage, "--tracking-uri", tracking]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    (trial,) = optuna.load_study(study_name="plan-three", storage=storage).trials
    assert trial.user_attrs["epoch_seconds_predicted"] > 0
    assert trial.user_attrs["epoch_time_ratio"] > 0
