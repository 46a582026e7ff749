"""The final training's margin: a trial replaces the [baseline] trial in the retrains only by leading its
value by more than `[confirm] margin` (a planned study sets it when its trials are short).

Checked on real Optuna studies (the ranking, both directions), on the planner's budget and the study
file, and end to end: `search.run --timeout` with a share and a margin retrains and crowns the baseline
configuration, and says which trial's lead the margin discounted.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import tomllib

from search.confirm import main as confirm_main
from search.confirm_retrains import kept_baseline, top_trials
from search.plan.budget import HYPERBAND_FROM, SHORT_TRIAL_MARGIN, plan_budget
from search.plan.decisions import Plan
from search.plan.plan_toml import render_toml
from search.study.definition import load_study, parse_study
from tests.studykit import TINY, StudyEnv


def _study(direction: str, values: list[float], baseline_at: int = 0) -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for number, value in enumerate(values):
        attrs = {"config": {}, **({"baseline": True} if number == baseline_at else {})}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    return study


@pytest.mark.parametrize("direction, values, margin, first", [
    ("maximize", [0.50, 0.54, 0.30], 0.05, 0),   # a lead of 0.04: within the margin, the baseline stays first
    ("maximize", [0.50, 0.56, 0.30], 0.05, 1),   # a lead of 0.06 replaces it
    ("maximize", [0.50, 0.54, 0.30], 0.0, 1),    # no margin: by value
    ("minimize", [0.50, 0.46, 0.70], 0.05, 0),   # a loss: lower is better, the same rule
    ("minimize", [0.50, 0.44, 0.70], 0.05, 1),
])
def test_the_baseline_trial_ranks_first_unless_beaten_by_more_than_the_margin(
        direction: str, values: list[float], margin: float, first: int) -> None:
    study = _study(direction, values)
    top = top_trials(study, 2, margin)
    assert [t.number for t in top] == [first, 1 - first]
    kept = kept_baseline(study, top_trials(study, 1, margin), margin)
    if margin and first == 0:
        assert kept == {"baseline_trial": 0, "baseline_value": 0.50, "trial": 1, "value": values[1],
                        "lead": pytest.approx(abs(values[1] - 0.50)), "margin": margin}
    else:
        assert kept is None


def test_the_margin_credits_only_the_baseline_trial() -> None:
    study = _study("maximize", [0.30, 0.54, 0.50], baseline_at=2)
    assert [t.number for t in top_trials(study, 3, 0.05)] == [2, 1, 0]
    assert [t.number for t in top_trials(_study("maximize", [0.30, 0.54, 0.50], baseline_at=-1), 3, 0.05)] == [1, 2, 0]


def _values(budget) -> dict:
    return {(d.table, d.key): d.value for d in budget.decisions}


def test_a_plan_of_short_trials_keeps_a_margin_and_one_of_long_trials_none() -> None:
    short, long = plan_budget(20.0, "test", seconds=1800), plan_budget(1.0, "test", seconds=8 * 3600)
    assert short.max_epochs < HYPERBAND_FROM <= long.max_epochs
    assert _values(short)[("confirm", "margin")] == SHORT_TRIAL_MARGIN and ("confirm", "margin") not in _values(long)
    for budget, margin in ((short, SHORT_TRIAL_MARGIN), (long, 0.0)):
        sdef = parse_study(tomllib.loads(render_toml(Plan(list(budget.decisions), {}))), Path("planned.toml"))
        assert sdef.confirm_margin == margin
    why = next(d.why for d in short.decisions if (d.table, d.key) == ("confirm", "margin"))
    assert f"trials of {short.max_epochs} < {HYPERBAND_FROM} epochs" in why and "[baseline]" in why


@pytest.mark.parametrize("margin", ["1.0", "-0.01", '"small"', "true"])
def test_a_margin_outside_0_to_1_is_refused(tmp_path: Path, margin: str) -> None:
    env = StudyEnv(tmp_path, "bad", **TINY)
    env.file.write_text(env.file.read_text() + f"\n[confirm]\ntop = 1\nseeds = 1\nmargin = {margin}\n")
    with pytest.raises(ValueError, match=r"bad\.toml: \[confirm\] margin must be a lead in the metric"):
        load_study(env.file)


def test_confirm_refuses_a_margin_outside_0_to_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        confirm_main(["--study", "any", "--margin", "1.5"])
    assert "--margin 1.5: expected a lead in the metric" in capsys.readouterr().err


def test_search_run_trains_and_crowns_the_baseline_within_the_margin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "margin", trials=3, epochs=1, baseline={"train.lr": 0.002}, **TINY)
    # A margin no tiny trial can overcome: whatever the values, the baseline configuration is retrained.
    env.file.write_text(env.file.read_text() + "\n[confirm]\ntop = 1\nseeds = 1\nshare = 0.5\nmargin = 0.99\n")
    assert env.run("--timeout", "60") == 0
    study = env.study()
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] is True and baseline.params["train.lr"] == 0.002
    record = study.user_attrs["confirm"]
    assert record["configs"][0]["trial"] == 0 and record["champion"]["trial"] == 0
    (retrain,) = [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]
    assert retrain.data.params["train.lr"] == "0.002" and record["champion"]["run_id"] == retrain.info.run_id
    said = " ".join(capsys.readouterr().out.split())
    if study.best_trial.number != 0:  # a trial led the baseline: the record and the summary name it
        best = study.best_trial
        assert record["kept_baseline"] == {"baseline_trial": 0, "baseline_value": baseline.value,
                                           "trial": best.number, "value": best.value,
                                           "lead": pytest.approx(best.value - baseline.value), "margin": 0.99}
        assert f"kept the [baseline] (trial 0, {baseline.value:.4f}): trial {best.number} led it by" in said
    else:
        assert "kept_baseline" not in record and "kept the [baseline]" not in said
