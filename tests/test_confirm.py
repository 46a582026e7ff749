"""Confirmation before crowning: `search.confirm` (and `search.run --confirm`) on a tiny real study, checked
through Optuna's and MLflow's own APIs.

The study "conf" searches 2 trials of 8 epochs (a depth-3 UNet, 8 -> 32 channels, adam with lr 0.01 or
0.005, batch 4 of 48 px crops from 16 images) with
`search.run --confirm 1 --confirm-seeds 1`, which confirms its best trial with one fresh seed. Then a
*lucky draw* joins the study through Optuna's API: a complete trial whose recorded value (0.99) its
configuration cannot reproduce (lr 1e-8: the network barely moves from its initialisation; measured
over 8 seeds, final val mIoU 0.019-0.037, against 0.042-0.104 for lr 0.01 and 0.005, so the means of
two seeds are far apart). So the search's best is the lucky trial, and
`search.confirm --top 2 --seeds 2` must crown the other configuration: K x S = 4 retrains, of which
the first one (from `search.run --confirm`) is reused, not repeated.
"""

from __future__ import annotations

import io
import signal
import statistics
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from rich.console import Console

from search.confirm import main as confirm_main
from search.display import print_summary
from search.registry import CHAMPION, ChampionCallback
from search.report.confirm_section import confirm_section
from search.study.definition import load_study
from search.tracking.client import TRAINING_VIEW_QUERY
from search.ui.launcher import UiSettings, study_links
from seg.config import Config
from tests.faultkit import cli_env, start_run, wait_for
from tests.studykit import TINY, StudyEnv

EPOCHS, SEEDS = 8, ["1000001", "1000002"]
SPACE = {"model.depth": 3, "model.base_channels": 8, "model.max_channels": 32, "model.upsample": "bilinear",
         "train.optimizer": "adam", "train.lr": {"choices": [0.01, 0.005]}, "train.momentum": None,
         "train.batch_size": 4, "transforms.crop_size": 48}


def confirm_runs(env: StudyEnv) -> list[Run]:
    return [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]


def val_miou(env: StudyEnv, run: Run) -> list[float]:
    history = sorted(env.client.get_metric_history(run.info.run_id, "val_miou"), key=lambda m: m.step)
    return [m.value for m in history]


