#!/usr/bin/env python3
"""A factory network on one host: node daemons in Linux network namespaces behind shaped links, with CPU quotas.

    sudo python tools/testbed.py up --profile wifi --nodes 4      # until Ctrl-C; prints the node addresses
    sudo python tools/testbed.py cleanup                          # removes what killed runs left behind
    python tools/testbed.py profiles

Every node daemon (`paradis node serve`, TensorFlow blocked as on a board)
runs in its own network namespace ``pdt-<run>-n<k>``. Its link is a namespace
``pdt-<run>-l<k>`` (a bridge between two veth pairs: one to the node, one to a
bridge in the hub namespace ``pdt-<run>-hub``); one more veth pair joins the
hub to the calling process's namespace (``pdt<run>c``, address
``10.213.X.1/24``, a /24 checked to be unused), so a `Coordinator` in the
calling process reaches the nodes at ``10.213.X.(10+k):50051``, and nodes
reach each other across the hub, each exchange crossing both nodes' links.

Per link: the rate with ``tc tbf`` on both directions (the link namespace's
end toward the node and its end toward the hub). Delay, jitter and loss with ``tc
netem`` where the kernel has it (probed at start), else with a userspace relay
in the node's namespace in front of the daemon (`Relay`: per-chunk delay and
jitter; a TCP stream cannot lose bytes, so a lost segment is modelled as the
stall TCP's recovery would cause: fast retransmit, tail loss probe or
retransmission timeout). `Testbed.record` says which one a run used. Per node, a CPU
quota in its own cgroup (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``).

Needs root. Everything a run creates carries its run id: `Testbed.close` (also
on exceptions, SIGINT, SIGTERM, SIGHUP and at exit) stops the processes and
removes the namespaces (and with them every veth and qdisc), the host's veth
end and the cgroups. See docs/TESTBED.md.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import fcntl
import ipaddress
import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from paradis_tf.mesh.local import NodeProcess  # noqa: E402

__all__ = [
    "Link", "NodeSpec", "Profile", "PROFILES", "Testbed", "TestbedNode", "LinkCounters", "Relay", "CpuControl",
    "TestbedError", "cleanup", "qdisc_commands", "netem_available", "main",
]

PREFIX = "pdt"
STATE_DIR = Path("/run/paradis-testbed")
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
NODE_PORT = 50051
FIRST_NODE_HOST = 10  # node k is 10.213.X.(10+k); the calling process's end is .1
TBF_QUEUE_MS = 100  # how long a packet may wait in a tbf queue before it is dropped (a router's buffer)
CPU_MIN_QUOTA_US = 1000  # the kernel refuses a smaller quota per period
CPU_MIN_PERIOD_US = 1000  # and a shorter period
MSS = 1448  # bytes of payload per TCP segment on a 1500-byte link
RUN_ID = re.compile(r"^[0-9a-f]{6}$")
_NAMESPACE = re.compile(rf"^{PREFIX}-([0-9a-f]{{6}})-(hub|[nl]\d+)$")
_ROOT_LINK = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})c$")
_CGROUP = re.compile(rf"^{PREFIX}-([0-9a-f]{{6}})-n\d+$")


def cpu_period_us(fraction: float) -> int:
    """The CFS period of a node limited to ``fraction`` of a core: the shortest the kernel allows.

    A short period makes a slow node slow evenly, like a slower CPU; over a
    long one a short request either runs at full speed from the quota left
    or stops until the next period. The quota must be at least 1 ms, so the
    period is 1 ms / fraction (0.35: 2.9 ms, 0.15: 6.7 ms), and 1 ms at least.
    """
    return max(CPU_MIN_PERIOD_US, math.ceil(CPU_MIN_QUOTA_US / fraction))


class TestbedError(RuntimeError):
    """The testbed cannot be set up (missing root, tools, kernel features or free addresses) or a command failed."""

    __test__ = False  # not a pytest test class


# --- profiles -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """One node's link to the hub. Each direction gets all of it: the round trip adds ``2 * delay_ms``.

    Args:
        rate_mbit: bandwidth in Mbit/s each way (``tc tbf``); None: unshaped.
        delay_ms: one-way delay.
        jitter_ms: the one-way delay varies uniformly within ``delay_ms +- jitter_ms``.
        loss_pct: chance that a packet (relay: a TCP segment) is lost, per direction.
    """

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_mbit is not None and not (self.rate_mbit > 0 and math.isfinite(self.rate_mbit)):
            raise TestbedError(f"Link.rate_mbit {self.rate_mbit!r}: give a positive number of Mbit/s, or None for unshaped")
        for name in ("delay_ms", "jitter_ms"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise TestbedError(f"Link.{name} {v!r}: give milliseconds, 0 or more")
        if self.jitter_ms > self.delay_ms:
            raise TestbedError(f"Link.jitter_ms {self.jitter_ms!r} is more than delay_ms {self.delay_ms!r}: "
                               "the delay varies within delay +- jitter, so jitter must not exceed delay")
        if not (0 <= self.loss_pct < 100):
            raise TestbedError(f"Link.loss_pct {self.loss_pct!r}: give a percentage in [0, 100)")

    @property
    def delays(self) -> bool:
        """Whether the link adds delay, jitter or loss (netem or the relay)."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0


@dataclass(frozen=True)
class NodeSpec:
    """A node: its link and its CPU quota as a fraction of one core of this host (None: no limit)."""

    link: Link = field(default_factory=Link)
    cpu: float | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None and not (0.01 <= self.cpu <= os.cpu_count()):
            raise TestbedError(f"NodeSpec.cpu {self.cpu!r}: give a fraction of one core between 0.01 and "
                               f"{os.cpu_count()} (this host's cores), or None for no limit")


