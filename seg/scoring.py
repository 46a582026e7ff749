"""Score a predictor on a labelled split: one confusion matrix over every pixel, plus each image's own scores.

The folder's figures (per-class IoU, mIoU, pixel accuracy) come from ONE `seg.metrics.ConfusionMatrix`
accumulated over all images at their original resolution, exactly as validation computes them: mIoU is
the mean over the classes present in the labels or the predictions, and label pixels equal to 255
(ignore) are left out. Each image's own mIoU (from its own matrix, with the same rule) only ranks the
images, so the worst ones can be looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from seg.data import Split
from seg.metrics import ConfusionMatrix, SegScores, intersection_and_union


@dataclass(frozen=True)
class ImageScore:
    index: int  # position in the split
    stem: str
    miou: float
    pixel_accuracy: float
    labelled_pixels: int  # pixels that are not ignore
    # Per class: this image's true-positive pixels and its union (label or prediction), so the folder's
    # IoU over any subset of images is sum(intersection) / sum(union) (e.g. a bootstrap over images).
    intersection: tuple[int, ...] = ()
    union: tuple[int, ...] = ()


@dataclass(frozen=True)
class FolderScores:
    scores: SegScores  # the whole folder, from one confusion matrix
    images: tuple[ImageScore, ...]

    def worst(self, n: int) -> list[ImageScore]:
        """The `n` images with the lowest mIoU (ties: fewer correct pixels first), worst first;
        images with no labelled pixel say nothing and are skipped."""
        scored = [s for s in self.images if s.labelled_pixels > 0]
        return sorted(scored, key=lambda s: (s.miou, s.pixel_accuracy, s.index))[:max(n, 0)]


Predict = Callable[[torch.Tensor], torch.Tensor]  # uint8 (3, H, W) -> class indices (H, W)


def score_folder(predict: Predict, split: Split, num_classes: int,
                 on_image: Callable[[int, int], None] | None = None) -> FolderScores:
    """Predict every image of `split` (e.g. `Predictor.predict`, at the image's own size) and score it.

    `on_image(done, total)` is called after each image (progress). Raises ValueError naming the
    file when a prediction's size differs from its label's.
    """
    total = ConfusionMatrix(num_classes)
    per_image = []
    for index, (pair, image, mask) in enumerate(zip(split.pairs, split.images, split.masks)):
        pred = predict(image)  # (H, W)
        if tuple(pred.shape) != tuple(mask.shape):
            raise ValueError(f"{pair.image}: the prediction is {tuple(pred.shape)} but the label {pair.label} is "
                             f"{tuple(mask.shape)}; the predictor must return the image's own size")
        one = ConfusionMatrix(num_classes)
        one.update(mask, pred.to(mask.device))
        total.mat += one.mat
        s, (tp, union) = one.compute(), intersection_and_union(one.mat)  # (K,) each
        per_image.append(ImageScore(index, pair.stem, s.miou, s.pixel_accuracy, int(one.mat.sum()),
                                    tuple(tp.tolist()), tuple(union.tolist())))
        if on_image is not None:
            on_image(index + 1, len(split))
    return FolderScores(total.compute(), tuple(per_image))
