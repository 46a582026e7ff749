"""Confirmation with retrains that do not finish: ranking, crowning and wording with partial and failed
retrains, and the out-of-memory retry, on a real tiny study checked through Optuna's and MLflow's own
clients. The faults are injected into our own code (`search.confirm_retrains.fit`), never into Optuna or MLflow.

The study "cfault" runs one real trial G (a depth-3 UNet, lr 0.01, the configuration `test_confirm`
measured at final val mIoU 0.042-0.104 after 8 epochs); then a lucky draw L joins through Optuna's
API, value 0.99, with lr 1e-8 (measured 0.019-0.037: it barely moves). `search.confirm --top 2
--seeds 3` retrains both with seeds 1000001-1000003, and:
- G: seed 1 has a non-finite loss (final), seed 2 runs out of memory twice (final), seed 3 finishes:
  one finished retrain, [nan, oom, x] - the issue's [nan, nan, 0.90];
- L: seed 2 runs out of memory once, is retried after all the other retrains and finishes: 3 of 3.
So G's single value beats L's mean, yet L is ranked first and crowned.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import optuna
import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from rich.console import Console

import search.confirm_retrains
from search.confirm import main as confirm_main
from search.display import print_confirmation
from search.registry import CHAMPION
from search.report.confirm_section import confirm_section
from search.study.confirm_record import confirmed_figure, confirmed_text, ranked, summarize
from search.tracking.confirm_run import Retrain
from seg.config import Config
from seg.train import NonFiniteLossError
from tests.studykit import StudyEnv

EPOCHS, SEEDS = 8, (1_000_001, 1_000_002, 1_000_003)
SPACE = {"model.depth": 3, "model.base_channels": 8, "model.max_channels": 32, "model.upsample": "bilinear",
         "train.optimizer": "adam", "train.lr": {"choices": [0.01]}, "train.momentum": None,
         "train.batch_size": 4, "transforms.crop_size": 48}
LUCKY_LR = 1e-8


def confirm_runs(env: StudyEnv) -> list[Run]:
    runs = [r for r in env.children() if r.data.tags.get("run_kind") == "confirm"]
    return sorted(runs, key=lambda r: r.info.start_time)


def runs_of(env: StudyEnv, trial: int, seed_index: int) -> list[Run]:
    return [r for r in confirm_runs(env) if r.data.tags["confirm_trial"] == str(trial)
            and r.data.tags["confirm_seed_index"] == str(seed_index)]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyEnv, int, int, list[tuple[str, int]]]]:
    """(the study, G's trial number, L's trial number, the retrains `fit` was called for, in order)."""
    root = tmp_path_factory.mktemp("confirm-faults")
    calls: list[tuple[str, int]] = []
    real_fit = search.confirm_retrains.fit

    def fit(cfg: Config, data, on_epoch_end=None):
        key = ("L" if cfg.train.lr == LUCKY_LR else "G", cfg.train.seed)
        calls.append(key)
        if key == ("G", SEEDS[0]):
            raise NonFiniteLossError("loss is nan at epoch 0 (injected)")
        if key == ("G", SEEDS[1]) or (key == ("L", SEEDS[1]) and calls.count(key) == 1):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_fit(cfg, data, on_epoch_end=on_epoch_end)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEG_CACHE_DIR", str(root / "cache"))
        env = StudyEnv(root, "cfault", trials=1, epochs=EPOCHS, space=SPACE)
        assert env.run() == 0
        good = env.study().best_trial.number
        lucky = Config.from_dict(env.study().best_trial.user_attrs["config"]).replace(train={"lr": LUCKY_LR})
        env.study().add_trial(optuna.trial.create_trial(value=0.99, user_attrs={"config": lucky.to_dict(),
                                                                                "epochs_trained": EPOCHS}))
        mp.setattr(search.confirm_retrains, "fit", fit)
        assert confirm_main(env.read_args("--top", "2", "--seeds", "3", "--device", "cpu")) == 0
        yield env, good, env.study().best_trial.number, calls


def test_a_configuration_with_missing_seeds_ranks_below_every_complete_one_and_is_not_crowned(faulty) -> None:
    env, good, lucky, _ = faulty
    record = env.study().user_attrs["confirm"]
    assert record["complete"] and [c["trial"] for c in record["configs"]] == [lucky, good]
    by_trial = {c["trial"]: c for c in record["configs"]}
    g, lu = by_trial[good], by_trial[lucky]
    assert (g["finished"], g["failed"], lu["finished"], lu["failed"]) == (1, 2, 3, 0)
    assert g["final_mean"] > lu["final_mean"], "the premise: G's one value beats L's mean of three"
    assert g["final_sd"] is None, "one value has no sd"
    assert record["champion"]["trial"] == lucky
    champion = MlflowClient(env.tracking_uri, registry_uri=env.tracking_uri).get_model_version_by_alias(
        env.name, CHAMPION)
    assert champion.tags["trial_number"] == str(lucky) and champion.tags["confirmed_of_seeds"] == "3"
    assert champion.tags["confirmed_seeds"] == ",".join(map(str, SEEDS))
    assert champion.description.endswith(f"over 3 seeds (search: {lu['search_value']:.4f})")


def test_an_oom_is_retried_once_after_the_other_retrains_and_final_only_if_it_repeats(faulty) -> None:
    env, good, lucky, calls = faulty
    first = [("L", s) for s in SEEDS] + [("G", s) for s in SEEDS]
    assert calls == [*first, ("L", SEEDS[1]), ("G", SEEDS[1])], "the OOMs' second tries come last"
    once = runs_of(env, lucky, 2)
    assert [r.info.status for r in once] == ["FAILED", "FINISHED"]
    assert once[0].data.tags["confirm_state"] == "RETRY"
    assert once[0].info.run_name == f"confirm-{lucky:03d}-seed-2-failed"
    assert once[0].data.tags["fail_reason"].startswith("oom: out of memory (batch 4); retried once")
    others = [r for r in confirm_runs(env) if r.info.run_id not in {x.info.run_id for x in once}]
    assert once[1].info.start_time >= max(r.info.end_time for r in others[:-1]), "after the other retrains"
    twice = runs_of(env, good, 2)
    assert [(r.info.status, r.data.tags["confirm_state"]) for r in twice] == [("FAILED", "RETRY"), ("FAILED", "FAILED")]
    assert twice[1].data.tags["fail_reason"].endswith("again: final")
    nan = runs_of(env, good, 1)
    assert [(r.info.status, r.data.tags["confirm_state"]) for r in nan] == [("FAILED", "FAILED")], "nan: no retry"
    assert [r.info.status for r in runs_of(env, good, 3)] == ["FINISHED"]


def test_partial_and_single_values_read_k_of_s_seeds_with_no_plus_minus_zero(faulty) -> None:
    env, good, lucky, _ = faulty
    study = env.study()
    record = study.user_attrs["confirm"]
    g = next(c for c in record["configs"] if c["trial"] == good)
    assert confirmed_figure(g, 3) == f"{g['final_mean']:.4f} over 1 of 3 seeds"
    out = io.StringIO()
    print_confirmation(Console(file=out, width=200), record)
    row = next(line for line in out.getvalue().splitlines() if f"{g['final_mean']:.4f}" in line)
    assert "1 of 3 seeds, 2 failed" in row and "±" not in row
    html = confirm_section(study).body
    assert "1 of 3 seeds" in html and "± 0.0000" not in html
    assert "over 3 seeds" in confirmed_text(record) and f"trial {lucky}" in confirmed_text(record)


def test_a_rerun_retrains_nothing_a_repeated_oom_is_final(faulty, monkeypatch: pytest.MonkeyPatch) -> None:
    env, _, _, _ = faulty
    before = {r.info.run_id for r in confirm_runs(env)}

    def no_fit(*args, **kwargs):
        raise AssertionError("nothing is left to retrain")

    monkeypatch.setattr(search.confirm_retrains, "fit", no_fit)
    assert confirm_main(env.read_args("--top", "2", "--seeds", "3", "--device", "cpu")) == 0
    assert {r.info.run_id for r in confirm_runs(env)} == before


# --------------------------------------------------------------------------- the record, without training


def configs(*finals: list[float | None]) -> list[dict]:
    """One configuration per list of per-seed finals (None: that retrain failed), trials 0, 1, ..."""
    study = optuna.create_study(direction="maximize")
    out = []
    for number, values in enumerate(finals):
        study.add_trial(optuna.trial.create_trial(value=0.5))
        retrains = [Retrain(number, i, SEEDS[i - 1], f"run{number}{i}", "FINISHED" if v is not None else "FAILED",
                            v, v) for i, v in enumerate(values, start=1)]
        out.append(summarize(study.trials[number], retrains))
    return out


def test_nan_nan_090_ranks_below_088_087_089() -> None:
    lucky, steady = configs([None, None, 0.90], [0.88, 0.87, 0.89])
    assert [c["trial"] for c in ranked([lucky, steady], maximize=True, seeds=3)] == [1, 0]
    assert confirmed_figure(lucky, 3) == "0.9000 over 1 of 3 seeds"
    assert confirmed_figure(steady, 3) == "0.8800 ± 0.0100 over 3 seeds"


def test_without_a_complete_configuration_more_seeds_rank_first_and_one_seed_reads_1_seed() -> None:
    one, two, none = configs([0.95, None, None], [0.80, 0.82, None], [None, None, None])
    assert [c["trial"] for c in ranked([one, none, two], maximize=True, seeds=3)] == [1, 0, 2]
    assert confirmed_figure(none, 3) == "no finished retrain of 3 seeds"
    (single,) = configs([0.9])
    assert confirmed_figure(single, 1) == "0.9000 over 1 seed"
    (low, high) = configs([0.2, 0.3], [0.6, 0.7])
    assert [c["trial"] for c in ranked([high, low], maximize=False, seeds=2)] == [0, 1], "minimize: lower first"


def test_a_rerun_retries_an_earlier_oom_once_more_and_keeps_a_final_one(tmp_path) -> None:
    """The MLflow runs are the record: an OOM attempt (`confirm_state=RETRY`) left by a confirm that
    stopped before its retry is found by the next one (`out_of_memory`) and not counted as done; a
    repeated OOM (`FAILED`) is done."""
    from search.tracking.client import Tracker
    from search.tracking.confirm_run import ConfirmRuns

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracker.experiment_id("oom")
    parent = tracker.start_run(experiment, "study", {})
    runs = ConfirmRuns(tracker, experiment, parent, "oom")
    cfg = Config()
    for key in ((3, 1), (3, 2)):  # both run out of memory; the confirm stops before retrying (3, 1)
        run_id = runs.start(key, SEEDS[key[1] - 1], cfg, 0.5)
        runs.fail(run_id, key, SEEDS[key[1] - 1], "oom: out of memory (batch 8); retried once", final=False)
    run_id = runs.start((3, 2), SEEDS[1], cfg, 0.5)  # (3, 2)'s retry: out of memory again
    runs.fail(run_id, (3, 2), SEEDS[1], "oom: out of memory (batch 8), again: final", final=True)
    again = ConfirmRuns(tracker, experiment, parent, "oom")
    done = again.done({3: cfg.train.epochs})  # the length these retrains trained: all counted
    assert set(done) == {(3, 2)} and done[(3, 2)].status == "FAILED"
    assert again.out_of_memory == {(3, 1), (3, 2)}, "both ran out of memory once; (3, 2) is done"