@dataclass(frozen=True)
class Profile:
    """Per-node links and CPU quotas. Node k gets ``specs[k]``; nodes past the end get the last spec."""

    name: str
    description: str
    specs: tuple[NodeSpec, ...]

    def nodes(self, n: int) -> list[NodeSpec]:
        if n < 1:
            raise TestbedError(f"{n} nodes: give 1 or more")
        return [self.specs[min(k, len(self.specs) - 1)] for k in range(n)]


# CPU fractions are stand-ins for slower boards, not a calibration: a Pi 4's Cortex-A72 runs an int8 MobileNet
# several times slower than one core of this host, a Pi 3's A53 slower still. Override them with --cpu.
_PI4_GIGE = NodeSpec(Link(rate_mbit=1000, delay_ms=0.1), cpu=0.35)
_PI3_100M = NodeSpec(Link(rate_mbit=100, delay_ms=0.25), cpu=0.15)
_WIFI_LINK = Link(rate_mbit=30, delay_ms=3.0, jitter_ms=2.0, loss_pct=0.5)

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("pi4-gige", "Pi 4-class boards on gigabit Ethernet: 1 Gbit/s, 0.2 ms round trip, no loss", (_PI4_GIGE,)),
    Profile("pi3-100m", "Pi 3-class boards on 100 Mbit Ethernet: 100 Mbit/s, 0.5 ms round trip", (_PI3_100M,)),
    Profile("wifi", "Pi 4-class boards on Wi-Fi: 30 Mbit/s, one-way delay 1-5 ms (2-10 ms round trip), 0.5% loss",
            (NodeSpec(_WIFI_LINK, cpu=0.35),)),
    Profile("mixed", "one fast node on gigabit Ethernet (node 0), the others slower boards (Pi 3-class CPU) on Wi-Fi",
            (_PI4_GIGE, NodeSpec(_WIFI_LINK, cpu=0.15))),
)}


# --- commands ---------------------------------------------------------------------------------------------------------
def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *(("-n", ns) if ns else ()), *args], check=check)


def _in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", "netns", "exec", ns, *argv], check=check)


def _tbf_args(rate_mbit: float) -> list[str]:
    rate_bps = rate_mbit * 1e6
    burst = max(10 * 1514, int(rate_bps / 8 * 0.002))  # ten full frames or 2 ms at the rate, whichever is more
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "latency", f"{TBF_QUEUE_MS}ms"]


