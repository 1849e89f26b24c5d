"""Latency and throughput measurements through a live mesh (shared by
`paradis mesh bench` and tools/bench_mesh.py).

A request that fails (`RequestFailedError`) is counted, not raised, so a
benchmark that loses a node goes on and reports it: `bench_row` records,
next to the timings, which plans answered the row's requests, how many
failed and how many re-plans happened meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from paradis_tf.mesh.coordinator import Coordinator
from paradis_tf.mesh.errors import RequestFailedError

__all__ = ["LatencyStats", "BenchRow", "summarize", "time_calls", "mesh_latency", "mesh_throughput", "bench_row"]


@dataclass(frozen=True)
class LatencyStats:
    """Timings of the answered requests (percentiles None when none was answered)."""

    requests: int  # answered
    concurrency: int
    seconds: float
    throughput: float  # answered requests per second
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    failed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(latencies_s: list[float], wall_s: float, concurrency: int, failed: int = 0) -> LatencyStats:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    pct = (lambda q: round(float(np.percentile(ms, q)), 3)) if len(ms) else (lambda q: None)
    return LatencyStats(
        requests=len(ms), concurrency=concurrency, seconds=round(wall_s, 4),
        throughput=round(len(ms) / wall_s, 2) if wall_s > 0 else 0.0,
        p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), mean_ms=round(float(ms.mean()), 3) if len(ms) else None,
        failed=failed,
    )


def time_calls(fn: Callable[[], object], n: int, warmup: int = 5,
               failures: tuple[type[BaseException], ...] = ()) -> LatencyStats:
    """Calls ``fn`` ``n`` times one after another; per-call latency.

    Exceptions of the ``failures`` types count as failed calls (others are
    raised); failed warm-up calls are not counted.
    """
    for _ in range(warmup):
        try:
            fn()
        except failures:
            pass
    lat = []
    failed = 0
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        try:
            fn()
        except failures:
            failed += 1
            continue
        lat.append(time.perf_counter() - t)
    return summarize(lat, time.perf_counter() - t0, 1, failed)


def mesh_latency(coordinator: Coordinator, x: np.ndarray, n: int, warmup: int = 5) -> LatencyStats:
    """Sequential single-sample requests: the latency of one inference."""
    return time_calls(lambda: coordinator.submit(x).result(), n, warmup, failures=(RequestFailedError,))


def mesh_throughput(coordinator: Coordinator, x: np.ndarray, n: int, concurrency: int, warmup: int = 5) -> LatencyStats:
    """``n`` requests with ``concurrency`` in flight at any time."""
    time_calls(lambda: coordinator.submit(x).result(), 0, warmup, failures=(RequestFailedError,))
    failed = 0

    async def client(count: int, lat: list[float]) -> None:
        nonlocal failed
        for _ in range(count):
            t = time.perf_counter()
            try:
                await coordinator.infer_async(x)
            except RequestFailedError:
                failed += 1
                continue
            lat.append(time.perf_counter() - t)

    async def run() -> tuple[list[float], float]:
        lat: list[float] = []
        per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, lat) for c in per))
        return lat, time.perf_counter() - t0

    lat, wall = asyncio.run(run())
    return summarize(lat, wall, concurrency, failed)


@dataclass(frozen=True)
class BenchRow:
    """One measurement and what served it.

    ``plans``, ``failed`` and ``replans`` come from the coordinator's counters
    over the whole row, warm-up requests included.
    """

    label: str
    stats: LatencyStats
    plans: dict[str, int]  # plan -> requests it answered, in the order plans first answered
    failed: int
    replans: int

    @property
    def plan_text(self) -> str:
        """``"4x0.25"``, or ``"4x0.25 (120) + 3x0.25 (80)"`` when the plan changed."""
        if len(self.plans) == 1:
            return next(iter(self.plans))
        return " + ".join(f"{p} ({n})" for p, n in self.plans.items()) or "-"

    def as_dict(self) -> dict:
        # "failed" is the row's count (warm-up included), not only the timed requests'
        return {"label": self.label, **self.stats.as_dict(), "plans": dict(self.plans), "failed": self.failed,
                "replans": self.replans}


def bench_row(coordinator: Coordinator, label: str, measure: Callable[[], LatencyStats]) -> BenchRow:
    """Runs ``measure`` and records which plans answered, failures and re-plans."""
    s = coordinator.stats
    answered, failed, replans = dict(s.answered_by_plan), s.failed, s.replans
    stats = measure()
    plans = {p: n - answered.get(p, 0) for p, n in s.answered_by_plan.items() if n > answered.get(p, 0)}
    return BenchRow(label, stats, plans, s.failed - failed, s.replans - replans)
