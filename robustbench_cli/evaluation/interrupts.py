"""Ctrl-C during a scan: it stops the scan between batches or inside an attack, never half-way through the books.

While the harness records a batch (between ``hold(True)`` and the next ``hold(False)``), a Ctrl-C is noted and raised when the recording ends, so the
target's evaluation never loses a recorded batch. Python runs signal handlers in the main thread whichever thread
the signal reached, so this holds where a signal mask would not (another thread may take a masked signal).
"""

from __future__ import annotations

import signal
import threading

_STATE = {"held": False, "pending": False}


def _on_ctrl_c(signum, frame) -> None:
    """SIGINT: Python's own behaviour (KeyboardInterrupt) unless a batch is being recorded; then it waits its turn."""
    if _STATE["held"]:
        _STATE["pending"] = True
        return
    raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """SIGTERM (what ``timeout``, ``docker stop`` and CI cancellation send) stops a scan as Ctrl-C does: between
    batches, with a partial report and its state kept. Only the main thread can install it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_ctrl_c)


def hold(on: bool) -> None:
    """Hold Ctrl-C (``on``) or let it through again; letting go raises one that was held."""
    if on and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)  # the same as the default whenever nothing is held
    _STATE["held"] = on
    if not on and _STATE["pending"]:
        _STATE["pending"] = False
        raise KeyboardInterrupt


def release() -> bool:
    """Let Ctrl-C through again; True when one was held (the caller takes it as the stop)."""
    try:
        hold(False)
        return False
    except KeyboardInterrupt:
        return True

