"""The planner's budget and CPU rules: epochs, trials and pruner from the budget; a pruner that never cuts
after epoch 1, checked with real Optuna studies; CPU widths bounded by measured time; the CLI."""

from __future__ import annotations

import math

import optuna
import pytest
import tomllib

from search.plan.budget import FINAL_SHARE, MIN_TRIALS, expected_epochs, plan_budget
from search.plan.capacity import BASE_LADDER, CPU_EPOCHS_OF_LARGEST, WIDTH_FLOOR
from search.plan.command import main as plan_main
from search.plan.planner import PlanRequest, make_plan
from search.study.definition import load_study
from search.study.samplers_pruners import build_pruner


def _budget_values(budget) -> dict:
    return {(d.table, d.key): d.value for d in budget.decisions}


@pytest.mark.parametrize("hours, epoch_s, pruner, long", [(0.625, 5.0, "percentile", False),
                                                         (6.0, 20.0, "hyperband", True),
                                                         (40.0, 5.0, "hyperband", True)])
def test_longer_budgets_give_longer_trials_and_hyperband_from_20_epochs(hours, epoch_s, pruner, long):
    budget = plan_budget(epoch_s, "test", seconds=hours * 3600)
    assert (budget.max_epochs >= 20) == long and budget.pruner["name"] == pruner
    assert MIN_TRIALS <= budget.trials <= 100
    # The trials fit the budget: expected epochs a trial times the epoch's seconds, plus a fixed cost each.
    assert budget.trials * (expected_epochs(budget.max_epochs) * epoch_s) <= hours * 3600
    assert _budget_values(budget)[("budget", "timeout_s")] == round(hours * 3600)


def test_total_epochs_budget_counts_expected_epochs_per_trial():
    budget = plan_budget(123.0, "test", total_epochs=400)
    assert budget.trials == math.floor(400 / expected_epochs(budget.max_epochs)) >= MIN_TRIALS
    assert _budget_values(budget)[("budget", "timeout_s")] == 0
    with pytest.raises(ValueError, match="one of them"):
        plan_budget(1.0, "test", seconds=10.0, total_epochs=10)


def test_a_budget_too_small_warns_and_still_plans():
    budget = plan_budget(60.0, "test", seconds=600)
    assert budget.max_epochs == 4 and 1 <= budget.trials < MIN_TRIALS and "fewer than" in budget.warnings[0]


def _curves(study: optuna.Study, good: int) -> None:
    for _ in range(good):  # completed trials with high values at every epoch (asked, as search.run does)
        trial = study.ask()
        for step in range(1, 101):
            trial.report(0.9, step)
            assert not trial.should_prune()
        study.tell(trial, 0.9)


@pytest.mark.parametrize("hours", [0.25, 40.0])
def test_the_planned_pruner_never_cuts_after_epoch_1(hours):
    budget = plan_budget(5.0, "test", seconds=hours * 3600)
    study = optuna.create_study(direction="maximize", pruner=build_pruner(budget.pruner, budget.max_epochs))
    _curves(study, 12)
    cut_at = []
    for _ in range(30):  # hopeless trials: val mIoU 0 at every epoch
        trial = study.ask()
        for step in range(1, budget.max_epochs + 1):
            trial.report(0.0, step)
            if trial.should_prune():
                cut_at.append(step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
    assert cut_at and min(cut_at) >= 2, cut_at  # some are cut (the pruner works), none after epoch 1


def _check_time_bound(plan, hours: float) -> None:
    """The plan's widths against its own measurements: the top rung's largest config fits the bound, the
    next rung's does not (no timing is asserted: the machine may be busy, the rule must hold anyway)."""
    capacity = plan.fingerprint["capacity"]
    # Widths are sized for the search's part of the budget (the rest trains its best configuration).
    assert capacity["bound"] == pytest.approx(hours * 3600 * (1 - FINAL_SHARE) / CPU_EPOCHS_OF_LARGEST)
    costs = {int(b): c for b, c in capacity["largest_config_cost_by_base"].items()}
    top = plan.choices("space.model", "base_channels")[-1]
    assert costs[top] <= capacity["bound"]
    if top != BASE_LADDER[-1]:
        assert costs[BASE_LADDER[BASE_LADDER.index(top) + 1]] > capacity["bound"]
    # Each cost is a measured epoch: at least the training images times a probe's seconds per image.
    per_image = {p["base_channels"]: p["seconds_per_image"] for p in plan.fingerprint["probes"]}
    assert all(costs[b] >= per_image[b] * plan.fingerprint["counts"]["train"] > 0 for b in costs)


def test_cpu_widths_are_bounded_by_measured_time(plan_datasets):
    root = plan_datasets["tiny"]
    roomy = make_plan(PlanRequest(data=str(root), device="cpu", hours=0.3))
    _check_time_bound(roomy, 0.3)
    # A budget whose bound is a few epochs of the narrowest rung (the CPU's width floor), as measured just now.
    narrow_epoch = roomy.fingerprint["capacity"]["largest_config_cost_by_base"][str(WIDTH_FLOOR["cpu"])]
    hours = 8 * narrow_epoch * CPU_EPOCHS_OF_LARGEST / 3600 / (1 - FINAL_SHARE)
    _check_time_bound(make_plan(PlanRequest(data=str(root), device="cpu", hours=hours)), hours)


def test_plan_command_writes_a_study_and_prints_the_reasons(plan_datasets, tmp_path, capsys):
    out = tmp_path / "voc.toml"
    assert plan_main(["--data", str(plan_datasets["voc"]), "--device", "cuda", "--memory-gb", "24",
                      "--total-epochs", "300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "space.transforms.crop_size" in printed and "tv/monitor" in printed and "wrote" in printed
    text = out.read_text()
    assert text.startswith("# Planned by `python -m search.plan --data") and "--total-epochs 300" in text
    assert 'crop_mode = "five"  # five crops' in text
    sdef = load_study(out)
    assert sdef.name == "plan-voc" and sdef.data["class_names"][-1] == "tv/monitor"
    assert tomllib.loads(text)["budget"]["timeout_s"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "no CUDA device is present here; pass --memory-gb"),
    (["--device", "cpu", "--ram-gb", "0.0000001"], "does not fit"),
])
def test_plan_command_errors_name_the_problem(plan_datasets, tmp_path, capsys, argv, message):
    if "cuda" in argv:
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("a CUDA device is present")
    assert plan_main(["--data", str(plan_datasets["three"]), "--out", str(tmp_path / "x.toml"), *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "x.toml").exists()


def test_expected_epochs_follow_the_measured_pruning():  # RESULTS.md: 4.02x (percentile 30 from epoch 2), 2.08x
    assert expected_epochs(16) == pytest.approx(2 + 14 / 4.02)
    assert expected_epochs(50) == pytest.approx(50 / 2.08)
