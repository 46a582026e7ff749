"""How a dataset's files encode its classes: the optional ROOT/dataset.toml (nnU-Net's dataset.json idea).

Every command that reads a dataset folder reads this file::

    classes = ["sky", "building", "road"]            # names of label values 0, 1, 2 ...
    classes = [{ name = "road", color = [128, 64, 128] },   # ... or a colour table for RGB label PNGs;
               { name = "void", color = [0, 0, 0], ignore = true }]  # a colour to ignore
    ignore_index = 11          # the file value that means "ignore" (default 255), or "none"
    label_map = { 255 = 1 }    # file value -> class index (or 255 for ignore), applied first
    images = "img"             # folder names, when they are not images/ and labels/
    labels = "gt"
    label_suffix = "_mask"     # x.jpg <-> x_mask.png
    image_suffix = "_image"    # with label_suffix = "_annotation": x_image.png <-> x_annotation.png

A `DatasetSpec` is plain data (`to_dict` / `from_dict`), stored in fingerprints and checkpoints so that
prediction and evaluation read labels the way training did. In memory every label is canonical after
decode: class indices 0..C-1 and 255 (IGNORE_INDEX) for ignore, whatever the files used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from seg.data.errors import DatasetError

SPEC_FILE = "dataset.toml"
KEYS = ("classes", "ignore_index", "label_map", "images", "labels", "label_suffix", "image_suffix")
LABEL_KEYS = ("classes", "ignore_index", "label_map")  # keys that describe the label values themselves
IGNORE = 255  # the internal ignore value (seg.data.decode.IGNORE_INDEX); not importable here without a cycle
Color = tuple[int, int, int]


class SpecError(DatasetError):
    """A dataset.toml that cannot be read, or a key with a value that is not what it should be."""


@dataclass(frozen=True)
class DatasetSpec:
    """The conventions of one dataset's files; the default spec is "values are classes, 255 is ignore"."""

    class_names: tuple[str, ...] | None = None
    class_colors: tuple[Color, ...] | None = None  # one per class name, for RGB label PNGs
    ignore_index: int | None = IGNORE  # the FILE value meaning ignore; None: no value does
    label_map: dict[int, int] = field(default_factory=dict)  # file value -> class index or 255
    images: str | None = None
    labels: str | None = None
    label_suffix: str = ""
    image_suffix: str = ""  # the part of an image's stem that is not its pair's stem (CWFID's "_image")
    binary: bool = False  # 0/255 or 0/1 masks detected: background/foreground (255 -> 1)
    # Anti-aliased or JPEG 0/255 masks detected: file values >= this are foreground 1, the rest background 0.
    binary_threshold: int | None = None
    source: str = "default"  # "ROOT/dataset.toml", "detected" or "default"
    ignore_colors: tuple[Color, ...] = ()  # colour-table entries marked ignore = true
    keys: tuple[str, ...] = ()  # the keys dataset.toml set (what was said, not defaulted)

    @property
    def describes_labels(self) -> bool:
        """True when the label values were described (dataset.toml) or already resolved (binary)."""
        return self.binary or any(k in self.keys for k in LABEL_KEYS)

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def map_value(self, value: int) -> int:
        """The class index (or 255) a file value decodes to, before validation."""
        if value in self.label_map:
            return self.label_map[value]
        if self.binary_threshold is not None:
            return int(value >= self.binary_threshold)
        if self.ignore_index is not None and value == self.ignore_index:
            return IGNORE
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON, TOML, checkpoints): label_map keys become strings."""
        return {
            "class_names": None if self.class_names is None else list(self.class_names),
            "class_colors": None if self.class_colors is None else [list(c) for c in self.class_colors],
            "ignore_index": self.ignore_index,
            "label_map": {str(k): v for k, v in sorted(self.label_map.items())},
            "images": self.images, "labels": self.labels, "label_suffix": self.label_suffix,
            "image_suffix": self.image_suffix, "binary": self.binary, "binary_threshold": self.binary_threshold,
            "source": self.source,
            "ignore_colors": [list(c) for c in self.ignore_colors], "keys": list(self.keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DatasetSpec:
        """Inverse of `to_dict`; None or {} is the default spec (checkpoints written before specs)."""
        if not data:
            return cls()
        names = data.get("class_names")
        colors = data.get("class_colors")
        return cls(
            class_names=None if names is None else tuple(str(n) for n in names),
            class_colors=None if colors is None else tuple(_color(c, "class_colors") for c in colors),
            ignore_index=data.get("ignore_index", IGNORE),
            label_map={_int_key(k, "label_map"): int(v) for k, v in (data.get("label_map") or {}).items()},
            images=data.get("images"), labels=data.get("labels"), label_suffix=data.get("label_suffix") or "",
            image_suffix=data.get("image_suffix") or "",
            binary=bool(data.get("binary", False)), binary_threshold=data.get("binary_threshold"),
            source=str(data.get("source", "default")),
            ignore_colors=tuple(_color(c, "ignore_colors") for c in data.get("ignore_colors") or ()),
            keys=tuple(data.get("keys") or ()),
        )

    def with_binary(self, remap_255: bool) -> DatasetSpec:
        """The resolved spec for detected binary masks (0/255: 255 -> 1; 0/1: as is)."""
        label_map = {**self.label_map, IGNORE: 1} if remap_255 else dict(self.label_map)
        return replace(self, binary=True, label_map=label_map, source="detected")

    def with_binary_threshold(self, threshold: int) -> DatasetSpec:
        """The resolved spec for detected anti-aliased 0/255 masks: values >= threshold are foreground 1."""
        return replace(self, binary=True, binary_threshold=threshold, source="detected")


def read_dataset_spec(root: str | Path) -> DatasetSpec:
    """ROOT/dataset.toml when there is one (errors name the file and the key), else the default spec."""
    path = Path(root) / SPEC_FILE
    if not path.is_file():
        return DatasetSpec()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from err
    return parse_spec(raw, str(path))


def parse_spec(raw: Mapping[str, Any], where: str) -> DatasetSpec:
    """A spec from dataset.toml's table; `where` names the file in every error."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; expected some of {list(KEYS)}")
    names, colors, ignore_colors = _classes(raw.get("classes"), where)
    return DatasetSpec(
        class_names=names, class_colors=colors, ignore_colors=ignore_colors,
        ignore_index=_ignore_index(raw.get("ignore_index", IGNORE), where),
        label_map=_label_map(raw.get("label_map", {}), where),
        images=_folder(raw, "images", where), labels=_folder(raw, "labels", where),
        label_suffix=_suffix(raw.get("label_suffix", ""), where, "label_suffix"),
        image_suffix=_suffix(raw.get("image_suffix", ""), where, "image_suffix"),
        source=where, keys=tuple(k for k in KEYS if k in raw),
    )


