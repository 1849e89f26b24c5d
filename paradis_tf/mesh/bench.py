"""Latency and throughput measurements through a live mesh (shared by
`paradis mesh bench` and tools/bench_mesh.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from paradis_tf.mesh.coordinator import Coordinator

__all__ = ["LatencyStats", "summarize", "time_calls", "mesh_latency", "mesh_throughput"]


@dataclass(frozen=True)
class LatencyStats:
    requests: int
    concurrency: int
    seconds: float
    throughput: float  # requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(latencies_s: list[float], wall_s: float, concurrency: int) -> LatencyStats:
    ms = np.asarray(latencies_s) * 1e3
    return LatencyStats(
        requests=len(ms), concurrency=concurrency, seconds=round(wall_s, 4),
        throughput=round(len(ms) / wall_s, 2) if wall_s > 0 else 0.0,
        p50_ms=round(float(np.percentile(ms, 50)), 3), p90_ms=round(float(np.percentile(ms, 90)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3), mean_ms=round(float(ms.mean()), 3),
    )


def time_calls(fn: Callable[[], object], n: int, warmup: int = 5) -> LatencyStats:
    """Calls ``fn`` ``n`` times one after another; per-call latency."""
    for _ in range(warmup):
        fn()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return summarize(lat, time.perf_counter() - t0, 1)


def mesh_latency(coordinator: Coordinator, x: np.ndarray, n: int, warmup: int = 5) -> LatencyStats:
    """Sequential single-sample requests: the latency of one inference."""
    return time_calls(lambda: coordinator.submit(x).result(), n, warmup)


def mesh_throughput(coordinator: Coordinator, x: np.ndarray, n: int, concurrency: int, warmup: int = 5) -> LatencyStats:
    """``n`` requests with ``concurrency`` in flight at any time."""
    for _ in range(warmup):
        coordinator.submit(x).result()

    async def client(count: int, lat: list[float]) -> None:
        for _ in range(count):
            t = time.perf_counter()
            await coordinator.infer_async(x)
            lat.append(time.perf_counter() - t)

    async def run() -> tuple[list[float], float]:
        lat: list[float] = []
        per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, lat) for c in per))
        return lat, time.perf_counter() - t0

    lat, wall = asyncio.run(run())
    return summarize(lat, wall, concurrency)
