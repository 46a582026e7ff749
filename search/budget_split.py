"""How one `search.run` command's budget splits between the search and the final training after it.

The command line's budget flags replace the study file's budget. A study's `[confirm] share` keeps
part of it for retraining the search's best configurations (search.confirm): of an epoch budget
(`epoch_share`, `final_epochs`) when there is one, else of the time budget (`confirm_share`,
`run_timeout`, `confirm_seconds`). `run_budget` is what the trials may use (search/study/quota.py).
"""

from __future__ import annotations

import time
from math import prod

import optuna

from search.settings import RunSettings
from search.study.definition import StudyDef
from search.study.quota import Budget, counted_trials


def confirm_plan(settings: RunSettings, sdef: StudyDef) -> tuple[int, int]:
    """(top K, seeds S) of the confirmation after the search: the command line over the study's [confirm]."""
    top = sdef.confirm_top if settings.confirm is None else settings.confirm
    return top, settings.confirm_seeds or sdef.confirm_seeds


def run_budget(study: optuna.Study, settings: RunSettings, sdef: StudyDef) -> Budget:
    """What the study should hold when this run is done (see search/study/quota.py).

    Budget flags on the command line replace the study file's budget; those given together all
    apply. `--trials` counts from the trials the study holds now, the other limits are the study's
    totals (so they survive a resume). A worker gets the parent's resolved budget."""
    if settings.is_worker:
        return Budget(settings.target_total, settings.total_epochs)
    given = settings.budget_given
    epochs = epoch_budget(settings, sdef)
    final = final_epochs(settings, sdef)
    if final is not None:  # the retrains' part of the epoch budget is not the trials'
        epochs -= final * prod(confirm_plan(settings, sdef))
    if settings.total_trials is not None:
        return Budget(settings.total_trials, epochs)
    add = settings.trials if given else sdef.trials
    if add is None:
        return Budget(None, epochs)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    return Budget(counted_trials(finished) + add, epochs)


def time_budget(settings: RunSettings, sdef: StudyDef) -> float | None:
    """The command's time budget in seconds: --timeout, else the study's budget.timeout_s (None: none)."""
    return settings.timeout if settings.timeout is not None else sdef.timeout_s


def epoch_budget(settings: RunSettings, sdef: StudyDef) -> int | None:
    """The command's epoch total: --total-epochs, else the study's budget.total_epochs unless another
    budget flag replaces the file's budget (None: no epoch limit)."""
    return settings.total_epochs if settings.budget_given else sdef.total_epochs


def confirms(settings: RunSettings, sdef: StudyDef) -> bool:
    """Whether this command retrains the search's best after it (a worker's parent does that)."""
    return not settings.is_worker and settings.trials != 0 and bool(confirm_plan(settings, sdef)[0])


def share_kept(settings: RunSettings, sdef: StudyDef) -> float:
    """The share of the budget a confirming command keeps for its retrains: --confirm-share, else the
    study's [confirm] share."""
    return sdef.confirm_share if settings.confirm_share is None else settings.confirm_share


def epoch_share(settings: RunSettings, sdef: StudyDef) -> float:
    """The part of the epoch budget kept for the retrains: `share_kept` when this command confirms and
    has an epoch budget, else 0. It decides the retrains' length, so the clock keeps none."""
    if not confirms(settings, sdef) or epoch_budget(settings, sdef) is None:
        return 0.0
    return share_kept(settings, sdef)


def confirm_share(settings: RunSettings, sdef: StudyDef) -> float:
    """The part of the time budget kept for the retrains after the search: `share_kept` when this
    command confirms, has a time budget and no epoch budget (a worker's parent keeps it),
    else 0. A budget given on the command line without --timeout replaces the file's, so its clock
    keeps no share."""
    if not confirms(settings, sdef) or epoch_share(settings, sdef) or time_budget(settings, sdef) is None \
            or (settings.timeout is None and settings.budget_given):
        return 0.0
    return share_kept(settings, sdef)


def run_timeout(settings: RunSettings, sdef: StudyDef) -> float | None:
    """Seconds left for starting trials: the time budget less its [confirm] share, counted from the
    command's start, so the planning and set-up before the first trial are part of it."""
    total = time_budget(settings, sdef)
    return None if total is None else settings.seconds_left(total * (1 - confirm_share(settings, sdef)))


def set_up_took_the_search(settings: RunSettings, sdef: StudyDef) -> str | None:
    """Why no trial can start, when planning and set-up used up the time in which trials may start
    (`run_timeout` is 0); else None."""
    total = time_budget(settings, sdef)
    if total is None or run_timeout(settings, sdef):
        return None
    flag = f"--timeout {total:g}" if settings.timeout is not None else f"the study's budget.timeout_s = {total:g}"
    share = confirm_share(settings, sdef)
    kept = f" (the last {share:.0%} of it is kept for the final training)" if share else ""
    return (f"no trial started: planning and set-up took {time.monotonic() - settings.started:.0f} s, and trials "
            f"may start only in the first {total * (1 - share):.0f} s of {flag} s{kept}. Give a longer budget: "
            "rerunning with it resumes this study, and a trial left WAITING runs first.")


def confirm_seconds(settings: RunSettings, sdef: StudyDef) -> float | None:
    """What is left of the time budget for the retrains when the study keeps a share of it, else None
    (each retrain trains its trial's epochs, or final_epochs)."""
    if not confirm_share(settings, sdef):
        return None
    return settings.seconds_left(time_budget(settings, sdef))


def final_epochs(settings: RunSettings, sdef: StudyDef) -> int | None:
    """Epochs of each retrain when the study keeps a share of an epoch budget B: share x B split over the
    retrains (top x seeds), at least 1; the search's trials train the rest. None: no share."""
    share = epoch_share(settings, sdef)
    if not share:
        return None
    return max(1, round(share * epoch_budget(settings, sdef)) // prod(confirm_plan(settings, sdef)))
