"""Pruner settings: the `NAME[:KEY=VALUE,...]` form of `--pruner` and `--pruners`, the study file's
[pruner] table, and what the pruners they build do, through real in-memory Optuna studies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from search.study.definition import StudyDef, load_study
from search.study.samplers_pruners import build_pruner, format_pruner, parse_pruner
from tests.test_study_def import STUDY, _replace, write


@pytest.fixture
def sdef(tmp_path: Path) -> StudyDef:
    return load_study(write(tmp_path, STUDY))


def test_parse_pruner_reads_numbers_and_names_the_bad_item():
    assert parse_pruner("sha:reduction_factor=4,min_resource=2") == {"name": "sha", "reduction_factor": 4,
                                                                     "min_resource": 2}
    assert parse_pruner("median") == {"name": "median"}
    assert parse_pruner("percentile:percentile=40.0") == {"name": "percentile", "percentile": 40.0}
    with pytest.raises(ValueError, match="'min_resource' in 'sha:min_resource': expected key=value"):
        parse_pruner("sha:min_resource")
    with pytest.raises(ValueError, match=r"'median:patience=2': pruner 'median' takes \['n_min_trials', "
                                         r"'n_startup_trials', 'n_warmup_steps'\], not \['patience'\]"):
        parse_pruner("median:patience=2")


@pytest.mark.parametrize("text, keys", [
    ("median:reduction_factor=4", "['n_min_trials', 'n_startup_trials', 'n_warmup_steps']"),
    ("hyperband:percentile=40.0", "['min_resource', 'reduction_factor']"),
    ("none:n_startup_trials=2", "no settings"),
])
def test_a_key_of_another_pruner_is_refused_with_the_keys_this_one_takes(text: str, keys: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_pruner(text)
    assert keys in str(err.value) and text.split(":")[0] in str(err.value)


def test_a_study_file_setting_its_pruner_does_not_take_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, _replace('name = "median"', 'name = "median"\nreduction_factor = 4'), "bad.toml")
    with pytest.raises(ValueError, match=r"bad.toml: \[pruner\] pruner 'median' takes"):
        load_study(path)


@pytest.mark.parametrize("text", ["none", "sha:min_resource=2,reduction_factor=4", "percentile:percentile=40.0"])
def test_format_pruner_is_the_inverse_of_parse(text: str):
    assert format_pruner(parse_pruner(text)) == text


def _prunes_at_step_1(sdef: StudyDef, value: float) -> bool:
    """After three completed trials at 0.1, 0.5 and 0.9 on step 1, is a trial at `value` pruned there?"""
    study = optuna.create_study(direction="maximize", pruner=build_pruner(sdef.pruner, sdef.max_epochs))
    for done in (0.1, 0.5, 0.9):
        trial = study.ask()
        trial.report(done, 1)
        study.tell(trial, done)
    trial = study.ask()
    trial.report(value, 1)
    return trial.should_prune()


def test_percentile_pruner_keeps_only_the_top_percentile(tmp_path: Path) -> None:
    settings = "n_startup_trials = 1\nn_warmup_steps = 0"
    top25 = load_study(write(tmp_path,
                             _replace('name = "median"', f'name = "percentile"\npercentile = 25.0\n{settings}'),
                             "top25.toml"))
    median = load_study(write(tmp_path, _replace('name = "median"', f'name = "median"\n{settings}'), "median.toml"))
    # 0.6 is above the median (0.5) of the completed trials but below their 75th percentile (0.7).
    assert not _prunes_at_step_1(median, 0.6)
    assert _prunes_at_step_1(top25, 0.6)
    assert not _prunes_at_step_1(top25, 0.8)


def test_pruner_override_takes_settings_and_keeps_the_file_s_keys_for_the_same_pruner(sdef: StudyDef) -> None:
    from search.run import parse_args
    from search.session import apply_overrides

    args = parse_args(["--pruner", "percentile:percentile=40.0,n_startup_trials=3"])
    assert apply_overrides(sdef, args).pruner == {"name": "percentile", "percentile": 40.0, "n_startup_trials": 3}
    with_file_keys = replace(sdef, pruner={"name": "sha", "min_resource": 2})
    assert apply_overrides(with_file_keys, parse_args(["--pruner", "sha:reduction_factor=4"])).pruner == \
        {"name": "sha", "min_resource": 2, "reduction_factor": 4}
    assert format_pruner(apply_overrides(sdef, args).pruner) == "percentile:n_startup_trials=3,percentile=40.0"
    # Another name starts from that pruner's own defaults, not from the file's keys for its pruner.
    assert apply_overrides(with_file_keys, parse_args(["--pruner", "median"])).pruner == {"name": "median"}


@pytest.mark.parametrize("text, named", [("percentile:percentile=150.0", "150"), ("median:patience=3", "patience"),
                                         ("sha:min_resource", "key=value"), ("asha", "asha"),
                                         ("sha:reduction_factor=x", "expected a number")])
def test_bad_pruner_override_is_a_usage_error_naming_the_value(text: str, named: str,
                                                               capsys: pytest.CaptureFixture) -> None:
    from search.run import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--pruner", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--pruner" in err and named in err, err


@pytest.mark.parametrize("name", ["random", "gp", "tpe"])
def test_sampler_override_of_another_name_starts_from_its_own_defaults(sdef: StudyDef, name: str) -> None:
    from search.run import parse_args
    from search.session import apply_overrides
    from search.study.samplers_pruners import build_sampler

    sampler = apply_overrides(replace(sdef, sampler={"name": "tpe", "n_startup_trials": 3}),
                              parse_args(["--sampler", name])).sampler
    assert sampler == ({"name": "tpe", "n_startup_trials": 3} if name == "tpe" else {"name": name})
    build_sampler(sampler, seed=0)  # the random sampler takes no n_startup_trials: it must build
