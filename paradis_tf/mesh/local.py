"""Node daemons as local subprocesses on loopback (tests, demo, benchmarks).

`NodeProcess` runs `paradis node serve` in a child process and learns its
port from the line it prints once serving (``--listen 127.0.0.1:0`` lets the
kernel pick a free port; a restart reuses it). `LocalMesh` starts several at
once. With ``block_tensorflow=True`` the child refuses to import TensorFlow
or Keras, which proves the node runs on a board without them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from paradis_tf.mesh import security
from paradis_tf.mesh.errors import MeshError

__all__ = ["NodeProcess", "BridgeProcess", "LocalMesh", "BLOCKED_MODULES", "boot_command", "subcommand_main"]

BLOCKED_MODULES = ("tensorflow", "keras", "tf_keras", "tensorflow_cpu")

# Runs one `paradis` sub-command (`node serve`, `bridge`) through its own
# module: the same code as the `paradis` entry point, without importing the
# other sub-commands. The import blocker comes first, so a TensorFlow import
# anywhere on the daemon's path fails loudly.
_BLOCKER = """
import sys
if {block!r}:
    import importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked: the daemon must run without TensorFlow")
            return None
    sys.meta_path.insert(0, _Block())
"""
_BOOT = _BLOCKER + """
from paradis_tf.mesh.local import subcommand_main
sys.exit(subcommand_main({words!r}, sys.argv[1:]))
"""


def boot_command(words: Sequence[str], argv: Sequence[str], block_tensorflow: bool) -> list[str]:
    """The child-process command line of ``paradis WORDS ARGV``."""
    code = _BOOT.format(block=bool(block_tensorflow), blocked=BLOCKED_MODULES, words=tuple(words))
    return [sys.executable, "-c", code, *argv]


def subcommand_main(words: Sequence[str], argv: Sequence[str]) -> int:
    """``paradis WORDS ARGV`` (e.g. ``("node", "serve")``), importing only that sub-command."""
    import argparse
    import importlib

    module = importlib.import_module(f"paradis_tf.cli.cmd_{words[0]}")
    parser = argparse.ArgumentParser(prog="paradis")
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([*words, *argv])
    return int(args.func(args) or 0)


class NodeProcess:
    """One node daemon in a child process.

    Args:
        store: the node's store directory.
        node_id: the node's id.
        capacity: ``--capacity``.
        backend: ``--backend``.
        host: loopback address to listen on.
        cpus: CPU cores to pin the daemon to (``taskset``-like affinity).
        block_tensorflow: make TensorFlow/Keras imports fail in the child.
        extra_args: more ``paradis node serve`` flags.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        node_id: str = "",
        capacity: float = 1.0,
        backend: str = "litert",
        host: str = "127.0.0.1",
        cpus: Sequence[int] | None = None,
        block_tensorflow: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.store = Path(store)
        self.node_id = node_id
        self.capacity = capacity
        self.backend = backend
        self.host = host
        self.cpus = tuple(cpus) if cpus else None
        self.block_tensorflow = block_tensorflow
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.store.parent / f"{self.store.name}.log"

    @property
    def address(self) -> str:
        if not self.port:
            raise MeshError("the node has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    #: the `paradis` sub-command this process runs (subclasses: ``("bridge",)``)
    command_words: tuple[str, ...] = ("node", "serve")

    def _served_args(self) -> list[str]:
        """The flags `node serve` and `bridge` share: where to listen and store, capacity, node id."""
        args = ["--listen", f"{self.host}:{self.port}", "--store", str(self.store), "--capacity", str(self.capacity)]
        if self.node_id:
            args += ["--node-id", self.node_id]
        return args

    def _args(self) -> list[str]:
        return [*self._served_args(), "--backend", self.backend]

    def _command(self) -> list[str]:
        return boot_command(self.command_words, [*self._args(), *self.extra_args], self.block_tensorflow)

    def spawn(self) -> None:
        """Starts the child without waiting (see `wait_ready`)."""
        if self.proc is not None and self.proc.poll() is None:
            raise MeshError(f"node {self.node_id or self.store} is already running")
        self.store.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(self.log_path, "ab")
        preexec = None
        if self.cpus is not None:
            cpus = set(self.cpus)
            preexec = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
        self.proc = subprocess.Popen(
            self._command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env, preexec_fn=preexec
        )
        log.close()

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Waits for the "listening on HOST:PORT" line; returns the address."""
        assert self.proc is not None and self.proc.stdout is not None
        result: list[str] = []

        def read() -> None:
            line = self.proc.stdout.readline().decode(errors="replace")
            result.append(line)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        line = result[0] if result else ""
        if "listening on" not in line:
            self.kill()
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise MeshError(f"node {self.node_id or self.store} did not start within {timeout:g} s; its log ends:\n{tail}")
        self.proc.stdout.close()
        self.port = int(line.strip().rsplit(":", 1)[1])
        return self.address

    def start(self, timeout: float = 60.0) -> str:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise MeshError(f"node {self.node_id} did not stop within {timeout:g} s of SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: the node dies without any shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class BridgeProcess(NodeProcess):
    """`paradis bridge` for one serial board in a child process, without TensorFlow (as on a board).

    Args:
        store: the bridge's store directory.
        serial_url: the board's port (a tty, a pty, ``socket://...``).
        node_id: the bridge's node id.
        capacity: ``--capacity``.
        extra_args: more ``paradis bridge`` flags.
    """

    command_words = ("bridge",)

    def __init__(self, store: str | os.PathLike, serial_url: str, node_id: str, capacity: float = 0.25,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(store, node_id=node_id, capacity=capacity, block_tensorflow=True, extra_args=extra_args)
        self.serial_url = serial_url

    def _args(self) -> list[str]:
        return ["--serial", self.serial_url, *self._served_args()]


def node_tls_args(pki: str | os.PathLike, node_id: str) -> list[str]:
    """``--tls-*`` flags of a loopback node ``node_id`` whose certificate is in ``pki``.

    Issues ``node_id.pem`` (role ``node``, host 127.0.0.1) with the CA in
    ``pki`` (``ca.pem``, ``ca.key``: `security.make_ca`) when it is not there.
    """
    pki = Path(pki)
    if not (pki / f"{node_id}.pem").exists():
        security.issue(pki, node_id, ["127.0.0.1"], role="node")
    return ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / f"{node_id}.pem"), "--tls-key", str(pki / f"{node_id}.key")]


class LocalMesh:
    """Several node daemons on loopback, started concurrently.

    With ``pki`` (a CA directory, `security.make_ca`), node ``i`` serves
    mutual TLS with its own certificate ``node{i}.pem`` (role ``node``,
    issued there when missing).

    Example:
        >>> with LocalMesh(4, capacity=0.25) as mesh:
        ...     with Coordinator(mesh.addresses) as c: ...
    """

    def __init__(
        self,
        n: int,
        root: str | os.PathLike | None = None,
        *,
        capacity: float | Sequence[float] = 1.0,
        backend: str = "litert",
        cpus: Sequence[Sequence[int] | None] | None = None,
        block_tensorflow: bool = False,
        extra_args: Sequence[str] = (),
        pki: str | os.PathLike | None = None,
    ) -> None:
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="paradis-mesh-")
            root = self._tmp.name
        self.root = Path(root)
        caps = [capacity] * n if isinstance(capacity, (int, float)) else list(capacity)
        self.nodes = [
            NodeProcess(
                self.root / f"node{i}", node_id=f"node{i}", capacity=caps[i], backend=backend,
                cpus=cpus[i] if cpus else None, block_tensorflow=block_tensorflow,
                extra_args=[*extra_args, *(node_tls_args(pki, f"node{i}") if pki is not None else ())],
            )
            for i in range(n)
        ]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self, timeout: float = 60.0) -> "LocalMesh":
        try:
            for n in self.nodes:
                n.spawn()
            for n in self.nodes:
                n.wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for n in self.nodes:
            if n.alive():
                n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    n.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalMesh":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
