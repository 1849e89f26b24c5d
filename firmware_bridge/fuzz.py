"""Fuzzing of the frame decoder, shared by the test suite and tools/fuzz_framing.py.

Each sequence is random bytes, a valid frame with bytes flipped, dropped or
inserted, a truncated frame, or a long run without a delimiter; it is
followed by 0x00 and a valid "marker" frame, which must come out of the
decoder whatever preceded it. The C twin is firmware_bridge/c/tests/fuzz.c.
"""

from __future__ import annotations

import random
from typing import Callable

from firmware_bridge.framing import BadFrame, Frame, FrameDecoder, encode_frame


def fuzz_decoder(n: int, seed: int, progress: Callable[[int], None] | None = None) -> dict:
    """Feeds `n` random or mutated byte sequences, each followed by a valid frame.

    Args:
        n: how many sequences.
        seed: seed of the generator.
        progress: called as progress(done) every 10,000 sequences.

    Returns:
        Counts: sequences, bad_frames, frames_in_garbage (mutations that
        still form a valid frame, e.g. a dropped delimiter), bytes.

    Raises:
        AssertionError: a valid frame after garbage was not decoded.
    """
    rnd = random.Random(seed)
    dec = FrameDecoder(max_payload=512)
    templates = [encode_frame(Frame(rnd.randrange(256), rnd.randrange(65536), rnd.randbytes(rnd.randrange(300))))
                 for _ in range(64)]
    counts = {"sequences": 0, "bad_frames": 0, "frames_in_garbage": 0, "bytes": 0}
    for i in range(n):
        mode = i % 4
        if mode == 0:
            garbage = rnd.randbytes(rnd.randrange(1, 200))
        elif mode == 1:  # a valid frame with bytes flipped, dropped, inserted
            g = bytearray(rnd.choice(templates))
            for _ in range(rnd.randrange(1, 4)):
                op, p = rnd.randrange(3), rnd.randrange(len(g))
                if op == 0:
                    g[p] ^= 1 << rnd.randrange(8)
                elif op == 1:
                    del g[p]
                else:
                    g.insert(p, rnd.randrange(256))
            garbage = bytes(g)
        elif mode == 2:  # truncated frame
            t = rnd.choice(templates)
            garbage = t[:rnd.randrange(len(t) - 1)]
        else:  # long runs without a delimiter
            garbage = bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(500, 1500)))
        marker = Frame(0x42, i & 0xFFFF, i.to_bytes(4, "little"))
        out = dec.feed(garbage + b"\x00" + encode_frame(marker))
        counts["sequences"] += 1
        counts["bytes"] += len(garbage)
        counts["bad_frames"] += sum(isinstance(x, BadFrame) for x in out)
        counts["frames_in_garbage"] += sum(isinstance(x, Frame) for x in out[:-1])
        if not out or out[-1] != marker:  # not `assert`: must hold under python -O too
            raise AssertionError(f"sequence {i} (seed {seed}): the valid frame after garbage was lost")
        if progress and (i + 1) % 10_000 == 0:
            progress(i + 1)
    return counts
