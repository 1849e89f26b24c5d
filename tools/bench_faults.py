#!/usr/bin/env python3
"""The faults a line has, as a benchmark: a stalled node and a killed node under a stream of requests.

    python tools/bench_faults.py --out docs/benchmarks/faults.json

Four node daemons on loopback (capacity 0.25 each; a small MobileNet v1 bundle
with switches 1x0.25 ... 4x0.25, so the widest plan is 4x0.25 on all four) and
a coordinator with stall detection (`paradis_tf.mesh.coordinator.StallPolicy`).
A stream of requests keeps ``--in-flight`` requests outstanding the whole time
while the script, in order:

1. lets ``--before`` requests complete (the "before" phase);
2. SIGSTOPs node 1 for ``--stall-s`` seconds, then SIGCONTs it ("stall");
3. waits until the plan is the widest one again;
4. SIGKILLs node 2 and starts it again at once on the same port and store
   ("kill"), waits until it serves and the plan is the widest one again;
5. lets ``--after`` more requests complete ("after").

It reports, per phase, p50/p99/max latency (from submit to result, as the
caller sees it), and: every request answered (none failed, none lost, none
answered twice: each request's result is checked against `LocalRunner` on the
plan that answered it), the time from the stall to the first request served
without the stalled node, p99 during the stall over p99 before (goal: at most
3), the longest request (goal: at most 1.0 s), and how long after each node's
return the plan was the widest one again (goal: within 5 s). Each phase also
reports the host's own longest stall (``host_stall_ms``: how late a separate
idle process woke from a 5 ms sleep), so that a request held up by a busy
shared machine is told apart from one held up by the mesh.

`run_scenario` is also what ``tests/mesh/test_stall.py`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paradis_tf.mesh import Coordinator, LocalMesh  # noqa: E402
from paradis_tf.mesh.coordinator import CoordinatorObserver, StallPolicy  # noqa: E402
from paradis_tf.mesh.errors import RequestFailedError  # noqa: E402

SWITCHES = ("1x0.25", "2x0.25", "3x0.25", "4x0.25")


def build_bundle(out: Path) -> Path:
    """A small MobileNet v1 (28x28x1, 10 classes, random weights) with switches 1x0.25 ... 4x0.25."""
    from paradis_tf.convert import convert_model
    from paradis_tf.models import mobilenet_v1

    if (out / "manifest.json").is_file():
        return out
    model = mobilenet_v1((28, 28, 1), 10, list(SWITCHES), width=0.25, depth=2)
    calib = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    convert_model(model, out, calib, calib_samples=8, sequential=(), tflm=False)
    return out


@dataclass
class Phase:
    name: str
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    # the longest time a separate idle process waited beyond a 5 ms sleep while this phase ran: the host
    # itself holding everything up (a shared machine, a stolen CPU), which no fault of the mesh causes
    host_stall_ms: float = 0.0


class _HostStalls:
    """A child process that sleeps 5 ms in a loop and reports every wake-up late by over 20 ms.

    A separate process, so that this one's GIL does not count: what it sees
    is the host scheduling nothing for a while. `time.monotonic` is the
    system-wide CLOCK_MONOTONIC, so its times compare with this process's.
    """

    _CODE = (
        "import sys, time\n"
        "t = time.monotonic()\n"
        "while True:\n"
        "    time.sleep(0.005)\n"
        "    u = time.monotonic()\n"
        "    if u - t > 0.025:\n"
        "        print(f'{t!r} {u!r}', flush=True)\n"
        "    t = u\n"
    )

    def __init__(self) -> None:
        import subprocess

        self._proc = subprocess.Popen([sys.executable, "-c", self._CODE], stdout=subprocess.PIPE, text=True)
        self.gaps: list[tuple[float, float]] = []
        self._reader = threading.Thread(target=self._read, name="host-stalls", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            t0, t1 = map(float, line.split())
            self.gaps.append((t0, t1))

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._reader.join(5)

    def longest_ms(self, t0: float, t1: float) -> float:
        """The longest late wake-up (beyond the 5 ms sleep) overlapping [t0, t1]."""
        return max((max(0.0, (b - a) - 0.005) * 1000 for a, b in self.gaps if b > t0 and a < t1), default=0.0)


@dataclass
class FaultReport:
    requests: int
    answered: int
    failed: int
    errors: list[str]
    wrong: int  # answers that differ from LocalRunner on the plan that answered them
    in_flight: int
    stall_s: float
    phases: list[Phase]
    max_latency_ms: float
    first_without_stalled_ms: float | None  # from SIGSTOP to the first request served without that node
    p99_stall_over_before: float
    plan_back_after_cont_s: float | None  # from SIGCONT to the widest plan active again
    plan_back_after_restart_s: float | None  # from the restarted node serving to the widest plan again
    suspected: int
    readmitted: int
    replans: int
    plans: list[str] = field(default_factory=list)

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


class _Recorder(CoordinatorObserver):
    """Keeps (completion time, plan) of every answered request and the time of every re-plan."""

    def __init__(self) -> None:
        self.done: deque[tuple[float, str]] = deque()
        self.replans: deque[tuple[float, str]] = deque()

    def request_done(self, plan: str, seconds: float, ok: bool) -> None:
        if ok:
            self.done.append((time.monotonic(), plan))

    def replanned(self, placement: str, plan: str) -> None:
        self.replans.append((time.monotonic(), plan))


class _Stream:
    """Keeps ``in_flight`` requests outstanding until stopped; records each one's submit and end times."""

    def __init__(self, c: Coordinator, images: np.ndarray, in_flight: int) -> None:
        self.c, self.images, self.in_flight = c, images, in_flight
        self.records: list[dict] = []  # index, t_submit, t_end, ok, error, logits
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(in_flight)
        self._stop = threading.Event()
        self._completed = 0
        self._changed = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def start(self) -> "_Stream":
        self._thread.start()
        return self

    def completed(self) -> int:
        with self._lock:
            return self._completed

    def wait_completed(self, n: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._completed >= n, timeout):
                raise TimeoutError(f"{self._completed} of {n} requests completed within {timeout:g} s")

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self._slots.acquire()
            if self._stop.is_set():
                self._slots.release()
                break
            rec = {"index": i, "t_submit": time.monotonic(), "t_end": None, "ok": None, "error": "", "logits": None,
                   "ends": 0}
            with self._lock:
                self.records.append(rec)
            fut = self.c.submit(self.images[i % len(self.images)])
            fut.add_done_callback(lambda f, rec=rec: self._ended(f, rec))
            i += 1

    def _ended(self, fut, rec: dict) -> None:
        t = time.monotonic()
        try:
            logits, err = fut.result(), ""
        except RequestFailedError as e:
            logits, err = None, str(e)
        with self._changed:
            rec["ends"] += 1
            rec["t_end"], rec["ok"], rec["error"], rec["logits"] = t, err == "", err, logits
            self._completed += 1
            self._changed.notify_all()
        self._slots.release()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._slots.release()
        self._thread.join(timeout)
        with self._changed:
            self._changed.wait_for(lambda: all(r["t_end"] is not None for r in self.records), timeout)


