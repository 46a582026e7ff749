"""Class names: ROOT/classes.txt, `data.class_names` in the config, and their MLflow metric-name form."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from search.tracking.epoch_metrics import metric_class_names
from seg.config import Config, DataConfig
from seg.loaders import class_names, read_classes_file
from seg.synth import CLASSES


def _root(tmp_path, text: str | None):
    root = tmp_path / "data"
    root.mkdir()
    if text is not None:
        (root / "classes.txt").write_text(text)
    return root


def test_classes_file_one_name_per_line_trailing_blank_lines_dropped(tmp_path):
    root = _root(tmp_path, "background\n  cat \ndog\n\n\n")
    assert read_classes_file(root) == ("background", "cat", "dog")
    assert class_names(DataConfig(root=str(root), num_classes=3)) == ("background", "cat", "dog")


def test_without_a_classes_file_names_are_indices_or_the_embedded_names(tmp_path):
    assert read_classes_file(_root(tmp_path, None)) is None
    assert class_names(DataConfig(root=str(tmp_path / "data"), num_classes=3)) == ("0", "1", "2")
    assert class_names(DataConfig()) == tuple(CLASSES)


def test_config_names_win_over_the_file(tmp_path):
    root = _root(tmp_path, "a\nb\n")
    assert class_names(DataConfig(root=str(root), num_classes=2, class_names=("x", "y"))) == ("x", "y")


@pytest.mark.parametrize("text, expected", [
    ("a\n\nb\n", "line 2 is blank"),
    ("a\nb\na\n", "line 3 repeats the name 'a' of line 1"),
])
def test_a_bad_classes_file_is_refused_naming_file_and_line(tmp_path, text, expected):
    root = _root(tmp_path, text)
    with pytest.raises(ValueError, match=expected) as info:
        read_classes_file(root)
    assert str(root / "classes.txt") in str(info.value)


def test_a_classes_file_of_the_wrong_length_is_refused_naming_it(tmp_path):
    root = _root(tmp_path, "a\nb\n")
    with pytest.raises(ValueError, match="names 2 classes but num_classes is 3") as info:
        class_names(DataConfig(root=str(root), num_classes=3))
    assert str(root / "classes.txt") in str(info.value)


def test_config_class_names_round_trip_and_are_checked():
    cfg = Config().replace(data={"num_classes": 3, "class_names": ["a", "b", "c"]}, model={"num_classes": 3})
    assert cfg.data.class_names == ("a", "b", "c")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.flatten()["data.class_names"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="has 2 names but data.num_classes=3"):
        DataConfig(num_classes=3, class_names=("a", "b"))
    with pytest.raises(ValueError, match="distinct, non-empty"):
        DataConfig(num_classes=2, class_names=("a", "a"))


def test_metric_names_are_what_mlflow_accepts_and_stay_distinct(tmp_path):
    names = ("background", "tv/monitor", "potted plant", "a(b)", "tv_monitor", "..", "")
    safe = metric_class_names(names)
    assert safe == ["background", "tv_monitor", "potted plant", "a_b_", "tv_monitor_4", "_", "6"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("names"))
    client.log_batch(run.info.run_id, metrics=[Metric(f"iou/{n}", 0.5, 0, 0) for n in safe])
    assert set(client.get_run(run.info.run_id).data.metrics) == {f"iou/{n}" for n in safe}


def test_dataset_toml_names_are_the_fallback_and_must_agree_with_classes_txt(tmp_path):
    root = _root(tmp_path, None)
    (root / "dataset.toml").write_text('classes = ["sky", "road"]\n')
    assert class_names(DataConfig(root=str(root), num_classes=2)) == ("sky", "road")
    with pytest.raises(ValueError, match="names 2 classes but num_classes is 3") as info:
        class_names(DataConfig(root=str(root), num_classes=3))
    assert str(root / "dataset.toml") in str(info.value)
    (root / "classes.txt").write_text("sky\nroad\n")
    assert class_names(DataConfig(root=str(root), num_classes=2)) == ("sky", "road")
    (root / "classes.txt").write_text("road\nsky\n")
    with pytest.raises(ValueError, match="expected one list of classes"):
        class_names(DataConfig(root=str(root), num_classes=2))
