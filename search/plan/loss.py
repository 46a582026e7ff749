"""Loss rule: `train.loss` is searched over every loss when the classes' pixel frequencies are
imbalanced (the most frequent class has over IMBALANCE times the pixels of the least frequent
present one); otherwise plain cross-entropy is fixed and the space stays smaller."""

from __future__ import annotations

from search.plan.decisions import Decision
from search.plan.survey import Survey
from seg.config import LOSSES

IMBALANCE = 10.0


def plan_loss(survey: Survey, num_classes: int, names: tuple[str, ...] | None = None) -> Decision:
    counts = survey.train_pixels[:num_classes]
    present = [(n, c) for c, n in enumerate(counts) if n]
    (most_n, most), (least_n, least) = max(present), min(present)
    ratio = most_n / least_n
    label = names or tuple(str(i) for i in range(num_classes))
    text = (f"class {label[most]!r} has {ratio:.1f}x the training pixels of class {label[least]!r} "
            f"({most_n / sum(counts):.1%} vs {least_n / sum(counts):.2%})")
    if ratio > IMBALANCE:
        return Decision("space.train", "loss", {"choices": list(LOSSES)},
                        f"imbalanced: {text} > {IMBALANCE:g}x: weighted CE and Dice + CE searched too")
    return Decision("space.train", "loss", "ce", f"balanced enough: {text} <= {IMBALANCE:g}x")
