"""`paradis upscale BUNDLE IN OUT`: a photograph through a super-resolution bundle, here or on the mesh.

The bundle's partitions take one fixed low-resolution tile (the manifest's
model.input_shape). A larger image is cut into overlapping tiles; each keeps
only the part at least output.margin pixels (the network's receptive radius)
away from its edges inside the image, so the result equals the switch network
run on the whole image, up to its int8 error. At the image's own borders a
tile's edge is the image's edge: the zero padding the partitions see there is
the one the whole-image network sees. The image must be at least one tile.

Images are read and written with Pillow (PNG, JPEG, BMP, TIFF, WebP, ...; the
output format follows OUT's extension). An rgb bundle takes RGB images; a y
bundle takes grayscale, or RGB whose luma goes through the network while the
chroma is upscaled bicubically.

Without --nodes the plan runs in this process (`LocalRunner`); with --nodes
the bundle is deployed to the node daemons (or serial bridges) and every tile
is one request through the mesh.
"""

from __future__ import annotations

import argparse

from paradis_tf.cli._common import add_tls_args, tls_config

LOCAL = "local"


def register(subparsers) -> None:
    p = subparsers.add_parser("upscale", help="upscale an image with a super-resolution bundle, here or on the mesh",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="super-resolution bundle directory (from `paradis convert`)")
    p.add_argument("input", metavar="IN", help="image to upscale (PNG, JPEG, ...)")
    p.add_argument("output", metavar="OUT", help="image to write; its extension picks the format (.png, .jpg, ...)")
    p.add_argument("--nodes", default=LOCAL, metavar="HOST:PORT,...|local",
                   help="node daemons to run the tiles on, comma-separated, or 'local' to run the plan in this "
                        "process (default: %(default)s)")
    p.add_argument("--switch", default=None, metavar="PLAN",
                   help="plan to run, e.g. 2x0.5 (default: here, the widest plan with the fewest devices; on the "
                        "mesh, 'auto': the best plan that fits the healthy nodes)")
    p.add_argument("--backend", default="litert", choices=["litert", "tflm", "tf", "tflite_runtime"],
                   help="interpreter backend when running here (default: %(default)s)")
    p.add_argument("--margin", type=int, default=None, metavar="PIXELS",
                   help="low-resolution pixels each tile drops at its inner edges (default: the manifest's "
                        "output.margin, which makes the result equal the whole-image network; smaller is faster "
                        "and may show seams)")
    p.add_argument("--batch", type=int, default=16, metavar="N", help="tiles per run call (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="interpreter threads when running here (default: the interpreter's choice)")
    p.add_argument("--no-deploy", action="store_true",
                   help="with --nodes: the bundle is on the nodes already; do not upload it")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --nodes: deadline of each tile's request, retries included (default: %(default)s)")
    add_tls_args(p)
    p.set_defaults(func=_upscale)


def _pil():
    from paradis_tf.errors import InputError

    try:
        from PIL import Image
    except ImportError:
        raise InputError("paradis upscale reads and writes images with Pillow, which is not installed "
                         "(pip install pillow)") from None
    return Image


def read_image(path: str):
    """uint8 pixels ``(H, W, C)`` of an image file, C its own channel count (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).

    Raises:
        InputError: a missing or unreadable file, or pixels that are not 8-bit.
    """
    import numpy as np

    from paradis_tf.errors import InputError

    Image = _pil()
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode == "PA":
                img = img.convert("RGBA")
            elif mode == "1":
                img = img.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                raise InputError(f"{path}: pixels of mode {mode!r} (not 8 bits per channel); expected an 8-bit "
                                 "grayscale or RGB image")
            a = np.asarray(img)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise InputError(f"{path}: not an image Pillow can read ({e}); give a PNG, JPEG, BMP, TIFF or WebP file") from None
    return a if a.ndim == 3 else a[..., None]


def write_image(path: str, pixels) -> None:
    """Writes uint8 ``(H, W, 1|3)`` pixels atomically, in the format of ``path``'s extension.

    Raises:
        InputError: an extension Pillow cannot write.
    """
    import io
    import os

    from paradis_tf.errors import InputError
    from paradis_tf.files import atomic_write

    Image = _pil()
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"{path}: cannot write images with extension {ext or '(none)'!r}; use .png, .jpg, .bmp, "
                         ".tif or .webp")
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    atomic_write(path, buf.getvalue())


def default_plan(bundle) -> str:
    """The widest plan (largest total width), fewest devices first among equals."""
    plans = [p for p in bundle.plans.values() if p.kind == "paradis"] or list(bundle.plans.values())
    return max(plans, key=lambda p: (round(sum(p.widths), 6), -len(p.devices))).name


def _upscale(args: argparse.Namespace) -> int:
    import time

    from paradis_tf.bundle import load
    from paradis_tf.errors import InputError
    from paradis_tf.runtime.image import check_sr_model, upscale_image

    bundle = load(args.bundle)
    check_sr_model(bundle.model, f"bundle {bundle.root}")
    if args.batch < 1:
        raise InputError(f"--batch must be at least 1; received {args.batch}")
    image = read_image(args.input)
    out_info = bundle.model.output
    t0 = time.perf_counter()
    if args.nodes.strip().lower() == LOCAL:
        from paradis_tf.runtime import LocalRunner

        plan = args.switch or default_plan(bundle)
        runner = LocalRunner(bundle, plan, args.backend, num_threads=args.threads)
        where = f"plan {runner.plan.name} here ({args.backend})"
        result = upscale_image(image, bundle.model, runner.predict, margin=args.margin, batch=args.batch,
                               name=args.input)
    else:
        from paradis_tf.mesh.coordinator import Coordinator

        with Coordinator(args.nodes, bundle=str(bundle.root), tls=tls_config(args), run_timeout_s=args.timeout) as c:
            if not args.no_deploy:
                c.deploy(bundle.root)
            placement = c.select(args.switch or "auto")
            result = upscale_image(image, bundle.model, c.infer, margin=args.margin, batch=args.batch,
                                   name=args.input)
            where = f"plan {c.placement or placement} on the mesh"
    dt = time.perf_counter() - t0
    write_image(args.output, result)
    h, w = image.shape[:2]
    print(f"{args.input} ({w}x{h}) -> {args.output} ({result.shape[1]}x{result.shape[0]}), x{out_info.scale} "
          f"{out_info.pixel_format}, {where}, in {dt:.2f} s")
    return 0
