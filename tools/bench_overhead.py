#!/usr/bin/env python3
"""Per-request cost of the mesh outside the interpreter, next to its floor: a bare gRPC echo.

    python tools/bench_overhead.py --bundle /tmp/paradis-mnv1-224 --out docs/benchmarks/overhead.json
    python tools/bench_overhead.py --bundle /tmp/paradis-mnv1-224 --requests 300 --rounds 4 --out /tmp/o.json

One node daemon on loopback (TensorFlow blocked, its own core), the
MobileNet v1 224x224x3 bundle's 1x1.0 plan (an int8 input of 150,528
bytes, 1,000 int8 logits back), a `Coordinator` in this process on the
other core. Per request at 1 in flight:

* ``mesh``: `Coordinator.infer` of one float image, end to end (input
  checks, quantization, the Run RPC, the node's decode, scheduler and
  interpreter hand-over, the reply, dequantization, fusion);
* ``compute``: the node's own interpreter time for it (``RunReply.compute_ms``);
* ``overhead = mesh - compute``, per request, its median;
* ``direct``: the same Run RPC sent bare on the coordinator's channel (the
  request encoded once beforehand, no coordinator logic), and its overhead
  ``direct - compute``: what the node and the transport cost, so that
  ``overhead - direct_overhead`` is the coordinator's own share;

and, in the same run, in alternating rounds (ABAB), the floor: a bare
``grpc.aio`` unary call to a server process on the node's core whose handler
returns at once, carrying the same bytes: ``echo_reply`` (150,528 bytes
in, 1,000 back: what the mesh call carries) and ``echo_full`` (the payload
both ways, a stricter echo). The target of issue 36: overhead at most 1.3
times ``echo_reply``'s median round trip.

Builds the bundle (`tools/bench_mesh.py`'s MobileNet, random weights) when
``--bundle`` does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from paradis_tf.files import atomic_write_json  # noqa: E402

TARGET = 1.3
PLAN = "1x1.0"

# A grpc.aio server with one generic unary method: bytes in, ``reply_bytes`` (or the request itself) back.
ECHO_SERVER = textwrap.dedent("""
    import asyncio, sys
    import grpc

    async def main():
        payloads = {}
        def handler(request, context):
            n = int(dict(context.invocation_metadata()).get("reply-bytes", "-1"))
            if n < 0:
                return request
            if n not in payloads:
                payloads[n] = bytes(n)
            return payloads[n]
        async def unary(request, context):
            return handler(request, context)
        method = grpc.unary_unary_rpc_method_handler(unary)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                          ("grpc.max_send_message_length", 64 << 20)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Echo": method})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
""")


class EchoServer:
    """The floor's server: a separate process pinned like the node."""

    def __init__(self, cpus: list[int]):
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "EchoServer":
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, self.cpus))
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"echo server did not start (printed {line!r})")
        self.port = int(line)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class EchoClient:
    """Unary calls on one grpc.aio channel, driven from one event loop thread (as the coordinator's calls are)."""

    def __init__(self, port: int):
        import asyncio
        import threading

        import grpc

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make():
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20),
                                                                       ("grpc.max_send_message_length", 64 << 20)])
            return ch, ch.unary_unary("/bench.Echo/Echo")

        self._channel, self._call = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    def call(self, payload: bytes, reply_bytes: int) -> None:
        import asyncio

        async def one():
            return await self._call(payload, metadata=(("reply-bytes", str(reply_bytes)),), timeout=10)

        got = asyncio.run_coroutine_threadsafe(one(), self._loop).result()
        expected = len(payload) if reply_bytes < 0 else reply_bytes
        if len(got) != expected:
            raise RuntimeError(f"echo returned {len(got)} bytes, expected {expected}")

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._channel.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _summary(values_s: list[float]) -> dict:
    ms = [v * 1e3 for v in values_s]
    return {"n": len(ms), "p50_ms": round(_pct(ms, 50), 4), "p90_ms": round(_pct(ms, 90), 4),
            "p99_ms": round(_pct(ms, 99), 4), "mean_ms": round(float(np.mean(ms)), 4)}


def _bare_run(c, x: np.ndarray):
    """A function sending one Run of the active 1x1.0 plan on the coordinator's channel and event loop, the request
    built once (quantized, encoded); it returns the node's compute seconds."""
    from paradis_tf.mesh import tensors
    from paradis_tf.mesh._proto import mesh_pb2
    from paradis_tf.quant import QTensor, convert

    active = c._active  # the coordinator's own plan and activation: a diagnosis, not an API
    address = active.placement.addresses[0]
    req = mesh_pb2.RunRequest(plan=active.placement.plan, activation_id=active.activation_id)
    tensors.encode_qtensor(convert(QTensor.from_float(x[None]), active.input_specs[0].quant), out=req.input)
    stub = c._nodes[address].stub
    seq = iter(range(1 << 62))

    async def one() -> float:
        req.request_id = f"bare-{next(seq)}"
        reply = await stub.Run(req, timeout=10)
        return reply.compute_ms / 1e3

    return lambda: c._call(one())


