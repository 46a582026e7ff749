"""A tracking server that is down, slow, or dies mid-study: bounded retries and a clear error, never
a hang, and Optuna keeps every result. Real `mlflow server` processes; nothing is mocked."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import optuna
import pytest

from tests.faultkit import all_runs, cli_env, free_port, kill_group, mlflow_server, start_run, wait_for
from tests.studykit import StudyEnv


def _run_in_process(tmp_path: Path, tracking: str, monkeypatch) -> int:
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    return StudyEnv(tmp_path, "outage", tracking_uri=tracking, trials=1).run()


def test_server_down_at_start_is_a_clear_error_in_bounded_time(tmp_path, monkeypatch, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    assert _run_in_process(tmp_path, url, monkeypatch) == 2
    assert time.monotonic() - start < 120, "bounded retries"
    err = capsys.readouterr().err.replace("\n", "")
    assert url in err and "unavailable" in err


def test_slow_server_times_out_instead_of_hanging(tmp_path, monkeypatch, capsys) -> None:
    """A server that accepts connections and never answers."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_ignore() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_ignore, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        assert _run_in_process(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}", monkeypatch) == 2
        assert time.monotonic() - start < 120
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert "unavailable" in capsys.readouterr().err


@pytest.mark.slow
def test_server_dying_mid_study_keeps_optuna_results_and_the_rerun_reconciles(tmp_path: Path) -> None:
    port = free_port()
    study_env = StudyEnv(tmp_path, "outage", tracking_uri=f"http://127.0.0.1:{port}", trials=4, epochs=6)
    env, log = cli_env(tmp_path / "cache", MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_TIMEOUT="5"), \
        tmp_path / "run.log"
    with mlflow_server(tmp_path / "tracking", port) as (url, server):
        assert url == study_env.tracking_uri
        args = study_env.run_args()
        proc = start_run(args, env, log)

        def first_trial_done() -> bool:
            try:
                study = study_env.study()
            except KeyError:
                return proc.poll() is not None
            return proc.poll() is not None or any(t.state.is_finished() for t in study.trials)

        wait_for(first_trial_done, 240, "the first trial to finish")
        kill_group(server)  # the tracking server dies mid-study
        start = time.monotonic()
        rc = proc.wait(timeout=300)
        stopped_after = time.monotonic() - start
    assert rc == 3, log.read_text()[-3000:]
    text = log.read_text()
    assert url in text and "Optuna kept every result" in text
    study = study_env.study()
    assert all(t.state.is_finished() for t in study.trials), "no trial left RUNNING in Optuna"
    hit = [t for t in study.trials if t.user_attrs.get("tracking_error")]
    assert hit, "the trial that met the outage says so"
    assert any(t.state != optuna.trial.TrialState.FAIL for t in hit) or \
        all(t.user_attrs.get("fail_reason") == "tracking unavailable" for t in hit)

    with mlflow_server(tmp_path / "tracking", port) as (url, _):  # the server is back: rerun the same command
        assert start_run(args, env, log).wait(timeout=300) == 0, log.read_text()[-3000:]
        runs = all_runs(url, "outage")
        assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "the rerun ended the orphaned runs"
    print(f"\n[figure] tracking server killed mid-study: the run stopped {stopped_after:.1f}s later with exit code 3")
