"""Discovery of one images/labels directory pair: find, validate and pair files by stem.

Hidden entries, sub-directories and files with other suffixes are skipped with
one :class:`IgnoredFileWarning` per directory listing them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from seg.data.errors import (
    DuplicateStemError,
    EmptyDirectoryError,
    IgnoredFileWarning,
    MissingDirectoryError,
    UnpairedFileError,
    _format_paths,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".png"
LOSSY_LABEL_SUFFIXES = (".jpg", ".jpeg")  # read only as binary 0/255 masks (seg.data.conventions)


@dataclass(frozen=True)
class Pair:
    """One image and its label, matched by file stem."""

    stem: str
    image: Path
    label: Path


def _check_directory(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingDirectoryError(f"{what} directory {path} does not exist")
    if not path.is_dir():
        raise MissingDirectoryError(f"{path} is not a directory; expected the {what} directory")


def _is_candidate(path: Path) -> bool:
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
    )


def _scan_directory(directory: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group image-suffixed files by stem; return them and the ignored entries."""
    by_stem: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    for path in sorted(directory.iterdir()):
        if _is_candidate(path):
            by_stem.setdefault(path.stem, []).append(path)
        else:
            ignored.append(path)
    return by_stem, ignored


def _warn_ignored(directory: Path, ignored: list[Path]) -> None:
    if ignored:
        warnings.warn(
            IgnoredFileWarning(
                f"ignoring {len(ignored)} hidden or non-image "
                f"entr{'y' if len(ignored) == 1 else 'ies'} "
                f"in {directory} (only {', '.join(IMAGE_SUFFIXES)} files are used):\n"
                f"{_format_paths(ignored)}"
            ),
            stacklevel=4,
        )


def _raise_duplicates(directory: Path, by_stem: dict[str, list[Path]]) -> None:
    groups = [paths for paths in by_stem.values() if len(paths) > 1]
    if groups:
        listed = [" and ".join(str(p) for p in paths) for paths in groups]
        raise DuplicateStemError(
            f"{len(groups)} stem(s) in {directory} belong to several files, so pairing is "
            f"ambiguous; keep exactly one file per stem:\n{_format_paths(listed)}"
        )


def _collect_files(directory: Path, what: str) -> dict[str, Path]:
    """Validated ``{stem: path}`` of one images/labels directory."""
    _check_directory(directory, what)
    by_stem, ignored = _scan_directory(directory)
    _warn_ignored(directory, ignored)
    if not by_stem:
        detail = f" ({len(ignored)} other entries were ignored)" if ignored else ""
        raise EmptyDirectoryError(
            f"{what} directory {directory} contains no {'/'.join(IMAGE_SUFFIXES)} files{detail}"
        )
    _raise_duplicates(directory, by_stem)
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _common_tails(stems: list[str]) -> list[str]:
    """Endings that every stem shares, to try as a suffix: the tails of the longest common ending that start
    at a separator ("_", "-", "."), longest first, then that whole ending. For 010_image, 020_image:
    ["_image", "0_image"], so "_image" is offered before the mid-word "0_image"; for amask, bmask: ["mask"]."""
    end = stems[0]
    for stem in stems[1:]:
        while not stem.endswith(end):
            end = end[1:]
    tails = [end[i:] for i in range(len(end)) if end[i] in "_-."] + [end]
    shortest = min(len(s) for s in stems)  # a tail that is a whole stem would leave an empty pair stem
    return [t for i, t in enumerate(tails) if 0 < len(t) < shortest and t not in tails[:i]]


def _suffix_hint(images: dict[str, Path], labels: dict[str, Path]) -> str:
    """The dataset.toml keys that would pair every file, when some would: labels named like their image plus
    a suffix (x.jpg, x_mask.png), images plus one (x_rgb.jpg, x.png), or both (x_image.png, x_annotation.png)."""
    for image_tail in ["", *_common_tails(sorted(images))]:
        stripped = {s[: len(s) - len(image_tail)] for s in images}
        for label_tail in ["", *_common_tails(sorted(labels))]:
            if (image_tail or label_tail) and stripped == {s[: len(s) - len(label_tail)] for s in labels}:
                keys = [f'{k} = "{v}"' for k, v in (("image_suffix", image_tail), ("label_suffix", label_tail)) if v]
                return (f'\nevery image is named x{image_tail} and its label x{label_tail}: set '
                        f'{" and ".join(keys)} in ROOT/dataset.toml')
    return ""


def _raise_unpaired(
    images_dir: Path, labels_dir: Path, images: dict[str, Path], labels: dict[str, Path], label_suffix: str = "",
    image_suffix: str = "",
) -> None:
    no_label = [
        f"{images[s]} (expected {labels_dir / (s + label_suffix + LABEL_SUFFIX)})"
        for s in sorted(images.keys() - labels.keys())
    ]
    no_image = [str(labels[s]) for s in sorted(labels.keys() - images.keys())]
    if not no_label and not no_image:
        return
    naming = f"the same stem plus {label_suffix!r}" if label_suffix else "the same stem"
    if image_suffix:
        naming += f" (an image's stem less {image_suffix!r})"
    parts = [
        f"{len(no_label) + len(no_image)} unpaired file(s): every image in {images_dir} needs a "
        f"label with {naming} in {labels_dir} and vice versa"
    ]
    if no_label:
        parts.append(f"{len(no_label)} image(s) without a label:\n{_format_paths(no_label)}")
    if no_image:
        parts.append(f"{len(no_image)} label(s) without an image:\n{_format_paths(no_image)}")
    hint = "" if label_suffix or image_suffix else _suffix_hint(images, labels)
    raise UnpairedFileError("\n".join(parts) + hint)


# --------------------------------------------------------------------------- discovery


def _strip_suffix(files: dict[str, Path], suffix: str) -> dict[str, Path]:
    """{pair stem: file} for files named stem + suffix; others keep a key no file of the other folder can have."""
    if not suffix:
        return files
    return {(stem[: -len(suffix)] if stem.endswith(suffix) else "\0" + stem): path for stem, path in files.items()}


def find_pairs(images_dir: Path, labels_dir: Path, label_suffix: str = "", image_suffix: str = "") -> list[Pair]:
    """Discover and pair image/label files by stem, sorted by stem.

    ``label_suffix`` pairs ``x.jpg`` with ``x<suffix>.png`` (e.g. ``"_mask"``), ``image_suffix``
    ``x<suffix>.jpg`` with ``x.png`` (both: CWFID's ``x_image.png`` with ``x_annotation.png``).  Hidden and
    non-image entries are skipped with an :class:`IgnoredFileWarning` per directory.  Raises
    :class:`MissingDirectoryError`, :class:`EmptyDirectoryError`, :class:`DuplicateStemError` or
    :class:`UnpairedFileError`.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    images = _strip_suffix(_collect_files(images_dir, "images"), image_suffix)
    labels = _strip_suffix(_collect_files(labels_dir, "labels"), label_suffix)
    _raise_unpaired(images_dir, labels_dir, images, labels, label_suffix, image_suffix)
    return [Pair(stem, images[stem], labels[stem]) for stem in sorted(images)]