def registry(env: StudyEnv) -> MlflowClient:
    return MlflowClient(env.tracking_uri, registry_uri=env.tracking_uri)


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyEnv, int, int, str]]:
    """(the study, the lucky trial's number, the search's real best, the run id of the retrain
    `search.run --confirm` made)."""
    root = tmp_path_factory.mktemp("confirm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        env = StudyEnv(root, "conf", trials=2, epochs=EPOCHS, space=SPACE)
        assert env.run("--confirm", "1", "--confirm-seeds", "1") == 0
        (first,) = confirm_runs(env)
        study = env.study()
        real = study.best_trial
        assert first.data.tags["confirm_trial"] == str(real.number)
        lucky = Config.from_dict(real.user_attrs["config"]).replace(train={"lr": 1e-8})
        study.add_trial(optuna.trial.create_trial(value=0.99, user_attrs={"config": lucky.to_dict(),
                                                                          "epochs_trained": EPOCHS}))
        assert confirm_main(env.read_args("--top", "2", "--seeds", "2", "--device", "cpu")) == 0
        yield env, env.study().best_trial.number, real.number, first.info.run_id


def test_k_times_s_child_runs_with_their_curves_and_the_first_retrain_reused(conf) -> None:
    env, lucky, real, first = conf
    runs = confirm_runs(env)
    expected = {f"confirm-{n:03d}-seed-{i}" for n in (lucky, real) for i in (1, 2)}
    assert sorted(r.info.run_name for r in runs) == sorted(expected), "K x S runs, one each"
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert first in {r.info.run_id for r in runs}, "the retrain search.run --confirm made is kept, not repeated"
    parent = env.parent_id()
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["confirm_seed"] == SEEDS[int(run.data.tags["confirm_seed_index"]) - 1]
        curve = val_miou(env, run)
        assert len(curve) == EPOCHS, "full epochs, never pruned"
        assert float(run.data.tags["final_val_miou"]) == pytest.approx(curve[-1])
        assert float(run.data.tags["best_val_miou"]) == pytest.approx(max(curve))
        assert run.data.params["train.seed"] == run.data.tags["confirm_seed"]


def test_champion_is_the_best_confirmed_mean_not_the_search_best(conf) -> None:
    env, lucky, _, _ = conf
    study = env.study()
    by_trial: dict[int, list[Run]] = {}
    for run in confirm_runs(env):
        by_trial.setdefault(int(run.data.tags["confirm_trial"]), []).append(run)
    means = {n: statistics.fmean(val_miou(env, r)[-1] for r in runs) for n, runs in by_trial.items()}
    winner = max(means, key=means.get)
    assert winner != study.best_trial.number == lucky, "the search's lucky best is not crowned"
    champion = registry(env).get_model_version_by_alias(env.name, CHAMPION)
    best_retrain = max(by_trial[winner], key=lambda r: max(val_miou(env, r)))
    assert champion.run_id == best_retrain.info.run_id, "the winner's best retrain's model"
    tags = champion.tags
    assert tags["trial_number"] == str(winner) and tags["confirmed_seeds"] == ",".join(SEEDS)
    assert float(tags["confirmed_mean"]) == pytest.approx(means[winner], abs=1e-6)
    finals = [val_miou(env, r)[-1] for r in by_trial[winner]]
    assert float(tags["confirmed_sd"]) == pytest.approx(statistics.stdev(finals), abs=1e-6)
    assert float(tags["search_val_miou"]) == pytest.approx(study.trials[winner].value, abs=1e-6)


def test_summary_report_and_ui_show_the_search_value_next_to_the_confirmed_one(conf) -> None:
    env, _, _, _ = conf
    study = env.study()
    record = study.user_attrs["confirm"]
    assert record["complete"] and record["seeds"] == [int(s) for s in SEEDS]
    champion = record["champion"]
    winner = next(c for c in record["configs"] if c["trial"] == champion["trial"])
    confirmed = f"{winner['final_mean']:.4f} ± {winner['final_sd']:.4f}"
    out = io.StringIO()
    print_summary(Console(file=out, width=200), study, env.storage, env.tracking_uri, 1.0)
    text = out.getvalue()
    assert "val mIoU 0.9900 (search)" in text and confirmed in text and "champion" in text
    assert "python -m search.confirm" not in text, "a confirmed study is not told to confirm"
    html = confirm_section(study).body
    assert confirmed in html and f"{winner['search_value']:.4f}" in html and "0.9900" in html
    links = "\n".join(study_links(env.name, UiSettings(storage=env.storage, tracking_uri=env.tracking_uri),
                                  "http://m", "http://d"))
    assert (f"/runs/{champion['run_id']}?{TRAINING_VIEW_QUERY}  (trial {winner['trial']}: final val mIoU {confirmed}"
            in links)
    assert f"(search: {winner['search_value']:.4f})" in links  # the lucky best has no run to link to


def test_a_rerun_adds_nothing_and_the_search_leaves_a_confirmed_champion(conf) -> None:
    env, _, _, _ = conf
    before = {r.info.run_id for r in confirm_runs(env)}
    version = registry(env).get_model_version_by_alias(env.name, CHAMPION).version
    assert confirm_main(env.read_args("--top", "2", "--seeds", "2", "--device", "cpu")) == 0
    assert {r.info.run_id for r in confirm_runs(env)} == before
    study = env.study()
    ChampionCallback(env.tracking_uri, env.name)(study, study.best_trial)  # what search.run does for a new best
    assert registry(env).get_model_version_by_alias(env.name, CHAMPION).version == version


def test_bad_input_is_refused_with_the_reason(conf, capsys: pytest.CaptureFixture) -> None:
    env, _, _, _ = conf
    assert confirm_main(env.read_args("--top", "1", name="nope")) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        confirm_main(env.read_args("--top", "0"))
    assert "--top 0 --seeds 3: expected positive numbers" in capsys.readouterr().err


@pytest.mark.parametrize(("table", "error"), [
    ("[confirm]\ntop = -1\n", "[confirm] top = -1; expected an integer >= 0"),
    ("[confirm]\ntop = 2\nseeds = 0\n", "[confirm] seeds = 0; expected an integer >= 1"),
    ("[confirm]\nruns = 2\n", "unknown key(s) ['runs'] in [confirm]"),
])
def test_a_bad_confirm_table_names_the_file_and_key(tmp_path: Path, table: str, error: str) -> None:
    path = StudyEnv(tmp_path, "bad").file
    path.write_text(path.read_text() + "\n" + table)
    with pytest.raises(ValueError) as err:
        load_study(path)
    assert str(path) in str(err.value) and error in str(err.value)
    path.write_text(path.read_text().replace(table, "[confirm]\ntop = 2\n"))
    assert (load_study(path).confirm_top, load_study(path).confirm_seeds) == (2, 3)


def test_the_seed_study_confirms_by_default_and_the_default_study_does_not() -> None:
    seed, default = load_study("seed"), load_study("default")
    assert (seed.confirm_top, seed.confirm_seeds) == (3, 3)
    assert default.confirm_top == 0, "the 15-minute CPU default leaves no time to confirm"


@pytest.mark.slow
def test_an_interrupted_confirm_resumes_with_no_duplicate_and_nothing_running(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # One trial of 30 epochs (a retrain takes seconds), confirmed with 3 seeds: stopped by SIGTERM after
    # its first retrain, then killed -9 mid-retrain, then run to the end.
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    env = StudyEnv(tmp_path, "intr", trials=1, epochs=30, **TINY)
    assert env.run() == 0
    args, run_env, log = env.read_args("--top", "1", "--seeds", "3", "--device", "cpu"), cli_env(tmp_path / "cache"), \
        tmp_path / "confirm.log"

    def runs(status: str) -> list[Run]:
        return [r for r in confirm_runs(env) if r.info.status == status]

    proc = start_run(args, run_env, log, module="search.confirm")
    wait_for(lambda: runs("FINISHED") or proc.poll() is not None, 300, "a finished retrain")
    assert proc.poll() is None, "the confirm ended before it was interrupted:\n" + log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    assert not runs("RUNNING") and all(r.info.run_name.endswith("-killed") for r in runs("KILLED"))
    kept = {r.info.run_id for r in runs("FINISHED")}
    assert 1 <= len(kept) < 3

    proc = start_run(args, run_env, log, module="search.confirm")
    victim = wait_for(lambda: [r for r in runs("RUNNING") if val_miou(env, r)] or proc.poll() is not None, 300,
                      "a retrain in mid-training")
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.kill()
    proc.wait()
    assert confirm_main(args) == 0  # ends the orphaned run KILLED, retrains only what is missing
    finished = runs("FINISHED")
    assert sorted(r.info.run_name for r in finished) == [f"confirm-000-seed-{i}" for i in (1, 2, 3)], "no duplicate"
    assert kept <= {r.info.run_id for r in finished}, "finished retrains are never repeated"
    assert not runs("RUNNING")
    orphan = env.client.get_run(victim[0].info.run_id)
    assert orphan.info.status == "KILLED" and orphan.info.run_name.endswith("-killed")
    assert {r.info.status for r in confirm_runs(env)} <= {"FINISHED", "KILLED"}
    assert registry(env).get_model_version_by_alias(env.name, CHAMPION).tags["confirmed_seeds"] == \
        "1000001,1000002,1000003"
