"""Folder segmentation datasets: discovery, validation, decoding and caching.

Layout
------
A dataset root uses one of two layouts::

    ROOT/train/images/*.{jpg,jpeg,png}    ROOT/images/*.{jpg,jpeg,png}
    ROOT/train/labels/*.png               ROOT/labels/*.png
    ROOT/val/images/...                   (split into train/val with
    ROOT/val/labels/...                    ``val_fraction``)

Folder names may also be singular (``image/``, ``label/``), ``masks/`` or
``annotations/``, or side by side (``train/`` + ``trainannot/``, ``val/`` +
``valannot/``); ROOT/dataset.toml can name them (``images``, ``labels``) and a
label suffix (``label_suffix = "_mask"``: ``x.jpg`` <-> ``x_mask.png``) and an image
suffix (``image_suffix = "_image"``: ``x_image.png`` <-> ``x.png``); two usual label (or
image) folder names in one folder are refused rather than guessed; see
:mod:`~seg.data.layout` and :mod:`~seg.data.dataset_spec`.

Label conventions
-----------------
ROOT/dataset.toml (:func:`read_dataset_spec`) says how label files encode
classes: names or a colour table (``classes``), the ignore value
(``ignore_index``, default 255) and a ``label_map``.  Without one, masks whose
values across all files are exactly {0, 255} or {0, 1} are background/foreground
(255 -> 1).  After decode every label is canonical: class indices and 255
(``IGNORE_INDEX``).  ``SegmentationData.spec`` is the resolved spec; see
:mod:`~seg.data.conventions` for the rules (too few classes, strays, warnings).

Images and labels are paired by file stem (``a.jpg`` <-> ``a.png``).  Image
suffixes are matched case-insensitively.  Labels are single-channel PNGs whose
pixel values are class indices ``0..num_classes-1``; ``255`` (``IGNORE_INDEX``)
marks pixels to ignore.  When the root has ``train/`` and ``val/`` that split is
used (a ``val_fraction`` is then ignored with a warning); the flat
``images/``+``labels/`` layout needs ``val_fraction``, and its split is
deterministic: stems are ranked by a SHA-256 hash of ``(split_seed, stem)``, so
the same stems always go to val and adding a file moves few others.

Validation
----------
Everything is validated once, in :func:`load_dataset`, before any training.
Every problem raises a subclass of :class:`DatasetError` (itself a
``ValueError``) whose message names the offending file(s) by full path and says
what was expected:

* :class:`MissingDirectoryError` - a directory (or the whole layout) is missing;
* :class:`EmptyDirectoryError` - a directory holds no usable image files;
* :class:`UnpairedFileError` - images without labels / labels without images;
* :class:`DuplicateStemError` - two files share a stem (``a.jpg`` and ``a.png``);
* :class:`SizeMismatchError` - a label's size differs from its image's;
* :class:`LabelValueError` - label values ``>= num_classes`` other than 255;
* :class:`LabelFormatError` - a label that is not a PNG, or a colour label;
* :class:`UnreadableFileError` - a zero-byte, truncated or corrupt file;
* :class:`ImageTooLargeError` - an image over Pillow's decompression-bomb limit;
* :class:`SpecError` - a ROOT/dataset.toml that cannot be read or has a bad key.

Hidden files (``.name``), sub-directories and files with other suffixes
(``Thumbs.db``, ``notes.txt``) are skipped with one :class:`IgnoredFileWarning`
per directory listing them.

Normalisation
-------------
Images: the EXIF orientation is applied first (``ImageOps.exif_transpose``),
then the image is converted to RGB.  Grayscale is replicated to three channels,
palette images are expanded, CMYK is converted by Pillow, and for RGBA/LA the
alpha channel is dropped (the colour values are kept as stored, not composited).
16-bit grayscale images are scaled to 8 bits.

Labels: EXIF orientation is applied as for images (a no-op for ordinary PNGs),
so a label must match its image's *displayed* size.  Mode ``L`` is used as is;
mode ``P`` uses the raw palette indices as classes (VOC style); 16/32-bit
integer modes are accepted when every value is valid and narrowed to uint8;
``RGB``/``RGBA``/``LA``/``PA`` are accepted only when all colour channels are
equal and the alpha is fully opaque; mode ``1`` becomes 0/1.

Caching
-------
Decoded images/labels are held in memory as uint8 tensors.  :func:`load_dataset`
keeps a process-level cache keyed by (resolved root, num_classes, val_fraction,
split_seed, scale, dataset spec) and validated against a signature of the paired files (paths,
sizes, mtimes), so loading the same dataset twice returns the same
:class:`SegmentationData` object without decoding again; changed files cause a
reload.  The cached tensors are shared: treat them as read-only (transforms must
not modify them in place).  :func:`clear_cache` empties the cache.

Modules
-------
:mod:`~seg.data.errors` (the errors above), :mod:`~seg.data.discover` (finding
and pairing files), :mod:`~seg.data.layout` (root layouts and the
``val_fraction`` split), :mod:`~seg.data.decode` (image/label decoding) and
:mod:`~seg.data.dataset` (splits, mean/std, :func:`load_dataset` and its cache).
Import from :mod:`seg.data` itself; the submodules are an implementation detail.
"""

from __future__ import annotations

from seg.data.conventions import ValueTally, binary_note, label_warnings, refuse_strays, resolve_spec
from seg.data.dataset import (
    SegmentationData,
    Split,
    clear_cache,
    compute_mean_std,
    load_dataset,
    load_labelled_folder,
    scaled_size,
)
from seg.data.dataset_spec import SPEC_FILE, DatasetSpec, SpecError, read_dataset_spec
from seg.data.decode import IGNORE_INDEX, decode_image, decode_label, read_label
from seg.data.discover import IMAGE_SUFFIXES, LABEL_SUFFIX, Pair, find_pairs
from seg.data.errors import (
    DatasetError,
    DuplicateStemError,
    EmptyDirectoryError,
    IgnoredFileWarning,
    ImageTooLargeError,
    LabelFormatError,
    LabelValueError,
    LabelWarning,
    MissingDirectoryError,
    SizeMismatchError,
    UnpairedFileError,
    UnreadableFileError,
)
from seg.data.layout import discover_splits, is_split_layout, split_pairs

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIX",
    "SPEC_FILE",
    "DatasetError",
    "DatasetSpec",
    "DuplicateStemError",
    "EmptyDirectoryError",
    "IgnoredFileWarning",
    "ImageTooLargeError",
    "LabelFormatError",
    "LabelValueError",
    "LabelWarning",
    "SpecError",
    "ValueTally",
    "binary_note",
    "is_split_layout",
    "label_warnings",
    "load_labelled_folder",
    "read_dataset_spec",
    "scaled_size",
    "read_label",
    "refuse_strays",
    "resolve_spec",
    "MissingDirectoryError",
    "Pair",
    "SegmentationData",
    "SizeMismatchError",
    "Split",
    "UnpairedFileError",
    "UnreadableFileError",
    "clear_cache",
    "compute_mean_std",
    "decode_image",
    "decode_label",
    "discover_splits",
    "find_pairs",
    "load_dataset",
    "split_pairs",
]
