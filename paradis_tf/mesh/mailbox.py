"""Feature maps pushed by peers (Exchange), waiting for the Run that needs them.

A peer's Exchange can arrive before or after the local Run for the same
request reaches the point where it needs the tensor; both sides meet on one
future per (activation, request, producer role, producer segment). Entries
whose Run never comes (a request the coordinator gave up on) expire after a
TTL. The number of entries is bounded in all, and the entries a producer's
Exchange created (feature maps no Run waits for yet) are bounded per
(activation, producer role): a peer that floods Exchange fills its own share,
never the room other peers' feature maps and local Runs need.
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
    """Feature maps keyed by (activation, request, producer role, producer segment).

    Args:
        ttl_s: how long an entry waits for its other side.
        max_entries: entries in all (either side may create one).
        max_per_producer: entries that `put` created (a feature map no Run
            waits for yet) per (activation, producer role).
    """

    def __init__(self, ttl_s: float = limits.MAILBOX_TTL_S, max_entries: int = limits.MAILBOX_MAX_ENTRIES,
                 max_per_producer: int = limits.MAILBOX_MAX_PER_PRODUCER):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_per_producer = max_per_producer
        # key -> (created, future, whether a put created it: counted in _by_producer)
        self._entries: dict[Key, tuple[float, asyncio.Future, bool]] = {}
        self._by_producer: dict[tuple[str, int], int] = {}
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    def waiting_from(self, activation_id: str, producer_role: int) -> int:
        """Entries a producer's `put` created that are still kept."""
        return self._by_producer.get((activation_id, producer_role), 0)

    def _future(self, key: Key, by_producer: bool) -> asyncio.Future:
        entry = self._entries.get(key)
        if entry is None:
            producer = (key[0], key[2])
            if by_producer and self._by_producer.get(producer, 0) >= self.max_per_producer:
                self.sweep()
                if self._by_producer.get(producer, 0) >= self.max_per_producer:
                    raise MailboxFull(
                        f"role {key[2]} of activation {key[0]!r} already has {self._by_producer[producer]} feature maps "
                        f"waiting for their Run, the most one producer may have ({self.max_per_producer})"
                    )
            if len(self._entries) >= self.max_entries:
                self.sweep()
                if len(self._entries) >= self.max_entries:
                    raise MailboxFull(f"{len(self._entries)} feature maps are waiting for their Run")
            entry = (time.monotonic(), asyncio.get_running_loop().create_future(), by_producer)
            self._entries[key] = entry
            if by_producer:
                self._by_producer[producer] = self._by_producer.get(producer, 0) + 1
        return entry[1]

    def _pop(self, key: Key) -> None:
        _, fut, by_producer = self._entries.pop(key)
        if by_producer:
            producer = (key[0], key[2])
            n = self._by_producer[producer] - 1
            if n:
                self._by_producer[producer] = n
            else:
                del self._by_producer[producer]
        if not fut.done():
            fut.cancel()

    def put(self, key: Key, value: Any) -> bool:
        """Delivers a feature map; False if one was already delivered (a retry).

        Raises:
            MailboxFull: the producer's share or the whole mailbox is full
                (never when a Run already waits for this key).
        """
        if time.monotonic() - self._last_sweep > 1.0:
            self.sweep()
        fut = self._future(key, by_producer=True)
        if fut.done():
            return False
        fut.set_result(value)
        return True

    async def get(self, key: Key, timeout: float) -> Any:
        """Waits for a feature map; raises asyncio.TimeoutError after ``timeout``.

        Raises:
            MailboxFull: no entry for ``key`` yet and the whole mailbox is full.
        """
        fut = self._future(key, by_producer=False)
        return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, timeout))

    def discard_request(self, activation_id: str, request_id: str) -> None:
        for key in [k for k in self._entries if k[0] == activation_id and k[1] == request_id]:
            self._pop(key)

    def sweep(self) -> int:
        """Drops entries older than the TTL (feature maps whose Run never came)."""
        now = self._last_sweep = time.monotonic()
        old = [k for k, (t, _, _) in self._entries.items() if now - t > self.ttl_s]
        for k in old:
            self._pop(k)
        return len(old)
