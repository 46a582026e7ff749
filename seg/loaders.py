"""Datasets and DataLoaders over decoded, in-memory splits."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from seg.config import Config, DataConfig, TransformConfig
from seg.data import SegmentationData, Split, load_dataset
from seg.transforms import FiveCropTrain, Pipeline, build_eval_transform, build_train_transform, pad_collate


def resolve_dataset(cfg: DataConfig) -> SegmentationData:
    """The folder dataset at `cfg.root`, or the embedded procedural one (generated once, cached)."""
    if cfg.root is None:
        from seg.synth import default_dataset_root

        root = default_dataset_root(seed=cfg.synth_seed, n_train=cfg.synth_train, n_val=cfg.synth_val)
    else:
        root = cfg.root
    return load_dataset(root, cfg.num_classes, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)


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


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    """Names for the embedded dataset's classes, else the class indices as strings."""
    if cfg.root is None:
        from seg.synth import CLASSES

        return tuple(CLASSES)
    return tuple(str(i) for i in range(cfg.num_classes))


def train_dataset(data: SegmentationData, cfg: TransformConfig) -> SegDataset:
    if cfg.crop_mode == "five":
        return SegDataset(data.train, FiveCropTrain(cfg), five_crop=True)
    return SegDataset(data.train, build_train_transform(cfg))


def val_dataset(data: SegmentationData, cfg: TransformConfig) -> SegDataset:
    return SegDataset(data.val, build_eval_transform(cfg))


def build_loaders(cfg: Config, data: SegmentationData, pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders; the train loader shuffles with a generator seeded from the config."""
    t = cfg.train
    gen = torch.Generator().manual_seed(t.seed)
    common = dict(num_workers=t.num_workers, collate_fn=pad_collate, pin_memory=pin_memory,
                  persistent_workers=t.num_workers > 0)
    train_ds = train_dataset(data, cfg.transforms)
    # A last batch of one image would break BatchNorm; drop the remainder unless it is all we have.
    train = DataLoader(train_ds, batch_size=t.batch_size, shuffle=True, drop_last=len(train_ds) > t.batch_size,
                       generator=gen, **common)
    val = DataLoader(val_dataset(data, cfg.transforms), batch_size=t.eval_batch_size, shuffle=False, **common)
    return train, val
