"""Study definitions, the search space and the resume check, without training (fast)."""

from __future__ import annotations

import itertools
import signal
import textwrap
from pathlib import Path

import optuna
import pytest

from search.plan.geometry import deepest
from search.plan.survey import survey_dataset
from search.study.definition import STUDIES_DIR, StudyDef, load_study
from search.study.identity import StudyMismatchError, check_identity, describe_changes
from search.study.space import (
    CONDITIONS,
    InfeasibleConfigError,
    RunOptions,
    build_config,
    check_feasible,
    config_from_trial,
    sample_values,
)
from seg.config import Config, ModelConfig, TransformConfig

STUDY = """
[study]
name = "unit"
metric = "val_miou"
direction = "maximize"

[data]
num_classes = 10
synth_train = 16
synth_val = 6

[budget]
trials = 5
max_epochs = 3

[sampler]
name = "tpe"

[pruner]
name = "median"

[space.model]
depth = { low = 2, high = 5 }
base_channels = { choices = [4, 8] }
max_channels = 32
upsample = "bilinear"

[space.train]
optimizer = { choices = ["adam", "sgd", "rmsprop"] }
lr = { low = 1e-4, high = 1e-2, log = true }
momentum = { low = 0.8, high = 0.99 }
nesterov = { choices = [false, true] }
scheduler = { choices = ["none", "plateau"] }
plateau_patience = { low = 1, high = 4 }
batch_size = 8

[space.transforms]
crop_size = 32
scale_jitter = { low = 0.0, high = 0.3 }
"""

# Every ranged parameter of STUDY; FixedTrial raises if asked for one it lacks.
ALL_PARAMS = {"model.depth": 4, "model.base_channels": 8, "train.optimizer": "adam", "train.lr": 1e-3,
              "train.momentum": 0.9, "train.nesterov": True, "train.scheduler": "none", "train.plateau_patience": 2,
              "transforms.scale_jitter": 0.2}


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def sdef(tmp_path: Path) -> StudyDef:
    return load_study(write(tmp_path, STUDY))


# --------------------------------------------------------------------------- shipped study files


def test_default_study_loads() -> None:
    sdef = load_study(STUDIES_DIR / "default.toml")
    assert sdef.name == "default" and sdef.direction == "maximize" and sdef.metric == "val_miou"
    assert sdef.trials >= 1 and sdef.max_epochs >= 1
    ranged = [d for d in sdef.space if not d.fixed]
    assert ranged, "the default study searches nothing"
    for d in ranged:
        assert d.choices or d.low <= d.high, d
    assert load_study("default") == sdef  # by name, from studies/


def test_default_study_samples_every_dimension_the_mission_names() -> None:
    """Depth, base and max channels, all three upsampling types, >= 3 optimizers with SGD, lr, >= 2 batch
    sizes and >= 4 augmentations are searched; TPE starts guiding after at most 10 of its 50 trials; a
    pruner cuts trials; the [baseline] is a point of the space."""
    sdef = load_study(STUDIES_DIR / "default.toml")
    ranged = {d.name: d for d in sdef.space if not d.fixed}
    for name in ("model.depth", "model.base_channels", "model.max_channels", "train.lr"):
        assert name in ranged, name
    assert set(ranged["model.upsample"].choices) == {"transpose", "bilinear", "pixelshuffle"}
    optimizers = set(ranged["train.optimizer"].choices)
    assert len(optimizers) >= 3 and "sgd" in optimizers
    assert len(set(ranged["train.batch_size"].choices)) >= 2
    augmentations = {"transforms.hflip", "transforms.rotation", "transforms.color_jitter", "transforms.scale_jitter"}
    assert augmentations <= set(ranged), augmentations - set(ranged)
    assert sdef.trials == 50 and sdef.sampler["name"] == "tpe" and sdef.sampler["n_startup_trials"] <= 10
    assert sdef.pruner["name"] not in ("none", "nop")
    assert sdef.baseline and set(sdef.baseline) <= {d.name for d in sdef.space}
    for name, value in sdef.baseline.items():
        d = ranged.get(name)
        if d is not None:
            assert value in d.choices if d.choices else d.low <= value <= d.high, (name, value)


