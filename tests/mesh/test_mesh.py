"""Acceptance: results through real node daemons equal LocalRunner's, bit for bit."""

from __future__ import annotations

import pytest
import asyncio

import numpy as np

from paradis_tf.mesh import Coordinator
from paradis_tf.errors import InputError
from paradis_tf.runtime import LocalRunner


def _counters(c: Coordinator) -> dict[str, object]:
    return {s.address: s.info.counters for s in c.status()}


def _counted_run(c: Coordinator, bundle, plan: str, x: np.ndarray):
    """Runs ``x`` on ``plan`` (it must equal LocalRunner's logits); the placement and the nodes' counters around the run."""
    placement = c.select(plan)
    before = _counters(c)
    logits = c.infer(x)
    after = _counters(c)
    np.testing.assert_array_equal(logits, LocalRunner(bundle, plan).predict(x))
    return placement, before, after


def test_4x025_on_four_nodes_equals_local_runner(mesh4, bundle4, images):
    with Coordinator(mesh4.addresses) as c:
        replies = c.deploy(bundle4)
        assert len({r.version for r in replies.values()}) == 1
        placement = c.select()
        # capacity 0.25 everywhere: the widest plan that fits uses all four nodes
        assert placement.plan == "4x0.25" and sorted(placement.addresses) == sorted(mesh4.addresses)
        logits = c.infer(images)
        assert logits.shape == (200, 10) and c.stats.answered == 200 and c.stats.failed == 0
        np.testing.assert_array_equal(logits, LocalRunner(bundle4, "4x0.25").predict(images))
        # one sample without a batch dimension, and the asyncio API, give the same numbers
        np.testing.assert_array_equal(c.infer(images[3]), logits[3])

        async def many():
            return await asyncio.gather(*(c.infer_async(images[i]) for i in range(8)))

        np.testing.assert_array_equal(np.stack(asyncio.run(many())), logits[:8])
        np.testing.assert_array_equal(c.submit(images[9]).result(10), logits[9])
        # a node that takes the model input and no feature map receives exactly one input per request
        bytes_per_input = 28 * 28 * 1
        assert c.stats.bytes_to_nodes == 4 * bytes_per_input * (200 + 1 + 8 + 1)
        # NaN and infinite images are refused before any request, naming the samples; the mesh serves on
        for bad in (np.nan, np.inf, -np.inf):
            hostile = images[:3].copy()
            hostile[1, 4, 4, 0] = bad
            with pytest.raises(InputError, match=r"input samples \[1\] hold NaN or infinite values"):
                c.infer(hostile)
            with pytest.raises(InputError, match=r"input samples \[0\]"):
                c.submit(hostile[1])
        np.testing.assert_array_equal(c.infer(images[:2]), logits[:2])


def test_sync_layer_feature_maps_go_node_to_node(mesh2, bundle_sync, images):
    x = images[:40]
    with Coordinator(mesh2.addresses) as c:
        c.deploy(bundle_sync)
        placement, before, after = _counted_run(c, bundle_sync, "2x0.5", x)
        plan = c.bundle.plan("2x0.5")
        fm = plan.devices[0].segments[0].output.shape
        fm_bytes = int(np.prod(fm))
        for address in placement.addresses:
            sent = after[address].exchanges_sent - before[address].exchanges_sent
            received = after[address].exchanges_received - before[address].exchanges_received
            # every request: each node pushes its segment-0 feature map to the other, once
            assert sent == len(x) and received == len(x), (address, sent, received)
            assert after[address].exchange_bytes_received - before[address].exchange_bytes_received == len(x) * fm_bytes
        # the coordinator only sent images and got partial logits back: no feature map went through it
        assert c.stats.bytes_to_nodes == 2 * len(x) * 28 * 28
        assert c.stats.bytes_from_nodes == 2 * len(x) * 10


def test_sequential_plan_runs_device_to_device(mesh2, bundle_sync, images):
    x = images[:20]
    with Coordinator(mesh2.addresses, bundle=bundle_sync) as c:
        c.deploy(bundle_sync)
        placement, before, after = _counted_run(c, bundle_sync, "seq-2", x)
        first, last = placement.addresses
        assert after[first].exchanges_sent - before[first].exchanges_sent == len(x)
        assert after[last].exchanges_received - before[last].exchanges_received == len(x)
        # input to the first stage only, logits from the last stage only
        assert c.stats.bytes_to_nodes == len(x) * 28 * 28 and c.stats.bytes_from_nodes == len(x) * 10


