#!/usr/bin/env python3
"""Fuzzes the serial frame decoders, Python and C, with 1,000,000 sequences each.

    python tools/fuzz_framing.py                     # both, 1,000,000 each
    python tools/fuzz_framing.py --count 100000 --sanitize
    python tools/fuzz_framing.py --only c

Each sequence is random bytes, a mutated or truncated frame, or a long run
without a delimiter, followed by 0x00 and a valid frame that must decode
(firmware_bridge/fuzz.py, firmware_bridge/c/tests/fuzz.c). Exit code 0 when
no sequence lost its frame, no exception escaped and nothing hung.
The test suite runs the same generators with 20,000 sequences.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def fuzz_python(count: int, seed: int) -> dict:
    from firmware_bridge.fuzz import fuzz_decoder

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
