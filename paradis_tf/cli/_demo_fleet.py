"""The demo's serial board: the TFLM board emulator on a pty (`paradis bridge` in front of it is a
`paradis_tf.mesh.local.BridgeProcess`).

Child processes started and stopped like `paradis_tf.mesh.local.NodeProcess`
(imported only when the demo runs: it pulls in gRPC).
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from pathlib import Path

from paradis_tf.mesh.errors import MeshError

__all__ = ["BoardEmulatorProcess"]


class BoardEmulatorProcess:
    """The TFLM board emulator on a pty (``python -m firmware_bridge.emulator --pty``) in a child process.

    Args:
        board_id: the name the board reports in INFO.
        log_path: where the child's stderr goes.
    """

    def __init__(self, board_id: str, log_path: Path) -> None:
        self.board_id = board_id
        self.log_path = log_path
        self.url = ""
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Starts the emulator; returns its pty path (the first line it prints)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_bridge.emulator", "--pty", "--board-id", self.board_id],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if not line.startswith("/dev/"):
            self.stop()
            raise MeshError(f"the board emulator printed no pty path within {timeout:g} s (got {line!r}); "
                            f"see {self.log_path}")
        self.url = line
        return line

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the emulator closes its pty and exits), SIGKILL if it does not."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