def measure(bundle: Path, requests: int, rounds: int, warmup: int, node_cpu: int, client_cpu: int,
            log=print) -> dict:
    from paradis_tf.runtime import LocalRunner

    runner = LocalRunner(bundle, PLAN, num_threads=1)
    shape = tuple(json.loads((bundle / "manifest.json").read_text())["model"]["input_shape"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=shape).astype(np.float32)
    in_bytes = int(np.prod(shape))  # int8 on the wire
    out_bytes = int(np.asarray(runner.predict(x[None])).shape[-1])  # int8 logits
    del runner
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, [client_cpu])
    try:
        return _measure(bundle, x, in_bytes, out_bytes, requests, rounds, warmup, node_cpu, log)
    finally:
        os.sched_setaffinity(0, affinity)


def _measure(bundle: Path, x: np.ndarray, in_bytes: int, out_bytes: int, requests: int, rounds: int, warmup: int,
             node_cpu: int, log) -> dict:
    from paradis_tf.mesh import Coordinator, LocalMesh

    samples = {"mesh": [], "compute": [], "overhead": [], "direct": [], "direct_overhead": [], "echo_reply": [],
               "echo_full": []}
    payload = os.urandom(in_bytes)
    with tempfile.TemporaryDirectory() as tmp, \
            LocalMesh(1, Path(tmp) / "mesh", cpus=[[node_cpu]], block_tensorflow=True) as mesh, \
            EchoServer([node_cpu]) as echo, \
            Coordinator(mesh.addresses) as c:
        c.deploy(bundle)
        c.select(PLAN)
        client = EchoClient(echo.port)
        run_bare = _bare_run(c, x)
        try:
            for _ in range(warmup):
                c.infer(x[None])
                run_bare()
                client.call(payload, out_bytes)
                client.call(payload, -1)
            per_round = max(1, requests // rounds)
            kinds = ("mesh", "direct", "echo_reply", "echo_full")
            for r in range(rounds):
                for label in (kinds if r % 2 == 0 else tuple(reversed(kinds))):
                    for _ in range(per_round):
                        if label == "direct":
                            t = time.perf_counter()
                            comp = run_bare()
                            dt = time.perf_counter() - t
                            samples["direct"].append(dt)
                            samples["direct_overhead"].append(dt - comp)
                        elif label == "mesh":
                            before = c.stats.node_compute_ms
                            t = time.perf_counter()
                            c.infer(x[None])
                            dt = time.perf_counter() - t
                            comp = (c.stats.node_compute_ms - before) / 1e3
                            samples["mesh"].append(dt)
                            samples["compute"].append(comp)
                            samples["overhead"].append(dt - comp)
                        else:
                            t = time.perf_counter()
                            client.call(payload, out_bytes if label == "echo_reply" else -1)
                            samples[label].append(time.perf_counter() - t)
                log(f"round {r + 1}/{rounds}: mesh p50 {_pct(samples['mesh'], 50) * 1e3:.3f} ms, compute "
                    f"{_pct(samples['compute'], 50) * 1e3:.3f}, overhead {_pct(samples['overhead'], 50) * 1e3:.3f} "
                    f"(bare Run {_pct(samples['direct_overhead'], 50) * 1e3:.3f}), "
                    f"echo {_pct(samples['echo_reply'], 50) * 1e3:.3f} / full {_pct(samples['echo_full'], 50) * 1e3:.3f}")
        finally:
            client.close()
    res = {k: _summary(v) for k, v in samples.items()}
    ratio = res["overhead"]["p50_ms"] / res["echo_reply"]["p50_ms"]
    return {
        "bundle": str(bundle), "plan": PLAN, "input_bytes": in_bytes, "output_bytes": out_bytes,
        "results": res,
        "overhead_over_echo_reply": round(ratio, 3),
        "overhead_over_echo_full": round(res["overhead"]["p50_ms"] / res["echo_full"]["p50_ms"], 3),
        "target": {"max_ratio": TARGET, "met": bool(ratio <= TARGET)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path(tempfile.gettempdir()) / "paradis-mnv1-224",
                    help="MobileNet v1 224 bundle (built there if missing; default: %(default)s)")
    ap.add_argument("--requests", type=int, default=400, help="timed requests per kind (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls of each kind first (default: %(default)s)")
    ap.add_argument("--node-cpu", type=int, default=1, help="core of the node and the echo server (default: %(default)s)")
    ap.add_argument("--client-cpu", type=int, default=0, help="core of this process (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="write the record here (JSON)")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.warmup < 0:
        ap.error(f"--requests {args.requests}, --rounds {args.rounds}, --warmup {args.warmup}: "
                 f"give requests and rounds >= 1, warmup >= 0")
    if not (args.bundle / "manifest.json").exists():
        from bench_mesh import build_bundle

        print(f"building the MobileNet v1 224 bundle at {args.bundle} (a few minutes)", flush=True)
        build_bundle(args.bundle)
    rec = measure(args.bundle, args.requests, args.rounds, args.warmup, args.node_cpu, args.client_cpu)
    rec["machine"] = {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "loadavg": os.getloadavg()}
    r = rec["results"]
    print(f"mesh p50 {r['mesh']['p50_ms']:.3f} ms = compute {r['compute']['p50_ms']:.3f} + overhead "
          f"{r['overhead']['p50_ms']:.3f} (a bare Run: {r['direct_overhead']['p50_ms']:.3f}); bare grpc.aio echo {r['echo_reply']['p50_ms']:.3f} ms "
          f"({rec['input_bytes']} B in, {rec['output_bytes']} B back), full echo {r['echo_full']['p50_ms']:.3f}; "
          f"overhead / echo {rec['overhead_over_echo_reply']:.2f} (target <= {TARGET})")
    if args.out:
        atomic_write_json(args.out, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
