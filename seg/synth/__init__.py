"""Procedural 10-class scene dataset: the embedded default dataset.

No dataset can be downloaded, so the package ships this generator. It renders
scenes of several objects on a textured background and writes them once, in
the same folder layout a user's dataset would have::

    ROOT/train/images/000000.png   RGB image
    ROOT/train/labels/000000.png   "L" image of class ids 0..9 (same stem)
    ROOT/val/images/...            same for the validation split
    ROOT/val/labels/...

Classes: background (0) plus nine object classes, three per shape (disk, square,
triangle), each with its own texture (see ``CLASSES``). Every colour -- object
foreground, texture colours and background -- is drawn from one shared palette
independently of the class, so colour says nothing about the class. Textures come
at two scales: fine ones (2-4 px) are a local cue that a shallow net learns in an
epoch; coarse ones (6-8 px cells, rings, solid) need a receptive field of 12-48 px
and the object's shape, which is where depth and width pay.

Generation is deterministic: each image has its own generator derived from
(seed, split, index), so the same seed gives byte-identical files whatever the
order of generation.

Run it as a script to write a dataset and print statistics::

    python -m seg.synth --out /tmp/synth [--seed 0] [--n-train 400] [--n-val 100]

From code, ``default_dataset_root()`` returns the cached default dataset
(``$SEG_CACHE_DIR`` or ``~/.cache/unet-search``), generating it once.

Modules: :mod:`~seg.synth.spec` (classes, palette, scene knobs),
:mod:`~seg.synth.objects` (shape masks, textures, colours),
:mod:`~seg.synth.scene` (rendering a scene), :mod:`~seg.synth.writer` (writing
the dataset and the cached default dataset) and :mod:`~seg.synth.cli` (the
command line). Import from :mod:`seg.synth` itself.
"""

from __future__ import annotations

from seg.synth.cli import main
from seg.synth.scene import render_scene
from seg.synth.spec import (
    CLASS_DESCRIPTIONS,
    CLASS_SPECS,
    CLASSES,
    NUM_CLASSES,
    NUM_COLOURS,
    PALETTE,
    SHAPES,
    TEXTURES,
    SceneParams,
    scene_params,
)
from seg.synth.writer import (
    COMPLETE_MARKER,
    FORMAT_VERSION,
    SPLITS,
    content_hash,
    dataset_parameters,
    default_cache_dir,
    default_dataset_root,
    generate_dataset,
    is_complete,
    parameters_hash,
    write_splits,
)

__all__ = [
    "CLASSES",
    "CLASS_DESCRIPTIONS",
    "CLASS_SPECS",
    "COMPLETE_MARKER",
    "FORMAT_VERSION",
    "NUM_CLASSES",
    "NUM_COLOURS",
    "PALETTE",
    "SHAPES",
    "SPLITS",
    "TEXTURES",
    "SceneParams",
    "content_hash",
    "dataset_parameters",
    "default_cache_dir",
    "default_dataset_root",
    "generate_dataset",
    "is_complete",
    "main",
    "parameters_hash",
    "render_scene",
    "scene_params",
    "write_splits",
]
