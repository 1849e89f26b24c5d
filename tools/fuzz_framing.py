#!/usr/bin/env python3
"""Fuzzes the serial frame decoders, Python and C, with 1,000,000 sequences each.

    python tools/fuzz_framing.py                     # both, 1,000,000 each
    python tools/fuzz_framing.py --count 100000 --sanitize
    python tools/fuzz_framing.py --only c

Each sequence is random bytes, a valid frame with bytes flipped, dropped or
inserted, a truncated frame, or a long run without a delimiter; it is
followed by 0x00 and a valid "marker" frame, which must come out of the
decoder whatever preceded it (`fuzz_decoder` here; the C twin is
firmware_bridge/c/tests/fuzz.c). Exit code 0 when no sequence lost its
frame, no exception escaped and nothing hung. The test suite runs the same
generators with 20,000 sequences.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from firmware_bridge.framing import BadFrame, Frame, FrameDecoder, encode_frame  # noqa: E402 - this checkout's kit


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


def fuzz_python(count: int, seed: int) -> dict:
    start = time.perf_counter()
    counts = fuzz_decoder(count, seed, progress=lambda done: print(f"\r  python: {done:,}/{count:,}", end="",
                                                                     file=sys.stderr, flush=True))
    print(file=sys.stderr)
    counts["seconds"] = time.perf_counter() - start
    return counts


def fuzz_c(count: int, seed: int, sanitize: bool, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as build:
        make = ["make", "-s", "-C", os.path.join(ROOT, "firmware_bridge", "c"), f"BUILD={build}", "CC=gcc"]
        if sanitize:
            make.append("SANITIZE=1")
        subprocess.run(make + [os.path.join(build, "fuzz")], check=True)
        start = time.perf_counter()
        r = subprocess.run([os.path.join(build, "fuzz"), str(count), str(seed)], capture_output=True, text=True,
                           timeout=timeout)
        seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise AssertionError(f"C decoder: {r.stdout.strip()} {r.stderr.strip()[-2000:]}")
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", r.stdout)}
    counts["seconds"] = seconds
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1_000_000, help="sequences per decoder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default: %(default)s)")
    p.add_argument("--only", choices=["python", "c"], help="fuzz one decoder only")
    p.add_argument("--sanitize", action="store_true", help="build the C decoder with ASan + UBSan")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run counts as hung "
                                                                "(default: %(default)s)")
    args = p.parse_args(argv)
    rows, failed = [], False
    for name in ("python", "c"):
        if args.only and args.only != name:
            continue
        try:
            counts = (fuzz_python(args.count, args.seed) if name == "python"
                      else fuzz_c(args.count, args.seed, args.sanitize, args.timeout))
            rows.append((name, "ok", counts))
        except (AssertionError, subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            rows.append((name, f"FAILED: {e}", {}))
            failed = True
    print(f"{'decoder':8} {'result':8} {'sequences':>11} {'garbage bytes':>14} {'bad frames':>11} "
          f"{'frames in garbage':>18} {'seconds':>8}")
    for name, result, c in rows:
        if not c:
            print(f"{name:8} {result}")
            continue
        print(f"{name:8} {result:8} {c['sequences']:>11,} {c['bytes']:>14,} {c['bad_frames']:>11,} "
              f"{c['frames_in_garbage']:>18,} {c['seconds']:>8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
