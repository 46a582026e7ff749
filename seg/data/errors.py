"""Dataset validation errors and the warning for skipped files.

Every problem found while loading a dataset raises a subclass of
:class:`DatasetError` (itself a ``ValueError``) whose message names the
offending file(s) by full path; see the :mod:`seg.data` docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_MAX_LISTED = 10


class DatasetError(ValueError):
    """Base class of every dataset validation error."""


class MissingDirectoryError(DatasetError):
    """A required directory (or the whole expected layout) does not exist."""


class EmptyDirectoryError(DatasetError):
    """A directory exists but holds no usable files."""


class UnpairedFileError(DatasetError):
    """Images without a label or labels without an image."""


class DuplicateStemError(DatasetError):
    """Several files in one directory share a stem (e.g. a.jpg and a.png)."""


class SizeMismatchError(DatasetError):
    """A label's width/height differ from its image's (displayed) size."""


class LabelValueError(DatasetError):
    """A label holds values that are neither class indices nor IGNORE_INDEX."""


class LabelFormatError(DatasetError):
    """A label file whose format cannot be converted to class indices unambiguously."""


class UnreadableFileError(DatasetError):
    """A zero-byte, truncated or otherwise undecodable file."""


class ImageTooLargeError(UnreadableFileError):
    """An image over Pillow's decompression-bomb limit: reported as too large, not as corrupt."""


class LabelWarning(UserWarning):
    """Label values that load but deserve a look: a gap in the values, a class absent from val."""


class IgnoredFileWarning(UserWarning):
    """Hidden or non-image files were skipped during discovery."""


def _format_paths(paths: Sequence[Path | str], limit: int = _MAX_LISTED) -> str:
    """One path per indented line, capped at ``limit`` with a count of the rest."""
    lines = [f"  {p}" for p in paths[:limit]]
    if len(paths) > limit:
        lines.append(f"  ... and {len(paths) - limit} more")
    return "\n".join(lines)
