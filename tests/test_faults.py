"""Faults, each one a test: signals, kill -9 and resume, a hung trial, out-of-memory, a non-finite
loss, a bug in the objective. Real Optuna and MLflow storages in a temp dir; the faults are injected
into our own code (`seg`, `search`), never into Optuna or MLflow."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest
import torch

import search.tracking.trial_run
import seg.gpu_data
import seg.losses
import seg.train
from search.tracking.client import trial_run_name
from tests.faultkit import all_runs, assert_consistent, cli_env, running_trial_with_progress, start_run, wait_for
from tests.studykit import StudyEnv

FAIL, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """For in-process runs: the dataset cache in tmp, and the SIGTERM handler restored afterwards."""
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, sigterm)


def _fail_once(monkeypatch: pytest.MonkeyPatch, module: object, name: str, make_error) -> None:
    """Replace module.name so its first call misbehaves (make_error() raises or returns), later calls are real."""
    real, calls = getattr(module, name), []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return make_error(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, patched)


# --------------------------------------------------------------------------- expected failures


def test_cuda_oom_during_training_fails_the_trial_and_the_study_goes_on(tmp_path, monkeypatch, in_process) -> None:
    env = StudyEnv(tmp_path, "oom", trials=2)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    _fail_once(monkeypatch, seg.train, "train_step", oom)
    assert env.run() == 0
    first, second = env.study().trials
    assert first.state == FAIL and first.user_attrs["fail_reason"] == "oom"
    assert "out of memory during training" in first.user_attrs["fail_detail"]
    run = env.trial_run(first)
    assert run.info.status == "FAILED" and run.data.tags["fail_reason"] == "oom"
    assert second.state == COMPLETE, "the study continues after an OOM"


@pytest.mark.cuda
def test_cuda_memory_is_back_at_baseline_after_an_oom(tmp_path, monkeypatch, in_process) -> None:
    env = StudyEnv(tmp_path, "oom-gpu", trials=2)
    baseline = torch.cuda.memory_allocated()

    def oom(model, x, *args, **kwargs):
        model(x)  # hold real activations, then fail as a real OOM would
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    _fail_once(monkeypatch, seg.train, "train_step", oom)
    assert env.run(device="cuda") == 0
    first, second = env.study().trials
    assert first.state == FAIL and first.user_attrs["fail_reason"] == "oom"
    # At most the baseline: the OOM path also drops the model cache, which may hold what earlier tests
    # in this process left (on an H200, 33,581,056 bytes after vs 33,856,512 before); more would be a leak.
    assert first.user_attrs["cuda_memory_allocated_after"] <= baseline
    assert second.state == COMPLETE, "the next trial runs after the OOM"


def test_config_over_the_memory_limit_is_rejected_before_training(tmp_path, in_process) -> None:
    env = StudyEnv(tmp_path, "memcap", trials=2)
    assert env.run("--memory-limit-gb", "0.0001") == 0
    for t in env.study().trials:
        assert t.state == FAIL and t.user_attrs["fail_reason"] == "oom"
        assert "exceeds" in t.user_attrs["fail_detail"] and "before training" in t.user_attrs["fail_detail"]
        assert t.user_attrs["epochs_trained"] == 0, "rejected at once, nothing trained"
        assert t.user_attrs["memory_estimate_gib"] > 0.0001
        assert env.trial_run(t).data.tags["fail_reason"] == "oom"


def test_memory_limit_keeps_configs_that_fit(tmp_path, in_process) -> None:
    env = StudyEnv(tmp_path, "memfit", trials=1)
    assert env.run("--memory-limit-gb", "4") == 0
    (t,) = env.study().trials
    assert t.state == COMPLETE and 0 < t.user_attrs["memory_estimate_gib"] < 4


def test_non_finite_loss_fails_at_once_and_is_never_best(tmp_path, monkeypatch, in_process) -> None:
    env = StudyEnv(tmp_path, "nan", trials=2, epochs=3)
    _fail_once(monkeypatch, seg.losses, "masked_cross_entropy", lambda logits, target: logits.sum() * float("nan"))
    assert env.run() == 0
    study = env.study()
    nan_trial, good = study.trials
    assert nan_trial.state == FAIL and nan_trial.user_attrs["fail_reason"] == "nan"
    assert not nan_trial.intermediate_values, "stopped in its first epoch"
    assert study.best_trial.number == good.number
    assert env.trial_run(nan_trial).data.tags["fail_reason"] == "nan"


def test_hung_trial_is_failed_by_its_wall_clock_limit(tmp_path, monkeypatch, in_process) -> None:
    env = StudyEnv(tmp_path, "hang", trials=2)
    # A stuck loader: on CPU `fit` batches the data in host memory by default, one `DeviceLoader.batch`
    # call per batch (its documented per-batch seam).
    _fail_once(monkeypatch, seg.gpu_data.DeviceLoader, "batch", lambda *a: time.sleep(3600))
    start = time.monotonic()
    assert env.run("--trial-timeout", "4") == 0
    assert time.monotonic() - start < 600
    hung, after = env.study().trials
    assert hung.state == FAIL and hung.user_attrs["fail_reason"] == "timeout"
    assert "wall-clock limit of 4 s" in hung.user_attrs["fail_detail"]
    assert env.trial_run(hung).info.status == "FAILED"
    assert after.state == COMPLETE


def test_a_bug_stops_the_run_with_its_traceback_and_a_failed_run(tmp_path, monkeypatch, in_process) -> None:
    env = StudyEnv(tmp_path, "bug", trials=2)

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a real bug")

    monkeypatch.setattr(search.tracking.trial_run, "log_trial_artifacts", bug)
    with pytest.raises(ZeroDivisionError, match="a real bug"):
        env.run()
    (t,) = env.study().trials  # the run stopped: no second trial
    assert t.state == FAIL and t.user_attrs["fail_reason"].startswith("error: ZeroDivisionError")
    run = env.trial_run(t)
    assert run.info.status == "FAILED" and "ZeroDivisionError" in run.data.tags["traceback"]
    assert not [r for r in all_runs(env.tracking_uri, "bug") if r.info.status == "RUNNING"]


# --------------------------------------------------------------------------- signals and kill -9


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "workers"), [(signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 1),
                                                      (signal.SIGTERM, 143, 2)])
def test_signal_mid_trial_fails_it_kills_its_run_and_the_study_resumes(tmp_path: Path, sig, code, workers) -> None:
    # Long trials (60 epochs of ~0.2 s), so the signal surely lands mid-trial.
    env = StudyEnv(tmp_path, "sig", storage=str(tmp_path / "optuna.journal"), trials=workers, epochs=60)
    run_env, log = cli_env(tmp_path / "cache"), tmp_path / "run.log"
    proc = start_run(env.run_args("--workers", str(workers)), run_env, log)
    wait_for(lambda: running_trial_with_progress(env.storage, env.name) or proc.poll() is not None, 240,
             "a trial in mid-training")
    assert proc.poll() is None, "the run ended before a trial was caught mid-training:\n" + log.read_text()[-3000:]
    proc.send_signal(sig)
    assert proc.wait(timeout=180) == code, log.read_text()[-3000:]
    trials = env.study().trials
    interrupted = [t for t in trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert interrupted and all(t.state == FAIL for t in interrupted)
    assert all(t.state.is_finished() for t in trials), "nothing left RUNNING"
    assert {env.trial_run(t).info.status for t in interrupted} == {"KILLED"}
    assert not [r for r in all_runs(env.tracking_uri, env.name) if r.info.status == "RUNNING"]
    if sig == signal.SIGTERM and workers == 1:  # the command again (shorter trials) resumes the study
        before, parent = len(trials), env.study().user_attrs["mlflow_parent_run_id"]
        assert start_run(env.run_args("--epochs", "3"), run_env, log).wait(timeout=300) == 0, log.read_text()[-3000:]
        after = env.study().trials
        assert len(after) > before and after[-1].state.is_finished()
        assert env.study().user_attrs["mlflow_parent_run_id"] == parent, "the resumed study keeps its parent run"


@pytest.mark.slow
@pytest.mark.parametrize("storage_kind", ["journal", "sqlite"])
def test_kill_9_then_restart_retries_the_stale_trial_once(tmp_path: Path, storage_kind: str) -> None:
    storage = str(tmp_path / "optuna.journal") if storage_kind == "journal" else f"sqlite:///{tmp_path}/optuna.db"
    env = StudyEnv(tmp_path, "kill9", storage=storage, trials=3, epochs=30)
    run_env, log = cli_env(tmp_path / "cache"), tmp_path / "run.log"
    args = env.run_args("--heartbeat", "1", "--grace", "3")
    proc = start_run(args, run_env, log)
    victim = wait_for(lambda: running_trial_with_progress(env.storage, env.name) or proc.poll(), 240,
                      "a trial in mid-training")
    assert isinstance(victim, optuna.trial.FrozenTrial), log.read_text()[-3000:]
    proc.kill()
    killed_at = time.time()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert start_run(args, run_env, log).wait(timeout=300) == 0, log.read_text()[-3000:]

    study = env.study()
    stale = next(t for t in study.trials if t.number == victim.number)
    assert stale.state == FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1, "retried exactly once"
    retry = retries[0]
    assert retry.params == stale.params and retry.state.is_finished()
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == victim.number
    stale_run = env.trial_run(stale)
    assert stale_run.info.status == "KILLED" and stale_run.info.run_name == trial_run_name(victim.number, "stale")
    assert stale_run.data.tags["fail_reason"].startswith("stale")
    assert_consistent(env.storage, env.tracking_uri, env.name, expected_counted=3)
    detected = stale.datetime_complete.timestamp() - killed_at
    retried = retry.datetime_start.timestamp() - killed_at
    print(f"\n[figure] kill -9 ({storage_kind}, heartbeat 1 s, grace 3 s, restart at once): stale trial failed "
          f"{detected:.1f}s after the kill, retry started {retried:.1f}s after it")
