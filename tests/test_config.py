"""Config: plain-data round trips, flattening for MLflow, strict parsing and TOML loading."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seg.config import (
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    TransformConfig,
    load_config,
)

SECTIONS = {"model": ModelConfig, "data": DataConfig, "transforms": TransformConfig, "train": TrainConfig}

NON_DEFAULT = Config(
    model=ModelConfig(num_classes=5, depth=3, channels=[8, 16, 24], upsample="pixelshuffle", norm="group", dropout=0.1),
    data=DataConfig(num_classes=5, root="/data/x", val_fraction=0.2, split_seed=3),
    transforms=TransformConfig(resize=[32, 48], crop_mode="five", crop_size=24, hflip=0.0, rotation=15.0),
    train=TrainConfig(epochs=3, lr=3e-4, optimizer="sgd", nesterov=True, scheduler="cosine", amp=False),
)


@pytest.mark.parametrize("cfg", [Config(), NON_DEFAULT], ids=["default", "non-default"])
def test_round_trip_to_dict_from_dict(cfg):
    data = cfg.to_dict()
    assert set(data) == set(SECTIONS)
    assert Config.from_dict(data) == cfg
    # Through JSON too (what checkpoints and MLflow artefacts hold): tuples come back as tuples.
    again = Config.from_dict(json.loads(json.dumps(data)))
    assert again == cfg
    assert again.model.level_channels() == cfg.model.level_channels()


def test_to_dict_is_plain_data():
    data = NON_DEFAULT.to_dict()
    assert data["model"]["channels"] == [8, 16, 24]
    assert data["transforms"]["resize"] == [32, 48]
    assert NON_DEFAULT.model.channels == (8, 16, 24)  # lists given to the constructor become tuples
    assert NON_DEFAULT.transforms.resize == (32, 48)


@pytest.mark.parametrize("cfg", [Config(), NON_DEFAULT], ids=["default", "non-default"])
def test_flatten_has_every_leaf(cfg):
    flat = cfg.flatten()
    expected = {f"{name}.{f.name}" for name, kind in SECTIONS.items() for f in dataclasses.fields(kind)}
    assert set(flat) == expected  # None-valued leaves (e.g. model.channels by default) included
    for key, value in flat.items():
        section, name = key.split(".")
        raw = getattr(getattr(cfg, section), name)
        assert value == (list(raw) if isinstance(raw, tuple) else raw)


def test_flatten_values():
    flat = NON_DEFAULT.flatten()
    assert flat["model.depth"] == 3
    assert flat["train.lr"] == 3e-4
    assert flat["model.channels"] == [8, 16, 24]
    assert flat["data.root"] == "/data/x"
    assert flat["transforms.crop_mode"] == "five"


@pytest.mark.parametrize(
    "data, names",
    [
        ({"modle": {"depth": 3}}, ["modle"]),
        ({"model": {"depht": 3}}, ["depht", "[model]"]),
        ({"train": {"epochs": 2, "learning_rate": 0.1}}, ["learning_rate", "[train]"]),
        ({"transforms": {"flip": 0.5}}, ["flip", "[transforms]"]),
    ],
)
def test_from_dict_unknown_section_or_key(data, names):
    with pytest.raises(ValueError) as info:
        Config.from_dict(data, source="my-study.toml")
    message = str(info.value)
    assert "my-study.toml" in message
    for name in names:
        assert name in message


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"model": {"depth": 0}}, "model.depth"),
        ({"model": {"upsample": "nearest"}}, "model.upsample"),
        ({"model": {"depth": "four"}}, "model"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer"),
        ({"model": 3}, "model"),
    ],
)
def test_from_dict_bad_values_name_source(data, needle):
    with pytest.raises(ValueError) as info:
        Config.from_dict(data, source="where.toml")
    assert "where.toml" in str(info.value)
    assert needle in str(info.value)


def test_from_dict_partial_sections_use_defaults():
    cfg = Config.from_dict({"train": {"epochs": 7}})
    assert cfg.train.epochs == 7
    assert cfg.model == ModelConfig()
    assert cfg.train.lr == TrainConfig().lr


TOML_TEXT = """
[model]
depth = 3
base_channels = 8
max_channels = 32
upsample = "bilinear"
norm = "group"
num_classes = 4

[data]
num_classes = 4

[transforms]
resize = [32, 48]
crop_mode = "none"

[train]
epochs = 2
lr = 0.01
optimizer = "adamw"
"""


def test_load_config_toml(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(TOML_TEXT)
    cfg = load_config(path)
    assert cfg.model.level_channels() == (8, 16, 32)
    assert cfg.model.upsample == "bilinear"
    assert cfg.data.num_classes == cfg.model.num_classes == 4
    assert cfg.transforms.resize == (32, 48)
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.01 and cfg.train.optimizer == "adamw"
    assert load_config(str(path)) == cfg


def test_load_config_bad_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\ndepth = = 3\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_unknown_key_names_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[train]\nepochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "learning_rate" in str(info.value)


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(FileNotFoundError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_config_binary_file_names_file(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_num_classes_mismatch_raises():
    with pytest.raises(ValueError, match="num_classes"):
        Config(model=ModelConfig(num_classes=5))  # data.num_classes defaults to 10
    with pytest.raises(ValueError, match="num_classes"):
        Config.from_dict({"model": {"num_classes": 3}, "data": {"num_classes": 4}})
    assert Config(model=ModelConfig(num_classes=5), data=DataConfig(num_classes=5)).model.num_classes == 5


def test_num_classes_mismatch_names_source(tmp_path):
    path = tmp_path / "classes.toml"
    path.write_text("[model]\nnum_classes = 3\n\n[data]\nnum_classes = 4\n")
    with pytest.raises(ValueError) as info:
        Config.from_dict({"model": {"num_classes": 3}, "data": {"num_classes": 4}}, source="my-study.toml")
    assert "my-study.toml" in str(info.value)
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_replace_returns_new_frozen_config():
    cfg = Config()
    new = cfg.replace(train={"epochs": 2})
    assert new is not cfg
    assert new.train.epochs == 2
    assert cfg.train.epochs == TrainConfig().epochs  # the original is untouched
    assert new.model == cfg.model and new.data == cfg.data and new.transforms == cfg.transforms
    assert dataclasses.replace(new.train, epochs=cfg.train.epochs) == cfg.train  # only epochs changed
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.train = TrainConfig()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.train.epochs = 3  # type: ignore[misc]


def test_replace_several_sections_and_validation():
    cfg = Config().replace(model={"depth": 3, "num_classes": 4}, data={"num_classes": 4})
    assert cfg.model.depth == 3 and cfg.model.num_classes == cfg.data.num_classes == 4
    with pytest.raises(ValueError, match="num_classes"):
        Config().replace(model={"num_classes": 4})
    with pytest.raises(ValueError, match="epochz"):
        Config().replace(train={"epochz": 2})


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(crop_mode="five"), "resize"),
        (dict(scale_min=2.0, scale_max=1.0), "scale_min"),
        (dict(crop_mode="tiles"), "crop_mode"),
        (dict(resize=(32, 32, 3)), "resize"),
    ],
)
def test_transform_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        TransformConfig(**kwargs)
