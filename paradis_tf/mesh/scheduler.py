"""Who gets a node's time: fair turns on its interpreter thread, and a rate limit.

`FairScheduler` runs blocking calls (one segment of a Run, loading a role)
one at a time on its own worker thread. Calls wait in one queue per caller
and the callers take turns (round-robin), so a caller with many big requests
queued delays another caller's request by at most one call of its own, not
by all of them. Within one caller, calls run in the order they came.

`TokenBucket` limits how often something expensive may happen: a burst of
``burst`` at once, then ``rate`` per second.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

__all__ = ["FairScheduler", "TokenBucket"]


class FairScheduler:
    """Blocking calls on one worker thread, round-robin between callers.

    Use from one asyncio event loop (the node's). A call whose awaiting task
    is cancelled while it waits is dropped; one already running finishes on
    the thread and its result is discarded.

    Example:
        >>> sched = FairScheduler()
        >>> out = await sched.run("coordinator-a", program.run_segment, 0, inputs)
    """

    def __init__(self, thread_name_prefix: str = "paradis-interp") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name_prefix)
        self._queues: dict[str, deque[tuple[asyncio.Future, Callable, tuple]]] = {}
        self._turns: deque[str] = deque()  # callers with calls waiting, next turn first
        self._busy = False
        self._closed = False

    def pending(self, caller: str | None = None) -> int:
        """Calls waiting (not running) for ``caller``, or for everyone."""
        if caller is not None:
            return len(self._queues.get(caller, ()))
        return sum(len(q) for q in self._queues.values())

    async def run(self, caller: str, fn: Callable, *args: Any) -> Any:
        """Runs ``fn(*args)`` on the worker thread when ``caller``'s turn comes; returns its result.

        Raises:
            RuntimeError: the scheduler is closed.
            Exception: whatever ``fn`` raised.
        """
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        queue = self._queues.get(caller)
        if queue is None:
            queue = self._queues[caller] = deque()
            self._turns.append(caller)
        queue.append((fut, fn, args))
        self._dispatch(loop)
        return await fut

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._busy and self._turns:
            caller = self._turns.popleft()
            queue = self._queues[caller]
            fut, fn, args = queue.popleft()
            if queue:
                self._turns.append(caller)  # its next call waits for the other callers' turns
            else:
                del self._queues[caller]
            if fut.done():  # cancelled while it waited
                continue
            try:
                running = loop.run_in_executor(self._executor, fn, *args)
            except RuntimeError as e:  # the executor was shut down
                fut.set_exception(e)
                continue
            self._busy = True
            running.add_done_callback(functools.partial(self._finished, fut, loop))

    def _finished(self, fut: asyncio.Future, loop: asyncio.AbstractEventLoop, running: asyncio.Future) -> None:
        self._busy = False
        if running.cancelled():
            fut.cancel()
        elif fut.done():
            running.exception()  # retrieved: the caller went away
        elif running.exception() is not None:
            fut.set_exception(running.exception())
        else:
            fut.set_result(running.result())
        if not loop.is_closed():
            self._dispatch(loop)

    def close(self) -> None:
        """Drops the calls still waiting (their awaiters are cancelled) and waits for the running one."""
        self._closed = True
        for queue in self._queues.values():
            for fut, _, _ in queue:
                fut.cancel()
        self._queues.clear()
        self._turns.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)


class TokenBucket:
    """At most ``burst`` events at once, refilled at ``rate`` per second (thread-safe).

    Args:
        burst: the bucket's size (events allowed back to back).
        rate: tokens added per second.
        clock: seconds, monotonic (for tests).
    """

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError(f"Expected burst >= 1 and rate > 0. Received burst={burst}, rate={rate}.")
        self.burst = int(burst)
        self.rate = float(rate)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """Takes one token; False (and nothing taken) when the bucket is empty."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def wait_s(self) -> float:
        """Seconds until the next token is there (0 when one is)."""
        with self._lock:
            self._refill()
            return max(0.0, (1.0 - self._tokens) / self.rate)
