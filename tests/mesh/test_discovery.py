"""Zeroconf discovery (`_paradis._tcp`): real node daemons announcing on the
loopback interface, a real browser, and a coordinator that adopts a board
joining mid-service and drops one that says goodbye."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from paradis_tf.mesh import Coordinator
from paradis_tf.mesh.coordinator import parse_addresses
from paradis_tf.mesh.discovery import Advertisement, discover
from paradis_tf.mesh.errors import MeshError
from paradis_tf.mesh.local import LocalMesh, NodeProcess
from paradis_tf.runtime import LocalRunner

LO = "127.0.0.1"


def _advert_args(fleet: str) -> list[str]:
    return ["--advertise", "--fleet", fleet, "--advertise-interface", LO]


def _fleet() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
def test_discover_finds_the_nodes_of_its_fleet_only(tmp_path):
    ours, theirs = _fleet(), _fleet()
    with LocalMesh(2, tmp_path / "a", capacity=[0.25, 0.5], block_tensorflow=True, extra_args=_advert_args(ours)) as a, \
            LocalMesh(1, tmp_path / "b", capacity=1.0, extra_args=_advert_args(theirs)) as b:
        found = discover(timeout=10, fleet=ours, interfaces=[LO], expect=2)
        assert sorted(n.address for n in found) == sorted(a.addresses)
        assert {n.node_id: n.capacity for n in found} == {"node0": 0.25, "node1": 0.5}
        assert all(n.fleet == ours and n.backend == "litert" and n.version for n in found)
        assert b.addresses[0] not in [n.address for n in found]
        # a graceful stop sends the goodbye: the node is no longer offered
        a.nodes[1].stop()
        gone = discover(timeout=3, fleet=ours, interfaces=[LO])
        assert [n.address for n in gone] == [a.addresses[0]]


def test_a_name_whose_resolution_went_unanswered_is_asked_again(wait_for):
    """zeroconf reports a name once; if its SRV/TXT/A answers are lost (a loaded host) the browser asks again."""
    import asyncio

    from zeroconf import ServiceStateChange

    from paradis_tf.mesh.discovery import SERVICE_TYPE, NodeBrowser

    fleet, added = _fleet(), []
    with NodeBrowser(fleet, on_add=added.append, interfaces=[LO]) as browser:
        browser._browser.cancel()  # only the announcement below reaches the handler
        ad = Advertisement("node7", LO, 50007, fleet=fleet, capacity=0.5, interfaces=[LO])
        # announced, but nobody answers its resolution yet (as when the answers are lost)
        browser._handler(browser._zc, SERVICE_TYPE, ad.name, ServiceStateChange.Added)

        async def serve():
            await ad.start()
            try:
                await asyncio.to_thread(wait_for, lambda: browser.nodes(), 30, "the retried resolution")
            finally:
                await ad.close()

        asyncio.run(serve())
        assert [(n.node_id, n.address, n.capacity) for n in browser.nodes()] == [("node7", f"{LO}:50007", 0.5)]
        assert added == browser.nodes()


@pytest.mark.slow
def test_coordinator_adopts_a_joining_node_and_drops_one_saying_goodbye(tmp_path, bundle4, images, wait_for):
    fleet = _fleet()
    with LocalMesh(2, tmp_path / "m", capacity=0.25, block_tensorflow=True, extra_args=_advert_args(fleet)) as mesh:
        with Coordinator([], discovery=True, fleet=fleet, discovery_interfaces=[LO], discovery_wait_s=10,
                         expect_nodes=2, probe_interval_s=0.2, insecure=True) as c:
            assert sorted(c.addresses) == sorted(mesh.addresses)
            c.deploy(bundle4)
            assert c.select().plan == "2x0.25"
            # a third board appears, with an empty store: it is found, gets the bundle, and the plan goes up
            joiner = NodeProcess(tmp_path / "joiner", node_id="joiner", capacity=0.25, block_tensorflow=True,
                                 extra_args=_advert_args(fleet))
            try:
                joiner.start()
                wait_for(lambda: c.placement is not None and c.placement.plan == "3x0.25", 30, "the re-plan to 3x0.25")
                assert joiner.address in c.placement.addresses
                got = c.infer(images[:20])
                np.testing.assert_array_equal(got, LocalRunner(bundle4, "3x0.25").predict(images[:20]))
                # it leaves gracefully: marked down from its goodbye, before any request fails on it
                joiner.stop()
                node = c._nodes[joiner.address]
                wait_for(lambda: not node.up, 10, "the joiner to be marked down")
                assert "left the network (zeroconf goodbye)" in node.error
                before = c.stats.failed
                out = c.infer(images[:10])
                assert out.shape == (10, 10) and c.stats.failed == before
                assert c.placement.plan == "2x0.25"
            finally:
                joiner.kill()


def test_node_serves_when_its_announcement_cannot_be_made(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is no interface of this machine: zeroconf cannot bind it
    node = NodeProcess(tmp_path / "n", node_id="lonely", extra_args=["--advertise", "--advertise-interface", "192.0.2.1"])
    try:
        address = node.start()
        with Coordinator([address]) as c:
            (status,) = c.status()
        assert status.up and status.info.node_id == "lonely"
        assert "zeroconf announcement failed" in node.log_path.read_text()
    finally:
        node.kill()


def test_discovery_errors_name_the_value():
    with pytest.raises(MeshError, match=r"invalid fleet name 'bad fleet!'"):
        discover(timeout=0.1, fleet="bad fleet!")
    with pytest.raises(MeshError, match="discovery timeout > 0 seconds; received 0"):
        discover(timeout=0)
    with pytest.raises(MeshError, match="invalid interface address 'eth0'"):
        discover(timeout=0.1, interfaces=["eth0"])
    with pytest.raises(MeshError, match="invalid fleet name"):
        Advertisement("n", LO, 5000, fleet="")
    with pytest.raises(MeshError, match="invalid interface address 'eth0'"):
        Advertisement("n", "0.0.0.0", 5000, interfaces=["eth0"])
    assert parse_addresses([], allow_empty=True) == []
    with pytest.raises(MeshError, match="no node addresses given"):
        parse_addresses([])


def test_coordinator_with_discovery_and_no_node_says_what_to_do():
    with pytest.raises(MeshError, match=r"zeroconf found no node of fleet '.*' within 0.3 s.*--advertise"):
        Coordinator([], discovery=True, fleet=_fleet(), discovery_interfaces=[LO], discovery_wait_s=0.3, insecure=True)


@pytest.mark.slow
def test_cli_flash_and_status_with_discover(tmp_path, bundle4, capsys):
    from paradis_tf.cli import main

    fleet = _fleet()
    flags = ["--discover", "--insecure", "--fleet", fleet, "--interface", LO, "--discover-wait", "10", "--expect", "2"]
    with LocalMesh(2, tmp_path / "m", capacity=0.25, block_tensorflow=True, extra_args=_advert_args(fleet)) as mesh:
        assert main(["flash", str(bundle4), *flags, "--activate", "auto"]) == 0
        out = capsys.readouterr().out
        assert "flashed 2 node(s)" in out and "active: 2x0.25" in out
        assert main(["mesh", "status", *flags]) == 0
        out = capsys.readouterr().out
        assert all(a in out for a in mesh.addresses) and out.count("2x0.25 role") == 2
    assert main(["mesh", "status"]) == 1
    assert "paradis: no nodes: give --nodes HOST:PORT,... or --discover (zeroconf)" in capsys.readouterr().err
