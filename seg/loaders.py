"""Datasets and DataLoaders over decoded, in-memory splits, and the names of a dataset's classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from seg.config import Config, DataConfig, TransformConfig
from seg.data import SPEC_FILE, SegmentationData, Split, load_dataset, read_dataset_spec
from seg.transforms import FiveCropTrain, Pipeline, build_eval_transform, build_train_transform, pad_collate


def resolve_dataset(cfg: DataConfig) -> SegmentationData:
    """The folder dataset at `cfg.root`, or the embedded procedural one (generated once, cached)."""
    if cfg.root is None:
        from seg.synth import default_dataset_root

        root = default_dataset_root(seed=cfg.synth_seed, n_train=cfg.synth_train, n_val=cfg.synth_val)
    else:
        root = cfg.root
    return load_dataset(root, cfg.num_classes, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed,
                        scale=cfg.scale)


class SegDataset(Dataset):
    """Applies a joint pipeline to cached uint8 tensors; five-crop mode has 5 samples per image."""

    def __init__(self, split: Split, transform: Pipeline | FiveCropTrain, five_crop: bool = False) -> None:
        self.split = split
        self.transform = transform
        self.views = 5 if five_crop else 1

    def __len__(self) -> int:
        return len(self.split) * self.views

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, view = divmod(index, self.views)
        image = tv_tensors.Image(self.split.images[i])  # uint8 (3, H, W)
        mask = tv_tensors.Mask(self.split.masks[i])  # uint8 (H, W)
        if self.views == 5:
            image, mask = self.transform(image, mask, view)
        else:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


CLASSES_FILE = "classes.txt"  # in a dataset root: one class name per line, line i names label value i


def read_classes_file(root: str | Path) -> tuple[str, ...] | None:
    """The names in ROOT/classes.txt (trailing blank lines dropped), or None when there is no such file.
    A blank line among the names or a name used twice is an error naming the file and the line."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, name in enumerate(lines, start=1):
        if not name:
            raise ValueError(f"{path}: line {number} is blank; expected one class name per line "
                             f"(line i names label value i - 1)")
        if lines.index(name) != number - 1:
            raise ValueError(f"{path}: line {number} repeats the name {name!r} of line {lines.index(name) + 1}; "
                             "expected distinct class names")
    return tuple(lines)


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    """`data.class_names`, else ROOT/classes.txt, else ROOT/dataset.toml's classes, else the embedded dataset's
    names, else the indices. When classes.txt and dataset.toml both name the classes they must agree."""
    if cfg.class_names is not None:
        return cfg.class_names
    if cfg.root is None:
        from seg.synth import CLASSES

        return tuple(CLASSES)
    from_file = read_classes_file(cfg.root)
    from_spec = read_dataset_spec(cfg.root).class_names
    if from_file is not None and from_spec is not None and from_file != from_spec:
        raise ValueError(f"{Path(cfg.root) / CLASSES_FILE} names {list(from_file)} but {Path(cfg.root) / SPEC_FILE} "
                         f"names {list(from_spec)}; expected one list of classes (delete one, or make them agree)")
    names = from_file if from_file is not None else from_spec
    if names is None:
        return tuple(str(i) for i in range(cfg.num_classes))
    if len(names) != cfg.num_classes:
        where = Path(cfg.root) / (CLASSES_FILE if from_file is not None else SPEC_FILE)
        raise ValueError(f"{where} names {len(names)} classes but num_classes is "
                         f"{cfg.num_classes}; expected one name per class")
    return names


def train_dataset(data: SegmentationData, cfg: TransformConfig) -> SegDataset:
    if cfg.crop_mode == "five":
        return SegDataset(data.train, FiveCropTrain(cfg), five_crop=True)
    return SegDataset(data.train, build_train_transform(cfg))


def val_dataset(data: SegmentationData, cfg: TransformConfig) -> SegDataset:
    return SegDataset(data.val, build_eval_transform(cfg))


def drops_last(samples: int, batch_size: int) -> bool:
    """Whether a training epoch drops its last, partial batch: a batch of one image would break
    BatchNorm, so the remainder goes unless it is all there is."""
    return samples > batch_size


def trained_samples(samples: int, batch_size: int) -> int:
    """Samples one training epoch runs through the model (whole batches when the remainder is dropped):
    19 at batch 8 train 16."""
    return samples // batch_size * batch_size if drops_last(samples, batch_size) else samples


def build_loaders(cfg: Config, data: SegmentationData, pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders; the train loader shuffles with a generator seeded from the config."""
    t = cfg.train
    gen = torch.Generator().manual_seed(t.seed)
    common = dict(num_workers=t.num_workers, collate_fn=pad_collate, pin_memory=pin_memory,
                  persistent_workers=t.num_workers > 0)
    train_ds = train_dataset(data, cfg.transforms)
    train = DataLoader(train_ds, batch_size=t.batch_size, shuffle=True,
                       drop_last=drops_last(len(train_ds), t.batch_size), generator=gen, **common)
    val = DataLoader(val_dataset(data, cfg.transforms), batch_size=t.eval_batch_size, shuffle=False, **common)
    return train, val
