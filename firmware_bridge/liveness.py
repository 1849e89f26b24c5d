"""Whether a serial board still answers, and why not: what `paradis bridge` knows about its board.

`BoardMonitor` keeps the board's state (`OK`, `UNRESPONSIVE`, `REFLASHING`,
`FAILED`), the reason, when it last answered, and the line's error counts.
Its `probe` is one check over the line: a PING (answered within `budget_s`
seconds, retransmissions included) while the board is fine; a HELLO when it
is coming back or a RUN just failed, whose INFO says which partition the
board runs, so a board that restarted without its partition gets it
re-flashed before it serves again. The bridge calls `probe` on its one
serial worker (never beside a RUN: the line is stop-and-wait) every
``--ping-interval`` and after every failed Run, and turns the state into
its health status (grpc.health.v1 SERVING or NOT_SERVING).

RUNs are bounded by the same budget (`run_within`) and refused at once
while the board is not `OK` (`check`), so a dead board costs a request at
most one budget, not the client's full retransmission schedule.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from firmware_bridge import protocol as P
from firmware_bridge.board import Board
from firmware_bridge.errors import BoardError, BoardRemoteError, BoardTimeoutError, PortError

__all__ = ["OK", "UNRESPONSIVE", "REFLASHING", "FAILED", "BoardMonitor", "BoardSnapshot", "BoardUnavailableError"]

OK = "ok"  # the board answered its last PING/HELLO and runs the partition the bridge expects
UNRESPONSIVE = "unresponsive"  # no valid answer within the budget, or the port is gone
REFLASHING = "reflashing"  # the board answers but lost its partition (it restarted): being flashed again
FAILED = "failed"  # the board answers, but not as the protocol says, or the re-flash failed

DEFAULT_BUDGET_S = 1.0
# how many recent successful RUN round trips `run_within` looks at
_RECENT_RUNS = 16


class BoardUnavailableError(BoardError):
    """A request refused without touching the line: the board is not answering, or is being re-flashed."""


@dataclass(frozen=True)
class BoardSnapshot:
    """The board as the bridge last saw it (GetInfo's `NodeInfo.board`).

    Attributes:
        state: `OK`, `UNRESPONSIVE`, `REFLASHING` or `FAILED`.
        error: why it is not `OK` ("" when it is).
        since_unix_ms: when it entered this state.
        last_answer_unix_ms: when it last answered a PING or HELLO (0: never).
        board_id: the id its INFO reports.
        port: the serial port.
        retransmits, bad_frames, crc_errors, naks, reopens: the client's
            line counters (`Board.stats`).
        probes_failed: PINGs/HELLOs that got no valid answer.
        reflashes: partitions flashed again after the board lost them.
    """

    state: str
    error: str
    since_unix_ms: int
    last_answer_unix_ms: int
    board_id: str
    port: str
    retransmits: int
    bad_frames: int
    crc_errors: int
    naks: int
    reopens: int
    probes_failed: int
    reflashes: int


class BoardMonitor:
    """The liveness of one board (thread-safe; `probe` runs on the thread that owns the serial line).

    Args:
        board: the board client (after `hello()`).
        budget_s: how long a PING, a HELLO, or a RUN beyond its usual time
            may wait for an answer, retransmissions included, before the
            board counts as unresponsive.
        on_change: called as on_change(snapshot) after every state change
            (on the thread that made it).
    """

    def __init__(self, board: Board, *, budget_s: float = DEFAULT_BUDGET_S,
                 on_change: Callable[[BoardSnapshot], None] | None = None) -> None:
        if not budget_s > 0:
            raise ValueError(f"Expected a positive budget_s. Received budget_s={budget_s!r}.")
        self.board = board
        self.budget_s = float(budget_s)
        self.on_change = on_change
        self._lock = threading.Lock()
        self._state = OK
        self._error = ""
        self._since_ms = _now_ms()
        self._last_answer_ms = _now_ms() if board.info is not None else 0
        self._check_info = False  # read INFO at the next probe (a RUN failed)
        self._reopen = False  # the port failed: open it again before the next probe
        self._probes_failed = 0
        self._reflashes = 0
        self._failures = 0
        self._runs: deque[float] = deque(maxlen=_RECENT_RUNS)

    # --- state --------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def ok(self) -> bool:
        return self._state == OK

    def snapshot(self) -> BoardSnapshot:
        stats = self.board.stats
        info = self.board.info
        with self._lock:
            return BoardSnapshot(
                self._state, self._error, self._since_ms, self._last_answer_ms,
                info.board_id if info is not None else "", self.board.port,
                stats["retransmits"], stats["bad_frames"], stats["crc_errors"], stats["naks"], stats["reopens"],
                self._probes_failed, self._reflashes,
            )

    def _set(self, state: str, error: str = "") -> None:
        with self._lock:
            changed = state != self._state
            self._error = error
            if changed:
                self._state = state
                self._since_ms = _now_ms()
        if changed and self.on_change is not None:
            self.on_change(self.snapshot())

    def check(self) -> None:
        """Raises `BoardUnavailableError` (saying why) unless the board is `OK`."""
        if self._state != OK:
            raise BoardUnavailableError(self.why())

    def why(self) -> str:
        """One line: the board's state and reason, for a refused request."""
        with self._lock:
            state, error, since = self._state, self._error, self._since_ms
        ago = max(0.0, (_now_ms() - since) / 1e3)
        text = f"serial board on {self.board.port} is {state} (for {ago:.1f} s)"
        return f"{text}: {error}" if error else text

    # --- RUNs ---------------------------------------------------------------
    def run_within(self, work_s: float = 0.0) -> float | None:
        """Seconds one RUN may take, retransmissions included: the budget, the board's expected work, and
        twice the slowest of its recent RUNs. None before the partition's first RUN (how long it takes is not
        known yet: the client's retransmission schedule bounds it)."""
        with self._lock:
            if not self._runs:
                return None
            slowest = max(self._runs)
        return self.budget_s + work_s + 2.0 * slowest

    def run_succeeded(self, seconds: float) -> None:
        with self._lock:
            self._runs.append(seconds)
            self._last_answer_ms = _now_ms()

    def forget_runs(self) -> None:
        """Another partition is active: its RUN times are learnt anew."""
        with self._lock:
            self._runs.clear()

    @property
    def failures(self) -> int:
        """Requests over the line that failed so far (`failed`)."""
        return self._failures

    def failed(self, error: BaseException) -> None:
        """Records a failed request over the line (a RUN, an activation); the next `probe` checks the board
        with a HELLO, reading its partition.

        A request without a valid answer makes the board `UNRESPONSIVE` at once (it spent a whole budget
        on it); a board that answers it has no partition is `REFLASHING`.
        """
        with self._lock:
            self._check_info = True
            self._failures += 1
        if isinstance(error, (BoardTimeoutError, PortError)):
            self._lost(error)
        elif isinstance(error, BoardRemoteError) and error.code == P.ErrorCode.NO_PARTITION:
            self._set(REFLASHING, f"the board lost its partition (restarted?): {error}; flashing it again")

    def _lost(self, error: BaseException) -> None:
        if isinstance(error, PortError):
            with self._lock:
                self._reopen = True
        self._set(UNRESPONSIVE, str(error))

    # --- probing ------------------------------------------------------------
    def probe(self, expected_sha256: bytes | None = None, reinstall: Callable[[], None] | None = None) -> str:
        """One check of the board over the line (blocking); returns the new state.

        A PING while the board is `OK`; otherwise, or after a failed RUN, a
        HELLO (reopening the port first if it failed), whose INFO must show
        `expected_sha256` active. If it does not (the board restarted with
        an empty or other flash), `reinstall()` flashes and activates the
        partition again: the state is `REFLASHING` meanwhile and `OK` once
        it is done.

        Args:
            expected_sha256: the partition the bridge's current activation
                runs (None: no activation, nothing to check).
            reinstall: flashes and activates that partition (raises
                `BoardError` or another `ParaDiSError` when it cannot).
        """
        with self._lock:
            full = self._state != OK or self._check_info
            reopen = self._reopen
        try:
            if reopen:
                self.board.reopen()
                with self._lock:
                    self._reopen = False
            if full:
                info = self.board.hello(within=self.budget_s)
            else:
                self.board.ping(within=self.budget_s)
                info = None
        except (BoardTimeoutError, PortError) as e:
            with self._lock:
                self._probes_failed += 1
            self._lost(e)
            return self._state
        except BoardError as e:  # it answers, but not as the protocol says
            with self._lock:
                self._probes_failed += 1
            self._set(FAILED, f"the board answers, but not as the protocol says: {e}")
            return self._state
        with self._lock:
            self._last_answer_ms = _now_ms()
        if info is not None:
            if expected_sha256 is not None and info.active_sha256 != expected_sha256 and reinstall is not None:
                running = (f"{info.active_name or '?'} ({info.active_sha256.hex()[:16]})" if info.active_sha256
                           else "no partition")
                self._set(REFLASHING, f"board {info.board_id!r} runs {running}, not the active role's partition "
                                      f"{expected_sha256.hex()[:16]} (it restarted?); flashing it again")
                try:
                    reinstall()
                except (BoardTimeoutError, PortError) as e:
                    self._lost(e)
                    return self._state
                except Exception as e:  # noqa: BLE001 - a failed re-flash is a state to report, not a crash
                    self._set(FAILED, f"re-flashing the active role's partition failed: {type(e).__name__}: {e}")
                    return self._state
                with self._lock:
                    self._reflashes += 1
            with self._lock:
                self._check_info = False
        self._set(OK)
        return self._state


def _now_ms() -> int:
    return int(time.time() * 1000)
