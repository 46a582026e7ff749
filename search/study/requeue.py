"""Retry the trials a signal interrupted: a SLURM task cancelled (`scancel`) or at its time limit, a
Kubernetes pod evicted. `search.run` ends such a trial FAIL (`fail_reason` "interrupted") with its MLflow
run KILLED; this gives it a WAITING retry with the same params, which the next worker picks up.

The retry is marked as the stale-trial retries are (`retry_of` user attr, Optuna's `retry_history`
system attr), so the interrupted trial stops counting towards `--total-trials` and its retry counts
instead. A trial is retried at most `MAX_ATTEMPTS - 1` times in a chain (a config that is interrupted
every time, e.g. one too slow for the time limit, is not retried for ever).

The cluster recipes in deploy/ run it before each worker. On PostgreSQL it holds an advisory lock
while it looks and adds, so two workers starting together never both retry one trial (the SLURM
recipe also holds a file lock around it), with the worker's own `search.run` arguments
(it reads `--storage`, `--study` and `--study-name`, and ignores the others):

    python -m search.study.requeue --storage postgresql://USER:PASSWORD@HOST/DB --study studies/x.toml ...

Exit codes: 0 (prints the retried numbers), 2 the storage cannot be opened, 4 no study of that name yet.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from search.study.definition import load_study
from search.study.stale import RETRY_OF_ATTR
from search.study.storage import DEFAULT_STORAGE, open_storage

INTERRUPTED = "interrupted"
MAX_ATTEMPTS = 3
NO_STUDY = 4
ADVISORY_LOCK_KEY = 0x756E6574_72657175  # "unetrequ": PostgreSQL's lock for this step, across all workers


def interrupted_unretried(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """FAIL trials a signal interrupted, with no retry yet and attempts left in their chain."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials
            if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == INTERRUPTED
            and t.number not in retried and len(t.system_attrs.get("retry_history", [])) + 1 < MAX_ATTEMPTS]


@contextmanager
def exclusive(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """On PostgreSQL, an advisory lock held for the block (waits for another worker's); elsewhere nothing."""
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Add a WAITING retry (same params) for each interrupted trial; returns the retried trial numbers."""
    victims = interrupted_unretried(study.get_trials(deepcopy=False))
    for trial in victims:
        history = list(trial.system_attrs.get("retry_history", []))
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={RETRY_OF_ATTR: trial.number, "retry_reason": INTERRUPTED},
            system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": [*history, trial.number]}))
    return [t.number for t in victims]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.study.requeue", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="the study's Optuna storage URL or journal file")
    parser.add_argument("--study", default="default", help="the study definition, as search.run takes it")
    parser.add_argument("--study-name", help="the study's name in the storage (default: the definition's)")
    args, _run_only = parser.parse_known_args(argv)  # search.run's other flags do not matter here
    if not args.storage.strip():
        parser.error("--storage is empty: pass the study's storage URL, e.g. postgresql://USER:PASSWORD@HOST/DB")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        name = args.study_name or load_study(args.study).name
        storage = open_storage(args.storage)
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        print(f"no study {name!r} in the storage yet", file=sys.stderr)
        return NO_STUDY
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with exclusive(storage):
        retried = retry_interrupted(study)
    if retried:
        print(f"study {name!r}: interrupted trials {retried} retried with the same params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