def _classes(value: Any, where: str) -> tuple[tuple[str, ...] | None, tuple[Color, ...] | None, tuple[Color, ...]]:
    if value is None:
        return None, None, ()
    example = 'classes = ["background", "road"] or classes = [{ name = "road", color = [128, 64, 128] }, ...]'
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: classes = {value!r}; expected a non-empty list: {example}")
    if all(isinstance(v, str) for v in value):
        names = tuple(v.strip() for v in value)
        _check_names(names, where)
        return names, None, ()
    if not all(isinstance(v, dict) for v in value):
        raise SpecError(f"{where}: classes mixes names and tables; expected all names or all tables: {example}")
    names, colors, ignored = [], [], []
    for i, entry in enumerate(value):
        extra = sorted(set(entry) - {"name", "color", "ignore"})
        if extra or "color" not in entry or (not entry.get("ignore") and "name" not in entry):
            raise SpecError(f"{where}: classes[{i}] = {entry!r}; expected {{ name = \"...\", color = [r, g, b] }} "
                            "(or { color = [r, g, b], ignore = true } for a colour to ignore)")
        color = _color(entry["color"], f"classes[{i}].color", where)
        if entry.get("ignore"):
            ignored.append(color)
        else:
            names.append(str(entry["name"]).strip())
            colors.append(color)
    if not names:
        raise SpecError(f"{where}: every entry of classes is ignore = true; expected at least one class")
    _check_names(tuple(names), where)
    seen: dict[Color, int] = {}
    for i, c in enumerate([*colors, *ignored]):
        if c in seen:
            raise SpecError(f"{where}: classes: colour {list(c)} is listed twice; expected one entry per colour")
        seen[c] = i
    return tuple(names), tuple(colors), tuple(ignored)


def _check_names(names: tuple[str, ...], where: str) -> None:
    if any(not n for n in names) or len(set(names)) != len(names):
        raise SpecError(f"{where}: classes {list(names)}: expected distinct, non-empty names")
    if len(names) > 255:
        raise SpecError(f"{where}: classes lists {len(names)} names; at most 255 classes (255 is ignore)")


def _color(value: Any, key: str, where: str = "dataset spec") -> Color:
    if (not isinstance(value, list | tuple) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise SpecError(f"{where}: {key} = {value!r}; expected [r, g, b] with integers 0..255")
    return (int(value[0]), int(value[1]), int(value[2]))


def _ignore_index(value: Any, where: str) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{where}: ignore_index = {value!r}; expected a non-negative integer "
                        "(the label value that means ignore; default 255) or \"none\"")
    return int(value)


def _int_key(key: Any, where: str) -> int:
    try:
        value = int(str(key).strip())
    except ValueError:
        raise SpecError(f"{where}: label_map key {key!r} is not an integer; expected e.g. "
                        "label_map = { 11 = 255 } (file value = class index, or 255 for ignore)") from None
    if value < 0:
        raise SpecError(f"{where}: label_map key {key!r} is negative; expected a label value >= 0")
    return value


def _label_map(value: Any, where: str) -> dict[int, int]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: label_map = {value!r}; expected a table such as label_map = {{ 11 = 255 }}")
    out = {}
    for key, target in value.items():
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= IGNORE:
            raise SpecError(f"{where}: label_map {key} = {target!r}; expected a class index 0..254 or 255 (ignore)")
        out[_int_key(key, where)] = int(target)
    return out


def _folder(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or Path(value).is_absolute() or ".." in Path(value).parts:
        raise SpecError(f"{where}: {key} = {value!r}; expected a folder name inside the dataset root")
    return value.strip()


def _suffix(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or "/" in value or "\\" in value:
        example = '"_mask" (x.jpg <-> x_mask.png)' if key == "label_suffix" else '"_image" (x_image.png <-> x.png)'
        raise SpecError(f"{where}: {key} = {value!r}; expected a string such as {example}")
    return value
