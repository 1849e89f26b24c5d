"""tools/testbed.py: node daemons in network namespaces behind shaped links, with CPU quotas, run for real.

The tests that build namespaces need root and iproute2 (CI runs as root); the relay, the qdisc commands and the
profiles are checked without. Every address used is one of a testbed's own namespaces, or loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

TOOL = "testbed"  # the `bench` fixture loads it
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "testbed.py"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None,
    reason="the testbed needs root and iproute2 (ip, tc)",
)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def leftovers_of(bench, run_id: str) -> list[str]:
    """What the host still has of run ``run_id`` (namespaces, the host's veth end, cgroups, the state file)."""
    return bench._leftovers().get(run_id, [])


# --- without root -----------------------------------------------------------------------------------------------------
def test_profiles_are_the_ones_the_issue_names(bench):
    p = bench.PROFILES
    assert {"pi4-gige", "pi3-100m", "wifi", "mixed"} <= set(p)
    gige = p["pi4-gige"].nodes(2)[1]
    assert gige.link.rate_mbit == 1000 and gige.link.loss_pct == 0 and 2 * gige.link.delay_ms == pytest.approx(0.2)
    assert p["pi3-100m"].nodes(1)[0].link.rate_mbit == 100
    wifi = p["wifi"].nodes(1)[0].link
    assert wifi.rate_mbit == 30 and wifi.loss_pct == 0.5
    assert 2 * (wifi.delay_ms - wifi.jitter_ms) == pytest.approx(2) and 2 * (wifi.delay_ms + wifi.jitter_ms) == pytest.approx(10)
    fast, *slow = p["mixed"].nodes(4)
    assert fast.link.rate_mbit == 1000 and len(slow) == 3
    assert all(s.link == wifi and s.cpu < fast.cpu for s in slow)


@pytest.mark.parametrize("kwargs, message", [
    ({"rate_mbit": 0}, "Link.rate_mbit 0: give a positive number"),
    ({"delay_ms": -1}, "Link.delay_ms -1: give milliseconds"),
    ({"delay_ms": 1, "jitter_ms": 2}, "Link.jitter_ms 2 is more than delay_ms 1"),
    ({"loss_pct": 100}, r"Link.loss_pct 100: give a percentage in \[0, 100\)"),
])
def test_bad_link_values_are_named(bench, kwargs, message):
    with pytest.raises(bench.TestbedError, match=message):
        bench.Link(**kwargs)


def test_qdiscs_rate_with_tbf_and_delay_with_netem_where_it_exists(bench):
    link = bench.Link(rate_mbit=30, delay_ms=3, jitter_ms=2, loss_pct=0.5)
    with_netem = [" ".join(c) for c in bench.qdisc_commands("h0", link, netem=True)]
    assert with_netem == [
        "qdisc add dev h0 root handle 1: netem limit 100000 delay 3000us 2000us loss 0.5%",
        "qdisc add dev h0 parent 1:1 handle 10: tbf rate 30000000bit burst 15140 latency 100ms",
    ]
    assert [" ".join(c) for c in bench.qdisc_commands("eth0", link, netem=False)] == [
        "qdisc add dev eth0 root tbf rate 30000000bit burst 15140 latency 100ms"]
    assert bench.qdisc_commands("eth0", bench.Link(), netem=True) == []


class _Echo:
    """A TCP echo server on loopback."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def _round_trips(address, n: int, payload: bytes = b"x") -> list[float]:
    with socket.create_connection(address, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
            out.append(time.perf_counter() - t)
            assert got == payload
        return out


@pytest.fixture
def echo():
    e = _Echo()
    yield e
    e.close()


def test_relay_adds_the_delay_of_each_link_it_crosses(bench, echo):
    # the caller (127.0.0.1) is a node of the testbed with a 20 ms link; the relay's own link adds 10 ms
    relay = bench.Relay(("127.0.0.1", 0), echo.sock.getsockname(), bench.Link(delay_ms=10, jitter_ms=2),
                        sources={"127.0.0.1": bench.Link(delay_ms=20)}, seed=1).start()
    try:
        rtts = _round_trips(relay.address, 10)
    finally:
        relay.close()
    assert min(rtts) >= 2 * (10 - 2 + 20) / 1000, rtts
    assert statistics.median(rtts) < 2 * (10 + 2 + 20) / 1000 + 0.05, rtts


class _Draws:
    """Given `random()` values (the loss draws), in order."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_a_lost_segment_costs_what_tcp_recovery_costs(bench):
    relay = bench.Relay(("127.0.0.1", 0), ("127.0.0.1", 9), bench.Link(), rto_ms=200)
    link = bench.Link(delay_ms=4, loss_pct=1)  # a round trip of 8 ms
    lost, kept = 0.0, 0.5  # draws below / above the 1 % loss chance
    # which segment of a chunk is lost (the last one lost counts)
    assert relay.chunk_delay(10 * bench.MSS, [link], _Draws([kept, lost] + [kept] * 8)) == (pytest.approx(0.004), 1)
    assert relay.chunk_delay(10 * bench.MSS, [link], _Draws([lost] * 3 + [kept] * 7)) == (pytest.approx(0.004), 2)
    assert relay.chunk_delay(10 * bench.MSS, [link], _Draws([kept] * 10)) == (pytest.approx(0.004), None)
    # three or more segments behind the loss: fast retransmit, one more round trip
    assert relay.recovery_s(3, [link], False, _Draws([])) == pytest.approx(0.008)
    # fewer (a tail loss): the tail loss probe, two round trips (at least 10 ms) ...
    assert relay.recovery_s(2, [link], False, _Draws([kept])) == pytest.approx(0.016)
    assert relay.recovery_s(0, [bench.Link(delay_ms=1, loss_pct=1)], False, _Draws([kept])) == pytest.approx(0.010)
    # ... and the retransmission timeout on top when the probe is lost too
    assert relay.recovery_s(0, [link], False, _Draws([lost])) == pytest.approx(0.216)
    # a lone segment in flight: its probe timer waits out the delayed-ACK bound
    assert relay.recovery_s(0, [link], True, _Draws([])) == pytest.approx(0.200)


def test_a_loss_inside_a_long_transfer_costs_a_round_trip_not_a_timeout(bench, echo):
    # 5 % of the segments lost, 2 ms each way: a 300 KB transfer (~210 segments) loses about ten, each repaired by
    # fast retransmit (the stream goes on behind it); a timeout per loss would add seconds
    relay = bench.Relay(("127.0.0.1", 0), echo.sock.getsockname(), bench.Link(delay_ms=2, loss_pct=5),
                        rto_ms=200, seed=3).start()
    try:
        payload = np.random.default_rng(1).bytes(300_000)
        big = _round_trips(relay.address, 3, payload)
    finally:
        relay.close()
    assert min(big) < 1.0, big


def test_relay_stalls_a_stream_with_lost_segments_and_keeps_it_whole(bench, echo):
    relay = bench.Relay(("127.0.0.1", 0), echo.sock.getsockname(), bench.Link(delay_ms=1, loss_pct=99.999),
                        rto_ms=150, seed=2).start()
    try:
        rtts = _round_trips(relay.address, 3)
        payload = np.random.default_rng(0).bytes(3_000_000)  # many chunks, each stalled, none reordered or lost
        big = _round_trips(relay.address, 1, payload)
    finally:
        relay.close()
    assert min(rtts) >= 2 * 0.151, rtts
    assert big[0] >= 2 * 0.151


# --- with root: a real testbed ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bed(bench, tmp_path_factory):
    """Two nodes: node 0 on a 10 Mbit/s link with 10 +- 2 ms one-way delay (the relay) and 0.3 of a core; node 1
    unshaped and unlimited."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("the testbed needs root and iproute2 (ip, tc)")
    profile = bench.Profile("test", "a shaped node and a free one", (
        bench.NodeSpec(bench.Link(rate_mbit=10, delay_ms=10, jitter_ms=2), cpu=0.3),
        bench.NodeSpec(bench.Link(), cpu=None),
    ))
    with bench.Testbed(profile, 2, tmp_path_factory.mktemp("bed"), delay_mechanism="relay") as tb:
        yield tb
    assert leftovers_of(bench, tb.run_id) == []


# A TCP peer in a node's namespace: takes N bytes, answers one byte, then sends N bytes and closes.
_PEER = """
import socket, sys
n = int(sys.argv[2])
s = socket.create_server((sys.argv[1], 5201))
print("ready", flush=True)
c, _ = s.accept()
got = 0
while got < n:
    got += len(c.recv(1 << 20))
c.sendall(b"k")
c.sendall(bytes(n))
c.close()
"""


def _transfer(bed, k: int, n: int) -> tuple[float, float]:
    """Seconds to send ``n`` bytes to node ``k``'s namespace, and to receive ``n`` from it (not through the relay)."""
    peer = bed.exec(k, [sys.executable, "-c", _PEER, bed.node_ip(k), str(n)], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        with socket.create_connection((bed.node_ip(k), 5201), timeout=30) as s:
            t = time.perf_counter()
            s.sendall(bytes(n))
            assert s.recv(1) == b"k"
            up = time.perf_counter() - t
            t = time.perf_counter()
            got = 0
            while chunk := s.recv(1 << 20):
                got += len(chunk)
            down = time.perf_counter() - t
        assert got == n
        assert peer.wait(10) == 0
        return up, down
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()


@needs_root
def test_tbf_limits_the_rate_both_ways(bed):
    n = 1_000_000
    before = bed.link_counters()
    shaped = _transfer(bed, 0, n)
    free = _transfer(bed, 1, n)
    after = bed.link_counters()
    floor = n * 8 / 10e6 * 0.95  # 10 Mbit/s less the bucket's burst
    for direction, s, f in zip(("to the node", "from the node"), shaped, free):
        assert s >= floor, f"{direction}: {n} bytes in {s:.3f} s over a 10 Mbit/s link"
        assert s < 3 * n * 8 / 10e6, f"{direction}: {s:.3f} s, far slower than 10 Mbit/s"
        assert s / f > 5, f"{direction}: shaped {s:.3f} s, unshaped {f:.3f} s"
    for k in (0, 1):  # each link counted what crossed it (payload plus TCP/IP headers)
        assert n <= after[k].to_node_bytes - before[k].to_node_bytes < 1.2 * n
        assert n <= after[k].from_node_bytes - before[k].from_node_bytes < 1.2 * n
    assert after[0].address == bed.addresses[0]


def _health_rtts(address: str, n: int) -> list[float]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        out = []
        for _ in range(n):
            t = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            out.append(time.perf_counter() - t)
        return out


@needs_root
def test_relay_delays_calls_to_the_node(bed):
    assert bed.record()["delay_mechanism"] == "relay" and all(n["relay"] for n in bed.record()["nodes"])
    slow, fast = _health_rtts(bed.addresses[0], 15), _health_rtts(bed.addresses[1], 15)
    assert min(slow) >= 2 * (10 - 2) / 1000, slow  # both directions, at least delay - jitter each
    assert statistics.median(slow) >= 2 * 10 / 1000 * 0.9, slow
    assert min(fast) < 2 * (10 - 2) / 1000, fast  # the free link answers below the delayed one's floor


@needs_root
def test_cpu_quota_is_applied(bench, bed):
    cg = bed.nodes[0].cgroup
    assert cg is not None and bed.nodes[1].cgroup is None
    assert bench.CpuControl.limit(cg) == pytest.approx(0.3, abs=1e-3)
    assert bench.cpu_period_us(0.3) == 3334 and bench.cpu_period_us(0.15) == 6667 and bench.cpu_period_us(2.0) == 1000
    assert bed.nodes[0].pid in bench.CpuControl.pids(cg)
    # a busy loop in the node's cgroup gets about 0.3 of a core, not a whole one
    spin = "import time\nc, t = time.process_time(), time.monotonic()\nwhile time.monotonic() - t < 1.0: pass\n" \
           "print((time.process_time() - c) / (time.monotonic() - t))"
    p = bed.exec(0, [sys.executable, "-c", spin], cgroup=True, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    share = float(out)
    assert 0.05 < share <= 0.3 * 1.25, share


@needs_root
@pytest.mark.slow  # converts a model
def test_a_coordinator_serves_through_the_testbed(bed, tiny_bundle):
    from paradis_tf.mesh import Coordinator
    from paradis_tf.mesh.coordinator import CoordinatorObserver
    from paradis_tf.mesh.errors import RequestFailedError
    from paradis_tf.runtime import LocalRunner

    class Watch(CoordinatorObserver):
        readmitted_event = threading.Event()

        def readmitted(self, address: str) -> None:
            self.readmitted_event.set()

    watch = Watch()
    x = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32)
    with Coordinator(bed.addresses, observer=watch) as c:
        c.deploy(tiny_bundle)
        for plan in ("2x0.5", "seq-2", "1x1.0"):
            assert c.select(plan).plan == plan
            before = bed.link_counters()
            got = c.infer(x)
            after = bed.link_counters()
            t = time.perf_counter()
            c.infer(x[:1])
            seconds = time.perf_counter() - t
            np.testing.assert_array_equal(got, LocalRunner(tiny_bundle, plan).predict(x))
            moved = [(a.to_node_bytes - b.to_node_bytes, a.from_node_bytes - b.from_node_bytes)
                     for a, b in zip(after, before)]
            used = {bed.addresses.index(a) for a in c.placement.addresses}
            for k in range(2):  # each node's link carried its requests (a 28x28 input is 784 bytes at int8)
                assert (moved[k][0] > 6 * 784) == (k in used), (plan, k, moved)
            if 0 in used:  # a request takes at least one round trip over node 0's delayed link
                assert seconds >= 2 * (10 - 2) / 1000, (plan, seconds)
        # a node killed in its namespace fails the plan; started again, it is readmitted and serves its role again
        c.select("2x0.5")
        bed.nodes[1].kill()
        with pytest.raises(RequestFailedError):
            c.infer(x[:1])
        bed.nodes[1].start()
        assert watch.readmitted_event.wait(15), "the restarted node was not readmitted within 15 s"
        np.testing.assert_array_equal(c.infer(x[:2]), LocalRunner(tiny_bundle, "2x0.5").predict(x[:2]))
        assert c.placement.plan == "2x0.5"


@needs_root
def test_netem_where_the_kernel_has_it(bench, tmp_path):
    link = bench.Link(rate_mbit=100, delay_ms=10)
    try:
        tb = bench.Testbed(bench.Profile("n", "netem", (bench.NodeSpec(link),)), 1, tmp_path, delay_mechanism="netem")
        tb.start()
    except bench.TestbedError as e:
        assert "no tc netem" in str(e)
        assert leftovers_of(bench, tb.run_id) == []
        pytest.skip(f"this kernel has no netem: {e}")
    try:
        assert tb.record()["delay_mechanism"] == "netem" and not tb.relays[0]
        assert min(_health_rtts(tb.addresses[0], 10)) >= 2 * 10 / 1000
    finally:
        tb.close()
    assert leftovers_of(bench, tb.run_id) == []


@needs_root
def test_nothing_is_left_after_an_exception(bench, tmp_path):
    profile = bench.Profile("x", "one node with a relay and a quota", (
        bench.NodeSpec(bench.Link(rate_mbit=50, delay_ms=1), cpu=0.5),))
    with pytest.raises(RuntimeError, match="boom"):
        with bench.Testbed(profile, 1, tmp_path) as tb:
            assert len(leftovers_of(bench, tb.run_id)) == 6  # hub, node and link namespaces, host veth end, cgroup, state
            stray = tb.exec(0, ["sleep", "60"])
            node = tb.nodes[0].proc
            raise RuntimeError("boom")
    assert leftovers_of(bench, tb.run_id) == []
    assert not any(tb.run_id in ns for ns in os.listdir("/run/netns"))
    assert not Path(f"/sys/class/net/pdt{tb.run_id}c").exists()
    assert stray.wait(5) == -signal.SIGKILL and node.poll() is not None


def _up(tmp_path: Path, *argv: str) -> tuple[subprocess.Popen, str]:
    """`tools/testbed.py up` in a child process, once it serves: (process, run id)."""
    p = subprocess.Popen([sys.executable, str(SCRIPT), "up", "--workdir", str(tmp_path), *argv], env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        if " up: nodes at " in line:
            return p, line.split()[1]
    p.kill()
    raise AssertionError(f"testbed up did not come up: {''.join(seen)}")


@needs_root
def test_up_removes_everything_on_sigterm(bench, tmp_path):
    p, run_id = _up(tmp_path, "--profile", "wifi", "--nodes", "1")
    assert any(x.startswith("namespace") for x in leftovers_of(bench, run_id))
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0
    assert f"testbed {run_id} removed" in p.stderr.read()
    assert leftovers_of(bench, run_id) == []


@needs_root
def test_cleanup_removes_what_a_killed_run_left(bench, tmp_path):
    p, run_id = _up(tmp_path, "--profile", "wifi", "--nodes", "1")
    orphans = {int(x) for x in subprocess.run(["ip", "netns", "pids", f"pdt-{run_id}-n0"], capture_output=True,
                                              text=True).stdout.split()}
    assert len(orphans) == 2  # the relay and the node daemon
    p.kill()
    p.wait()
    assert len(leftovers_of(bench, run_id)) == 6  # hub, node and link namespaces, host veth end, cgroup, state
    out = subprocess.run([sys.executable, str(SCRIPT), "cleanup"], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"removed namespace pdt-{run_id}-hub" in out.stdout and f"removed link pdt{run_id}c" in out.stdout
    assert leftovers_of(bench, run_id) == []
    assert all(bench._proc_start(pid) is None for pid in orphans)


@needs_root
def test_without_root_it_says_so_and_exits_2(tmp_path):
    # the module is loaded as root, then the process drops to uid 65534 before `up` runs
    code = (f"import importlib.util, os, sys\n"
            f"spec = importlib.util.spec_from_file_location('testbed', {str(SCRIPT)!r})\n"
            f"m = importlib.util.module_from_spec(spec); sys.modules['testbed'] = m; spec.loader.exec_module(m)\n"
            f"os.seteuid(65534)\n"
            f"sys.exit(m.main(['up', '--profile', 'wifi', '--nodes', '1', '--workdir', {str(tmp_path)!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "needs root" in out.stderr and "uid 65534" in out.stderr
