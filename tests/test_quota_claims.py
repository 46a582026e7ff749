"""The trial quota across groups of workers that do not share a lock file (other machines, other SLURM
jobs), on a real Optuna journal storage with our lease and stale-trial retries.

Each worker here is a thread with its own storage object on the journal file, its own claimant name
and the quota of `search.run` (`StudyQuota`: claim, `start` in the objective, `after_trial` as the
Optuna callback), as `search.run`'s `optimize` drives it; a group is the workers sharing one lock
file. The objective trains nothing (a trial takes a few ms), so the races are many and the test
takes seconds. Checked through Optuna's own API: the trials, their states and attrs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.study.lease import LEASE_ATTR
from search.study.quota import (
    LOCK_DIR_ENV,
    SURPLUS_ATTR,
    Budget,
    StudyQuota,
    SurplusTrial,
    counted_trials,
    lock_path_for,
)
from search.study.stale import (
    CLAIMED_BY_ATTR,
    CLAIMED_UNTIL_ATTR,
    RETRY_OF_ATTR,
    StaleTrialHandler,
    take_over_retry,
)
from search.study.storage import open_storage
from tests.faultkit import assert_consistent, cli_env, postgres_available, start_run
from tests.studykit import TINY, StudyEnv

NAME = "quota"
HEARTBEAT, GRACE = 1, 2


def worker_study(journal: Path, owner: str) -> optuna.Study:
    """One worker's view of the study: its own storage object, its stale-trial handler naming it."""
    handler = StaleTrialHandler("unused://no-runs-to-end", GRACE, owner=owner)  # the trials here have no run
    storage = open_storage(str(journal), HEARTBEAT, GRACE, handler)
    return optuna.create_study(study_name=NAME, storage=storage, direction="maximize", load_if_exists=True)


def quota(study: optuna.Study, budget: int, lock: Path, owner: str, wait: bool = True) -> StudyQuota:
    return StudyQuota(study, Budget(trials=budget), lock, max_epochs=1, poll_s=0.02, wait_for_running=wait,
                      owner=owner)


def run_worker(study: optuna.Study, lock: Path, owner: str, budget: int, errors: list[BaseException]) -> None:
    """What search.run's `optimize` does with one worker, with an objective of a few ms."""
    try:
        q = quota(study, budget, lock, owner)

        def objective(trial: optuna.Trial) -> float:
            q.start(trial)
            trial.set_user_attr("worker", owner)
            time.sleep(0.005 + 0.01 * (trial.number % 3))
            return float(trial.number)

        try:
            if q.claim():
                study.optimize(objective, callbacks=[q.after_trial], catch=(SurplusTrial,))
        finally:
            q.release()
    except BaseException as err:  # noqa: BLE001 - reported by the test, not lost in the thread
        errors.append(err)


def run_groups(journal: Path, locks: dict[str, Path], per_group: int, budget: int) -> optuna.Study:
    """`per_group` workers for each lock file, all at once, until the study meets `budget`."""
    errors: list[BaseException] = []
    owners = [(f"{group}{i}", lock) for group, lock in locks.items() for i in range(per_group)]
    studies = [worker_study(journal, owner) for owner, _ in owners]  # opened (and checked) before the race
    threads = [threading.Thread(target=run_worker, args=(study, lock, owner, budget, errors))
               for study, (owner, lock) in zip(studies, owners, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    return optuna.load_study(study_name=NAME, storage=open_storage(str(journal)))


def stale_trial(study: optuna.Study) -> None:
    """A RUNNING trial whose worker died long ago: its lease is older than the grace period."""
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, LEASE_ATTR, time.time() - 100)


def separate_locks(tmp_path: Path) -> dict[str, Path]:
    """Machines A and B: each its own lock directory, as two SLURM jobs with per-job TMPDIRs."""
    return {g: tmp_path / f"machine-{g}" / "slots.lock" for g in "AB"}


# --------------------------------------------------------------------------- where the lock lives


def test_the_lock_follows_the_storage_and_the_lock_dir_variable(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "s" / "optuna.journal"
    assert lock_path_for(str(journal), "st") == tmp_path / "s" / "optuna.journal.st.slots.lock"
    assert lock_path_for(f"sqlite:///{tmp_path}/optuna.db", "st") == tmp_path / "optuna.db.st.slots.lock"
    assert lock_path_for("sqlite:///optuna.db?timeout=5", "st") == Path("optuna.db.st.slots.lock")
    url = "postgresql://optuna:pw@db-host/study"
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    assert lock_path_for(url, "st").parent == Path(tempfile.gettempdir())
    assert lock_path_for("sqlite:///:memory:", "st").parent == Path(tempfile.gettempdir())
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "shared-locks"))
    lock = lock_path_for(url, "st")
    assert lock.parent == tmp_path / "shared-locks" and lock.name.startswith("unet-search-slots-")
    assert lock_path_for(url, "st") == lock != lock_path_for(url, "other"), "one lock per (storage, study)"
    assert lock_path_for(str(journal), "st").parent == journal.parent, "a file storage ignores the variable"


