"""`paradis flash BUNDLE --node HOST:PORT ...`: ship a bundle to devices.

``--node`` uploads to node daemons over gRPC (streamed, sha256-checked,
stored as a new version next to the previous one). ``--serial`` (serial
boards) is added by the firmware bridge.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("flash", help="deploy a bundle to node daemons (--node) or boards", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle directory (from `paradis convert`)")
    g = p.add_argument_group("node daemons (gRPC)")
    g.add_argument("--node", action="append", default=[], metavar="HOST:PORT",
                   help="node daemon address; repeat or comma-separate for several (uploaded concurrently)")
    g.add_argument("--name", default=None, help="bundle name on the nodes (default: the manifest's model name)")
    g.add_argument("--activate", metavar="SWITCH", default=None,
                   help="after uploading, activate this plan ('auto': the most accurate that fits the nodes)")
    p.set_defaults(func=_flash)


def _flash(args: argparse.Namespace) -> int:
    if not args.node:
        from paradis_tf.mesh.errors import MeshError

        raise MeshError("nothing to flash to (give --node HOST:PORT, or --serial PORT for a board)")
    return flash_nodes(args)


def flash_nodes(args: argparse.Namespace) -> int:
    import time

    from paradis_tf.mesh.coordinator import Coordinator, parse_addresses

    nodes = parse_addresses(",".join(args.node))
    t0 = time.perf_counter()
    with Coordinator(nodes, auto_replan=False) as c:
        replies = c.deploy(args.bundle, name=args.name)
        dt = time.perf_counter() - t0
        print(f"{'node':<24} {'bundle':<16} {'version':<17} {'bytes':>10}  status")
        for address, r in replies.items():
            status = "already present" if r.already_present else "stored"
            print(f"{address:<24} {r.bundle:<16} {r.version:<17} {r.bytes:>10}  {status}; versions kept: {', '.join(r.versions)}")
        print(f"flashed {len(replies)} node(s) in {dt:.2f} s")
        if args.activate:
            placement = c.select(None if args.activate == "auto" else args.activate)
            print(f"active: {placement}")
    return 0
