"""`paradis bridge --serial PORT --listen HOST:PORT`: a serial board as a mesh node.

Serves the mesh protocol (paradis.mesh.v1.Node, grpc.health.v1) for one
microcontroller board on a serial line running the firmware_bridge protocol
(firmware_bridge/PROTOCOL.md): on Activate the role's partition is flashed
to the board (skipped if already there, resumed if interrupted) and
activated; Run goes over the line. The coordinator sees one more node.
Imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import (add_metrics_args, add_tls_args, metrics_ready_callback, ready_callback,
                                    tls_config)
from paradis_tf.cli.cmd_keys import add_trust_key_args


def register(subparsers) -> None:
    p = subparsers.add_parser("bridge", help="serve a serial (TFLM) board as a mesh node", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_argument_group("serial board")
    s.add_argument("--serial", required=True, metavar="PORT",
                   help="the board's port: /dev/ttyACM0, /dev/pts/N, socket://host:port, ...")
    s.add_argument("--baud", type=int, default=115200, help="line rate (default: %(default)s)")
    s.add_argument("--timeout", type=float, default=0.5,
                   help="seconds to wait for an answer before retransmitting (default: %(default)s)")
    s.add_argument("--retries", type=int, default=8, help="retransmissions before giving up (default: %(default)s)")
    s.add_argument("--ping-interval", type=_positive_seconds, default=0.5, metavar="SECONDS",
                   help="how often the board is pinged; one that gives no valid answer within max(1 s, 2 x --timeout) "
                        "makes the health NOT_SERVING and Runs answer UNAVAILABLE until it answers again "
                        "(default: %(default)s)")
    g = p.add_argument_group("network and storage")
    g.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on (port 0 picks a free one)")
    g.add_argument("--store", required=True, metavar="DIR", help="bundle store and state directory")
    g.add_argument("--store-quota-mb", type=float, default=None, metavar="N",
                   help="MB all stored bundle versions may take together, uploads in progress included; a deploy that would exceed it is refused with RESOURCE_EXHAUSTED (default: what the store holds at start plus 25%% of the disk space free under --store then; 0: no quota)")
    g.add_argument("--ready-file", metavar="PATH", help="write the bound HOST:PORT here once serving")
    add_tls_args(p.add_argument_group("mutual TLS"), serving=True)
    add_metrics_args(p.add_argument_group("monitoring (docs/MESH.md, Monitoring)"))
    add_trust_key_args(p.add_argument_group("signed bundles (`paradis keys`, `paradis sign`)"))
    c = p.add_argument_group("identity and capacity")
    c.add_argument("--node-id", default="", help="node id (default: bridge-<board id>)")
    c.add_argument("--capacity", type=float, default=0.25,
                   help="widest role width the board may run (default: %(default)s)")
    c.add_argument("--speed-score", type=float, default=0.01,
                   help="relative speed the coordinator ranks nodes by (default: %(default)s, a microcontroller)")
    c.add_argument("--max-batch", type=int, default=0, metavar="N",
                   help="largest batch one Run may carry; a bigger one is refused with INVALID_ARGUMENT naming the "
                   "limit (0: auto, about 100 ms of work at the board's measured speed; default: %(default)s)")
    c.add_argument("--latency-budget-ms", type=float, default=0.0,
                   help="refuse roles estimated slower than this (0: no budget; default: %(default)s)")
    p.set_defaults(default_log_level="INFO", func=_bridge)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, received {text!r}")
    return value


def _bridge(args: argparse.Namespace) -> int:
    from firmware_bridge.bridge import run_bridge
    from paradis_tf.mesh.signing import load_trusted_keys

    load_trusted_keys(args.trust_key)  # a bad key file is named before the board is opened
    ready = ready_callback(args.ready_file, "paradis-bridge")

    return run_bridge(args.serial, args.listen, args.store, baudrate=args.baud, capacity=args.capacity,
                      node_id=args.node_id, speed_score=args.speed_score, timeout=args.timeout, retries=args.retries,
                      latency_budget_ms=args.latency_budget_ms, ready=ready, tls=tls_config(args),
                      insecure=args.insecure, max_batch=args.max_batch, trust_keys=tuple(args.trust_key),
                      store_quota_mb=args.store_quota_mb, ping_interval=args.ping_interval,
                      metrics_listen=args.metrics_listen, metrics_ready=metrics_ready_callback(args.metrics_ready_file))
