"""A dataset fingerprint, computed once per run and logged before the first trial.

Counts, image-size distribution, class pixel frequencies, mean/std, the resolved dataset spec (how the
label files were read: ROOT/dataset.toml, or the binary-mask rule) and a content hash over the decoded
pixels and labels (so re-encoding the same data gives the same hash).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from seg.data import SegmentationData, Split


def size_stats(split: Split) -> dict[str, Any]:
    hs = torch.tensor([img.shape[-2] for img in split.images], dtype=torch.float32)
    ws = torch.tensor([img.shape[-1] for img in split.images], dtype=torch.float32)

    def stat(t: torch.Tensor) -> dict[str, Any]:
        return {"min": int(t.min()), "median": float(t.median()), "max": int(t.max()),
                "mean": round(float(t.mean()), 1)}

    return {"height": stat(hs), "width": stat(ws)}


def class_pixel_shares(split: Split, num_classes: int) -> list[float]:
    counts = torch.zeros(256, dtype=torch.int64)
    for mask in split.masks:
        counts += torch.bincount(mask.flatten().long(), minlength=256)
    labelled = counts[:num_classes].sum().clamp(min=1)
    return [round(float(c) / float(labelled), 6) for c in counts[:num_classes]]


def splits_hash(*splits: Split) -> str:
    """A content hash over the decoded pixels and labels of `splits`, in order (16 hex digits)."""
    h = hashlib.sha256()
    for split in splits:
        for pair, image, mask in zip(split.pairs, split.images, split.masks):
            h.update(pair.stem.encode())
            h.update(str(tuple(image.shape)).encode())
            h.update(image.numpy().tobytes())
            h.update(mask.numpy().tobytes())
    return h.hexdigest()[:16]


def content_hash(data: SegmentationData) -> str:
    return splits_hash(data.train, data.val)


def dataset_fingerprint(data: SegmentationData) -> dict[str, Any]:
    return {
        "root": str(data.root),
        "num_classes": data.num_classes,
        "counts": {"train": len(data.train), "val": len(data.val)},
        "sizes": {"train": size_stats(data.train), "val": size_stats(data.val)},
        "class_pixel_frequency": {"train": class_pixel_shares(data.train, data.num_classes),
                                  "val": class_pixel_shares(data.val, data.num_classes)},
        "mean": [round(v, 5) for v in data.mean],
        "std": [round(v, 5) for v in data.std],
        "scale": data.scale,
        "dataset_spec": data.spec.to_dict(),
        "content_hash": content_hash(data),
    }
