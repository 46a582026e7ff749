"""Classes rule: `num_classes` from the label values read through the dataset spec, names from the dataset.

- Labels are read as `load_dataset` reads them (`seg.data.conventions`): ROOT/dataset.toml when there is one,
  else 255 is ignore, except that masks holding only 0/255 (or 0/1) are background/foreground (255 -> 1),
  said in one line of the plan with the key that changes it.
- num_classes = the number of classes ROOT/dataset.toml lists, else the largest label value + 1. Without a
  list, a stray value (held by only a few files, or beyond a gap wider than the values used) is refused,
  naming its files; values that skip a class (0, 1, 3) warn: that class has no pixels, so it cannot be
  learned and its IoU is undefined. A class in train but absent from val warns too.
- Fewer than 2 classes is refused, listing the values found and the keys to set.
- Names: ROOT/dataset.toml's classes, else ROOT/classes.txt (one per line, line i names value i - 1); both must
  name exactly num_classes classes (and agree when both exist); the embedded dataset has its own names;
  detected binary masks are background/foreground; otherwise they are the indices.
- Labels with no class pixels at all (every pixel 255) cannot be trained on: refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from search.plan.decisions import Decision, PlanError
from search.plan.survey import Survey
from seg.data import IGNORE_INDEX, SPEC_FILE, DatasetError, ValueTally, binary_note, label_warnings, refuse_strays
from seg.data.conventions import require_two_classes

BINARY_NAMES = ("background", "foreground")


@dataclass(frozen=True)
class ClassPlan:
    num_classes: int
    names: tuple[str, ...] | None  # None: the indices (no classes.txt)
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...] = ()


def _tally(survey: Survey) -> ValueTally:
    """The survey's per-file tally, or one rebuilt from its totals (no file counts: the few-files rule is off)."""
    if survey.tally is not None:
        return survey.tally
    tally = ValueTally()
    tally.pixels["train"] = np.array(survey.train_pixels, dtype=np.int64)
    val = np.zeros(256, dtype=np.int64)
    val[sorted(survey.val_values)] = 1
    tally.pixels["val"] = val
    return tally


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
    spec, tally = survey.spec, _tally(survey)
    try:
        require_two_classes(spec, tally, survey.source)
        if survey.class_file_names is None:  # classes.txt lists the classes as dataset.toml's classes do
            refuse_strays(spec, tally, survey.source)
    except DatasetError as err:
        raise PlanError(str(err)) from err
    k = values[-1] + 1 if spec.class_names is None else len(spec.class_names)
    if values[-1] >= k:
        over = [v for v in values if v >= k]
        files = sorted({f for v in over for f in tally.examples.get(v, [])})[:10]
        raise PlanError(f"{survey.source}: label values {_span(over)} are not among the {k} classes that "
                        f"{spec.source} lists (values 0-{k - 1}); files holding them: {files or 'unknown'}; "
                        "add the classes, or map the values with label_map (e.g. to 255 to ignore them)")
    why = f"label values {_span(values)}; {IGNORE_INDEX} is ignore"
    if spec.class_names is not None:
        why = f"{k} classes listed in {spec.source}; label values {_span(values)}"
    elif spec.keys:
        why += f" (as {spec.source} says)"
    note = binary_note(spec)
    if note is not None:
        why = note
    warnings = label_warnings(tally, k, survey.source)
    missing = sorted(set(range(k)) - set(values))
    if missing:
        why += f"; no pixels of {missing}"
    decisions = [Decision("data", "num_classes", k, why)]
    names, where = _names(survey, k)
    if names is not None:
        decisions.append(Decision("data", "class_names", list(names), f"from {where}"))
    return ClassPlan(k, names, tuple(decisions), tuple(warnings))


def _names(survey: Survey, k: int) -> tuple[tuple[str, ...] | None, str]:
    if survey.root is None:
        return survey.embedded_names, "the embedded dataset's classes"
    from_file, from_spec = survey.class_file_names, survey.spec.class_names
    if from_file is not None and from_spec is not None and from_file != from_spec:
        raise PlanError(f"{survey.classes_file} names {list(from_file)} but {survey.root / SPEC_FILE} names "
                        f"{list(from_spec)}; expected one list of classes (delete one, or make them agree)")
    if from_spec is not None:
        return from_spec, survey.spec.source
    if from_file is not None and len(from_file) != k:
        raise PlanError(f"{survey.classes_file} names {len(from_file)} classes but the labels use values "
                        f"{_span(sorted(survey.values))}, i.e. {k} classes; expected one line per class "
                        f"(line i names label value i - 1)")
    if from_file is not None:
        return from_file, survey.classes_file
    if survey.spec.binary and k == 2:
        return BINARY_NAMES, "the binary-mask rule (0 is background)"
    return None, ""


def _span(values: list[int]) -> str:
    """[0, 1, 2, 3, 5] -> '0-3, 5'."""
    runs, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur is None or cur != prev + 1:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(runs)
