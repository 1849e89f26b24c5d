"""A noisy serial line: drops, flips and duplicates bytes between a host and a board.

A firmware author puts it between the host and a real board to check that
the firmware's NAK, retransmission, resync and flash resume hold up on a
bad line; the tests put it in front of the emulator.

    proxy = FaultProxy(emulator_url, FaultRates(drop=1e-3, flip=1e-3, duplicate=1e-3), seed=1)
    with proxy:
        board = Board.open(proxy.url)     # a /dev/pts path, like a real tty

The host side is a fresh pty; the board side is a pty path (an emulator's,
or a real tty's) or a `socket://host:port`. Each byte crossing, in either
direction, is independently flipped (one random bit), duplicated or
dropped with the given probabilities, from a seeded generator. `sever()`
cuts the line (everything dropped, like a pulled cable) and `restore()`
mends it; `sever_after(n)` cuts it once n host-to-board bytes have passed.

    python -m firmware_bridge.fault_proxy /dev/pts/3 --drop 1e-3 --flip 1e-3
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import tty
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from firmware_bridge.links import FdLink, PtyPair, SocketLink
from firmware_bridge.stop_signals import StopSignals


@dataclass(frozen=True)
class FaultRates:
    """Per-byte probabilities of each fault."""

    drop: float = 0.0
    flip: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "flip", "duplicate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Expected a probability in [0, 1]. Received {name}={v!r}.")


def _open_target(target: str):
    if target.startswith("socket://"):
        u = urlparse(target)
        sock = socket.create_connection((u.hostname, u.port), timeout=5.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return SocketLink(sock)
    fd = os.open(target, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return FdLink(fd)


class FaultProxy:
    """Forwards bytes between a new host-side pty and `target`, with faults.

    Args:
        target: board side: a tty/pty path or `socket://host:port`.
        rates: fault probabilities (both directions).
        seed: seed of the fault generator, for reproducible runs.
    """

    def __init__(self, target: str, rates: FaultRates = FaultRates(), seed: int = 0) -> None:
        self.rates = rates
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._target = _open_target(target)
        self._pty = PtyPair()
        self.url = self._pty.path
        self._host = FdLink(self._pty.master)
        self._stop = threading.Event()
        self._severed = threading.Event()
        self._sever_at: int | None = None
        self.counts = {"to_board": 0, "to_host": 0, "dropped": 0, "flipped": 0, "duplicated": 0, "severed": 0}
        self._threads = [threading.Thread(target=self._pump, args=(self._host, self._target, "to_board"), daemon=True),
                         threading.Thread(target=self._pump, args=(self._target, self._host, "to_host"), daemon=True)]

    def sever(self) -> None:
        """Cuts the line: every byte from now on is lost."""
        self._severed.set()

    def sever_after(self, nbytes: int) -> None:
        """Cuts the line once `nbytes` more host-to-board bytes have crossed."""
        self._sever_at = self.counts["to_board"] + nbytes

    def restore(self) -> None:
        """Mends the line."""
        self._sever_at = None
        self._severed.clear()

    def damage(self, data: bytes) -> bytes:
        """Applies the fault rates to `data` (the proxy's own per-chunk step)."""
        r = self.rates
        if not (r.drop or r.flip or r.duplicate):
            return data
        a = np.frombuffer(data, dtype=np.uint8).copy()
        with self._rng_lock:
            flip = self._rng.random(a.size) < r.flip
            bits = self._rng.integers(0, 8, a.size)
            dup = self._rng.random(a.size) < r.duplicate
            keep = self._rng.random(a.size) >= r.drop
        a[flip] ^= (1 << bits[flip]).astype(np.uint8)
        counts = np.where(keep, 1 + dup, 0)
        self.counts["flipped"] += int(flip.sum())
        self.counts["duplicated"] += int((dup & keep).sum())
        self.counts["dropped"] += int((~keep).sum())
        return np.repeat(a, counts).tobytes()

    def _pump(self, src, dst, direction: str) -> None:
        while not self._stop.is_set():
            data = src.read(0.05)
            if data is None:
                return
            if not data:
                continue
            if direction == "to_board" and self._sever_at is not None:
                room = self._sever_at - self.counts["to_board"]
                if room <= 0:
                    self._severed.set()
                    self._sever_at = None
                elif room < len(data):
                    self.counts["to_board"] += room
                    self._forward(dst, self.damage(data[:room]))
                    self._severed.set()
                    self._sever_at = None
                    self.counts["severed"] += len(data) - room
                    continue
            if self._severed.is_set():
                self.counts["severed"] += len(data)
                continue
            self.counts[direction] += len(data)
            self._forward(dst, self.damage(data))

    @staticmethod
    def _forward(dst, data: bytes) -> None:
        if data:
            try:
                dst.write(data)
            except OSError:
                pass

    def start(self) -> "FaultProxy":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._target.close()
        self._pty.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.fault_proxy",
                                description="Serve a lossy copy of a serial line on a new pty; prints its path.")
    p.add_argument("target", help="board side: tty/pty path or socket://host:port")
    p.add_argument("--drop", type=float, default=0.0, help="per-byte drop probability (default: %(default)s)")
    p.add_argument("--flip", type=float, default=0.0, help="per-byte bit-flip probability (default: %(default)s)")
    p.add_argument("--duplicate", type=float, default=0.0,
                   help="per-byte duplication probability (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="fault generator seed (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        proxy = FaultProxy(args.target, FaultRates(args.drop, args.flip, args.duplicate), args.seed)
    except (ValueError, OSError) as e:
        print(f"fault_proxy: {e}", file=sys.stderr)
        return 2
    stop = StopSignals().install()
    print(proxy.url, flush=True)
    with proxy:
        stop.wait()
    print(f"fault_proxy: {proxy.counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
