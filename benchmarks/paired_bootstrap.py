"""The spread of a test-set mIoU difference between two models: a paired bootstrap over the test images.

Both models are scored on the same images (`search.evaluate`'s evaluation.json keeps each image's
per-class intersection and union). A resample draws images with replacement, the same draw for both
models, and recomputes each model's mIoU as the folder's is computed (per class, summed intersection
over summed union; the mean over the classes whose union is not empty). `scipy.stats.bootstrap` gives
the confidence interval of the difference. It measures how much the verdict depends on which test
images were drawn, not the spread between training seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

from seg.metrics import iou_from_counts

RESAMPLES = 2000
CONFIDENCE = 0.95


def miou_from_images(intersection: np.ndarray, union: np.ndarray) -> float:
    """mIoU of a set of images from their (N, K) per-class intersections and unions (the folder's rule,
    `seg.metrics.iou_from_counts`)."""
    return iou_from_counts(torch.from_numpy(intersection.sum(0)), torch.from_numpy(union.sum(0)))[2]


def _per_image(record: dict[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    images = record.get("per_image") or []
    if not images or any(not p.get("union") for p in images):
        return None  # an evaluation.json written before images kept their intersections and unions
    stems = [p["stem"] for p in images]
    return stems, np.array([p["intersection"] for p in images]), np.array([p["union"] for p in images])


def paired_difference(a: dict[str, Any], b: dict[str, Any], resamples: int = RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any] | None:
    """mIoU of `a` minus that of `b` (two evaluation.json records of the same images) and its bootstrap
    interval; None when either record lacks per-image intersections and unions. Raises ValueError when
    the two were scored on different images."""
    pa, pb = _per_image(a), _per_image(b)
    if pa is None or pb is None:
        return None
    if pa[0] != pb[0]:
        raise ValueError(f"the two evaluations scored different images ({len(pa[0])} and {len(pb[0])}, "
                         "or another order); expected the same test folder")
    (_, ia, ua), (_, ib, ub) = pa, pb

    def difference(index: np.ndarray) -> float:
        return miou_from_images(ia[index], ua[index]) - miou_from_images(ib[index], ub[index])

    n = len(pa[0])
    everything = np.arange(n)
    interval = bootstrap((everything,), difference, vectorized=False, n_resamples=resamples,
                         confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = interval.confidence_interval
    return {"difference": difference(everything), "low": float(low), "high": float(high),
            "confidence": confidence, "images": n, "resamples": resamples, "method": "paired bootstrap over images"}
