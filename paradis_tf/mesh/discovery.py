"""Zeroconf (mDNS / DNS-SD) discovery of node daemons: ``_paradis._tcp``.

A static address list always works; discovery is the optional convenience
of docs/MESH.md for a factory floor where boards come and go. A node started
with ``paradis node serve --advertise`` registers a service instance

    <node id>-<fleet>._paradis._tcp.local.   port = its gRPC port

whose TXT record carries ``id``, ``fleet``, ``capacity``, ``backend``,
``version`` and ``proto``. The *fleet* name separates several meshes on one
network (two production lines, or two test runs on one machine): a
coordinator only adopts nodes of its own fleet.

`discover` takes a snapshot; `NodeBrowser` keeps watching and calls back
when a node appears or leaves (the coordinator's ``discovery=True`` uses it
to admit new boards and re-plan up without a restart).

Built on python-zeroconf (``pip install zeroconf``), which answers and
queries on the interfaces given (default: all IPv4 interfaces).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from paradis_tf.mesh.errors import MeshError

log = logging.getLogger("paradis.discovery")

SERVICE_TYPE = "_paradis._tcp.local."
PROTO = "paradis.mesh.v1"
DEFAULT_FLEET = "default"
_MAX_LABEL = 63  # DNS label limit for the instance name
#: a name announced but not resolved (its SRV/TXT/A answers lost) is asked again after this, doubling up to the max
RESOLVE_RETRY_S = 0.5
RESOLVE_RETRY_MAX_S = 10.0


def _zeroconf():
    try:
        import zeroconf
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MeshError(
            "zeroconf discovery needs the 'zeroconf' package: pip install zeroconf "
            "(or pip install 'paradis-tf[node]'); static --nodes HOST:PORT lists work without it"
        ) from e
    return zeroconf


def check_fleet(fleet: str) -> str:
    fleet = str(fleet)
    if not fleet or len(fleet) > _MAX_LABEL or not all(c.isalnum() or c in "-_." for c in fleet):
        raise MeshError(
            f"invalid fleet name {fleet!r}: expected 1-{_MAX_LABEL} characters among letters, digits, '-', '_' and '.'"
        )
    return fleet


def _interfaces(interfaces: Sequence[str] | None):
    zc = _zeroconf()
    if not interfaces:
        return zc.InterfaceChoice.All
    out = []
    for i in interfaces:
        try:
            out.append(str(ipaddress.IPv4Address(i)))
        except ValueError:
            raise MeshError(f"invalid interface address {i!r}: expected an IPv4 address such as 192.168.1.20") from None
    return out


def advertised_addresses(host: str, interfaces: Sequence[str] | None = None) -> list[str]:
    """The IPv4 addresses a node listening on ``host`` should announce.

    A wildcard (``0.0.0.0``, ``[::]``, empty) announces the given interfaces,
    or every IPv4 address of the machine, non-loopback ones first; a name is
    resolved; an address is announced as is.
    """
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        if interfaces:
            return [str(ipaddress.IPv4Address(i)) for i in interfaces]
        import ifaddr  # a dependency of zeroconf

        found = {
            ip.ip
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str)
        }
        return sorted(found, key=lambda a: (ipaddress.IPv4Address(a).is_loopback, a))
    try:
        return [str(ipaddress.IPv4Address(host))]
    except ValueError:
        pass
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, socket.AF_INET)})
    except socket.gaierror as e:
        raise MeshError(f"cannot resolve the listen host {host!r} to announce it: {e}") from None


@dataclass(frozen=True)
class DiscoveredNode:
    """One node daemon seen on the network."""

    name: str  # service instance name
    node_id: str
    address: str  # host:port to give the coordinator
    fleet: str
    capacity: float
    backend: str
    version: str


def _txt(info) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else (v or ""))
        for k, v in (info.properties or {}).items()
    }


def _decode(info) -> DiscoveredNode | None:
    props = _txt(info)
    if props.get("proto") != PROTO:
        return None
    addrs = info.parsed_addresses()
    v4 = [a for a in addrs if ":" not in a]
    if not v4 or not info.port:
        return None
    try:
        capacity = float(props.get("capacity", "1.0"))
    except ValueError:
        capacity = 0.0
    return DiscoveredNode(
        name=info.name,
        node_id=props.get("id", ""),
        address=f"{v4[0]}:{info.port}",
        fleet=props.get("fleet", DEFAULT_FLEET),
        capacity=capacity,
        backend=props.get("backend", ""),
        version=props.get("version", ""),
    )


class Advertisement:
    """Registers one node daemon as ``<node id>._paradis._tcp.local.``.

    Args:
        node_id: the node's id (the instance name; must be unique on the
            network, as node ids are).
        host: the host the node listens on (a wildcard announces every
            interface address).
        port: the bound gRPC port.
        fleet: fleet name coordinators filter on.
        capacity, backend, version: published in the TXT record.
        interfaces: IPv4 interface addresses to announce on (default: all).
    """

    def __init__(self, node_id: str, host: str, port: int, *, fleet: str = DEFAULT_FLEET, capacity: float = 1.0,
                 backend: str = "", version: str = "", interfaces: Sequence[str] | None = None) -> None:
        zc = _zeroconf()
        self.fleet = check_fleet(fleet)
        # fleet in the instance name: equal node ids of two fleets do not collide
        label = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{node_id}-{self.fleet}")[:_MAX_LABEL]
        self.name = f"{label}.{SERVICE_TYPE}"
        self._interfaces = _interfaces(interfaces)  # checks them (an error naming the value) before they are used
        addresses = advertised_addresses(host, interfaces)
        if not addresses:
            raise MeshError(f"no IPv4 address to announce for listen host {host!r}")
        self.info = zc.ServiceInfo(
            SERVICE_TYPE,
            self.name,
            addresses=[socket.inet_aton(a) for a in addresses],
            port=int(port),
            properties={
                "id": str(node_id), "fleet": self.fleet, "capacity": f"{float(capacity):g}",
                "backend": backend, "version": version, "proto": PROTO,
            },
            server=f"{label}.local.",
        )
        self._azc = None

    async def start(self) -> None:
        from zeroconf.asyncio import AsyncZeroconf

        zc = _zeroconf()
        self._azc = AsyncZeroconf(interfaces=self._interfaces, ip_version=zc.IPVersion.V4Only)
        # allow_name_change: a stale record of this node (killed without
        # unregistering) must not stop it from announcing itself again.
        await self._azc.async_register_service(self.info, allow_name_change=True)
        log.info("announced %s on zeroconf (fleet %s)", self.info.name, self.fleet)

    async def close(self) -> None:
        """Sends the goodbye packets (browsers drop the node) and stops."""
        if self._azc is None:
            return
        azc, self._azc = self._azc, None
        try:
            await azc.async_unregister_all_services()
        finally:
            await azc.async_close()


class NodeBrowser:
    """Watches ``_paradis._tcp`` for the nodes of one fleet.

    Args:
        fleet: only nodes announcing this fleet are reported.
        on_add: called with a `DiscoveredNode` when a node appears or its
            address changes (from zeroconf's thread).
        on_remove: called with the `DiscoveredNode` that left.
        interfaces: IPv4 interface addresses to browse on (default: all).
    """

    def __init__(self, fleet: str = DEFAULT_FLEET, on_add: Callable[[DiscoveredNode], None] | None = None,
                 on_remove: Callable[[DiscoveredNode], None] | None = None,
                 interfaces: Sequence[str] | None = None) -> None:
        zc = _zeroconf()
        self.fleet = check_fleet(fleet)
        self._on_add, self._on_remove = on_add, on_remove
        self._nodes: dict[str, DiscoveredNode] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # instance name -> sequence number of its latest announcement (absent once it left)
        self._wanted: dict[str, int] = {}
        self._seq = 0
        self._resolving: set[str] = set()
        self._zc = zc.Zeroconf(interfaces=_interfaces(interfaces), ip_version=zc.IPVersion.V4Only)
        self._browser = zc.ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._handler])

    def _handler(self, zeroconf, service_type: str, name: str, state_change) -> None:
        zc = _zeroconf()
        if state_change is zc.ServiceStateChange.Removed:
            with self._lock:
                self._wanted.pop(name, None)
                gone = self._nodes.pop(name, None)
            if gone is not None and self._on_remove is not None:
                self._on_remove(gone)
            return
        # Added / Updated: resolve SRV, TXT and A records in a thread of its own, so that
        # a slow resolution does not hold up the others and a failed one is retried
        # (zeroconf reports a name once: a resolution given up would lose the node).
        with self._lock:
            self._seq += 1
            self._wanted[name] = self._seq
            if name in self._resolving:
                return  # the running resolver sees the newer sequence number and resolves again
            self._resolving.add(name)
        threading.Thread(target=self._resolve, args=(zeroconf, service_type, name),
                         name=f"resolve {name}", daemon=True).start()

    def _resolve(self, zeroconf, service_type: str, name: str) -> None:
        """Resolves ``name`` until it is resolved, leaves, or the browser closes (a resolver per name)."""
        delay = RESOLVE_RETRY_S
        with self._lock:
            want = self._wanted.get(name)
        while want is not None and not self._closed.is_set():
            try:
                info = zeroconf.get_service_info(service_type, name, timeout=3000)
            except Exception as e:  # zeroconf closed under us, or a malformed record
                log.debug("resolving %s failed: %s", name, e)
                info = None
            # a complete answer of another protocol's service of this type is final; no answer is retried
            node = _decode(info) if info is not None else None
            final = info is not None and (node is not None or _txt(info).get("proto") != PROTO)
            added = None
            with self._lock:
                latest = self._wanted.get(name)
                if latest == want and final:
                    if node is not None and node.fleet == self.fleet and self._nodes.get(name) != node:
                        self._nodes[name] = added = node
                    latest = None
                if latest is None:
                    self._resolving.discard(name)  # in the lock: a newer announcement starts a new resolver
            if added is not None and self._on_add is not None:
                self._on_add(added)
            if latest is None:
                return
            if latest == want:  # not answered: ask again later
                log.debug("%s not resolved; asking again in %.1f s", name, delay)
                self._closed.wait(delay)
                delay = min(delay * 2, RESOLVE_RETRY_MAX_S)
            want = latest  # updated while it resolved: resolve the latest at once
        with self._lock:
            self._resolving.discard(name)

    def nodes(self) -> list[DiscoveredNode]:
        """The fleet's nodes seen so far (and not gone), sorted by node id."""
        with self._lock:
            return sorted(self._nodes.values(), key=lambda n: (n.node_id, n.address))

    def close(self) -> None:
        self._closed.set()
        self._browser.cancel()
        self._zc.close()

    def __enter__(self) -> "NodeBrowser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def discover(timeout: float = 2.0, fleet: str = DEFAULT_FLEET, interfaces: Sequence[str] | None = None,
             expect: int | None = None) -> list[DiscoveredNode]:
    """Node daemons of ``fleet`` that answer on the network within ``timeout`` s.

    Returns early once ``expect`` nodes are seen.
    """
    if not timeout > 0:
        raise MeshError(f"expected a discovery timeout > 0 seconds; received {timeout!r}")
    with NodeBrowser(fleet, interfaces=interfaces) as browser:
        end = time.monotonic() + float(timeout)
        while time.monotonic() < end:
            if expect is not None and len(browser.nodes()) >= expect:
                break
            time.sleep(0.05)
        return browser.nodes()