def qdisc_commands(dev: str, link: Link, netem: bool) -> list[list[str]]:
    """The ``tc`` argument lists that shape the egress of ``dev`` as ``link`` (without ``tc -n NS``).

    With ``netem``, delay/jitter/loss are a netem root qdisc with the tbf as its child; without, only the tbf
    (the relay adds the rest).
    """
    cmds: list[list[str]] = []
    if netem and link.delays:
        em = ["netem", "limit", "100000", "delay", f"{round(link.delay_ms * 1000)}us"]
        if link.jitter_ms:
            em.append(f"{round(link.jitter_ms * 1000)}us")
        if link.loss_pct:
            em += ["loss", f"{link.loss_pct:g}%"]
        cmds.append(["qdisc", "add", "dev", dev, "root", "handle", "1:", *em])
        if link.rate_mbit is not None:
            cmds.append(["qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *_tbf_args(link.rate_mbit)])
    elif link.rate_mbit is not None:
        cmds.append(["qdisc", "add", "dev", dev, "root", *_tbf_args(link.rate_mbit)])
    return cmds


def netem_available(ns: str) -> bool:
    """Whether ``tc netem`` works in this kernel: tried on the loopback of namespace ``ns``, then removed."""
    p = _run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], check=False)
    if p.returncode != 0:
        return False
    _run(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"], check=False)
    return True


def _disable_ipv6(ns: str | None, dev: str = "") -> None:
    """No IPv6 on the testbed's links (no router or neighbour solicitations in the byte counts)."""
    targets = [dev] if dev else ["all", "default"]
    for t in targets:
        path = f"/proc/sys/net/ipv6/conf/{t}/disable_ipv6"
        if ns is None:
            try:
                Path(path).write_text("1")
            except OSError:
                pass  # IPv6 is off in this kernel
        else:
            _in_ns(ns, "sh", "-c", f"[ ! -e {path} ] || echo 1 > {path}", check=False)


# --- CPU quotas -------------------------------------------------------------------------------------------------------
class CpuControl:
    """Per-node CPU quotas: directories ``pdt-<run>-n<k>`` in a cgroup hierarchy with the cpu controller.

    ``kind`` is ``"cgroup2"`` (``cpu.max``) or ``"cgroup1"`` (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
    """

    def __init__(self, kind: str, base: Path) -> None:
        self.kind = kind
        self.base = base

    @property
    def mechanism(self) -> str:
        return "cgroup2 cpu.max" if self.kind == "cgroup2" else "cgroup1 cpu.cfs_quota_us"

    @staticmethod
    def _mounts() -> list[tuple[str, Path]]:
        """(kind, mount point) of every cgroup hierarchy with the cpu controller."""
        out = []
        try:
            lines = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            mnt, fstype, opts = Path(parts[1].replace("\\040", " ")), parts[2], parts[3].split(",")
            if fstype == "cgroup2":
                try:
                    if "cpu" in (mnt / "cgroup.controllers").read_text().split():
                        out.append(("cgroup2", mnt))
                except OSError:
                    pass
            elif fstype == "cgroup" and "cpu" in opts:
                out.append(("cgroup1", mnt))
        return out

    @staticmethod
    def _own(kind: str) -> str:
        """This process's cgroup path in the hierarchy of ``kind``."""
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                hid, ctrls, path = line.split(":", 2)
                if (kind == "cgroup2" and hid == "0") or (kind == "cgroup1" and "cpu" in ctrls.split(",")):
                    return path.lstrip("/")
        except (OSError, ValueError):
            pass
        return ""

    @classmethod
    def bases(cls) -> list[tuple[str, Path]]:
        """Where a run's cgroups may be: each hierarchy's root, then this process's own cgroup in it."""
        out = []
        for kind, mnt in cls._mounts():
            for base in (mnt, mnt / cls._own(kind)):
                if (kind, base) not in out:
                    out.append((kind, base))
        return out

    @classmethod
    def find(cls) -> tuple["CpuControl | None", str]:
        """The first hierarchy where a child cgroup with a CPU quota can be made; else (None, why not)."""
        why = []
        for kind, base in cls.bases():
            probe = base / f"{PREFIX}-probe{os.getpid()}"
            try:
                if kind == "cgroup2":
                    ctl = base / "cgroup.subtree_control"
                    if "cpu" not in ctl.read_text().split():
                        ctl.write_text("+cpu")
                probe.mkdir()
                try:
                    if not (probe / ("cpu.max" if kind == "cgroup2" else "cpu.cfs_quota_us")).exists():
                        raise OSError(f"no cpu quota file in {probe}")
                finally:
                    probe.rmdir()
                return cls(kind, base), ""
            except OSError as e:
                why.append(f"{kind} at {base}: {e.strerror or e}")
        return None, "; ".join(why) or "no cgroup hierarchy with the cpu controller is mounted"

    def create(self, name: str, fraction: float) -> Path:
        """Makes cgroup ``name`` limited to ``fraction`` of one core; returns its directory."""
        path = self.base / name
        path.mkdir()
        period = cpu_period_us(fraction)
        quota = max(CPU_MIN_QUOTA_US, round(fraction * period))
        if self.kind == "cgroup2":
            (path / "cpu.max").write_text(f"{quota} {period}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(period))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        return path

    @staticmethod
    def limit(path: Path) -> float | None:
        """The quota of cgroup ``path`` read back from the kernel, as a fraction of one core (None: no limit)."""
        if (path / "cpu.max").exists():
            quota, period = (path / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota = int((path / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / int((path / "cpu.cfs_period_us").read_text())

    @staticmethod
    def pids(path: Path) -> set[int]:
        try:
            return {int(p) for p in (path / "cgroup.procs").read_text().split()}
        except OSError:
            return set()


# --- the relay (delay, jitter and loss without netem) -----------------------------------------------------------------
class Relay:
    """A TCP relay that delays what it forwards: netem's delay, jitter and loss in user space.

    Listens on ``listen`` and forwards every connection to ``target``. Each chunk read (up to 64 KiB), in each
    direction, is held for ``delay_ms +- jitter_ms`` (uniform) of every link it crosses: this node's link and, when
    the connection comes from another node of the testbed (by source address, ``sources``), that node's link too;
    order is kept (a chunk never overtakes the one before it). A TCP stream cannot lose bytes: each of the chunk's
    segments (``MSS`` bytes) is lost with ``loss_pct`` per link, and a chunk with a lost segment is held as long
    as TCP's recovery would take (`chunk_delay`), stalling the stream behind it as TCP does.

    The upstream connection is made from ``127.x.y.z`` for a source ``w.x.y.z``, so the daemon behind it still
    tells its callers apart. Connection setup is not delayed; the data is.
    """

    CHUNK = 65536

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], link: Link,
                 sources: dict[str, Link] | None = None, rto_ms: float = 200.0, seed: int | None = None) -> None:
        self.listen = listen
        self.target = target
        self.link = link
        self.sources = dict(sources or {})
        self.rto_ms = float(rto_ms)
        self.seed = seed if seed is not None else secrets.randbits(32)
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._conns = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "the relay has not been started"
        return self._sock.getsockname()[:2]

    def start(self) -> "Relay":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.listen)
        s.listen(128)
        self._sock = s
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            socks = list(self._open)
        for s in [self._sock, *socks]:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                down, peer = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(down, peer), name="relay-conn", daemon=True).start()

    def _links(self, peer_ip: str) -> list[Link]:
        return [self.link] + ([self.sources[peer_ip]] if peer_ip in self.sources else [])

    def _connect(self, down: socket.socket, peer) -> None:
        try:
            source = None
            if self.target[0].startswith("127."):
                octets = peer[0].split(".")
                source = (f"127.{octets[1]}.{octets[2]}.{octets[3]}", 0) if len(octets) == 4 else None
            up = socket.create_connection(self.target, timeout=5, source_address=source)
            up.settimeout(None)
        except OSError:
            down.close()  # nothing serves behind the relay (a killed node): the caller sees the connection close
            return
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conns += 1
            n = self._conns
            self._open |= {down, up}
        links = self._links(peer[0])
        done = threading.Barrier(2, action=lambda: self._close_pair(down, up))
        for direction, (src, dst) in enumerate(((down, up), (up, down))):
            rng = random.Random(hash((self.seed, n, direction)))
            threading.Thread(target=self._pipe, args=(src, dst, links, rng, done), name="relay-pipe", daemon=True).start()

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._open -= {a, b}
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def chunk_delay(self, n_bytes: int, links: Sequence[Link], rng: random.Random) -> tuple[float, int | None]:
        """How a chunk of ``n_bytes`` crosses ``links``: seconds of delay and jitter, and the index of its last lost
        segment (None: none lost; each ``MSS`` segment is lost with each link's ``loss_pct``)."""
        d = 0.0
        segments = max(1, math.ceil(n_bytes / MSS))
        lost: int | None = None
        for link in links:
            d += max(0.0, link.delay_ms + (rng.uniform(-link.jitter_ms, link.jitter_ms) if link.jitter_ms else 0.0))
            if link.loss_pct:
                p = link.loss_pct / 100.0
                last = max((i for i in range(segments) if rng.random() < p), default=None)
                if last is not None:
                    lost = last if lost is None else max(lost, last)
        return d / 1000.0, lost

    def recovery_s(self, following: int, links: Sequence[Link], lone: bool, rng: random.Random) -> float:
        """Seconds TCP takes to repair a lost segment, as Linux does it.

        ``following``: segments sent after the lost one before its recovery would start (the rest of its chunk and
        what the stream carried behind it within the link delay); ``lone``: the segment was the only one in flight.
        Three or more following: fast retransmit, one more round trip. Fewer (a tail loss): the tail loss probe,
        two round trips, at least 10 ms; a lone segment's probe waits out ``rto_ms`` (its timer's delayed-ACK
        bound), as does a tail loss whose probe is lost too.
        """
        rtt = sum(2 * link.delay_ms for link in links)
        if following >= 3:
            return rtt / 1000.0
        if lone:
            return self.rto_ms / 1000.0
        p = max((link.loss_pct for link in links), default=0.0) / 100.0
        return (max(2 * rtt, 10.0) + (self.rto_ms if rng.random() < p else 0.0)) / 1000.0

    def _pipe(self, src: socket.socket, dst: socket.socket, links: list[Link], rng: random.Random,
              done: threading.Barrier) -> None:
        q: queue.SimpleQueue = queue.SimpleQueue()
        window = sum(link.delay_ms for link in links) / 1000.0 + 0.002  # what may follow a loss before it is noticed

        def write() -> None:
            broken = False
            behind: collections.deque = collections.deque()  # items taken from q ahead of their turn
            stall_until = 0.0
            ended = False
            while behind or not ended:
                item = behind.popleft() if behind else q.get()
                if item is None:
                    ended = True
                    continue
                arrival, release, data, lost, lone = item
                if lost is not None and not broken:
                    # what the stream carries behind the loss decides how TCP repairs it: look at what arrived
                    # within the window after this chunk
                    wait = arrival + window - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    while True:
                        try:
                            nxt = q.get_nowait()
                        except queue.Empty:
                            break
                        behind.append(nxt)
                        if nxt is None:
                            break
                    following = max(1, math.ceil(len(data) / MSS)) - 1 - lost
                    following += sum(max(1, math.ceil(len(b[2]) / MSS)) for b in behind
                                     if b is not None and b[0] <= arrival + window)
                    stall_until = max(stall_until, release + self.recovery_s(following, links, lone, rng))
                release = max(release, stall_until)
                if broken:
                    continue
                wait = release - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    dst.sendall(data)
                except OSError:
                    broken = True
                    for s in (src, dst):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
            if not broken:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        writer = threading.Thread(target=write, name="relay-write", daemon=True)
        writer.start()
        last = 0.0
        previous = -math.inf  # when the chunk before arrived
        try:
            while True:
                data = src.recv(self.CHUNK)
                if not data:
                    break
                now = time.monotonic()
                delay, lost = self.chunk_delay(len(data), links, rng)
                last = max(last, now + delay)
                lone = len(data) <= MSS and now - previous > window
                q.put((now, last, data, lost, lone))
                previous = now
        except OSError:
            pass
        q.put(None)
        writer.join()
        try:
            done.wait()
        except threading.BrokenBarrierError:
            pass


def _relay_main(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    thost, _, tport = args.target.rpartition(":")
    cfg = json.loads(args.config)
    relay = Relay((host, int(port)), (thost, int(tport)), Link(**cfg["link"]),
                  {ip: Link(**spec) for ip, spec in cfg.get("sources", {}).items()}, cfg.get("rto_ms", 200.0),
                  cfg.get("seed")).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"relay: listening on {relay.address[0]}:{relay.address[1]}", flush=True)
    stop.wait()
    relay.close()
    return 0


# --- the testbed ------------------------------------------------------------------------------------------------------
class TestbedNode(NodeProcess):
    """A node daemon in namespace ``namespace``; with a CPU quota, in cgroup ``cgroup`` once it serves.

    ``address`` is where the coordinator and the other nodes reach it (the relay's address when it has one).
    """

    __test__ = False

    def __init__(self, store: Path, *, namespace: str, public_host: str, listen_host: str, port: int,
                 cgroup: Path | None, spec: NodeSpec, **kwargs) -> None:
        super().__init__(store, host=listen_host, **kwargs)
        self.namespace = namespace
        self.public_host = public_host
        self.port = port
        self.cgroup = cgroup
        self.spec = spec

    @property
    def address(self) -> str:
        return f"{self.public_host}:{self.port}"

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *super()._command()]

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Waits until the daemon serves, then moves it (all its threads) into its cgroup: start-up is not slowed,
        serving is."""
        address = super().wait_ready(timeout)
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(self.pid))
        return address



@dataclass(frozen=True)
class LinkCounters:
    """What crossed node ``node``'s link since it was made: bytes and packets delivered past its shaping each way
    (Ethernet frames: payload, TCP/IP headers, retransmissions), and packets its qdiscs dropped each way (a full
    tbf queue; netem's loss)."""

    node: int
    address: str
    to_node_bytes: int
    from_node_bytes: int
    to_node_packets: int
    from_node_packets: int
    to_node_dropped: int
    from_node_dropped: int


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` prints (text mode), or what it printed before it exited or ``timeout`` passed."""
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return got[0] if got else ""


def _proc_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _owner_alive(state: dict) -> bool:
    pid = state.get("pid")
    return isinstance(pid, int) and _proc_start(pid) is not None and _proc_start(pid) == state.get("start")


def _namespaces() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


def _states() -> dict[str, dict]:
    out = {}
    for p in STATE_DIR.glob("*.json") if STATE_DIR.is_dir() else ():
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[p.stem] = {}
    return out


def _leftovers() -> dict[str, list[str]]:
    """Everything any run left, by run id: namespaces, the host's veth ends, cgroups, state files."""
    found: dict[str, list[str]] = {}
    for ns in _namespaces():
        m = _NAMESPACE.match(ns)
        if m:
            found.setdefault(m.group(1), []).append(f"namespace {ns}")
    for dev in sorted(os.listdir("/sys/class/net")):
        m = _ROOT_LINK.match(dev)
        if m:
            found.setdefault(m.group(1), []).append(f"link {dev}")
    for _, base in CpuControl.bases():
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            m = _CGROUP.match(name)
            if m and (base / name).is_dir():
                found.setdefault(m.group(1), []).append(f"cgroup {base / name}")
    for run_id in _states():
        if RUN_ID.match(run_id):
            found.setdefault(run_id, []).append(f"state {STATE_DIR / (run_id + '.json')}")
    return found


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _proc_start(p) is not None}
        if pids:
            time.sleep(0.02)
    return pids


def remove_run(run_id: str) -> list[str]:
    """Removes every namespace, veth end, cgroup and state file of run ``run_id``, killing what still runs in them.

    Returns what it removed. Qdiscs live on the veths, which go with their namespaces.
    """
    if not RUN_ID.match(run_id):
        raise TestbedError(f"run id {run_id!r}: expected 6 hex digits")
    removed: list[str] = []
    namespaces = [ns for ns in _namespaces() if ns.startswith(f"{PREFIX}-{run_id}-")]
    cgroups = [base / n for _, base in CpuControl.bases() if base.is_dir()
               for n in os.listdir(base) if _CGROUP.match(n) and n.startswith(f"{PREFIX}-{run_id}-")]
    pids: set[int] = set()
    for ns in namespaces:
        pids |= {int(p) for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split() if p.isdigit()}
    for cg in cgroups:
        pids |= CpuControl.pids(cg)
    pids.discard(os.getpid())
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            removed.append(f"process {pid}")
        except ProcessLookupError:
            pass
    left = _wait_gone(pids, 5.0)
    dev = f"{PREFIX}{run_id}c"
    if Path(f"/sys/class/net/{dev}").exists() and _ip("link", "del", dev, check=False).returncode == 0:
        removed.append(f"link {dev}")
    for ns in sorted(namespaces, key=lambda n: n.endswith("-hub")):  # the hub last
        if _ip("netns", "del", ns, check=False).returncode == 0:
            removed.append(f"namespace {ns}")
    errors = [f"processes {sorted(left)} did not exit"] if left else []
    for cg in cgroups:
        deadline = time.monotonic() + 3.0
        while True:
            try:
                cg.rmdir()
                removed.append(f"cgroup {cg}")
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    errors.append(f"cgroup {cg}: {e.strerror or e}")
                    break
                time.sleep(0.02)
    state = STATE_DIR / f"{run_id}.json"
    if state.exists():
        state.unlink(missing_ok=True)
        removed.append(f"state {state}")
    if errors:
        raise TestbedError(f"run {run_id} left: {'; '.join(errors)}")
    return removed


def cleanup(force: bool = False) -> dict:
    """Removes the leftovers of earlier runs (all ``pdt-`` names); a run whose process is still alive is kept
    unless ``force``. Returns ``{"removed": [...], "kept": [{"run", "pid"}]}``."""
    _require_root("cleanup")
    states = _states()
    out: dict = {"removed": [], "kept": []}
    for run_id in sorted(_leftovers()):
        state = states.get(run_id, {})
        if not force and _owner_alive(state):
            out["kept"].append({"run": run_id, "pid": state["pid"]})
            continue
        out["removed"] += remove_run(run_id)
    return out


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise TestbedError(f"the testbed's {what} needs root (network namespaces, tc qdiscs and cgroups): run it as "
                           f"root, e.g. `sudo {sys.executable} tools/testbed.py ...`; this process runs as uid {os.geteuid()}")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        raise TestbedError(f"the testbed needs iproute2's {' and '.join(missing)} on PATH (apt-get install iproute2)")


# live testbeds, closed by the signal handlers and at exit
_LIVE: set["Testbed"] = set()
_HANDLERS: dict[int, object] = {}
_CLOSING = threading.local()


def _close_live() -> None:
    for tb in list(_LIVE):
        tb.close()


def _on_signal(signum: int, frame) -> None:
    previous = _HANDLERS.get(signum)
    if getattr(_CLOSING, "active", False):
        return  # a testbed is being removed in this thread: finish that first
    _close_live()
    if callable(previous) and previous is not signal.default_int_handler:
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise SystemExit(128 + signum)


def _install_handlers() -> None:
    if _HANDLERS or threading.current_thread() is not threading.main_thread():
        return
    atexit.register(_close_live)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        _HANDLERS[sig] = signal.getsignal(sig)
        signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if _LIVE or not _HANDLERS or threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in _HANDLERS.items():
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _HANDLERS.clear()


def _pick_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no address, route or other run of this host uses."""
    used: list[tuple[ipaddress.IPv4Network, str]] = []
    for a in json.loads(_ip("-4", "-j", "addr", "show").stdout or "[]"):
        for ai in a.get("addr_info", []):
            net = ipaddress.ip_interface(f"{ai['local']}/{ai['prefixlen']}").network
            used.append((net, f"address {ai['local']}/{ai['prefixlen']} on {a.get('ifname')}"))
    for r in json.loads(_ip("-4", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = r.get("dst")
        if dst and dst != "default":
            used.append((ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False),
                         f"route {dst} dev {r.get('dev')}"))
    for run_id, state in _states().items():
        if state.get("subnet"):
            used.append((ipaddress.ip_network(state["subnet"]), f"testbed run {run_id}"))
    blockers = {why for net, why in used if net.overlaps(SUPERNET)}
    for sub in SUPERNET.subnets(new_prefix=24):
        if not any(sub.overlaps(net) for net, _ in used):
            return sub
    raise TestbedError(f"no free /24 in {SUPERNET} for the testbed's links: {', '.join(sorted(blockers))}")


class Testbed:
    """Node daemons in network namespaces behind shaped links, each with its CPU quota.

    Args:
        profile: a `Profile` or the name of one of `PROFILES`.
        n_nodes: how many node daemons.
        workdir: stores and logs (``n<k>/``, ``n<k>.log``); default: a temporary directory removed on close.
        delay_mechanism: ``"auto"`` (netem where the kernel has it, else the relay), ``"netem"`` or ``"relay"``.
        cpu_limits: apply the profile's CPU quotas (False: none; the record says so).
        cpu: a CPU quota for every node, overriding the profile's (fraction of one core).
        capacity: ``--capacity`` of every node, or one per node.
        backend: the nodes' interpreter backend.
        node_args: more ``paradis node serve`` flags for every node.
        rto_ms: the relay's stall for a lost segment.
        seed: the relay's random seed (per node: seed + k).

    Example:
        >>> with Testbed("wifi", 2) as tb, Coordinator(tb.addresses) as c:
        ...     c.deploy("bundle/"); c.select("2x0.5"); c.infer(x)
        ...     tb.link_counters()
    """

    __test__ = False

    def __init__(self, profile: Profile | str, n_nodes: int, workdir: str | os.PathLike | None = None, *,
                 delay_mechanism: str = "auto", cpu_limits: bool = True, cpu: float | None = None,
                 capacity: float | Sequence[float] = 1.0, backend: str = "litert", node_args: Sequence[str] = (),
                 rto_ms: float = 200.0, seed: int = 0, block_tensorflow: bool = True) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise TestbedError(f"profile {profile!r}: choose one of {', '.join(PROFILES)}")
            profile = PROFILES[profile]
        if delay_mechanism not in ("auto", "netem", "relay"):
            raise TestbedError(f"delay_mechanism {delay_mechanism!r}: choose auto, netem or relay")
        self.profile = profile
        self.specs = [NodeSpec(s.link, cpu if cpu is not None else s.cpu) if cpu_limits else NodeSpec(s.link, None)
                      for s in profile.nodes(n_nodes)]
        caps = [float(capacity)] * n_nodes if isinstance(capacity, (int, float)) else [float(c) for c in capacity]
        if len(caps) != n_nodes:
            raise TestbedError(f"capacity: {len(caps)} values for {n_nodes} nodes")
        self.capacities = caps
        self.requested_mechanism = delay_mechanism
        self.backend = backend
        self.node_args = tuple(node_args)
        self.rto_ms = float(rto_ms)
        self.seed = int(seed)
        self.block_tensorflow = block_tensorflow
        self._tmp: str | None = None
        self.workdir = Path(workdir) if workdir is not None else None
        self.run_id = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self.delay_mechanism = "none"
        self.cpu_control: CpuControl | None = None
        self.nodes: list[TestbedNode] = []
        self.relays: list[subprocess.Popen | None] = []
        self.shaping: list[dict] = []
        self._lock = threading.Lock()
        self._closed = False
        self._started = False

    # --- names and addresses
    @property
    def hub(self) -> str:
        return f"{PREFIX}-{self.run_id}-hub"

    def namespace(self, k: int) -> str:
        """Node ``k``'s namespace."""
        return f"{PREFIX}-{self.run_id}-n{k}"

    def wire(self, k: int) -> str:
        """The namespace of node ``k``'s link: a bridge between the node and the hub, where its qdiscs are."""
        return f"{PREFIX}-{self.run_id}-l{k}"

    @property
    def host_link(self) -> str:
        """The veth end in the calling process's namespace."""
        return f"{PREFIX}{self.run_id}c"

    @property
    def coordinator_ip(self) -> str:
        """The calling process's address on the testbed (the coordinator's side)."""
        return str(self.subnet.network_address + 1)

    def node_ip(self, k: int) -> str:
        return str(self.subnet.network_address + FIRST_NODE_HOST + k)

    @property
    def addresses(self) -> list[str]:
        """``HOST:PORT`` of every node, as a `Coordinator` in this process reaches it."""
        return [n.address for n in self.nodes]

    # --- lifecycle
    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 60.0) -> "Testbed":
        """Creates the namespaces, links, qdiscs and cgroups, then starts the relays and the node daemons."""
        if self._started:
            raise TestbedError("this testbed was started already; make a new one")
        self._started = True
        _require_root("setup")
        _install_handlers()
        _LIVE.add(self)
        try:
            self._create()
            self._start_processes(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        STATE_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(STATE_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = set(_leftovers())
            while not self.run_id or self.run_id in taken:
                self.run_id = secrets.token_hex(3)
            self.subnet = _pick_subnet()
            state = {"run": self.run_id, "pid": os.getpid(), "start": _proc_start(os.getpid()),
                     "subnet": str(self.subnet), "profile": self.profile.name, "nodes": len(self.specs)}
            (STATE_DIR / f"{self.run_id}.json").write_text(json.dumps(state))
        if self.workdir is None:
            self._tmp = tempfile.mkdtemp(prefix=f"paradis-testbed-{self.run_id}-")
            self.workdir = Path(self._tmp)
        self.workdir.mkdir(parents=True, exist_ok=True)

        hub = self.hub
        _ip("netns", "add", hub)
        _disable_ipv6(hub)
        _ip("link", "set", "lo", "up", ns=hub)
        _ip("link", "add", "br0", "type", "bridge", ns=hub)
        _ip("link", "set", "br0", "up", ns=hub)
        # the calling process's side: one veth into the hub
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "c", "netns", hub)
        _disable_ipv6(None, self.host_link)
        _ip("addr", "add", f"{self.coordinator_ip}/{self.subnet.prefixlen}", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("link", "set", "c", "master", "br0", "up", ns=hub)

        wanted = any(s.link.delays for s in self.specs)
        netem = wanted and self.requested_mechanism != "relay" and netem_available(hub)
        if self.requested_mechanism == "netem" and wanted and not netem:
            raise TestbedError("delay_mechanism 'netem': this kernel has no tc netem (`tc qdisc add ... netem` says the "
                               "qdisc kind is unknown); use 'auto' or 'relay' for the userspace relay")
        self.delay_mechanism = "netem" if netem else ("relay" if wanted else "none")

        if any(s.cpu is not None for s in self.specs):
            self.cpu_control, why = CpuControl.find()
            if self.cpu_control is None:
                raise TestbedError(f"cannot set CPU quotas ({why}); start without them (cpu_limits=False, "
                                   "--no-cpu-limits)")

        for k, spec in enumerate(self.specs):
            # node eth0 <-> to-node [wire: br0] to-hub <-> h<k> [hub: br0]; the qdiscs sit in the wire, on no sender's own
            # interface (where TCP small queues would hold packets back in the socket instead of the link's queue)
            ns, wire = self.namespace(k), self.wire(k)
            for name in (ns, wire):
                _ip("netns", "add", name)
                _disable_ipv6(name)
                _ip("link", "set", "lo", "up", ns=name)
            _ip("link", "add", "br0", "type", "bridge", ns=wire)
            _ip("link", "set", "br0", "up", ns=wire)
            _ip("link", "add", "to-node", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=wire)
            _ip("link", "add", "to-hub", "type", "veth", "peer", "name", f"h{k}", "netns", hub, ns=wire)
            for dev in ("to-node", "to-hub"):
                _ip("link", "set", dev, "master", "br0", "up", ns=wire)
            _ip("link", "set", f"h{k}", "master", "br0", "up", ns=hub)
            _ip("addr", "add", f"{self.node_ip(k)}/{self.subnet.prefixlen}", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            shaping = {"to_node": qdisc_commands("to-node", spec.link, netem),
                       "from_node": qdisc_commands("to-hub", spec.link, netem)}
            for cmd in shaping["to_node"] + shaping["from_node"]:
                _run(["tc", "-n", wire, *cmd])
            self.shaping.append({"namespace": wire, **{d: [" ".join(c) for c in cs] for d, cs in shaping.items()}})

    def _start_processes(self, timeout: float) -> None:
        sources = {self.node_ip(k): asdict(s.link) for k, s in enumerate(self.specs)}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for k, spec in enumerate(self.specs):
            relay = None
            if self.delay_mechanism == "relay":  # every node: its callers' links may delay even when its own does not
                cfg = {"link": asdict(spec.link), "sources": {ip: v for ip, v in sources.items() if ip != self.node_ip(k)},
                       "rto_ms": self.rto_ms, "seed": self.seed + k}
                with open(self.workdir / f"n{k}.relay.log", "ab") as log:
                    relay = subprocess.Popen(
                        ["ip", "netns", "exec", self.namespace(k), sys.executable, str(Path(__file__).resolve()),
                         "relay", "--listen", f"{self.node_ip(k)}:{NODE_PORT}", "--target", f"127.0.0.1:{NODE_PORT}",
                         "--config", json.dumps(cfg)],
                        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env, text=True)
            self.relays.append(relay)
            cgroup = None
            if spec.cpu is not None and self.cpu_control is not None:
                cgroup = self.cpu_control.create(self.namespace(k), spec.cpu)
            listen = "127.0.0.1" if relay is not None else self.node_ip(k)
            extra = [*self.node_args] + ([] if relay is not None else ["--insecure"])
            self.nodes.append(TestbedNode(
                self.workdir / f"n{k}", namespace=self.namespace(k), public_host=self.node_ip(k), listen_host=listen,
                port=NODE_PORT, cgroup=cgroup, spec=spec, node_id=f"n{k}", capacity=self.capacities[k],
                backend=self.backend, block_tensorflow=self.block_tensorflow, extra_args=extra))
        for k, relay in enumerate(self.relays):
            if relay is not None:
                line = _first_line(relay, timeout)
                if "listening on" not in line:
                    relay.kill()
                    relay.wait()
                    tail = (self.workdir / f"n{k}.relay.log").read_text(errors="replace")[-2000:]
                    raise TestbedError(f"the relay of node {k} did not start within {timeout:g} s; its log ends:\n{tail}")
                relay.stdout.close()
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_ready(timeout)

    def close(self) -> None:
        """Stops the daemons and relays, then removes every namespace, veth, qdisc and cgroup of this run."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _CLOSING.active = True
        try:
            for n in self.nodes:
                if n.alive():
                    n.proc.send_signal(signal.SIGTERM)
            for r in self.relays:
                if r is not None and r.poll() is None:
                    r.terminate()
            deadline = time.monotonic() + 10
            for p in [n.proc for n in self.nodes] + self.relays:
                if p is None:
                    continue
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if self.run_id:
                remove_run(self.run_id)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
        finally:
            _CLOSING.active = False
            _LIVE.discard(self)
            _restore_handlers()

    # --- what a run reports
    def link_counters(self) -> list[LinkCounters]:
        """Every node's link so far, read in its link namespace: what ``to-node`` and ``to-hub`` sent, and what
        their qdiscs dropped."""
        out = []
        for k, n in enumerate(self.nodes):
            wire = self.wire(k)
            tx = {d["ifname"]: d.get("stats64", {}).get("tx", {})
                  for d in json.loads(_ip("-s", "-j", "link", "show", ns=wire).stdout or "[]")}
            drops = {"to-node": 0, "to-hub": 0}
            for q in json.loads(_run(["tc", "-s", "-j", "-n", wire, "qdisc", "show"]).stdout or "[]"):
                if q.get("dev") in drops:
                    drops[q["dev"]] += int(q.get("drops", 0))
            down, up = tx.get("to-node", {}), tx.get("to-hub", {})
            out.append(LinkCounters(k, n.address, down.get("bytes", 0), up.get("bytes", 0), down.get("packets", 0),
                                    up.get("packets", 0), drops["to-node"], drops["to-hub"]))
        return out

    def record(self) -> dict:
        """What this run is: profile, addresses, the delay and CPU mechanisms, and per node its link, quota and qdiscs."""
        return {
            "run": self.run_id,
            "profile": self.profile.name,
            "description": self.profile.description,
            "subnet": str(self.subnet),
            "coordinator_ip": self.coordinator_ip,
            "delay_mechanism": self.delay_mechanism,
            "relay_rto_ms": self.rto_ms if self.delay_mechanism == "relay" else None,
            "cpu_mechanism": self.cpu_control.mechanism if self.cpu_control else "none",
            "cpu_period": "the shortest the kernel allows: 1 ms of quota per period" if self.cpu_control else None,
            "nodes": [
                {"node": k, "address": n.address, "namespace": n.namespace, "link": asdict(n.spec.link),
                 "cpu": n.spec.cpu, "cgroup": str(n.cgroup) if n.cgroup else None,
                 "cpu_period_us": cpu_period_us(n.spec.cpu) if n.cgroup else None,
                 "relay": self.relays[k] is not None, "qdiscs": self.shaping[k]}
                for k, n in enumerate(self.nodes)
            ],
        }

    def exec(self, k: int, argv: Sequence[str], *, cgroup: bool = False, **popen) -> subprocess.Popen:
        """Starts ``argv`` in node ``k``'s namespace (and its cgroup with ``cgroup``); removed with the testbed."""
        cmd = ["ip", "netns", "exec", self.namespace(k), *argv]
        if cgroup:
            cg = self.nodes[k].cgroup
            if cg is None:
                raise TestbedError(f"node {k} has no cgroup (no CPU quota)")
            cmd = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cg / "cgroup.procs"), *cmd]
        return subprocess.Popen(cmd, **popen)


# --- command line -----------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/testbed.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring a testbed up and keep it until Ctrl-C or SIGTERM")
    up.add_argument("--profile", default="wifi", choices=sorted(PROFILES))
    up.add_argument("--nodes", type=int, default=4, help="node daemons (default: %(default)s)")
    up.add_argument("--workdir", type=Path, help="stores and logs (default: a temporary directory, removed at the end)")
    up.add_argument("--delay-mechanism", default="auto", choices=("auto", "netem", "relay"),
                    help="delay, jitter and loss with tc netem, the userspace relay, or netem where the kernel has it")
    up.add_argument("--cpu", type=float, help="CPU quota of every node as a fraction of one core (overrides the profile)")
    up.add_argument("--no-cpu-limits", action="store_true", help="no CPU quotas")
    up.add_argument("--capacity", type=float, default=1.0, help="--capacity of every node (default: %(default)s)")
    up.add_argument("--backend", default="litert", help="the nodes' interpreter backend (default: %(default)s)")
    up.add_argument("--ready-file", type=Path, help="write the run's record (JSON) here once every node serves")
    cl = sub.add_parser("cleanup", help="remove what earlier runs left (namespaces, links, cgroups named pdt-...)")
    cl.add_argument("--force", action="store_true", help="also remove runs whose process is still alive")
    sub.add_parser("profiles", help="list the profiles")
    rl = sub.add_parser("relay", help=argparse.SUPPRESS)
    rl.add_argument("--listen", required=True)
    rl.add_argument("--target", required=True)
    rl.add_argument("--config", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "relay":
        return _relay_main(args)
    if args.cmd == "profiles":
        for p in PROFILES.values():
            print(f"{p.name:10} {p.description}")
            for k, s in enumerate(p.specs):
                who = f"node {k}" if k < len(p.specs) - 1 else (f"nodes {k}+" if k else "every node")
                print(f"{'':10}   {who}: {asdict(s.link)}, cpu {s.cpu}")
        return 0
    try:
        if args.cmd == "cleanup":
            out = cleanup(force=args.force)
            for line in out["removed"]:
                print(f"removed {line}")
            for kept in out["kept"]:
                print(f"kept run {kept['run']}: its process {kept['pid']} is alive (--force removes it)")
            if not out["removed"] and not out["kept"]:
                print("nothing to clean up")
            return 0
        if args.nodes < 1:
            ap.error(f"--nodes {args.nodes}: give 1 or more")
        tb = Testbed(args.profile, args.nodes, args.workdir, delay_mechanism=args.delay_mechanism,
                     cpu_limits=not args.no_cpu_limits, cpu=args.cpu, capacity=args.capacity, backend=args.backend)
        try:
            with tb:
                record = json.dumps(tb.record(), indent=2)
                print(record, flush=True)
                if args.ready_file:
                    _write_atomic(args.ready_file, record)
                print(f"testbed {tb.run_id} up: nodes at {','.join(tb.addresses)}; Ctrl-C to remove it",
                      file=sys.stderr, flush=True)
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        except SystemExit as e:  # SIGTERM or SIGHUP (see _on_signal)
            if e.code not in (128 + signal.SIGTERM, 128 + signal.SIGHUP):
                raise
        print(f"testbed {tb.run_id} removed", file=sys.stderr, flush=True)
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
