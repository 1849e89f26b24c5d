"""`paradis mesh status|plan|infer|bench|serve --nodes HOST:PORT,... | --discover`: a live mesh; `plan` predicts
every plan's latency on the nodes' links before anything runs; `serve` keeps a coordinator running and serves
inference to the plant's software over gRPC."""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import add_discovery_args, add_metrics_args, discovery_kwargs


def _nodes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", default="", metavar="HOST:PORT,...", help="node daemon addresses, comma-separated (default: none; give --nodes or --discover)")
    add_discovery_args(p)
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each Run call in seconds (default: %(default)s)")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, metavar="DIR|NAME",
                   help="local bundle directory or bundle name on the nodes (default: the nodes' active bundle)")
    p.add_argument("--switch", default="auto", metavar="PLAN",
                   help="plan to run: 'auto' picks the best plan that fits the healthy nodes and re-plans when nodes "
                        "fail or come back; a name ('2x0.5', 'seq-2') runs exactly that plan and fails if it is not in "
                        "the bundle or does not fit the healthy nodes (default: %(default)s)")
    _objective_args(p)


def _objective_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", default="accuracy", metavar="accuracy|latency|MSms",
                   help="what --switch auto optimizes: 'accuracy' (the most accurate plan that fits), 'latency' (the "
                        "fastest predicted plan within --tolerance of the best accuracy), or a latency budget such as "
                        "'20ms' (the most accurate plan predicted within it); the latency objectives measure each "
                        "node's link first (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.5, metavar="POINTS",
                   help="with --objective latency: accuracy points below the best that still count: percentage points of "
                        "top-1, or dB of PSNR for a super-resolution bundle (default: %(default)s)")


