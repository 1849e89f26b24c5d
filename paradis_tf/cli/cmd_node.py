"""`paradis node serve`: the node daemon of a Pi-class board.

Imports neither TensorFlow nor Keras: boards install ``pip install .[node]``.
"""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import (add_metrics_args, add_tls_args, metrics_ready_callback, ready_callback,
                                    tls_config)
from paradis_tf.cli.cmd_keys import add_trust_key_args


def register(subparsers) -> None:
    p = subparsers.add_parser("node", help="run the node daemon of a Pi-class board", description=__doc__)
    sub = p.add_subparsers(dest="node_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser(
        "serve",
        help="serve paradis.mesh.v1.Node on gRPC",
        description="Serves the mesh protocol (GetInfo, Deploy, Activate, Run, Exchange) and the standard "
        "grpc.health.v1 service. SIGTERM stops it gracefully; the last activation is restored on restart.",
    )
    g = s.add_argument_group("network and storage")
    g.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on (port 0 picks a free one)")
    g.add_argument("--store", required=True, metavar="DIR", help="bundle store and state directory")
    g.add_argument("--store-quota-mb", type=float, default=None, metavar="N",
                   help="MB all stored bundle versions may take together, uploads in progress included; a deploy that would exceed it is refused with RESOURCE_EXHAUSTED (default: what the store holds at start plus 25%% of the disk space free under --store then; 0: no quota)")
    g.add_argument("--advertise", action="store_true",
                   help="announce this node on zeroconf as _paradis._tcp (coordinators find it with --discover)")
    g.add_argument("--fleet", default="default",
                   help="fleet name announced with --advertise; coordinators only adopt their own fleet (default: %(default)s)")
    g.add_argument("--advertise-interface", action="append", default=[], metavar="IPV4",
                   help="interface address to announce on (repeatable; default: all IPv4 interfaces)")
    g.add_argument("--ready-file", metavar="PATH", help="write the bound HOST:PORT here once serving")
    add_tls_args(s.add_argument_group("mutual TLS (peers and coordinators must present certificates of the same CA)"), serving=True)
    add_metrics_args(s.add_argument_group("monitoring (docs/MESH.md, Monitoring)"))
    add_trust_key_args(s.add_argument_group("signed bundles (`paradis keys`, `paradis sign`)"))
    r = s.add_argument_group("execution")
    r.add_argument("--backend", default="litert", choices=("litert", "tflite_runtime", "tf", "tflm"), help="interpreter backend (default: %(default)s)")
    r.add_argument("--threads", type=int, default=1, help="interpreter threads (default: %(default)s)")
    r.add_argument("--max-batch", type=int, default=0, metavar="N",
                   help="largest batch one Run may carry; a bigger one is refused with INVALID_ARGUMENT naming the "
                   "limit (0: auto, about 100 ms of work at the role's measured speed; default: %(default)s)")
    c = s.add_argument_group("identity and capacity")
    c.add_argument("--node-id", default="", help="node id (default: generated once and kept in the store)")
    c.add_argument("--capacity", type=float, default=1.0, help="widest role width this node may run (default: %(default)s)")
    c.add_argument(
        "--latency-budget-ms", type=float, default=0.0,
        help="refuse roles whose estimated latency exceeds this (0: no budget; default: %(default)s)",
    )
    c.add_argument(
        "--memory-budget-mb", type=float, default=0.0,
        help="refuse roles whose model files and arenas exceed this (0: no budget; default: %(default)s)",
    )
    c.add_argument("--keep-versions", type=int, default=3, help="bundle versions kept per bundle (default: %(default)s)")
    s.set_defaults(default_log_level="INFO", func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from paradis_tf.mesh.node import NodeConfig, run_node
    from paradis_tf.mesh.metrics import check_metrics_listen
    from paradis_tf.mesh.security import check_listen

    config = NodeConfig(
        store=Path(args.store), node_id=args.node_id, backend=args.backend, capacity=args.capacity,
        latency_budget_ms=args.latency_budget_ms, memory_budget_mb=args.memory_budget_mb, threads=args.threads, keep_versions=args.keep_versions,
        advertise=args.advertise, fleet=args.fleet, advertise_interfaces=tuple(args.advertise_interface),
        tls=tls_config(args), insecure=args.insecure, trust_keys=tuple(args.trust_key),
        max_batch=args.max_batch, store_quota_mb=args.store_quota_mb, metrics_listen=args.metrics_listen,
    )

    check_listen(args.listen, config.tls, config.insecure)  # before the store is opened
    if config.metrics_listen:
        check_metrics_listen(config.metrics_listen, config.tls, config.insecure)
    ready = ready_callback(args.ready_file, "paradis-node")

    return run_node(config, args.listen, ready=ready, metrics_ready=metrics_ready_callback(args.metrics_ready_file))