def _wait(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> float:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(step)
    return time.monotonic()


def _phase(name: str, lat_ms: list[float], host_stall_ms: float = 0.0) -> Phase:
    a = np.asarray(lat_ms, dtype=np.float64)
    if a.size == 0:
        return Phase(name, 0, float("nan"), float("nan"), float("nan"), host_stall_ms)
    return Phase(name, int(a.size), float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max()),
                 host_stall_ms)


def run_scenario(bundle: Path, images: np.ndarray, workdir: Path, *, in_flight: int = 8, before: int = 500,
                 after: int = 500, min_requests: int = 2000, stall_s: float = 5.0, probe_interval_s: float = 0.2,
                 stall: StallPolicy | None = None, log: Callable[[str], None] = lambda s: None) -> FaultReport:
    """Runs the stall-then-kill scenario on four local nodes; see the module docstring."""
    rec = _Recorder()
    host = _HostStalls()
    try:
        return _scenario(bundle, images, workdir, rec, host, in_flight=in_flight, before=before, after=after,
                         min_requests=min_requests, stall_s=stall_s, probe_interval_s=probe_interval_s, stall=stall,
                         log=log)
    finally:
        host.stop()


def _scenario(bundle, images, workdir, rec, host, *, in_flight, before, after, min_requests, stall_s,
              probe_interval_s, stall, log) -> "FaultReport":
    from paradis_tf.runtime import LocalRunner

    widest = SWITCHES[-1]
    with LocalMesh(4, workdir, capacity=0.25, block_tensorflow=True) as mesh:
        with Coordinator(mesh.addresses, probe_interval_s=probe_interval_s, stall=stall, observer=rec) as c:
            c.deploy(bundle)
            assert c.select().plan == widest, c.placement
            c.infer(images[:8])  # warm every role once
            stream = _Stream(c, images, in_flight).start()
            try:
                stream.wait_completed(before, 120)
                stalled, killed = mesh.nodes[1], mesh.nodes[2]
                t_stop = time.monotonic()
                os.kill(stalled.pid, signal.SIGSTOP)
                log(f"SIGSTOP {stalled.address} after {stream.completed()} requests")
                try:
                    time.sleep(stall_s)  # the fault's length is the scenario, not a wait for a condition
                finally:
                    os.kill(stalled.pid, signal.SIGCONT)
                t_cont = time.monotonic()
                log(f"SIGCONT {stalled.address} after {stream.completed()} requests")
                t_back1 = _wait(lambda: c.placement is not None and c.placement.plan == widest
                                and stalled.address in c.placement.addresses, 30, "widest plan after SIGCONT")
                log(f"plan {c.placement} {t_back1 - t_cont:.2f} s after SIGCONT")
                t_kill = time.monotonic()
                killed.kill()
                killed.spawn()
                killed.wait_ready(60)
                t_ready = time.monotonic()
                log(f"{killed.address} killed and serving again {t_ready - t_kill:.2f} s later")
                t_back2 = _wait(lambda: c.placement is not None and c.placement.plan == widest
                                and killed.address in c.placement.addresses and rec.replans[-1][0] >= t_ready, 30,
                                "widest plan after the restart")
                log(f"plan {c.placement} {t_back2 - t_ready:.2f} s after the restart")
                n_after_start = stream.completed()
                stream.wait_completed(max(n_after_start + after, min_requests), 300)
            finally:
                stream.stop()
            records = list(stream.records)
            stats = c.stats
            runners = {p: LocalRunner(bundle, p) for p in {p for _, p in rec.done}}

    answered = [r for r in records if r["ok"]]
    errors = [r["error"] for r in records if r["ok"] is False]
    # which plan answered which request: the coordinator's request_done calls, in completion order, match the
    # results; a request's plan is the one active when it ended, checked by comparing with LocalRunner
    wrong = 0
    batch = np.stack([images[r["index"] % len(images)] for r in answered]) if answered else None
    if answered:
        expected = {p: r.predict(batch) for p, r in runners.items()}
        for k, r in enumerate(answered):
            if not any(np.array_equal(r["logits"], e[k]) for e in expected.values()):
                wrong += 1
    lat = {r["index"]: (r["t_end"] - r["t_submit"]) * 1000 for r in answered}

    def window(t0: float, t1: float) -> list[float]:
        return [lat[r["index"]] for r in answered if r["t_submit"] < t1 and r["t_end"] > t0]

    before_ms = [lat[r["index"]] for r in answered if r["t_end"] <= t_stop]
    stall_ms = window(t_stop, t_back1)
    kill_ms = window(t_kill, t_back2)
    after_ms = [lat[r["index"]] for r in answered if r["t_submit"] >= t_back2]
    t_first = min((r["t_submit"] for r in answered), default=t_stop)
    t_last = max((r["t_end"] for r in answered), default=t_back2)
    phases = [_phase("before", before_ms, host.longest_ms(t_first, t_stop)),
              _phase("stall", stall_ms, host.longest_ms(t_stop, t_back1)),
              _phase("kill", kill_ms, host.longest_ms(t_kill, t_back2)),
              _phase("after", after_ms, host.longest_ms(t_back2, t_last))]
    first = next((t for t, p in rec.done if t > t_stop and p != widest), None)
    twice = sum(1 for r in records if r["ends"] != 1)
    if twice:
        errors.append(f"{twice} requests ended more than once or never")
    return FaultReport(
        requests=len(records), answered=len(answered), failed=len(records) - len(answered), errors=errors[:5], wrong=wrong,
        in_flight=in_flight, stall_s=stall_s, phases=phases, max_latency_ms=max(lat.values()) if lat else float("nan"),
        first_without_stalled_ms=None if first is None else (first - t_stop) * 1000,
        p99_stall_over_before=phases[1].p99_ms / phases[0].p99_ms,
        plan_back_after_cont_s=t_back1 - t_cont, plan_back_after_restart_s=t_back2 - t_ready,
        suspected=stats.suspected, readmitted=stats.readmitted, replans=stats.replans,
        plans=[p for _, p in stats.plans],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the record (JSON) here")
    ap.add_argument("--bundle", type=Path, help="bundle directory (built here if missing; default: a temporary one)")
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--before", type=int, default=1000)
    ap.add_argument("--after", type=int, default=1000)
    ap.add_argument("--min-requests", type=int, default=2000)
    ap.add_argument("--stall-s", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=1, help="run the scenario this many times (one record each)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        bundle = build_bundle(args.bundle or Path(tmp) / "bundle")
        raw = np.random.default_rng(1).integers(0, 256, (200, 28, 28, 1), dtype=np.uint8)
        images = raw.astype(np.float32) / np.float32(255)
        runs = []
        for k in range(args.repeats):
            rep = run_scenario(bundle, images, Path(tmp) / f"run{k}", in_flight=args.in_flight, before=args.before,
                               after=args.after, min_requests=args.min_requests, stall_s=args.stall_s,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
            runs.append(asdict(rep))
            print(f"run {k}: {rep.answered}/{rep.requests} answered, {rep.failed} failed, {rep.wrong} wrong; "
                  f"max {rep.max_latency_ms:.0f} ms; first without the stalled node after "
                  f"{rep.first_without_stalled_ms:.0f} ms; p99 stall/before {rep.p99_stall_over_before:.2f}; plan back "
                  f"{rep.plan_back_after_cont_s:.2f} s after SIGCONT, {rep.plan_back_after_restart_s:.2f} s after restart")
            for ph in rep.phases:
                print(f"  {ph.name:7s} {ph.requests:6d} requests  p50 {ph.p50_ms:7.2f} ms  p99 {ph.p99_ms:7.2f} ms  "
                      f"max {ph.max_ms:7.1f} ms  host stall {ph.host_stall_ms:5.0f} ms")
    record = {
        "benchmark": "faults", "command": "python tools/bench_faults.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "runs": runs,
    }
    if args.out:
        from paradis_tf.files import atomic_write_json

        atomic_write_json(args.out, record)
    return 0 if all(r["failed"] == 0 and r["wrong"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
