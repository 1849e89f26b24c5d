"""Argument groups and output helpers shared by sub-commands."""

from __future__ import annotations

import argparse
import json
import sys


def add_data_args(parser: argparse.ArgumentParser, default_dataset: str | None = "fashion_mnist") -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, choices=["fashion_mnist"],
                   help="built-in dataset, from the Debian package dataset-fashion-mnist (default: %(default)s)")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="your own images, DIR/<class>/<image files>, replacing --dataset; a tenth of them (seeded) "
                        "is the test split; to evaluate a model, one folder per model class or folders named as "
                        "its labels")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N images of each split (default: all)")


def data_source(args) -> tuple[str | None, str | None]:
    return (None, args.data) if args.data else (args.dataset, None)


def ready_callback(ready_file: str | None, label: str):
    """What a daemon calls once it serves: print ``<label>: listening on ADDR``
    (the line `LocalMesh` waits for) and, if asked, write the address to
    ``ready_file`` atomically (for service managers and scripts)."""
    from paradis_tf.files import atomic_write

    def ready(address: str) -> None:
        if ready_file:
            atomic_write(ready_file, address + "\n")
        print(f"{label}: listening on {address}", flush=True)

    return ready


def add_metrics_args(p) -> None:
    """``--metrics-listen HOST:PORT`` and ``--metrics-ready-file PATH``: a daemon's Prometheus endpoint."""
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http(s)://HOST:PORT/metrics (port 0 picks a free one; default: "
                        "off). With --tls-* it serves HTTPS to clients with a certificate of the fleet CA; without, "
                        "only a loopback address unless --insecure")
    p.add_argument("--metrics-ready-file", metavar="PATH",
                   help="with --metrics-listen: write the metrics endpoint's bound HOST:PORT here once it serves")


def metrics_ready_callback(path: str | None):
    """What a daemon calls with its metrics endpoint's bound address: write it to ``path`` (None: nothing)."""
    if not path:
        return None
    from paradis_tf.files import atomic_write

    def ready(address: str) -> None:
        atomic_write(path, address + "\n")

    return ready


def print_table(headers: list[str], rows: list[list], file=None) -> None:
    """A plain aligned text table."""
    file = file or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def add_discovery_args(p) -> None:
    """``--discover`` / ``--fleet`` / ``--discover-wait`` / ``--interface``: zeroconf node discovery
    (and the ``--tls-*`` flags of a client)."""
    add_tls_args(p)
    p.add_argument("--discover", action="store_true",
                   help="also find node daemons announced on zeroconf (`paradis node serve --advertise`)")
    p.add_argument("--insecure", action="store_true",
                   help="with --discover and no --tls-*: adopt announced nodes without a certificate proving who they "
                        "are (refused otherwise: anyone on the network could join and receive the model and inputs)")
    p.add_argument("--fleet", default="default", help="with --discover: the fleet to adopt (default: %(default)s)")
    p.add_argument("--discover-wait", type=float, default=2.0, metavar="SECONDS",
                   help="with --discover: how long to collect announcements (default: %(default)s)")
    p.add_argument("--expect", type=int, default=None, metavar="N",
                   help="with --discover: stop waiting once N nodes answered")
    p.add_argument("--interface", action="append", default=[], metavar="IPV4",
                   help="with --discover: interface address to browse on (repeatable; default: all)")


def discovery_kwargs(args, nodes: str | list | None) -> dict:
    """Coordinator keyword arguments for the node list and the discovery flags."""
    from paradis_tf.mesh.errors import MeshError

    if not nodes and not args.discover:
        raise MeshError("no nodes: give --nodes HOST:PORT,... or --discover (zeroconf)")
    return dict(addresses=nodes or [], discovery=args.discover, fleet=args.fleet,
                discovery_interfaces=args.interface or None, discovery_wait_s=args.discover_wait, expect_nodes=args.expect,
                tls=tls_config(args), insecure=args.insecure)


def add_tls_args(p, serving: bool = False) -> None:
    """``--tls-ca/--tls-cert/--tls-key``: mutual TLS (all three, or none for plaintext)."""
    who = "this node's" if serving else "this client's"
    p.add_argument("--tls-ca", metavar="PEM", help="fleet CA certificate (`paradis certs init`); enables mutual TLS")
    p.add_argument("--tls-cert", metavar="PEM", help=f"{who} certificate (`paradis certs issue`)")
    p.add_argument("--tls-key", metavar="PEM", help=f"{who} private key")
    if serving:
        p.add_argument("--insecure", action="store_true",
                       help="serve plaintext on an address other hosts can reach (refused otherwise; loopback "
                            "needs no flag): anyone on that network can deploy and run models; warns at start "
                            "and every hour")


def tls_config(args):
    """The `TlsConfig` of the ``--tls-*`` flags (None: plaintext)."""
    from paradis_tf.mesh.security import TlsConfig

    return TlsConfig.from_args(args.tls_ca, args.tls_cert, args.tls_key)