def test_coordinator_without_the_bundle_directory_fetches_the_manifest(mesh2, bundle_sync, images):
    with Coordinator(mesh2.addresses) as c:
        c.deploy(bundle_sync)
    with Coordinator(mesh2.addresses) as c:  # knows only the addresses
        assert c.select("2x0.5").plan == "2x0.5"
        np.testing.assert_array_equal(c.infer(images[:4]), LocalRunner(bundle_sync, "2x0.5").predict(images[:4]))


@pytest.mark.slow
def test_mesh_qcheck_compares_the_live_mesh_with_local_int8(mesh2, bundle_sync, images):
    from paradis_tf.mesh.qcheck import mesh_qcheck

    y = np.arange(30) % 10
    checks = mesh_qcheck(bundle_sync, mesh2.addresses, images[:30], y)
    assert {c.plan for c in checks} == {"1x1.0", "2x0.5"}  # every ParaDiS plan that fits two full nodes
    for c in checks:
        assert c.identical == 1.0 and c.max_abs_diff == 0.0 and c.top1_agreement == 1.0
        assert c.mesh_accuracy == c.local_int8_accuracy and c.logits.shape == (30, 10)


def test_nodes_without_the_bundle_get_it_or_are_left_out(tmp_path, bundle4, images):
    from paradis_tf.mesh import LocalMesh

    with LocalMesh(2, tmp_path, capacity=0.25, block_tensorflow=True) as mesh:
        a, b = mesh.addresses
        with Coordinator([a, b]) as c:
            c.deploy(bundle4, nodes=[a])
        with Coordinator([a, b]) as c:  # no bundle directory: b cannot be used
            assert c.select().plan == "1x0.25" and c.placement.addresses == (a,)
            np.testing.assert_array_equal(c.infer(images[:3]), LocalRunner(bundle4, "1x0.25").predict(images[:3]))
        with Coordinator([a, b], bundle=bundle4) as c:  # the bundle is here: b gets it
            assert c.select().plan == "2x0.25"
            assert all(s.info.bundles and s.info.bundles[0].versions for s in c.status())


@pytest.mark.slow
def test_a_flooded_mailbox_answers_resource_exhausted_not_unknown(tmp_path, bundle_sync, images):
    """Exchanges that fill one producer's share of a node's mailbox are refused with RESOURCE_EXHAUSTED, not
    UNKNOWN; the node keeps serving other calls, and a new activation serves at once."""
    import grpc

    from paradis_tf.mesh import limits, tensors
    from paradis_tf.mesh._proto import mesh_pb2, mesh_pb2_grpc
    from paradis_tf.mesh.local import LocalMesh

    with LocalMesh(2, tmp_path, capacity=1.0, block_tensorflow=True) as mesh, Coordinator(mesh.addresses) as c:
        c.deploy(bundle_sync)
        placement = c.select("2x0.5")
        np.testing.assert_array_equal(c.infer(images[:2]), LocalRunner(bundle_sync, "2x0.5").predict(images[:2]))
        target = placement.addresses[0]  # role 0 waits for role 1's segment-0 feature map
        activation = next(s.info.activation for s in c.status() if s.address == target)
        spec = c.bundle.plan("2x0.5").devices[1].segments[0].output
        fm = tensors.encode(np.full((1, *spec.shape[1:]), spec.quant.zero_point, spec.quant.np_dtype),
                            spec.quant.scale, spec.quant.zero_point)

        def flood(i: int):
            return stub.Exchange(mesh_pb2.ExchangeRequest(
                request_id=f"flood-{i}", plan="2x0.5", activation_id=activation.activation_id,
                producer_role=1, producer_segment=0, tensor=fm), timeout=10)

        with grpc.insecure_channel(target) as ch:
            stub = mesh_pb2_grpc.NodeStub(ch)
            for i in range(limits.MAILBOX_MAX_PER_PRODUCER):
                flood(i)
            with pytest.raises(grpc.RpcError) as e:
                flood(limits.MAILBOX_MAX_PER_PRODUCER)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "role 1 of activation" in e.value.details()
            assert stub.GetInfo(mesh_pb2.GetInfoRequest(), timeout=5).node_id  # still serving
            c.select("2x0.5")  # a new activation has a share of its own
            np.testing.assert_array_equal(c.infer(images[:2]), LocalRunner(bundle_sync, "2x0.5").predict(images[:2]))
