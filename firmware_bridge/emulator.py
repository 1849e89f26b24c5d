"""Board emulator server and command line: an emulated board on a pty or a TCP port.

`serve` moves bytes between a `BoardEmulator` (emulated_board.py) and a
link (links.py), optionally throttled to a baud rate; `EmulatorServer`
does it from a background thread. From a shell:

    python -m firmware_bridge.emulator --pty            # prints /dev/pts/N
    python -m firmware_bridge.emulator --tcp 7777       # socket://127.0.0.1:7777

With `--flash-dir` the flash is non-volatile like a board's: a reset (the
process killed and started again) boots the last activated partition, and
an interrupted flash resumes from the bytes already written.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from typing import Sequence

from firmware_bridge.emulated_board import BoardConfig, BoardEmulator
from firmware_bridge.links import FdLink, LineClock, Link, PtyPair, SocketLink
from firmware_bridge.stop_signals import StopSignals

log = logging.getLogger("paradis.emulator")


def serve(board: BoardEmulator, link: Link, stop: threading.Event, baudrate: int | None = None) -> None:
    """Moves bytes between `link` and `board` until `stop` is set or the link closes.

    With `baudrate`, received bytes reach the board and answers leave it no
    faster than a UART at that rate would carry them, each direction apart.
    """
    rx, tx = LineClock(baudrate), LineClock(baudrate)
    while not stop.is_set():
        data = link.read(0.05)
        if data is None:
            return
        if not data:
            continue
        rx.wait(len(data))
        try:
            out = board.receive(data)
        except Exception:  # noqa: BLE001 - a bug must not take the board down
            log.exception("board emulator failed on %d received bytes", len(data))
            continue
        if out:
            tx.wait(len(out))
            try:
                link.write(out)
            except OSError:
                return


class EmulatorServer:
    """Serves a `BoardEmulator` on a pty or a TCP port from a background thread.

    Use as a context manager; `url` is what to pass to `serial_for_url`
    (a /dev/pts path, or socket://127.0.0.1:PORT).

    Args:
        board: the emulator to serve.
        transport: "pty" or "tcp".
        baudrate: throttle to this UART rate, or None for full speed.
        port: TCP port (0: any free one).
    """

    def __init__(self, board: BoardEmulator, transport: str = "pty", baudrate: int | None = None,
                 port: int = 0, host: str = "127.0.0.1") -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"Expected transport 'pty' or 'tcp'. Received transport={transport!r}.")
        self.board = board
        self.baudrate = baudrate
        self._stop = threading.Event()
        self._pty: PtyPair | None = None
        self._listener: socket.socket | None = None
        if transport == "pty":
            self._pty = PtyPair()
            self.url = self._pty.path
        else:
            self._listener = socket.create_server((host, port))
            self._listener.settimeout(0.1)
            self.url = f"socket://{host}:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, name="board-emulator", daemon=True)

    def start(self) -> "EmulatorServer":
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._pty is not None:
            serve(self.board, FdLink(self._pty.master), self._stop, self.baudrate)
            return
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = SocketLink(conn)
            try:
                serve(self.board, link, self._stop, self.baudrate)
            finally:
                link.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self.board.flash is not None:
            self.board.flash.close()
        if self._pty is not None:
            self._pty.close()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- command line


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 256K, 1M)") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.emulator",
                                description="Emulate a TFLM serial board (firmware_bridge protocol).")
    where = p.add_argument_group("where to serve").add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal; prints its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (socket://); 0: any")
    board = p.add_argument_group("board")
    board.add_argument("--board-id", default="emu-0", help="name INFO reports (default: %(default)s)")
    board.add_argument("--flash", type=_size, default=1 << 20, help="flash slot bytes (default: %(default)s)")
    board.add_argument("--arena", type=_size, default=256 << 10, help="TFLM arena bytes (default: %(default)s)")
    board.add_argument("--max-payload", type=int, default=1024,
                       help="largest frame payload received (default: %(default)s)")
    board.add_argument("--max-message", type=_size, default=64 << 10,
                       help="largest reassembled request (default: %(default)s)")
    board.add_argument("--baud", type=int, default=None, help="throttle to this UART baud rate (default: off)")
    board.add_argument("--flash-dir", default=None, metavar="DIR",
                       help="keep the flash in DIR, so a restart boots the last activated partition and "
                            "resumes an interrupted flash (default: flash in memory, blank at start)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = BoardConfig(args.board_id, args.flash, args.arena, args.max_payload, args.max_message)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    try:
        board = BoardEmulator(config, flash_dir=args.flash_dir)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    server = EmulatorServer(board, "pty" if args.pty else "tcp", args.baud, port=args.tcp or 0)
    stop = StopSignals().install()
    print(server.url, flush=True)
    with server:
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
