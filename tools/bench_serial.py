#!/usr/bin/env python3
"""Serial link benchmark: flash throughput and RUN round trip vs the line.

    python tools/bench_serial.py --baud 921600                      # flash throughput
    python tools/bench_serial.py --baud 115200 --baud 921600 --model seg.tflite ...
    python tools/bench_serial.py --baud 921600 --bundle bundle/ --switch 4x0.25

Runs the board emulator in its own process on a pty, throttled to each baud rate (8N1: 10 bits
a byte, each direction), and the real host client against it. Flash
throughput is image bytes per second over the line rate (baud / 10). A RUN
round trip is compared with its lower bound: the request and answer frames'
wire bytes at the line rate plus the board's own inference time (measured
in-process with TFLM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from firmware_bridge import protocol as P  # noqa: E402 - the kit from this checkout
from firmware_bridge.board import Board  # noqa: E402
from firmware_bridge.framing import Frame, encode_frame  # noqa: E402
from firmware_bridge.tflm import probe  # noqa: E402
from paradis_tf import bundle as bundle_format  # noqa: E402


class _EmulatorProcess:
    """`python -m firmware_bridge.emulator --pty` in its own process, as a
    board is its own device (no GIL shared with the host client)."""

    def __init__(self, baud: int, max_payload: int, flash: int, arena: int = 256 << 10) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--baud", str(baud),
                                      "--max-payload", str(max_payload), "--flash", str(flash), "--arena", str(arena)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.close()
            raise SystemExit("bench: the emulator did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> "_EmulatorProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def flash_throughput(baud: int, size: int, max_payload: int, repeats: int = 3) -> dict:
    image = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    rates = []
    with _EmulatorProcess(baud, max_payload, max(size, 1 << 20)) as server, \
            Board.open(server.url, baudrate=baud) as board:
        board.hello()
        for i in range(repeats):
            result = board.flash(f"bench-{i}", image)  # a new name: a full transfer each time
            rates.append(result.throughput)
    line = baud / 10
    best = max(rates)
    return {"baud": baud, "max_payload": max_payload, "image_bytes": size, "bytes_per_s": round(best),
            "line_bytes_per_s": round(line), "fraction_of_line": round(best / line, 3)}


def run_round_trip(baud: int, name: str, model: bytes, max_payload: int, runs: int = 20) -> dict:
    from tflite_micro import runtime

    probed = probe(model, 16 << 20)
    if not probed.fits:
        raise SystemExit(f"bench: {name}: {probed.error}")
    xs = [np.random.default_rng(i).integers(-128, 128, s.shape, dtype=np.int16).astype(s.dtype)
          for i, s in enumerate(probed.inputs)]
    interp = runtime.Interpreter.from_bytes(model, arena_size=probed.arena_used + 1024)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for i, x in enumerate(xs):
            interp.set_input(x, i)
        interp.invoke()
        times.append(time.perf_counter() - start)
    invoke_s = statistics.median(times)
    with _EmulatorProcess(baud, max_payload, max(len(model), 1 << 20), probed.arena_used + 1024) as server, \
            Board.open(server.url, baudrate=baud) as board:
        board.hello()
        board.flash(name, model)
        act = board.activate(hashlib.sha256(model).digest())
        tensors = [P.Tensor.from_numpy(x, s.scale, s.zero_point) for x, s in zip(xs, act.inputs)]
        out = board.run(tensors)
        rtts = []
        for _ in range(runs):
            start = time.perf_counter()
            board.run(tensors)
            rtts.append(time.perf_counter() - start)
    limit = min(max_payload, 0xFFFF)
    wire = _wire_bytes(P.encode_tensors(tensors), limit) + _wire_bytes(P.encode_tensors(out), limit)
    bound = wire * 10 / baud + invoke_s
    rtt = statistics.median(rtts)
    return {"baud": baud, "model": name, "wire_bytes": wire, "invoke_ms": round(invoke_s * 1e3, 3),
            "lower_bound_ms": round(bound * 1e3, 3), "round_trip_ms": round(rtt * 1e3, 3),
            "ratio": round(rtt / bound, 2)}


def _wire_bytes(payload: bytes, limit: int) -> int:
    """Wire bytes of a message sent as fragments of `limit` (ACKs and CONTINUEs of ~17 bytes each)."""
    parts = [payload[i:i + limit] for i in range(0, len(payload), limit)] or [b""]
    extra = (len(parts) - 1) * len(encode_frame(Frame(P.MsgType.ACK, 0, bytes(4))))
    return sum(len(encode_frame(Frame(P.MsgType.RUN, 0, p))) for p in parts) + extra


def _bundle_models(path: str, switch: str) -> list[tuple[str, bytes]]:
    """(name, .tflite bytes) of every segment of plan `switch` in the bundle at `path`."""
    bundle = bundle_format.load(path)
    plan = bundle.plan(switch)
    return [(f"{plan.name}/device-{dev.role}/segment-{seg.index}", bundle.read_bytes(seg.file))
            for dev in plan.devices for seg in dev.segments]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/bench_serial.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--baud", type=int, action="append", help="baud rate(s) (default: 115200 and 921600)")
    p.add_argument("--max-payload", type=int, default=1024, help="board max payload (default: %(default)s)")
    p.add_argument("--image", type=int, default=64 << 10, help="flash image bytes (default: %(default)s)")
    p.add_argument("--model", action="append", default=[], help=".tflite file(s) to time RUN with")
    p.add_argument("--bundle", help="bundle directory: time every segment of --switch")
    p.add_argument("--switch", default="4x0.25", help="plan of --bundle (default: %(default)s)")
    p.add_argument("--runs", type=int, default=20, help="RUN round trips per model (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args(argv)
    bauds = args.baud or [115200, 921600]
    models = []
    for m in args.model:
        with open(m, "rb") as f:
            models.append((os.path.basename(m), f.read()))
    if args.bundle:
        try:
            models += _bundle_models(args.bundle, args.switch)
        except bundle_format.BundleError as e:
            raise SystemExit(f"bench_serial: {e}") from None
    rows = [flash_throughput(b, args.image, args.max_payload) for b in bauds]
    runs = [run_round_trip(b, n, m, args.max_payload, args.runs) for b in bauds for n, m in models]
    if args.json:
        for r in rows + runs:
            print(json.dumps(r))
        return 0
    print(f"flash ({args.image} B image, max payload {args.max_payload})")
    print(f"{'baud':>8} {'B/s':>8} {'line B/s':>9} {'of line':>8}")
    for r in rows:
        print(f"{r['baud']:>8} {r['bytes_per_s']:>8} {r['line_bytes_per_s']:>9} {r['fraction_of_line']:>8.1%}")
    if runs:
        print("\nRUN round trip (median)")
        print(f"{'baud':>8} {'model':40} {'wire B':>7} {'invoke ms':>9} {'bound ms':>9} {'rtt ms':>8} {'ratio':>6}")
        for r in runs:
            print(f"{r['baud']:>8} {r['model'][:40]:40} {r['wire_bytes']:>7} {r['invoke_ms']:>9.3f} "
                  f"{r['lower_bound_ms']:>9.3f} {r['round_trip_ms']:>8.3f} {r['ratio']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
