"""The byte streams a board emulator serves on: pty pairs, file descriptors, TCP sockets.

A `Link` reads with a timeout and writes bytes; `LineClock` delays them to
a UART's rate. The fault proxy uses the same links on its two sides.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
import tty
from typing import Protocol


class Link(Protocol):
    """A byte stream the emulator serves on."""

    def read(self, timeout: float) -> bytes | None: ...  # b"" on timeout, None when closed

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class FdLink:
    """A file descriptor: the master side of a pty, or one end of a socketpair."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return b""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # pty with no slave open right now: keep serving
                time.sleep(min(timeout, 0.05))
                return b""
            return None
        return data if data else None

    def write(self, data: bytes, timeout: float = 2.0) -> None:
        """Writes `data`; what the line does not take within `timeout` is lost,
        as on a UART nobody reads (the emulator never blocks for good)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _, w, _ = select.select([], [self.fd], [], remaining)
            if not w:
                continue
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class SocketLink(FdLink):
    """A connected TCP socket (pyserial `socket://`): read as a file
    descriptor, written in full (TCP has its own flow control)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.fileno())
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class PtyPair:
    """A pseudo-terminal: the emulator serves the master, hosts open `path`.

    The slave stays open here too, so the master keeps working while no host
    has the port open, and it is raw, so every byte passes unchanged.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class LineClock:
    """Delays bytes to the rate of a UART at `baudrate` (8N1: 10 bits a byte)."""

    def __init__(self, baudrate: int | None) -> None:
        self.byte_time = 10.0 / baudrate if baudrate else 0.0
        self._free = 0.0  # when the line is next idle

    def wait(self, nbytes: int) -> None:
        """Sleeps until `nbytes` sent from now (or after the line frees) have crossed it."""
        if not self.byte_time:
            return
        now = time.perf_counter()
        self._free = max(self._free, now) + nbytes * self.byte_time
        delay = self._free - now
        if delay > 0:
            time.sleep(delay)
