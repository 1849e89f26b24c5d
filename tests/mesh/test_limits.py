"""Bounded resources and hostile input (issue 34, items 5 and 7).

Unit tests of the pieces (`FairScheduler`, `TokenBucket`, the mailbox's
per-producer share, `limits.check_text`, tensor shapes) with real asyncio and
threads, then each attack replayed with raw gRPC stubs against real node
daemons on loopback: refused with the status named, the active activation
unchanged, and a good request served right after.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from paradis_tf.errors import InputError
from paradis_tf.mesh import Coordinator, limits, security, tensors
from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
from paradis_tf.mesh.errors import TensorError
from paradis_tf.mesh.local import LocalMesh, NodeProcess
from paradis_tf.mesh.mailbox import Mailbox, MailboxFull
from paradis_tf.mesh.scheduler import FairScheduler, TokenBucket
from paradis_tf.quant import QTensor, convert
from paradis_tf.runtime import LocalRunner

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


# --- units ------------------------------------------------------------------------
def test_scheduler_takes_turns_between_callers():
    """Caller A queues many calls, then B one: B's runs after A's current call and A's next, not after all of A's."""

    async def go():
        sched = FairScheduler()
        release = threading.Event()
        done: list[str] = []

        def work(name: str) -> str:
            if name == "a0":
                release.wait(10)  # A's first call holds the thread until everything is queued
            return name

        async def call(caller: str, name: str):
            out = await sched.run(caller, work, name)
            done.append(out)

        tasks = [asyncio.ensure_future(call("A", f"a{i}")) for i in range(10)]
        await asyncio.sleep(0)  # a0 is running, a1..a9 wait
        tasks.append(asyncio.ensure_future(call("B", "b0")))
        await asyncio.sleep(0)
        assert sched.pending("A") == 9 and sched.pending("B") == 1
        release.set()
        await asyncio.gather(*tasks)
        sched.close()
        return done

    done = asyncio.run(go())
    assert done.index("b0") == 2, done  # a0 (running), a1 (A's turn came first), then B
    assert [d for d in done if d.startswith("a")] == [f"a{i}" for i in range(10)]  # one caller's calls stay in order


def test_scheduler_errors_cancellation_and_close():
    async def go():
        sched = FairScheduler()
        release = threading.Event()

        def boom():
            raise ValueError("interpreter failed")

        with pytest.raises(ValueError, match="interpreter failed"):
            await sched.run("A", boom)
        blocker = asyncio.ensure_future(sched.run("A", release.wait, 10))
        await asyncio.sleep(0)
        ran = []
        waiting = asyncio.ensure_future(sched.run("B", ran.append, "never"))
        await asyncio.sleep(0)
        waiting.cancel()  # gave up while queued: dropped, never run
        after = asyncio.ensure_future(sched.run("C", lambda: "after"))
        release.set()
        assert await blocker is True and await after == "after" and ran == []
        sched.close()
        with pytest.raises(RuntimeError, match="closed"):
            await sched.run("A", lambda: None)

    asyncio.run(go())


def test_token_bucket_bursts_then_refills():
    now = [0.0]
    bucket = TokenBucket(burst=3, rate=2.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    now[0] = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)


def test_mailbox_bounds_each_producer_not_the_others():
    async def go():
        box = Mailbox(max_entries=10, max_per_producer=3)
        for i in range(3):
            assert box.put(("act", f"r{i}", 1, 0), i)
        with pytest.raises(MailboxFull, match=r"role 1 of activation 'act' already has 3 feature maps .* \(3\)"):
            box.put(("act", "r3", 1, 0), 3)
        assert box.put(("act", "r0", 2, 0), "another producer has its own share")
        assert box.put(("next", "r0", 1, 0), "another activation too")
        # a Run already waiting for role 1's feature map still gets it: no new entry
        waiter = asyncio.ensure_future(box.get(("act", "r9", 1, 0), 1.0))
        await asyncio.sleep(0)
        assert box.put(("act", "r9", 1, 0), "awaited")
        assert await waiter == "awaited"
        # a finished request gives its share back
        assert await box.get(("act", "r0", 1, 0), 1.0) == 0
        box.discard_request("act", "r0")
        assert box.waiting_from("act", 1) == 2
        assert box.put(("act", "r4", 1, 0), 4)
        # the whole mailbox stays bounded: local Runs cannot wait past it either
        for i in range(len(box), 10):
            box.put(("x", f"f{i}", i, 0), i)
        with pytest.raises(MailboxFull, match="10 feature maps are waiting"):
            await box.get(("act", "r5", 1, 0), 0.01)

    asyncio.run(go())


def test_check_text_and_auto_max_batch():
    assert limits.check_text("2x0.5", "Run.plan") == "2x0.5"
    with pytest.raises(limits.FieldError, match=r"Run.plan 'a\\x00b' holds a NUL byte at position 1"):
        limits.check_text("a\x00b", "Run.plan")
    with pytest.raises(limits.FieldError, match="Run.request_id is 129 characters long"):
        limits.check_text("r" * 129, "Run.request_id", limits.MAX_ID_CHARS)
    with pytest.raises(limits.FieldError, match="control character"):
        limits.check_text("a\nb", "Activate.bundle")
    assert limits.auto_max_batch(0.3) == 333 and limits.auto_max_batch(250.0) == 1 and limits.auto_max_batch(0.0) == 1


def test_hostile_tensor_shapes_are_tensor_errors():
    cases = {
        "rank": (mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[1] * 70, data=b"\0"), "70 dimensions"),
        "zero with overflow": (mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[0, 2**62, 2**62], data=b""), "overflows int64"),
        "negative": (mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[-1, 4], data=b""), "negative dimension"),
        "wrapping product": (mesh_pb2.Tensor(dtype=mesh_pb2.DTYPE_INT8, shape=[2**62, 28, 28, 1], data=b""), "byte length 0"),
        "nan": (tensors.encode(np.array([[np.nan]], np.float32)), "must be finite"),
    }
    for name, (t, text) in cases.items():
        with pytest.raises(TensorError, match=text):
            tensors.decode(t)


def test_local_runner_refuses_non_finite_input(bundle4, images):
    runner = LocalRunner(bundle4, "1x0.25")
    for bad in (np.nan, np.inf, -np.inf):
        x = images[:2].copy()
        x[1, 3, 3, 0] = bad
        with pytest.raises(InputError, match="NaN or infinite"):
            runner.predict(x)
    assert runner.predict(images[:2]).shape == (2, 10)


# --- real node daemons ----------------------------------------------------------------
def _stub(address: str):
    ch = grpc.insecure_channel(address, options=limits.CHANNEL_OPTIONS)
    return ch, mesh_pb2_grpc.NodeStub(ch)


def _refused(call, code: grpc.StatusCode, *texts: str) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, (e.value.code(), e.value.details())
    for text in texts:
        assert text in e.value.details(), (text, e.value.details())
    return e.value.details()


def _input(bundle, plan: str, role: int, x: np.ndarray) -> mesh_pb2.Tensor:
    spec = LocalRunner(bundle, plan).plan.devices[role].segments[0].inputs[0].tensor
    return tensors.encode_qtensor(convert(QTensor.from_float(x), spec.quant))


@pytest.fixture(scope="module")
def node3(tmp_path_factory, bundle4):
    """One node with --max-batch 3, bundle4 deployed and 1x0.25 active (by a coordinator)."""
    n = NodeProcess(tmp_path_factory.mktemp("limits") / "store", node_id="lim", capacity=1.0, block_tensorflow=True,
                    extra_args=["--max-batch", "3"])
    n.start()
    try:
        with Coordinator([n.address]) as c:
            c.deploy(bundle4)
            c.select("1x0.25")
        yield n
    finally:
        n.kill()


def _active(stub) -> mesh_pb2.Activation:
    return stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).activation


def _good_run(stub, bundle, images, act: mesh_pb2.Activation, rid: str = "good") -> None:
    x = images[:2]
    reply = stub.Run(mesh_pb2.RunRequest(request_id=rid, plan=act.plan, activation_id=act.activation_id,
                                         input=_input(bundle, act.plan, 0, x)), timeout=10)
    plan = LocalRunner(bundle, act.plan).plan
    from paradis_tf.bundle import SegmentRef
    from paradis_tf.runtime.program import fuse

    out = tensors.decode_qtensor(reply.outputs[0].tensor, plan.devices[0].segments[-1].output)
    np.testing.assert_array_equal(fuse(plan, {SegmentRef(0, len(plan.devices[0].segments) - 1): out}),
                                  LocalRunner(bundle, act.plan).predict(x))


def test_max_batch_refuses_a_big_run_and_the_coordinator_still_serves_any_batch(node3, bundle4, images):
    ch, stub = _stub(node3.address)
    with ch:
        info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
        assert info.max_batch == 3
        act = info.activation
        big = _input(bundle4, "1x0.25", 0, images[:4])
        _refused(lambda: stub.Run(mesh_pb2.RunRequest(request_id="big", plan="1x0.25", input=big), timeout=10), INVALID,
                 "Run.input carries a batch of 4", "at most 3 per Run (--max-batch 3)", "split it into Runs of at most 3")
        assert _active(stub) == act
        ok = stub.Run(mesh_pb2.RunRequest(request_id="three", plan="1x0.25", input=_input(bundle4, "1x0.25", 0, images[:3])), timeout=10)
        assert ok.outputs[0].tensor.shape[0] == 3
    with Coordinator([node3.address]) as c:  # a batch of 10 through a node that takes 3 per Run
        c.select("1x0.25")
        np.testing.assert_array_equal(c.infer(images[:10]), LocalRunner(bundle4, "1x0.25").predict(images[:10]))


def test_hostile_names_and_tensors_are_invalid_argument_naming_the_field(node3, bundle4, images):
    ch, stub = _stub(node3.address)
    with ch:
        act = _active(stub)
        good = _input(bundle4, "1x0.25", 0, images[:1])

        def run(**kw):
            fields = dict(request_id="r", plan=act.plan, activation_id=act.activation_id, input=good)
            fields.update(kw)
            return lambda: stub.Run(mesh_pb2.RunRequest(**fields), timeout=10)

        long = "x" * 5000
        attacks = {
            "Run.request_id": run(request_id="r\x00"),
            "Run.plan": run(plan="1x0.25\x00../../etc"),
            "Run.activation_id": run(activation_id=long),
            "Exchange.request_id": lambda: stub.Exchange(mesh_pb2.ExchangeRequest(
                request_id=long, plan=act.plan, activation_id=act.activation_id), timeout=10),
            "Activate.bundle": lambda: stub.Activate(mesh_pb2.ActivateRequest(
                bundle="tiny\x00", plan="1x0.25", role=0), timeout=30),
            "Activate.version": lambda: stub.Activate(mesh_pb2.ActivateRequest(
                bundle=act.bundle, version=long, plan="1x0.25", role=0), timeout=30),
            "Activate.plan": lambda: stub.Activate(mesh_pb2.ActivateRequest(
                bundle=act.bundle, plan="\x001x0.25", role=0), timeout=30),
            "Activate.activation_id": lambda: stub.Activate(mesh_pb2.ActivateRequest(
                bundle=act.bundle, plan="1x0.25", role=0, activation_id=long), timeout=30),
            "Activate.peers[0]": lambda: stub.Activate(mesh_pb2.ActivateRequest(
                bundle=act.bundle, plan="1x0.25", role=0, peers={0: "127.0.0.1:1\x00"}), timeout=30),
            "GetManifest.bundle": lambda: stub.GetManifest(mesh_pb2.GetManifestRequest(bundle="a\x00b"), timeout=10),
            "GetManifest.version": lambda: stub.GetManifest(mesh_pb2.GetManifestRequest(bundle=act.bundle, version=long), timeout=10),
        }
        for field, call in attacks.items():
            _refused(call, INVALID, field)
        # a name the store refuses (not merely one it lacks) is the caller's error too
        _refused(lambda: stub.GetManifest(mesh_pb2.GetManifestRequest(bundle="../etc"), timeout=10), INVALID, "GetManifest.bundle", "'../etc'")
        shapes = {
            "70 dimensions": mesh_pb2.Tensor(dtype=good.dtype, shape=[1] * 70, data=b"\0", scale=good.scale),
            "overflows int64": mesh_pb2.Tensor(dtype=good.dtype, shape=[0, 2**62, 2**62, 1], data=b"", scale=good.scale),
            "negative dimension": mesh_pb2.Tensor(dtype=good.dtype, shape=[-1, 28, 28, 1], data=b"", scale=good.scale),
            "byte length 0 does not match": mesh_pb2.Tensor(dtype=good.dtype, shape=[1, 2**62, 28, 1], data=b"", scale=good.scale),
        }
        for text, t in shapes.items():
            _refused(run(input=t), INVALID, text)
        assert _active(stub) == act
        assert stub.GetManifest(mesh_pb2.GetManifestRequest(bundle=act.bundle), timeout=10).version == act.version
        _good_run(stub, bundle4, images, act)


def test_activation_rate_limit_and_free_replays(node3, bundle4, images):
    ch, stub = _stub(node3.address)
    with ch:
        act = _active(stub)
        before = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).counters.activations
        replay = mesh_pb2.ActivateRequest(bundle=act.bundle, version=act.version, plan=act.plan, role=act.role,
                                          peers=dict(act.peers), activation_id=act.activation_id,
                                          peer_node_ids=dict(act.peer_node_ids))
        for _ in range(200):  # the current activation, replayed: free, and takes no token
            assert stub.Activate(replay, timeout=30).activation == act
        assert stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).counters.activations == before

        # new activations in a loop: a burst passes, then RESOURCE_EXHAUSTED naming the limit
        outcomes, last = [], act
        for i in range(limits.ACTIVATION_BURST + 5):
            req = mesh_pb2.ActivateRequest(bundle=act.bundle, plan="1x0.25", role=0, activation_id=f"attacker-{i}")
            try:
                last = stub.Activate(req, timeout=30).activation
                outcomes.append("ok")
            except grpc.RpcError as e:
                assert e.code() == EXHAUSTED, e.details()
                assert f"at most {limits.ACTIVATION_BURST} activations back to back" in e.details()
                assert f"the current activation {last.activation_id!r}" in e.details() and "keeps serving" in e.details()
                outcomes.append("refused")
                assert _active(stub) == last  # the refused call changed nothing
        assert outcomes[0] == "ok" and outcomes.count("refused") >= 3, outcomes
        _good_run(stub, bundle4, images, last)
        # a coordinator re-planning now waits for the bucket instead of failing
        with Coordinator([node3.address]) as c:
            assert c.select("1x0.25").plan == "1x0.25"
            np.testing.assert_array_equal(c.infer(images[:4]), LocalRunner(bundle4, "1x0.25").predict(images[:4]))


def test_activate_replayed_800_times_during_service_keeps_the_coordinators_activation(tmp_path, bundle4, images):
    with LocalMesh(1, tmp_path, capacity=1.0, block_tensorflow=True) as mesh, Coordinator(mesh.addresses) as c:
        c.deploy(bundle4)
        c.select("1x0.25")
        expected = LocalRunner(bundle4, "1x0.25").predict(images[:50])
        t0 = time.perf_counter()
        np.testing.assert_array_equal(c.infer(images[:50]), expected)
        quiet_s = time.perf_counter() - t0
        ch, stub = _stub(mesh.addresses[0])
        with ch:
            act = _active(stub)
            replay = mesh_pb2.ActivateRequest(bundle=act.bundle, version=act.version, plan=act.plan, role=act.role,
                                              peers=dict(act.peers), activation_id=act.activation_id,
                                              peer_node_ids=dict(act.peer_node_ids))
            replays, stop = [0], threading.Event()

            def attacker():
                while replays[0] < 800 and not stop.is_set():
                    stub.Activate(replay, timeout=30)
                    replays[0] += 1

            thread = threading.Thread(target=attacker)
            thread.start()
            try:
                rounds, t0 = 0, time.perf_counter()
                while thread.is_alive() or rounds == 0:
                    np.testing.assert_array_equal(c.infer(images[:50]), expected)
                    rounds += 1
                busy_s = (time.perf_counter() - t0) / rounds
            finally:
                stop.set()
                thread.join(60)
            assert replays[0] == 800
            assert _active(stub) == act and c.stats.failed == 0 and c.stats.retries == 0
            print(f"50 requests: {quiet_s * 1e3:.0f} ms alone, {busy_s * 1e3:.0f} ms during 800 replayed Activates "
                  f"({rounds} rounds)")


def test_exchange_only_from_consumed_producers_with_a_share_each(tmp_path, bundle_sync, images):
    with LocalMesh(2, tmp_path, capacity=1.0, block_tensorflow=True) as mesh, Coordinator(mesh.addresses) as c:
        c.deploy(bundle_sync)
        placement = c.select("2x0.5")
        target = placement.addresses[0]  # role 0 takes role 1's segment-0 feature map
        plan = c.bundle.plan("2x0.5")
        spec = plan.devices[1].segments[0].output
        ch, stub = _stub(target)
        with ch:
            info = stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
            act = info.activation
            assert info.max_batch == limits.auto_max_batch(info.role_latency_ms) >= 1  # auto: --max-batch 0

            def fm(batch: int = 1):
                return tensors.encode(np.full((batch, *spec.shape[1:]), spec.quant.zero_point, spec.quant.np_dtype),
                                      spec.quant.scale, spec.quant.zero_point)

            def exchange(rid: str, role: int = 1, segment: int = 0, tensor=None, aid=None):
                return lambda: stub.Exchange(mesh_pb2.ExchangeRequest(
                    request_id=rid, plan="2x0.5", activation_id=act.activation_id if aid is None else aid,
                    producer_role=role, producer_segment=segment, tensor=fm() if tensor is None else tensor), timeout=10)

            _refused(exchange("own", role=0), INVALID, "role 0 of plan '2x0.5'", "does not take the feature map of role 0 segment 0",
                     "role 1 segment 0")
            last = len(plan.devices[1].segments) - 1  # goes to the fusion, not to role 0
            _refused(exchange("fusion", segment=last), INVALID, f"does not take the feature map of role 1 segment {last}")
            _refused(exchange("gone", aid="an-old-activation"), grpc.StatusCode.FAILED_PRECONDITION, "not (or no longer) loaded")
            _refused(exchange("big", tensor=fm(info.max_batch + 1)), INVALID, f"carries a batch of {info.max_batch + 1}",
                     f"at most {info.max_batch} per Run")
            for i in range(limits.MAILBOX_MAX_PER_PRODUCER):
                exchange(f"flood-{i}")()
            _refused(exchange("one-more"), EXHAUSTED, "role 1 of activation", f"({limits.MAILBOX_MAX_PER_PRODUCER})")
            assert _active(stub) == act
            # a new activation has a share of its own: the plan serves again at once
            c.select("2x0.5")
            assert _active(stub).activation_id != act.activation_id
            np.testing.assert_array_equal(c.infer(images[:4]), LocalRunner(bundle_sync, "2x0.5").predict(images[:4]))


def test_runs_of_two_callers_take_turns_on_a_node(tmp_path, bundle4, images):
    """Caller A (certificate coord-a) sends many big Runs, then caller B one: B's answer does not wait for all of A's."""
    from paradis_tf.mesh.local import node_tls_args

    pki = tmp_path / "pki"
    security.make_ca(pki)
    for name in ("coord-a", "coord-b"):
        security.issue(pki, name, [], role="coordinator")
    node = NodeProcess(tmp_path / "store", capacity=1.0, block_tensorflow=True, extra_args=node_tls_args(pki, "node0"))
    node.start()
    try:
        tls_a = security.TlsConfig(pki / "ca.pem", pki / "coord-a.pem", pki / "coord-a.key")
        with Coordinator([node.address], tls=tls_a) as c:
            c.deploy(bundle4)
            c.select("1x0.25")

        def stub_of(name: str):
            creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), (pki / f"{name}.key").read_bytes(),
                                                 (pki / f"{name}.pem").read_bytes())
            ch = grpc.secure_channel(node.address, creds, options=limits.CHANNEL_OPTIONS)
            return ch, mesh_pb2_grpc.NodeStub(ch)

        (ch_a, a), (ch_b, b) = stub_of("coord-a"), stub_of("coord-b")
        with ch_a, ch_b:
            info = a.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5)
            batch = info.max_batch  # about 100 ms of work per Run (auto)
            heavy = _input(bundle4, "1x0.25", 0, np.resize(images, (batch, *images.shape[1:])))
            light = _input(bundle4, "1x0.25", 0, images[:1])
            done: list[str] = []
            lock = threading.Lock()

            def record(name):
                def cb(_):
                    with lock:
                        done.append(name)
                return cb

            futures = []
            for i in range(24):
                f = a.Run.future(mesh_pb2.RunRequest(request_id=f"a{i}", plan="1x0.25", input=heavy), timeout=120)
                f.add_done_callback(record(f"a{i}"))
                futures.append(f)
            futures[0].result()  # A's calls are all queued on the node by now
            f = b.Run.future(mesh_pb2.RunRequest(request_id="b", plan="1x0.25", input=light), timeout=120)
            f.add_done_callback(record("b"))
            futures.append(f)
            for f in futures:
                f.result()
            with lock:
                order = list(done)
            assert len(order) == 25 and order.index("b") < len(order) - 10, order
            print(f"batch {batch} per Run from A; B's Run finished {order.index('b') + 1}th of 25")
    finally:
        node.kill()
