"""`paradis flash BUNDLE --node HOST:PORT ...`: ship a bundle to devices.

``--node`` uploads to node daemons over gRPC (streamed, sha256-checked,
stored as a new version next to the previous one). ``--serial`` writes one
role's partition to a microcontroller board over its serial line
(firmware_bridge protocol): refused before anything is sent if it is larger
than the board's flash or needs a bigger TFLM arena than the board has;
chunked with progress; resumed from the last acknowledged byte after an
interruption; verified (sha256) by the board before it replaces the running
partition, so a failed flash leaves the old one running.

``--trust-key PUB`` checks on this host, before anything is sent, that the
bundle carries a valid signature of that key (`paradis sign`): a board
cannot check one itself; node daemons check it again with their own
``--trust-key``.
"""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import add_discovery_args, discovery_kwargs


def register(subparsers) -> None:
    p = subparsers.add_parser("flash", help="deploy a bundle to node daemons (--node) or boards", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="bundle directory (from `paradis convert`)")
    g = p.add_argument_group("node daemons (gRPC)")
    g.add_argument("--node", action="append", default=[], metavar="HOST:PORT",
                   help="node daemon address; repeat or comma-separate for several (uploaded concurrently)")
    add_discovery_args(g)
    g.add_argument("--name", default=None, help="bundle name on the nodes (default: the manifest's model name)")
    g.add_argument("--activate", metavar="SWITCH", default=None,
                   help="after uploading, activate this plan ('auto': the most accurate that fits the nodes)")
    s = p.add_argument_group("serial boards (firmware_bridge)")
    s.add_argument("--serial", metavar="PORT", default=None,
                   help="board port: /dev/ttyACM0, /dev/pts/N, socket://host:port, ...")
    s.add_argument("--switch", metavar="PLAN", default=None, help="plan whose partition to flash, e.g. 4x0.25")
    s.add_argument("--role", type=int, default=None, help="device role k of the plan")
    s.add_argument("--baud", type=int, default=115200, help="line rate (default: %(default)s)")
    s.add_argument("--no-activate", action="store_true", help="flash and verify only; keep the running partition")
    s.add_argument("--timeout", type=float, default=0.5,
                   help="seconds to wait for an answer before retransmitting (default: %(default)s)")
    p.add_argument("--trust-key", action="append", default=[], metavar="PUB",
                   help="check on this host, before anything is sent, that the bundle is signed by this public key "
                        "(`paradis keys new`; repeatable: any one of them); a board cannot check signatures itself")
    p.set_defaults(func=_flash)


def _flash(args: argparse.Namespace) -> int:
    if args.trust_key:  # on this host, before anything is sent (a serial board cannot check a signature)
        from paradis_tf.mesh.signing import load_trusted_keys, verify_bundle

        signer = verify_bundle(args.bundle, load_trusted_keys(args.trust_key))
        print(f"bundle {args.bundle}: signed by trusted key {signer}")
    if args.serial:
        if args.node or args.discover:
            raise ValueError("give either --node/--discover or --serial, not both (a board takes one partition)")
        return flash_serial(args)
    if not args.node and not args.discover:
        from paradis_tf.mesh.errors import MeshError

        raise MeshError("nothing to flash to (give --node HOST:PORT, --discover, or --serial PORT for a board)")
    return flash_nodes(args)


def flash_nodes(args: argparse.Namespace) -> int:
    import time

    from paradis_tf.mesh.coordinator import Coordinator, parse_addresses

    nodes = parse_addresses(",".join(args.node), allow_empty=args.discover)
    t0 = time.perf_counter()
    with Coordinator(**discovery_kwargs(args, nodes), auto_replan=False) as c:
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


def flash_serial(args: argparse.Namespace) -> int:
    """`paradis flash BUNDLE --serial PORT --switch S --role K`."""
    import hashlib

    from firmware_bridge.board import Board
    from paradis_tf.cli._progress import ProgressLine
    from paradis_tf.bundle import BundleError, load

    if args.switch is None or args.role is None:
        raise ValueError("--serial needs --switch PLAN and --role K (which partition goes to this board)")
    bundle = load(args.bundle)
    plan = bundle.plan(args.switch)
    if not 0 <= args.role < len(plan.devices):
        raise BundleError(f"plan '{plan.name}' has roles 0..{len(plan.devices) - 1}; received --role {args.role}")
    segments = plan.devices[args.role].segments
    if len(segments) != 1:
        raise BundleError(f"plan '{plan.name}' role {args.role} has {len(segments)} segments; a serial board holds "
                          "one partition (choose a plan without sync layers)")
    seg = segments[0]
    image = bundle.path(seg.file).read_bytes()
    arena = seg.tflm.arena_bytes if seg.tflm is not None else None
    name = f"{bundle.model.name}/{plan.name}/{args.role}"
    bar = ProgressLine("  flashing", unit="bytes", every_s=2.0)

    def progress(done: int, total: int) -> None:
        bar.set(done, total)

    with Board.open(args.serial, args.baud, timeout=args.timeout) as board, bar:
        info = board.hello()
        print(f"board {info.board_id} ({info.firmware_version}, {info.runtime}) on {args.serial}: "
              f"flash {info.flash_capacity} B, arena {info.arena_capacity} B, max payload {info.max_payload} B")
        print(f"partition {seg.file}: {len(image)} B, arena {arena if arena is not None else 'unknown'} B")
        result = board.flash(name, image, progress, arena_bytes=arena)
        if result.resumed_from == len(image):
            print("already on the board: nothing sent")
        elif result.resumed_from:
            print(f"resumed at byte {result.resumed_from}")
        if result.resumed_from < len(image):
            print(f"flashed {len(image) - result.resumed_from} B in {result.seconds:.2f} s "
                  f"({result.throughput / 1024:.1f} KiB/s, {result.throughput * 10 / args.baud:.0%} of the line); "
                  "the board verified sha256")
        if args.no_activate:
            print("not activated (--no-activate): the previous partition keeps running")
            return 0
        act = board.activate(hashlib.sha256(image).digest())
        print(f"active: {name} (arena used {act.arena_used} B of {info.arena_capacity} B)")
    return 0
