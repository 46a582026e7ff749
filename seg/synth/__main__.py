"""Entry point of ``python -m seg.synth`` (see :mod:`seg.synth.cli`)."""

from __future__ import annotations

import sys

from seg.synth.cli import main

if __name__ == "__main__":
    sys.exit(main())
