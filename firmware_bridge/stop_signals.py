"""Clean shutdown of the bridge's command-line servers on SIGINT/SIGTERM.

The handler only records the signal; the main thread polls for it.

- A handler that sets a `threading.Event` can deadlock. Python runs handlers
  in the main thread between bytecodes, possibly while that thread holds the
  event's own lock inside `Event.wait()`. A plain attribute store takes no lock.
- Blocking the signals and calling `signal.sigwait` does not work here.
  Threads started before the mask (numpy's OpenBLAS pool, at import) still
  accept the signal, and Python's C handler then raises KeyboardInterrupt
  in the main thread.
- Install the handlers before printing the address the caller waits for:
  a signal sent as soon as the address is read then stops the server
  cleanly instead of killing it.
"""

from __future__ import annotations

import signal
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Records the first SIGINT/SIGTERM after `install()`; `wait()` returns it."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def install(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.received = signal.Signals(signum)

    def wait(self, poll_s: float = 0.1) -> signal.Signals:
        """Sleeps until a stop signal has arrived; a signal cuts the current sleep short."""
        while self.received is None:
            time.sleep(poll_s)
        return self.received
