"""Stopping on SIGINT and SIGTERM at a safe point: :class:`DeferredSignals`.

A ``KeyboardInterrupt`` raised while JAX is compiling or running a program
abandons that work with XLA's threads still busy; the interpreter then tears
itself down under them and the process dies with a segmentation fault after
any message it printed. The training loop therefore does not let the signal
raise: while a :class:`DeferredSignals` is active, SIGINT and SIGTERM only
record themselves, and the loop looks at the record between epochs, when no
compiled work is in flight, and stops there by raising from ordinary Python
code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["SIGNAL_NAMES", "DeferredSignals", "exit_code"]

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def exit_code(signum: int) -> int:
    """The shell's exit status of a process stopped by ``signum``: ``128 + signum`` (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


class DeferredSignals:
    """A context manager: while active, SIGINT and SIGTERM set :attr:`received` instead of acting.

    Handlers can only be installed from the main thread; elsewhere (or for a
    signal the process ignores, ``SIG_IGN``, e.g. under ``nohup``) nothing
    changes. A second signal after the first restores the previous handlers
    and acts as it would have without this (a second Ctrl-C raises
    ``KeyboardInterrupt`` at once). The previous handlers are restored on exit.

    Attributes:
      received: the first signal number received, or ``None``.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN and old is not None:  # None: installed outside Python
                    self._previous[sig] = old
                    signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
            name = SIGNAL_NAMES.get(signum, f"signal {signum}")
            # os.write, not print: a handler may run while the main thread is inside sys.stderr's own write
            with contextlib.suppress(OSError):
                os.write(
                    2, f"\n{name} received: stopping after the running epoch (send it again to stop at once)\n".encode()
                )
            return
        self._restore()
        old = signal.getsignal(signum)
        if callable(old):
            old(signum, frame)
        else:  # SIG_DFL: die of the signal, as without us
            signal.raise_signal(signum)

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for sig, old in previous.items():
            signal.signal(sig, old)

    def __exit__(self, *exc) -> None:
        self._restore()
