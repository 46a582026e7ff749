"""Ctrl-C and SIGTERM wait for a storage write to finish instead of cutting it in half.

A KeyboardInterrupt raised inside MLflow's SQLAlchemy session skips its rollback (MLflow rolls back
on `Exception` only), so the session keeps SQLite's write lock: every later call fails with
"database is locked" and the interrupted trial's run stays RUNNING. An interrupted journal append
could likewise leave half a line. Tracking calls and the per-epoch Optuna bookkeeping therefore run
inside `deferred_signals()`: a SIGINT or SIGTERM that arrives meanwhile is delivered as soon as the
write returns (milliseconds). A second one is delivered at once, so a hung store never traps the user.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block, then deliver the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: nothing to defer here
        return
    pending: list[tuple[int, FrameType | None]] = []
    previous: dict[int, Any] = {}

    def restore() -> dict[int, Any]:
        """Put the previous handlers back (once) and return them."""
        handlers = dict(previous)
        previous.clear()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        return handlers

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:  # the second signal: the user insists, deliver now
            _deliver(restore().get(signum), signum, frame)
        pending.append((signum, frame))

    for sig in DEFERRED:
        if signal.getsignal(sig) is not None:  # None: a handler set outside Python, left alone
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        handlers = restore()
        if pending and handlers:  # no handlers left: the second signal was delivered already
            signum, frame = pending[0]
            _deliver(handlers.get(signum), signum, frame)


def _deliver(handler: Any, signum: int, frame: FrameType | None) -> None:
    """Run the handler that was in place (a Python callable raises, as Ctrl-C's default does)."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the handlers are restored: the default action happens now


class SignalHold:
    """`deferred_signals()` opened in one place and closed in another: from the end of a trial's objective
    until Optuna has stored its state. Optuna's `_run_trial` tells the storage after the objective
    returns, outside any block of ours; a Ctrl-C or SIGTERM arriving in that write would leave it
    half done (and Optuna's clean-up then fails on a name it never bound). Held there, the signal is
    delivered by `release()`, from the first callback, once the trial is COMPLETE or PRUNED."""

    def __init__(self) -> None:
        self._held: Any = None

    def start(self) -> None:
        if self._held is None:
            self._held = deferred_signals()
            self._held.__enter__()

    def release(self, *_: Any) -> None:
        """Deliver a held signal now (raising as it would have); a no-op when nothing is held. Takes
        Optuna's callback arguments, so it can be the first callback."""
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)
