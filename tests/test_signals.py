"""Ctrl-C and SIGTERM never cut a storage write in half (search.signals)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient

from search.guards.signals import SignalHold, deferred_signals
from search.tracking.client import Tracker


class Stop(Exception):
    pass


def raise_stop(signum, frame):
    raise Stop(signum)


@pytest.fixture(autouse=True)
def ctrl_c_raises_keyboard_interrupt():
    # A shell that starts pytest in the background starts it with SIGINT ignored (SIG_IGN), and an ignored
    # Ctrl-C must stay ignored; these tests are about Python's own default, so they set it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigterm_raises_stop():
    previous = signal.signal(signal.SIGTERM, raise_stop)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_inside_the_block_is_delivered_when_it_ends() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the block ran")
    assert done == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_previous_handler_is_restored_and_gets_the_signal(sigterm_raises_stop) -> None:
    with pytest.raises(Stop):
        with deferred_signals():
            assert signal.getsignal(signal.SIGTERM) is not raise_stop
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is raise_stop
    with deferred_signals():  # nothing came: nothing is raised
        pass


def test_a_second_signal_is_delivered_at_once(sigterm_raises_stop) -> None:
    reached = []
    with pytest.raises(Stop):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append(2)
    assert reached == [1]
    assert signal.getsignal(signal.SIGTERM) is raise_stop


def test_nested_blocks_deliver_once_at_the_outer_end(sigterm_raises_stop) -> None:
    order = []
    with pytest.raises(Stop):
        with deferred_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
            order.append("after the inner block")
    assert order == ["after the inner block"]


def test_outside_the_main_thread_it_changes_nothing() -> None:
    errors = []

    def work() -> None:
        try:
            with deferred_signals():
                pass
        except Exception as err:  # signal.signal would raise ValueError outside the main thread
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == []


@pytest.mark.parametrize("where", ["SELECT RUNS.", "INSERT INTO METRICS"])
def test_ctrl_c_inside_an_mlflow_write_leaves_the_sqlite_store_usable(tmp_path: Path, where: str) -> None:
    # Ctrl-C lands while MLflow's session logs the epoch's metrics. Without deferral, one landing
    # on its first SELECT skips MLflow's rollback and the session keeps SQLite's lock: ending the
    # run then fails with "database is locked" after 20 s and the run stays RUNNING.
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = tracker.start_run(tracker.experiment_id("sig"), "trial-000", {})
    fired = []

    def interrupt_once(cursor, statement, parameters, context) -> bool:
        # Runs the statement as SQLAlchemy would, then Ctrl-C arrives before control leaves the
        # DBAPI call: where a real Ctrl-C lands while SQLite works.
        cursor.execute(statement, parameters)
        if not fired and statement.lstrip().upper().startswith(where):
            fired.append(statement)
            os.kill(os.getpid(), signal.SIGINT)
        return True

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "do_execute", interrupt_once)
    try:
        tracker.log_metrics(run_id, {"val_miou": 0.5}, step=0)
    except KeyboardInterrupt as err:
        # The objective ends the run while the exception (and so its traceback's frames) is alive.
        interrupted = err
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "do_execute", interrupt_once)
    assert fired, "the interrupt never fired inside the write"
    assert isinstance(interrupted, KeyboardInterrupt), "Ctrl-C was delivered after the write"
    tracker.end_run(run_id, "FAIL", reason="interrupted", status="KILLED")
    run = MlflowClient(tracker.tracking_uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["fail_reason"] == "interrupted"
    assert run.data.metrics["val_miou"] == 0.5, "the interrupted write completed"


class Interrupt(KeyboardInterrupt):
    pass


def raise_interrupt(signum, frame):
    raise Interrupt(signum)


@pytest.mark.parametrize("outcome", ["complete", "pruned"])
def test_a_sigterm_after_the_objective_returns_waits_for_optunas_tell(outcome: str, tmp_path: Path) -> None:
    """The objective starts the hold as it returns and SIGTERM comes before Optuna stores the state:
    the trial is still stored COMPLETE or PRUNED, then the signal stops optimize from the first callback."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="hold")
    hold, after = SignalHold(), []

    def objective(trial: optuna.Trial) -> float:
        hold.start()
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the objective's end and Optuna's tell
        if outcome == "pruned":
            raise optuna.TrialPruned()
        return 0.5

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with pytest.raises(Interrupt):
            study.optimize(objective, n_trials=3, callbacks=[hold.release, lambda s, t: after.append(t.number)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    (trial,) = optuna.load_study(study_name="hold", storage=storage).trials
    expected = optuna.trial.TrialState.COMPLETE if outcome == "complete" else optuna.trial.TrialState.PRUNED
    assert trial.state == expected
    assert after == []  # the signal stopped the run at the first callback, before the next trial
    hold.release()  # nothing held any more: a no-op
    assert signal.getsignal(signal.SIGTERM) is previous
