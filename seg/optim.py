"""Optimizer and learning-rate scheduler built from a `TrainConfig`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from seg.config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer={cfg.optimizer!r}; expected adam, adamw, sgd or rmsprop")


class Schedule:
    """One interface over per-step (one-cycle), per-epoch (cosine) and metric-driven (plateau) schedules."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.scheduler
        self.sched: LRScheduler | ReduceLROnPlateau | None = None
        if self.kind == "plateau":
            # Reads val mIoU, so it maximises (the report used patience=5 on the val metric).
            self.sched = ReduceLROnPlateau(optimizer, mode="max", patience=cfg.plateau_patience,
                                           factor=cfg.plateau_factor)
        elif self.kind == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        elif self.kind == "onecycle":
            self.sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                             total_steps=max(1, cfg.epochs * steps_per_epoch))

    def after_step(self) -> None:
        if self.kind == "onecycle":
            # OneCycleLR raises past total_steps; an epoch may hold one extra step when batches vary.
            if self.sched.last_epoch + 1 < self.sched.total_steps:
                self.sched.step()

    def after_epoch(self, val_miou: float) -> None:
        if self.kind == "plateau":
            self.sched.step(val_miou)
        elif self.kind == "cosine":
            self.sched.step()
