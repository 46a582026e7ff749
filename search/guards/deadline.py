"""A per-trial wall-clock limit, so a hung trial (a stuck data loader, a dead file system) is failed.

SIGALRM interrupts the main thread even while it blocks in a loader queue or a file read. The
alarm raises only inside `guarded()` (the training itself); anywhere else (an Optuna or MLflow
write) it only marks the trial expired and the next epoch boundary raises, so storage writes are
never cut in half. Unix only (SIGALRM); the limit is off when `seconds` is None.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TrialTimeout(Exception):
    """The trial ran past its wall-clock limit."""


class WallClockLimit:
    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.expired = False
        self._guarded = False

    def __enter__(self) -> WallClockLimit:
        if self.seconds:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        self.raise_if_expired()
        self._guarded = True
        try:
            yield
        finally:
            self._guarded = False

    @contextmanager
    def unguarded(self) -> Iterator[None]:
        was, self._guarded = self._guarded, False
        try:
            yield
        finally:
            self._guarded = was
        self.raise_if_expired()

    def raise_if_expired(self) -> None:
        if self.expired:
            raise TrialTimeout(f"timeout: the trial ran past its wall-clock limit of {self.seconds:g} s")

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        self.expired = True
        if self._guarded:
            self._guarded = False
            self.raise_if_expired()