# --------------------------------------------------------------------------- a WAITING retry: one claimant


def test_a_waiting_retry_is_claimed_by_the_machine_that_made_it_only(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    a, b = worker_study(journal, "A"), worker_study(journal, "B")
    for value in (0.1, 0.2):
        a.add_trial(optuna.trial.create_trial(value=value))
    stale_trial(a)  # the budget of 3 is met, one of them stale
    qa, qb = quota(a, 3, tmp_path / "A.lock", "A"), quota(b, 3, tmp_path / "B.lock", "B", wait=False)
    assert qa.claim(), "A fails the stale trial, retries it, and claims the retry"
    qa.release()
    retry = next(t for t in b.get_trials() if t.state == TrialState.WAITING)
    assert retry.user_attrs[RETRY_OF_ATTR] == 2 and retry.user_attrs[CLAIMED_BY_ATTR] == "A"
    assert not qb.claim(), "B, on another machine with its own lock, does not claim A's retry"
    assert counted_trials(b.get_trials()) == 3
    # A runs it: Optuna pops the WAITING retry for A's trial; the study holds exactly its budget.
    assert qa.claim()
    trial = a.ask()
    qa.start(trial)
    a.tell(trial, 0.3)
    assert trial.number == retry.number
    assert not qa.claim() and not qb.claim()
    trials = a.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert counted_trials(trials) == 3


def test_a_retry_whose_claimant_stopped_is_taken_over_by_one_machine(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    a, b, c = (worker_study(journal, name) for name in "ABC")
    a.add_trial(optuna.trial.create_trial(value=0.1))
    stale_trial(a)
    qa = quota(a, 2, tmp_path / "A.lock", "A")
    assert qa.claim()
    qa.release()  # ... and A stops (its timeout) before it runs the retry
    qb, qc = quota(b, 2, tmp_path / "B.lock", "B", wait=False), quota(c, 2, tmp_path / "C.lock", "C", wait=False)
    assert not qb.claim(), "the claim has not expired yet"
    orphan = next(t for t in b.get_trials() if t.state == TrialState.WAITING)
    time.sleep(max(0.0, orphan.user_attrs[CLAIMED_UNTIL_ATTR] - time.time()) + 0.05)
    assert qb.claim(), "B takes the expired retry over"
    qb.release()
    assert not qc.claim(), "... and only B: C finds it claimed again"
    trials = c.get_trials()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs[CLAIMED_BY_ATTR] == "B"
    assert waiting[0].user_attrs[RETRY_OF_ATTR] == 1 and waiting[0].params == orphan.params
    assert trials[orphan.number].state == TrialState.FAIL
    assert counted_trials(trials) == 2, "the orphaned retry does not count; its replacement does"


def test_a_claimed_retry_popped_by_another_machine_leaves_no_trial_past_the_budget(tmp_path: Path) -> None:
    """Optuna's ask pops whichever trial waits: B runs the retry A claimed, so A's ask makes a new trial,
    which A's quota ends before it trains (FAIL, surplus, not counted)."""
    journal = tmp_path / "optuna.journal"
    a, b = worker_study(journal, "A"), worker_study(journal, "B")
    a.add_trial(optuna.trial.create_trial(value=0.1))
    stale_trial(a)
    qa = quota(a, 2, tmp_path / "A.lock", "A")
    assert qa.claim(), "A fails the stale trial, retries it, and claims the retry"
    popped = b.ask()  # B's ask, on another machine, pops A's retry first
    assert popped.number == 2
    extra = a.ask()
    with pytest.raises(SurplusTrial):
        qa.start(extra)
    a.tell(extra, state=TrialState.FAIL)
    b.tell(popped, 0.2)
    trials = a.get_trials()
    assert trials[extra.number].user_attrs[SURPLUS_ATTR] is True
    assert "did not train" in trials[extra.number].user_attrs["fail_reason"]
    assert counted_trials(trials) == 2
    assert not qa.claim(), "the budget is met, nothing waits"


def test_a_popped_retry_is_not_taken_over(tmp_path: Path) -> None:
    """A retry whose claim expired just as a worker popped it stays that worker's: the take-over pops
    it first (one process wins), so it never fails a running trial."""
    journal = tmp_path / "optuna.journal"
    a, b = worker_study(journal, "A"), worker_study(journal, "B")
    stale_trial(a)
    quota(a, 1, tmp_path / "A.lock", "A").claim()
    retry = next(t for t in b.get_trials() if t.state == TrialState.WAITING)  # B's view: WAITING, claim expiring
    running = a.ask()
    assert running.number == retry.number
    assert not take_over_retry(b, retry, "B", 60.0)
    assert [t.state for t in b.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]
    a.tell(running, 0.5)
    assert counted_trials(b.get_trials()) == 1


# --------------------------------------------------------------------------- the documented bound


def test_stale_retries_at_the_budget_add_no_trial_across_separate_lock_dirs(tmp_path: Path) -> None:
    """Two stale trials when the budget is already met: 2 machines x 2 workers race to fail and retry
    them; each retry runs once, and the study ends with exactly its budget (no M - 1 extra per retry)."""
    journal, budget = tmp_path / "optuna.journal", 6
    seed = worker_study(journal, "setup")
    for i in range(budget - 2):
        seed.add_trial(optuna.trial.create_trial(value=0.1 * i))
    stale_trial(seed)
    stale_trial(seed)
    study = run_groups(journal, separate_locks(tmp_path), per_group=2, budget=budget)
    trials = study.get_trials()
    assert counted_trials(trials) == budget, [(t.number, t.state.name) for t in trials]
    retries = [t for t in trials if RETRY_OF_ATTR in t.user_attrs]
    assert sorted(t.user_attrs[RETRY_OF_ATTR] for t in retries) == [budget - 2, budget - 1], "each retried once"
    assert all(t.state == TrialState.COMPLETE for t in retries), "each retry ran, once"
    surplus = [t for t in trials if t.user_attrs.get(SURPLUS_ATTR)]
    assert all(t.state == TrialState.FAIL and "worker" not in t.user_attrs for t in surplus), "none trained"
    assert len(trials) - len(surplus) == budget + 2  # plus the two stale ones, FAIL and not counted


@pytest.mark.parametrize("rounds", [3])
def test_two_groups_without_a_shared_lock_overshoot_by_at_most_one_trial(tmp_path: Path, rounds: int) -> None:
    """The bound docs/distributed.md states: G groups of workers that do not share a lock file end with
    at most G - 1 trials past the budget; workers sharing one lock file are exact."""
    for r in range(rounds):
        journal, budget = tmp_path / f"r{r}" / "optuna.journal", 10
        study = run_groups(journal, separate_locks(tmp_path / f"r{r}"), per_group=2, budget=budget)
        trials = study.get_trials()
        assert all(t.state == TrialState.COMPLETE for t in trials)
        assert budget <= counted_trials(trials) <= budget + 1, f"round {r}: {len(trials)} trials"
        assert {t.user_attrs["worker"][0] for t in trials} == {"A", "B"}, "both groups ran trials"
    shared = tmp_path / "shared" / "optuna.journal"
    study = run_groups(shared, {"A": tmp_path / "shared" / "one.lock"}, per_group=4, budget=10)
    assert len(study.get_trials()) == 10, "one lock file: exact"


@pytest.mark.slow
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (Debian's postgresql package) is not installed")
def test_two_slurm_like_jobs_with_their_own_lock_dirs_keep_the_bound(tmp_path: Path, pg_and_tracking) -> None:
    """Two `search.run` processes on one PostgreSQL study, each with its own UNET_SEARCH_LOCK_DIR (as two
    SLURM jobs with per-job TMPDIRs): at most one trial past the budget. (One worker per job keeps the
    test short; the threads above race many workers.)"""
    total = 6
    storage, tracking = pg_and_tracking  # a fresh database; the session's tracking server
    env = StudyEnv(tmp_path, "jobs", storage=storage, tracking_uri=tracking, epochs=1, **TINY)
    init = start_run([*env.run_args(), "--trials", "0"], cli_env(tmp_path / "cache"), tmp_path / "init.log")
    assert init.wait(timeout=180) == 0, (tmp_path / "init.log").read_text()[-3000:]
    jobs = [start_run([*env.run_args(), "--total-trials", str(total), "--seed", str(i)],
                      cli_env(tmp_path / "cache", **{LOCK_DIR_ENV: str(tmp_path / f"job{i}")}),
                      tmp_path / f"job{i}.log") for i in range(2)]
    codes = [p.wait(timeout=480) for p in jobs]
    assert codes == [0, 0], "\n".join((tmp_path / f"job{i}.log").read_text()[-2000:] for i in range(2))
    counted = counted_trials(env.study().get_trials())
    assert total <= counted <= total + 1
    assert_consistent(storage, tracking, "jobs", counted)
    for i in range(2):  # each job's workers locked in the directory the variable names
        assert [p.name for p in (tmp_path / f"job{i}").iterdir()] == [lock_path_for(storage, "jobs").name]
