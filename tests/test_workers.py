"""Several worker processes on one study: `--workers 3` on a journal file, and three separate
processes (as on three machines) on a real PostgreSQL server with a real MLflow tracking server.

Each asserts, through Optuna's and MLflow's own clients, that exactly the requested number of trials
finished, no trial number repeats, every attempt has exactly one MLflow run, no run is left RUNNING
and the states agree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.faultkit import assert_consistent, cli_env, postgres_available, start_run
from tests.studykit import StudyEnv

WORKERS = 3
TRIALS = 9


def _sampled(study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.slow
def test_three_workers_share_a_journal_study(tmp_path: Path) -> None:
    # fresh_tracking: the parent makes the MLflow schema before its workers start.
    env = StudyEnv(tmp_path, "workers", storage=str(tmp_path / "optuna.journal"), fresh_tracking=True, epochs=3,
                   pruner="sha", sampler="tpe", pruner_settings={"min_resource": 1, "reduction_factor": 3})
    start = time.monotonic()
    proc = start_run(env.run_args("--workers", str(WORKERS), "--trials", str(TRIALS)), cli_env(tmp_path / "cache"),
                     tmp_path / "run.log")
    rc = proc.wait(timeout=480)
    elapsed = time.monotonic() - start
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
    study = assert_consistent(env.storage, env.tracking_uri, "workers", TRIALS)
    assert len(study.trials) == TRIALS
    assert {t.user_attrs["worker"] for t in study.trials} == set(range(WORKERS)), "every worker ran trials"
    assert len(set(_sampled(study))) == TRIALS, "workers never drew identical parameters"
    print(f"\n[figure] journal stress: {WORKERS} workers x {TRIALS} trials of 3 epochs in {elapsed:.1f}s")


@pytest.mark.slow
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (Debian's postgresql package) is not installed")
def test_three_machines_share_a_postgres_study_and_tracking_server(tmp_path: Path, pg_and_tracking) -> None:
    env = cli_env(tmp_path / "cache")
    storage, tracking = pg_and_tracking  # a fresh database; the session's tracking server
    study_env = StudyEnv(tmp_path, "pg", storage=storage, tracking_uri=tracking, epochs=2, pruner="median",
                         sampler="tpe", pruner_settings={"n_startup_trials": 2, "n_warmup_steps": 1})
    common = study_env.run_args()
    init = start_run([*common, "--trials", "0"], env, tmp_path / "init.log")  # schemas, study, parent run: once
    assert init.wait(timeout=180) == 0, (tmp_path / "init.log").read_text()[-3000:]
    start = time.monotonic()
    procs = [start_run([*common, "--total-trials", str(TRIALS), "--seed", str(i)], env, tmp_path / f"m{i}.log")
             for i in range(WORKERS)]
    codes = [p.wait(timeout=480) for p in procs]
    elapsed = time.monotonic() - start
    assert codes == [0] * WORKERS, "\n".join((tmp_path / f"m{i}.log").read_text()[-2000:] for i in range(WORKERS))
    study = assert_consistent(storage, tracking, "pg", TRIALS)
    assert len(study.trials) == TRIALS
    assert len(set(_sampled(study))) == TRIALS
    # With a tracking server, one click from Optuna to MLflow: the UI pages in the user attrs.
    experiment, view = f"{tracking}/#/experiments/{study_env.experiment_id('pg')}", "?workflowType=machine_learning"
    assert study.user_attrs["mlflow_experiment_url"] == experiment + view
    for t in study.trials:
        assert t.user_attrs["mlflow_run_url"] == f"{experiment}/runs/{t.user_attrs['mlflow_run_id']}{view}"
    print(f"\n[figure] PostgreSQL stress: {WORKERS} processes x {TRIALS} trials of 2 epochs in {elapsed:.1f}s")


# --------------------------------------------------------------------------- the pieces, without processes


def test_workers_get_gpus_round_robin_and_cpu_shares() -> None:
    from search.workers import worker_env

    gpus = ["0", "1"]
    assert [worker_env(i, 3, gpus)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    env = worker_env(0, 2, [])
    assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES"), "CPU workers: left alone"
    assert int(env["OMP_NUM_THREADS"]) >= 1


def test_worker_seeds_differ_and_worker_zero_keeps_the_run_seed() -> None:
    from search.workers import derive_seed

    seeds = [derive_seed(7, i) for i in range(8)]
    assert seeds[0] == 7 and len(set(seeds)) == 8


def test_worker_argv_replaces_the_run_level_flags() -> None:
    from search.workers import worker_argv

    argv = worker_argv(["--workers", "3", "--trials=9", "--study", "s.toml", "--total-trials", "5"], 2, 12)
    assert argv[1:3] == ["-m", "search.run"]
    assert argv[3:] == ["--study", "s.toml", "--worker-index", "2", "--target-total", "12"]
    # An epoch budget is the study's total: the parent's resolved one replaces the flag; no trial target, none given.
    argv = worker_argv(["--total-epochs=30", "--study", "s.toml"], 0, None, 40)
    assert argv[3:] == ["--study", "s.toml", "--worker-index", "0", "--total-epochs", "40"]
    # The parent's planning spent some of --timeout: the workers get what is left, not the flag.
    argv = worker_argv(["--timeout", "600", "--study", "s.toml"], 1, None, None, 541.26)
    assert argv[3:] == ["--study", "s.toml", "--worker-index", "1", "--timeout", "541.3"]


def test_several_workers_on_sqlite_are_refused_with_the_fix(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    rc = StudyEnv(tmp_path, "s").run("--workers", "2")
    assert rc == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "--workers 2" in err and "journal" in err and "postgresql://" in err
    assert not (tmp_path / "optuna.db").exists(), "refused before anything was created"
