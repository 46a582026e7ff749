"""Classes rule: `num_classes` from the label values (255 is ignore), names from ROOT/classes.txt.

- num_classes = the largest label value + 1; values that skip a class (0, 1, 3) warn: that class
  has no pixels, so it cannot be learned and its IoU is undefined.
- Names: ROOT/classes.txt (one per line, line i names value i - 1) must name exactly num_classes
  classes; the embedded dataset has its own names; otherwise they are the indices.
- Labels with no class pixels at all (every pixel 255) cannot be trained on: refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.plan.decisions import Decision, PlanError
from search.plan.survey import Survey
from seg.data import IGNORE_INDEX


@dataclass(frozen=True)
class ClassPlan:
    num_classes: int
    names: tuple[str, ...] | None  # None: the indices (no classes.txt)
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...] = ()


def plan_classes(survey: Survey) -> ClassPlan:
    values = sorted(survey.values)
    if not values:
        example = survey.train_files[0] if survey.train_files else survey.source
        raise PlanError(f"{survey.source}: the labels have no classes: every pixel of every label (e.g. {example}) "
                        f"is {IGNORE_INDEX}, the ignore value; expected label PNGs whose pixel values are class "
                        f"indices 0, 1, 2, ... ({IGNORE_INDEX} only where a pixel should be ignored)")
    if not any(n for v, n in enumerate(survey.train_pixels) if v != IGNORE_INDEX):
        raise PlanError(f"{survey.source}: the training labels have no classes: every pixel of every training "
                        f"label (e.g. {survey.train_files[0]}) is {IGNORE_INDEX}, the ignore value; expected class "
                        "indices 0, 1, 2, ... in the training labels too")
    k = values[-1] + 1
    missing = sorted(set(range(k)) - set(values))
    warnings = []
    why = f"label values {_span(values)}; {IGNORE_INDEX} is ignore"
    if missing:
        why += f"; no pixels of {missing}"
        warnings.append(f"{survey.source}: the label values skip {missing} (values used: {_span(values)}); "
                        f"those classes have no pixels, so they cannot be learned and their IoU is undefined")
    decisions = [Decision("data", "num_classes", k, why)]
    names = _names(survey, k)
    if names is not None:
        where = "the embedded dataset's classes" if survey.root is None else survey.classes_file
        decisions.append(Decision("data", "class_names", list(names), f"from {where}"))
    return ClassPlan(k, names, tuple(decisions), tuple(warnings))


def _names(survey: Survey, k: int) -> tuple[str, ...] | None:
    if survey.root is None:
        return survey.embedded_names
    names = survey.class_file_names
    if names is not None and len(names) != k:
        raise PlanError(f"{survey.classes_file} names {len(names)} classes but the labels use values "
                        f"{_span(sorted(survey.values))}, i.e. {k} classes; expected one line per class "
                        f"(line i names label value i - 1)")
    return names


def _span(values: list[int]) -> str:
    """[0, 1, 2, 3, 5] -> '0-3, 5'."""
    runs, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur is None or cur != prev + 1:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(runs)