def _objective(args):
    from paradis_tf.mesh.placement import Objective

    try:
        return Objective.parse(args.objective, args.tolerance)
    except ValueError as e:
        raise SystemExit(f"paradis: {e}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("mesh", help="inspect and use a live mesh of node daemons", description=__doc__)
    sub = p.add_subparsers(dest="mesh_command", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("status", help="node info: capacity, speed, bundles, active plan, counters")
    _nodes_arg(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--watch", nargs="?", type=_interval, const=2.0, default=None, metavar="SECONDS",
                   help="redraw the table in place every SECONDS (default when given without a value: 2) until "
                        "Ctrl-C, which exits 0")
    s.set_defaults(func=_status)

    pl = sub.add_parser("plan", help="predict every plan's latency on the nodes and their links, before anything runs")
    _nodes_arg(pl)
    pl.add_argument("--bundle", default=None, metavar="DIR|NAME",
                    help="local bundle directory or bundle name on the nodes (default: the nodes' active bundle)")
    _objective_args(pl)
    pl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pl.set_defaults(func=_plan)

    i = sub.add_parser("infer", help="run images through the mesh and print the top classes")
    _nodes_arg(i)
    _plan_args(i)
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="what to classify: image files (PNG, JPEG, BMP, GIF, WebP), folders of images or of class "
                          "folders, resized and preprocessed as the bundle's manifest says; or .npy arrays "
                          "(N, H, W, C), uint8 raw or float32 preprocessed")
    src.add_argument("--random", type=int, metavar="N", help="N random images (a smoke test)")
    i.add_argument("--top", type=int, default=3, help="classes to show per image (default: %(default)s)")
    i.set_defaults(func=_infer)

    b = sub.add_parser("bench", help="latency (p50/p99) and throughput at several concurrency levels")
    _nodes_arg(b)
    _plan_args(b)
    b.add_argument("--requests", type=int, default=200, help="requests per measurement (default: %(default)s)")
    b.add_argument("--concurrency", default="1,4,16", help="in-flight request counts (default: %(default)s)")
    b.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    b.set_defaults(func=_bench)

    _register_serve(sub)


def _coordinator(args):
    from paradis_tf.mesh.coordinator import Coordinator

    return Coordinator(**discovery_kwargs(args, args.nodes), bundle=getattr(args, "bundle", None),
                       run_timeout_s=args.timeout, objective=_objective(args) if hasattr(args, "objective") else None)


def _plan(args: argparse.Namespace) -> int:
    import json

    from paradis_tf.mesh.placement import choose_by_objective, plan_metric
    from paradis_tf.mesh.errors import NoPlanFitsError

    objective = _objective(args)
    with _coordinator(args) as c:
        table = c.predictions()
        links = dict(c.links)
        try:
            chosen = choose_by_objective({p.plan: c.bundle.plans[p.plan] for p in table}, c._call(c._candidates()),
                                         objective, c._predict, kinds=("paradis", "sequential"))[0] if table else None
        except NoPlanFitsError as e:
            chosen, why = None, str(e)
        else:
            why = ""
        metrics = {p.plan: plan_metric(c.bundle.plans[p.plan]) for p in table}
    rows = [{"plan": p.plan, "nodes": list(p.addresses), "accuracy": p.accuracy, "metric": metrics[p.plan],
             "predicted_ms": p.predicted_ms, "chosen": chosen is not None and p.plan == chosen.plan} for p in table]
    if args.json:
        print(json.dumps({"objective": str(objective), "chosen": chosen.plan if chosen else None, "why_none": why,
                          "links": {a: {"rtt_ms": l.rtt_s * 1000, "mbit_s": l.rate_bytes_per_s * 8 / 1e6} for a, l in links.items()},
                          "plans": rows}, indent=2))
        return 0 if chosen else 1
    print("links: " + "; ".join(f"{a} {l.rtt_s * 1000:.2f} ms round trip, {l.rate_bytes_per_s * 8 / 1e6:.0f} Mbit/s"
                                for a, l in links.items()))
    print(f"{'plan':<16} {'accuracy':>9} {'predicted':>11}  nodes (role order)")
    for r in rows:
        if r["accuracy"] is None:
            acc = "-"
        elif r["metric"] == "psnr_y":
            acc = f"{r['accuracy']:.2f} dB"
        else:
            acc = f"{r['accuracy'] * 100:.2f}%"
        ms = "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.2f} ms"
        print(f"{r['plan']:<16} {acc:>9} {ms:>11}  {', '.join(r['nodes'])}{'   <- ' + str(objective) if r['chosen'] else ''}")
    if chosen is None:
        print(f"paradis: {why or 'no plan fits the nodes'}")
        return 1
    return 0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.05 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.05 and 86400, received {text!r}")
    return value


def _status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        if args.json:
            from paradis_tf.errors import InputError

            raise InputError("--watch redraws the table; --json prints once: give one of them")
        return _watch_status(args)
    with _coordinator(args) as c:
        return _print_status(c, args)


def _watch_status(args: argparse.Namespace) -> int:
    """The status table redrawn every ``args.watch`` seconds (cleared first on a terminal) until Ctrl-C (exit 0)."""
    import contextlib
    import io
    import sys
    import time

    clear = "\033[H\033[2J" if sys.stdout.isatty() else "\n"
    with _coordinator(args) as c:
        try:
            while True:
                table = io.StringIO()
                with contextlib.redirect_stdout(table):
                    code = _print_status(c, args)
                head = f"{time.strftime('%H:%M:%S')}  every {args.watch:g} s, Ctrl-C to stop"
                sys.stdout.write(f"{clear}{head}{'' if code == 0 else '  (not every node serves)'}\n{table.getvalue()}")
                sys.stdout.flush()
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _print_status(c, args: argparse.Namespace) -> int:
    """Prints the nodes' status (a table, or JSON with ``args.json``); 1 if a node is down or a board not ok."""
    import json

    from google.protobuf.json_format import MessageToDict

    rows = c.status()
    # a bridge whose board does not answer is up (it answers GetInfo) but serves nothing
    healthy = all(r.up and (r.info is None or not r.info.HasField("board") or r.info.board.state == "ok") for r in rows)
    if args.json:
        print(json.dumps([{"address": r.address, "up": r.up, "error": r.error,
                           "info": MessageToDict(r.info) if r.info else None} for r in rows], indent=2))
        return 0 if healthy else 1
    print(f"{'node':<22} {'id':<12} {'up':<4} {'board':<13} {'cap':>5} {'speed':>7} {'backend':<8} {'active':<28} {'runs':>7} {'exch in/out':>12}  bundles")
    for r in rows:
        if not r.up:
            print(f"{r.address:<22} {'-':<12} {'no':<4} {_board_cell(r.info):<13} {'':>5} {'':>7} {'':<8} {r.error[:60]}")
            continue
        i = r.info
        act = f"{i.activation.plan} role {i.activation.role} ({i.role_latency_ms:.1f} ms)" if i.active else "-"
        bundles = ", ".join(f"{b.name}@{b.versions[0].version[:8]}+{len(b.versions) - 1}" for b in i.bundles if b.versions) or "-"
        ex = f"{i.counters.exchanges_received}/{i.counters.exchanges_sent}"
        print(f"{r.address:<22} {i.node_id[:12]:<12} {'yes':<4} {_board_cell(i):<13} {i.capacity:>5g} {i.speed_score:>7.2f} {i.backend:<8} {act:<28} {i.counters.runs:>7} {ex:>12}  {bundles}")
        if i.HasField("board") and i.board.state != "ok":
            print(f"{'':<22} board {i.board.board_id or '?'} on {i.board.port}: {_board_detail(i.board)}")
    return 0 if healthy else 1


def _board_cell(info) -> str:
    """A bridge's board state for the status table; "-" for a node daemon (no board)."""
    if info is None or not info.HasField("board"):
        return "-"
    return info.board.state or "?"


def _board_detail(board) -> str:
    """Why a bridge's board is not ok, how long for, and when it last answered."""
    import time

    now_ms = time.time() * 1000
    text = f"{board.state} for {max(0.0, (now_ms - board.since_unix_ms) / 1e3):.1f} s"
    if board.last_answer_unix_ms:
        text += f", last answer {max(0.0, (now_ms - board.last_answer_unix_ms) / 1e3):.1f} s ago"
    text += f", frames retransmitted {board.frames_retransmitted}, CRC errors {board.crc_errors}"
    return f"{text}: {board.error}" if board.error else text


def _load_images(args, bundle):
    """``(inputs, a name per input)`` of ``--input`` or ``--random``."""
    import numpy as np

    from paradis_tf.cli._inputs import load_inputs

    if args.random is not None:
        x = np.random.default_rng(0).random((args.random, *bundle.model.input_shape), dtype=np.float32)
        return x, [f"random[{n}]" for n in range(len(x))]
    return load_inputs(args.input, bundle.model)


def _infer(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    with _coordinator(args) as c:
        placement = c.select(args.switch)
        if c.bundle.model.is_image:
            from paradis_tf.errors import InputError

            raise InputError(f"mesh infer prints a classifier's top classes; the bundle is {c.bundle.model.describe()}: "
                             "upscale images with `paradis upscale BUNDLE IN OUT --nodes ...`")
        model = c.manifest["model"]
        x, names = _load_images(args, c.bundle)
        t0 = time.perf_counter()
        logits = c.infer(x)
        dt = time.perf_counter() - t0
        labels = model.get("labels") or [str(k) for k in range(model["num_classes"])]
        print(f"plan {placement}")
        for n, row in enumerate(logits):
            top = np.argsort(-row)[: args.top]
            print(f"{n:>5}: " + "  ".join(f"{labels[k]} ({row[k]:.3f})" for k in top) + f"  {names[n]}")
        print(f"{len(x)} image(s) in {dt * 1e3:.1f} ms; final plan {c.placement}; retries {c.stats.retries}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    import sys

    import numpy as np

    from paradis_tf.mesh.bench import bench_row, mesh_latency, mesh_throughput

    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    with _coordinator(args) as c:
        placement = c.select(args.switch)
        plans_before = len(c.stats.plans)
        shape = c.manifest["model"]["input_shape"]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        mode = "automatic" if args.switch == "auto" else "pinned"
        print(f"selected plan {placement} ({mode}); each row names the plan(s) that answered it")
        print(f"{'row':<14} {'plan':<28} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'failed':>7} {'re-plans':>8}")
        rows = [bench_row(c, "latency", lambda: mesh_latency(c, x, args.requests))]
        rows += [bench_row(c, f"concurrency {k}", lambda k=k: mesh_throughput(c, x, args.requests, k)) for k in levels]
        for r in rows:
            ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            print(f"{r.label:<14} {r.plan_text:<28} {r.stats.throughput:>9.1f} {ms(r.stats.p50_ms):>9} "
                  f"{ms(r.stats.p99_ms):>9} {r.failed:>7} {r.replans:>8}")
        changes = [p for _, p in c.stats.plans[plans_before:]]
        failed, replans = sum(r.failed for r in rows), sum(r.replans for r in rows)
        print(f"{c.stats.requests} requests, {failed} failed, {replans} re-plan(s)"
              + (": " + " -> ".join([str(placement), *changes]) if changes else ""))
        results = {
            "plan": placement.plan, "mode": mode, "nodes": list(placement.addresses),
            "latency": rows[0].as_dict(), "throughput": [r.as_dict() for r in rows[1:]],
            "stats": {"requests": c.stats.requests, "failed": failed, "retries": c.stats.retries, "replans": replans,
                      "plans": [str(placement), *changes]},
        }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    if failed:
        print(f"paradis: {failed} of {c.stats.requests} benchmark requests failed (see the rows above; "
              "`paradis mesh status` shows the nodes)", file=sys.stderr)
        return 1
    return 0


def _register_serve(sub) -> None:
    s = sub.add_parser(
        "serve", help="keep a coordinator running and serve inference over gRPC (paradis.mesh.v1.Inference)",
        description="A long-running coordinator for a line: owns the nodes (--nodes or --discover) and the plan "
        "policy (--switch), re-plans when nodes fail or return, and serves paradis.mesh.v1.Inference (Infer: a "
        "float32 batch in, the fused outputs out; GetStatus) and grpc.health.v1 (SERVING while a plan fits the "
        "healthy nodes). Off loopback it serves mutual TLS only: Infer needs a coordinator certificate of the "
        "fleet CA, GetStatus and health any fleet certificate. SIGTERM stops it gracefully.",
    )
    s.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to serve inference on (port 0 picks a free one)")
    _nodes_arg(s)
    _plan_args(s)
    flags = {a.dest: a for a in s._actions}
    flags["tls_cert"].help = ("this server's certificate (`paradis certs issue --role coordinator --host HOST`): shown to "
                              "the nodes as their coordinator and to clients, which check it names the host they dial")
    flags["tls_key"].help = "this server's private key"
    insecure = flags["insecure"]
    insecure.help = ("plaintext where TLS is otherwise required: listen on an address other hosts can reach without "
                     "--tls-* (anyone on that network could run the model and read inputs and outputs; warns at "
                     "start and every hour), and with --discover adopt announced nodes without a certificate")
    g = s.add_argument_group("serving")
    g.add_argument("--max-batch", type=int, default=256, metavar="N",
                   help="largest batch one Infer may carry; a bigger one is refused with INVALID_ARGUMENT "
                        "(default: %(default)s)")
    g.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="deadline of an Infer call whose caller sets none; a caller's own deadline is honoured "
                        "(default: %(default)s)")
    g.add_argument("--health-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often the nodes are checked for the health status (default: %(default)s)")
    g.add_argument("--ready-file", metavar="PATH", help="write the bound HOST:PORT here once serving")
    add_metrics_args(s.add_argument_group("monitoring (docs/MESH.md, Monitoring)"))
    s.set_defaults(default_log_level="INFO", func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from paradis_tf.cli._common import metrics_ready_callback, ready_callback, tls_config
    from paradis_tf.mesh.coordinator import Coordinator
    from paradis_tf.mesh.metrics import ServeMetrics
    from paradis_tf.mesh.serve import ServeConfig, run_server

    config = ServeConfig(switch=args.switch, max_batch=args.max_batch, request_timeout_s=args.request_timeout,
                         health_interval_s=args.health_interval, tls=tls_config(args), insecure=args.insecure,
                         metrics_listen=args.metrics_listen)
    kwargs = discovery_kwargs(args, args.nodes)

    def coordinator() -> Coordinator:  # built once --listen passed its checks (plaintext off loopback: exit 2)
        observer = ServeMetrics() if config.metrics_listen else None  # InferenceServicer.Infer counts the calls
        return Coordinator(**kwargs, bundle=args.bundle, run_timeout_s=args.timeout, observer=observer,
                           objective=_objective(args))

    return run_server(coordinator, args.listen, config, ready=ready_callback(args.ready_file, "paradis-mesh-serve"),
                      metrics_ready=metrics_ready_callback(args.metrics_ready_file))
