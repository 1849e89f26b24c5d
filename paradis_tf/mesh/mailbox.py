"""Feature maps pushed by peers (Exchange), waiting for the Run that needs them.

A peer's Exchange can arrive before or after the local Run for the same
request reaches the point where it needs the tensor; both sides meet on one
future per (activation, request, producer role, producer segment). Entries
whose Run never comes (a request the coordinator gave up on) expire after a
TTL, and the number of entries is bounded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from paradis_tf.mesh import limits

Key = tuple[str, str, int, int]  # activation id, request id, producer role, producer segment


class MailboxFull(Exception):
    pass


class Mailbox:
    def __init__(self, ttl_s: float = limits.MAILBOX_TTL_S, max_entries: int = limits.MAILBOX_MAX_ENTRIES):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[Key, tuple[float, asyncio.Future]] = {}
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    def _future(self, key: Key) -> asyncio.Future:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self.sweep()
                if len(self._entries) >= self.max_entries:
                    raise MailboxFull(f"{len(self._entries)} feature maps are waiting for their Run")
            entry = (time.monotonic(), asyncio.get_running_loop().create_future())
            self._entries[key] = entry
        return entry[1]

    def put(self, key: Key, value: Any) -> bool:
        """Delivers a feature map; False if one was already delivered (a retry)."""
        if time.monotonic() - self._last_sweep > 1.0:
            self.sweep()
        fut = self._future(key)
        if fut.done():
            return False
        fut.set_result(value)
        return True

    async def get(self, key: Key, timeout: float) -> Any:
        """Waits for a feature map; raises asyncio.TimeoutError after ``timeout``."""
        fut = self._future(key)
        return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, timeout))

    def discard_request(self, activation_id: str, request_id: str) -> None:
        for key in [k for k in self._entries if k[0] == activation_id and k[1] == request_id]:
            _, fut = self._entries.pop(key)
            if not fut.done():
                fut.cancel()

    def sweep(self) -> int:
        """Drops entries older than the TTL (feature maps whose Run never came)."""
        now = self._last_sweep = time.monotonic()
        old = [k for k, (t, _) in self._entries.items() if now - t > self.ttl_s]
        for k in old:
            _, fut = self._entries.pop(k)
            if not fut.done():
                fut.cancel()
        return len(old)