def test_default_study_corners_fit_the_embedded_data() -> None:
    """Every corner of the default space trains on the embedded data: its crop fits the smallest
    training image and the deepest model keeps a bottleneck the planner allows (>= 8 px)."""
    sdef = load_study("default")
    fixed = {d.name: d.value for d in sdef.space if d.fixed}
    ranged = {d.name: d for d in sdef.space if not d.fixed}
    crop, depth = fixed["transforms.crop_size"], ranged["model.depth"]
    assert crop <= survey_dataset(None).short_sides[0]
    assert depth.high <= deepest(crop), (depth.high, crop)  # the planner's bottleneck rule
    for d, base, cap in itertools.product([depth.low, depth.high], ranged["model.base_channels"].choices,
                                          ranged["model.max_channels"].choices):
        values = {**fixed, "model.depth": d, "model.base_channels": base, "model.max_channels": cap}
        check_feasible(build_config(values, sdef, RunOptions(device="cpu"), 0))


def test_seed_study_loads() -> None:
    path = STUDIES_DIR / "seed.toml"
    if not path.is_file():
        pytest.skip("studies/seed.toml does not exist")
    sdef = load_study(path)
    assert sdef.path == path and sdef.space


def test_missing_study_names_known_ones(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="default"):
        load_study("no-such-study-xyz")
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_study(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- bad study files


def _replace(old: str, new: str) -> str:
    assert old in STUDY, old
    return STUDY.replace(old, new)


BAD = {
    "unknown section": (STUDY + "\n[bogus]\nx = 1\n", "bogus"),
    "unknown space section": (STUDY + "\n[space.optim]\nlr = 1\n", "optim"),
    "unknown key in space.model": (_replace('upsample = "bilinear"', 'upsample = "bilinear"\nwidth = 3'), "width"),
    "unknown key in budget": (_replace("max_epochs = 3", "max_epochs = 3\nepochs = 3"), "epochs"),
    "unknown key in data": (_replace("synth_val = 6", "synth_val = 6\nroots = 'x'"), "roots"),
    "unknown key in a range": (_replace("depth = { low = 2, high = 5 }", "depth = { low = 2, high = 5, by = 1 }"),
                               "by"),
    "low > high": (_replace("depth = { low = 2, high = 5 }", "depth = { low = 5, high = 2 }"), "model.depth"),
    "range without high": (_replace("depth = { low = 2, high = 5 }", "depth = { low = 2 }"), "model.depth"),
    "log with low <= 0": (_replace("lr = { low = 1e-4, high = 1e-2, log = true }",
                                   "lr = { low = 0.0, high = 1e-2, log = true }"), "train.lr"),
    "empty choices": (_replace("base_channels = { choices = [4, 8] }", "base_channels = { choices = [] }"),
                      "model.base_channels"),
    "bad sampler": (_replace('name = "tpe"', 'name = "grid"'), "grid"),
    "bad pruner": (_replace('name = "median"', 'name = "patient"'), "patient"),
    "percentile out of range": (_replace('name = "median"', 'name = "percentile"\npercentile = 150.0'), "150"),
    "reduction_factor below 2": (_replace('name = "median"', 'name = "sha"\nreduction_factor = 1'), "reduction_factor"),
    "bad direction": (_replace('direction = "maximize"', 'direction = "up"'), "direction"),
    "bad metric": (_replace('metric = "val_miou"', 'metric = "val_loss"'), "metric"),
    "zero trials": (_replace("trials = 5", "trials = 0"), "trials"),
    "baseline names a fixed dimension": (STUDY + '\n[baseline]\nparams = { "model.max_channels" = 32 }\n',
                                         "model.max_channels"),
    "baseline names an unknown dimension": (STUDY + '\n[baseline]\nparams = { "model.width" = 3 }\n', "model.width"),
    "not TOML": ("[study\nname = 1\n", "TOML"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_file_names_file_and_key(tmp_path: Path, case: str) -> None:
    text, key = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_study(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert key in msg, msg


def test_log_with_step_is_rejected_when_read(tmp_path: Path) -> None:
    path = write(tmp_path, _replace("lr = { low = 1e-4, high = 1e-2, log = true }",
                                    "lr = { low = 1e-4, high = 1e-2, log = true, step = 1e-4 }"))
    with pytest.raises(ValueError, match="train.lr"):
        load_study(path)


def test_unknown_key_in_baseline_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, STUDY + '\n[baseline]\ntrain.optimizer = "sgd"\n')  # forgot `params = {...}`
    with pytest.raises(ValueError, match="baseline"):
        load_study(path)


@pytest.mark.parametrize("section, key", [("sampler", "n_startup_trial"), ("pruner", "n_warmup_step")])
def test_unknown_key_in_sampler_or_pruner_is_rejected(tmp_path: Path, section: str, key: str) -> None:
    text = _replace('name = "tpe"', f'name = "tpe"\n{key} = 3') if section == "sampler" else \
        _replace('name = "median"', f'name = "median"\n{key} = 3')
    with pytest.raises(ValueError, match=key):
        load_study(write(tmp_path, text))


def test_invalid_choice_value_is_rejected_when_read(tmp_path: Path) -> None:
    path = write(tmp_path, _replace('optimizer = { choices = ["adam", "sgd", "rmsprop"] }',
                                    'optimizer = { choices = ["adam", "lbfgs"] }'))
    with pytest.raises(ValueError, match="lbfgs"):
        load_study(path)


def test_run_cli_error_keeps_the_section_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from search.run import main

    path = write(tmp_path, _replace('upsample = "bilinear"', 'upsample = "bilinear"\nwidth = 3'))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        rc = main(["--study", str(path), "--storage", f"sqlite:///{tmp_path}/optuna.db",
                   "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert rc == 2
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "width" in out
    assert "[space.model]" in out, out


# --------------------------------------------------------------------------- identity


def test_identity_hash_tracks_the_space_not_the_budget(tmp_path: Path, sdef: StudyDef) -> None:
    same = [_replace("trials = 5", "trials = 50"), _replace("max_epochs = 3", "max_epochs = 9"),
            _replace('name = "tpe"', 'name = "random"'), _replace('name = "median"', 'name = "hyperband"')]
    for i, text in enumerate(same):
        assert load_study(write(tmp_path, text, f"same{i}.toml")).identity_hash() == sdef.identity_hash(), text
    changed = [_replace("depth = { low = 2, high = 5 }", "depth = { low = 2, high = 4 }"),
               _replace("base_channels = { choices = [4, 8] }", "base_channels = { choices = [4, 16] }"),
               _replace("max_channels = 32", "max_channels = 64"),
               _replace('direction = "maximize"', 'direction = "minimize"'),
               _replace("lr = { low = 1e-4, high = 1e-2, log = true }", "lr = { low = 1e-4, high = 1e-2 }")]
    hashes = {sdef.identity_hash()}
    for i, text in enumerate(changed):
        hashes.add(load_study(write(tmp_path, text, f"changed{i}.toml")).identity_hash())
    assert len(hashes) == len(changed) + 1


def test_describe_changes_names_the_changed_key(tmp_path: Path, sdef: StudyDef) -> None:
    other = load_study(write(tmp_path, _replace("depth = { low = 2, high = 5 }", "depth = { low = 2, high = 4 }"),
                             "other.toml"))
    changes = describe_changes(sdef.identity(), other.identity())
    assert len(changes) == 1 and "model.depth" in changes[0], changes
    assert "5" in changes[0] and "4" in changes[0]
    flipped = load_study(write(tmp_path, _replace('direction = "maximize"', 'direction = "minimize"'), "dir.toml"))
    assert any(c.startswith("direction") for c in describe_changes(sdef.identity(), flipped.identity()))
    added = load_study(write(tmp_path, _replace("batch_size = 8", "batch_size = 8\nweight_decay = 0.001"), "add.toml"))
    assert any("train.weight_decay" in c and "absent" in c for c in describe_changes(sdef.identity(), added.identity()))


def test_check_identity_refuses_a_changed_definition(tmp_path: Path, sdef: StudyDef) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name=sdef.name, storage=storage, direction=sdef.direction)
    check_identity(study, sdef)  # first time: stores the definition
    study = optuna.load_study(study_name=sdef.name, storage=storage)
    check_identity(study, sdef)
    check_identity(study, load_study(write(tmp_path, _replace("trials = 5", "trials = 7"), "budget.toml")))
    changed = load_study(write(tmp_path, _replace("depth = { low = 2, high = 5 }", "depth = { low = 3, high = 5 }"),
                               "changed.toml"))
    with pytest.raises(StudyMismatchError) as info:
        check_identity(study, changed)
    assert "model.depth" in str(info.value) and str(changed.path) in str(info.value)


# --------------------------------------------------------------------------- sampling and configs


@pytest.mark.parametrize("optimizer, sampled", [("adam", set()), ("sgd", {"train.momentum", "train.nesterov"}),
                                                ("rmsprop", {"train.momentum"})])
def test_sample_values_respects_conditions(sdef: StudyDef, optimizer: str, sampled: set[str]) -> None:
    trial = optuna.trial.FixedTrial({**ALL_PARAMS, "train.optimizer": optimizer})
    values = sample_values(trial, sdef)
    conditional = {"train.momentum", "train.nesterov"}
    assert set(trial.params) & conditional == sampled  # asked of the trial only where it matters
    assert set(values) & conditional == sampled
    assert "train.plateau_patience" not in trial.params  # scheduler "none"
    assert values["model.max_channels"] == 32 and values["train.batch_size"] == 8  # fixed values pass through
    assert all(values[name] == ALL_PARAMS[name] for name in trial.params if name != "train.optimizer")


def test_conditional_params_are_not_asked_without_their_parent(sdef: StudyDef) -> None:
    """A FixedTrial without momentum/nesterov works for adam: they are never suggested."""
    params = {k: v for k, v in ALL_PARAMS.items() if k not in ("train.momentum", "train.nesterov")}
    values = sample_values(optuna.trial.FixedTrial(params), sdef)
    assert "train.momentum" not in values and "train.nesterov" not in values
    with pytest.raises(ValueError, match="train.momentum"):
        sample_values(optuna.trial.FixedTrial({**params, "train.optimizer": "sgd"}), sdef)
    plateau = sample_values(optuna.trial.FixedTrial({**params, "train.scheduler": "plateau"}), sdef)
    assert plateau["train.plateau_patience"] == 2
    assert set(CONDITIONS) >= {"train.momentum", "train.nesterov"}


def test_fixed_child_without_its_parent_keeps_the_default(tmp_path: Path) -> None:
    sdef = load_study(write(tmp_path, """
        [space.train]
        optimizer = { choices = ["adam", "sgd"] }
        momentum = 0.5
        """))
    values = sample_values(optuna.trial.FixedTrial({"train.optimizer": "adam"}), sdef)
    assert "train.momentum" not in values
    assert sample_values(optuna.trial.FixedTrial({"train.optimizer": "sgd"}), sdef)["train.momentum"] == 0.5


def test_config_from_trial_builds_the_config(sdef: StudyDef) -> None:
    trial = optuna.trial.FixedTrial({**ALL_PARAMS, "model.depth": 4, "model.base_channels": 8}, number=3)
    cfg = config_from_trial(trial, sdef, RunOptions(seed=10, device="cpu"))
    assert isinstance(cfg, Config)
    assert cfg.model.depth == 4 and cfg.model.level_channels() == (8, 16, 32, 32)  # min(max, base * 2**i)
    assert cfg.model.channels is None and cfg.model.num_classes == 10 == cfg.data.num_classes
    assert (cfg.data.synth_train, cfg.data.synth_val) == (16, 6)
    assert cfg.train.epochs == 3 and cfg.train.seed == 13 and cfg.train.device == "cpu"
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.optimizer == "adam"
    assert cfg.transforms.crop_size == 32
    assert (cfg.transforms.scale_min, cfg.transforms.scale_max) == pytest.approx((0.8, 1.2))
    assert config_from_trial(trial, sdef, RunOptions(epochs=1)).train.epochs == 1
    small = config_from_trial(optuna.trial.FixedTrial({**ALL_PARAMS, "model.depth": 2, "model.base_channels": 4}),
                              sdef, RunOptions())
    assert small.model.level_channels() == (4, 8)


def test_check_feasible_rejects_a_too_small_bottleneck(sdef: StudyDef) -> None:
    deep = Config(model=ModelConfig(depth=5), transforms=TransformConfig(crop_size=32))
    with pytest.raises(InfeasibleConfigError) as info:
        check_feasible(deep)
    msg = str(info.value)
    assert "bottleneck" in msg and "depth 5" in msg and "32" in msg
    assert isinstance(info.value, ValueError)
    check_feasible(Config(model=ModelConfig(depth=4), transforms=TransformConfig(crop_size=32)))  # 4 px: fine
    check_feasible(Config(model=ModelConfig(depth=5), transforms=TransformConfig(crop_size=64)))
    with pytest.raises(InfeasibleConfigError, match="bottleneck"):
        config_from_trial(optuna.trial.FixedTrial({**ALL_PARAMS, "model.depth": 5}), sdef, RunOptions())
