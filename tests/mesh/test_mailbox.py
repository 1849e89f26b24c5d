"""The exchange mailbox: either side may come first; old entries expire; bounded."""

import asyncio
import time

import pytest

from paradis_tf.mesh.mailbox import Mailbox, MailboxFull


def test_put_before_or_after_get_and_expiry():
    async def go():
        box = Mailbox(ttl_s=0.05, max_entries=3)
        assert box.put(("a", "r1", 0, 0), "early") is True
        assert box.put(("a", "r1", 0, 0), "duplicate") is False  # a retried Exchange
        assert await box.get(("a", "r1", 0, 0), 1.0) == "early"
        waiter = asyncio.ensure_future(box.get(("a", "r2", 1, 0), 1.0))
        await asyncio.sleep(0.01)
        box.put(("a", "r2", 1, 0), "late")
        assert await waiter == "late"
        with pytest.raises(asyncio.TimeoutError):
            await box.get(("a", "r3", 1, 0), 0.01)
        box.discard_request("a", "r1")
        box.discard_request("a", "r2")
        assert len(box) == 1  # r3's entry waits for its TTL
        time.sleep(0.06)
        box.put(("a", "r4", 0, 0), 1)
        box.put(("a", "r5", 0, 0), 1)
        box.put(("a", "r6", 0, 0), 1)
        with pytest.raises(MailboxFull):
            box.put(("a", "r7", 0, 0), 1)
        time.sleep(0.06)
        box.put(("a", "r7", 0, 0), 1)  # expired entries make room
        assert len(box) == 1

    asyncio.run(go())
