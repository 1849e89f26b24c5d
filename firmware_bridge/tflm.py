"""TensorFlow Lite Micro partitions for the board emulator, crash-isolated.

The TFLM Python interpreter segfaults on some inputs (an arena too small
for its persistent allocations, a malformed model that passes the
flatbuffer checks), so a model is first *probed* in a child process
(`python -m firmware_bridge.tflm`): its smallest working arena is measured
(`paradis_tf.runtime.tflm_arena_bytes`, bisection with real allocations),
then it is allocated with TFLM at the board's arena size and invoked once.
Only a model that passed the probe is loaded in-process. `check_models`
loads the model files of a bridge's upload the same way, all in one child.

Imports `tflite_micro` only; no TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from firmware_bridge.protocol import ErrorCode, Tensor, TensorSpec
from paradis_tf.runtime.backends import tflm_arena_bytes

# Probing tries this much arena to tell "does not fit" from "not a model".
PROBE_MAX_ARENA = 64 << 20


class ModelLoadError(Exception):
    """A model the runtime refuses; `code` and `detail` go into the ERROR answer."""

    def __init__(self, code: ErrorCode, detail: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ProbeResult:
    """What a child TFLM process found out about a model.

    Attributes:
        fits: the model allocates and invokes within the probed arena.
        arena_used: the smallest arena (bytes, 16-byte steps) TFLM allocated
            the model in; when `fits` is False, the arena it would need
            (0 if it is no model TFLM can run).
        inputs, outputs: tensor specs of the model.
        error: why it does not fit or run.
    """

    fits: bool
    arena_used: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    error: str = ""


def _spec(details: dict) -> TensorSpec:
    q = details["quantization_parameters"]
    scales, zps = list(q["scales"]), list(q["zero_points"])
    return TensorSpec(np.dtype(details["dtype"]).name, tuple(int(d) for d in details["shape"]),
                      float(scales[0]) if len(scales) == 1 else 0.0,
                      int(zps[0]) if len(zps) == 1 else 0)


def _io_specs(interp) -> tuple[list[TensorSpec], list[TensorSpec]]:
    out = []
    for getter in (interp.get_input_details, interp.get_output_details):
        specs = []
        while True:
            try:
                specs.append(_spec(getter(len(specs))))
            except IndexError:
                break
        out.append(specs)
    return out[0], out[1]


def _child(arena: int) -> int:
    """Child process: model on stdin, one JSON line on stdout.

    Measures the smallest arena the model runs in
    (`paradis_tf.runtime.tflm_arena_bytes`, which may crash TFLM on a
    malformed model: hence the child), then allocates and invokes at the
    board's arena size if that is enough.
    """
    from tflite_micro import runtime

    model = sys.stdin.buffer.read()

    def say(**kw) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    try:
        needed = tflm_arena_bytes(model, limit=max(PROBE_MAX_ARENA, arena))
        interp = runtime.Interpreter.from_bytes(model, arena_size=max(arena, needed))
        inputs, outputs = _io_specs(interp)
    except Exception as e:  # noqa: BLE001 - anything here means "not a model TFLM runs"
        say(fits=False, arena_used=0, error=f"TFLM cannot run the model: {e}")
        return 0
    specs = dict(inputs=[s.__dict__ for s in inputs], outputs=[s.__dict__ for s in outputs])
    if arena < needed:
        say(fits=False, arena_used=needed, error=f"model needs a {needed}-byte arena, the board has {arena}", **specs)
        return 0
    try:
        for i, s in enumerate(inputs):
            interp.set_input(np.zeros(s.shape, dtype=s.dtype), i)
        interp.invoke()
    except Exception as e:  # noqa: BLE001
        say(fits=False, arena_used=needed,
            error=f"TFLM fails at arena {arena} although {needed} allocated: {e}", **specs)
        return 0
    say(fits=True, arena_used=needed, error="", **specs)
    return 0


def _child_env() -> dict[str, str]:
    """The environment of a child `python -m firmware_bridge.tflm`: it must import this very package,
    wherever the parent was started."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))


def probe(model: bytes, arena_size: int, timeout: float = 120.0) -> ProbeResult:
    """Allocates and invokes `model` with TFLM in a child process.

    Returns:
        A `ProbeResult`; a crash of the child is reported as a model TFLM
        cannot run, never raised.
    """
    try:
        proc = subprocess.run([sys.executable, "-m", "firmware_bridge.tflm", "--arena", str(arena_size)],
                              input=model, capture_output=True, timeout=timeout, env=_child_env())
        lines, crashed = proc.stdout.splitlines(), proc.returncode
    except subprocess.TimeoutExpired as e:
        lines, crashed = (e.stdout or b"").splitlines(), f"no answer in {timeout:.0f} s"
    last: dict = {}
    for line in lines:
        try:
            last = json.loads(line)
        except ValueError:
            continue
    if not last:
        return ProbeResult(False, 0, error=f"TFLM crashed on the model (exit {crashed})")
    inputs = tuple(TensorSpec(**d) for d in last.get("inputs", ()))
    outputs = tuple(TensorSpec(**d) for d in last.get("outputs", ()))
    return ProbeResult(last["fits"], last["arena_used"], inputs, outputs, last["error"])


def _check_child(paths: Sequence[str], arena: int) -> int:
    """Child process: loads each model file with TFLM (tensors allocated), one JSON line per step on stdout."""
    from tflite_micro import runtime

    for i, path in enumerate(paths):
        sys.stdout.write(json.dumps({"checking": i}) + "\n")
        sys.stdout.flush()
        try:
            with open(path, "rb") as fh:
                runtime.Interpreter.from_bytes(fh.read(), arena_size=arena)
            error = ""
        except Exception as e:  # noqa: BLE001 - anything here means "not a model TFLM loads"
            error = f"{type(e).__name__}: {e}"
        sys.stdout.write(json.dumps({"file": i, "error": error}) + "\n")
        sys.stdout.flush()
    return 0


def check_models(paths: Sequence[str | os.PathLike], arena_size: int = PROBE_MAX_ARENA,
                 timeout: float = 120.0) -> list[str]:
    """Loads each model file with TFLM, tensors allocated, in one child process.

    The arena is generous on purpose: this tells a model from something that
    is not one (TFLM has no flatbuffer verifier and crashes on some malformed
    files), not whether it fits a board (Activate checks that).

    Returns:
        Per path, "" if TFLM loads it, else why not; a crash of the child is
        reported for the file it was loading, never raised, and the files
        after it are reported as not checked.
    """
    cmd = [sys.executable, "-m", "firmware_bridge.tflm", "--arena", str(arena_size), "--check", *map(os.fspath, paths)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=_child_env(), stdin=subprocess.DEVNULL)
        lines, crashed = proc.stdout.splitlines(), f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        lines, crashed = (e.stdout or b"").splitlines(), f"no answer in {timeout:.0f} s"
    errors: dict[int, str] = {}
    loading = None
    for line in lines:
        try:
            step = json.loads(line)
        except ValueError:
            continue
        if "checking" in step:
            loading = step["checking"]
        else:
            errors[step["file"]] = step["error"]
    return [errors[i] if i in errors
            else f"TFLM crashed loading it ({crashed})" if i == loading
            else f"not checked: TFLM crashed on an earlier file ({crashed})"
            for i in range(len(paths))]


class TflmModel:
    """A probed model loaded in-process with the board's arena size."""

    def __init__(self, model: bytes, arena_size: int, probed: ProbeResult) -> None:
        from tflite_micro import runtime

        self._interp = runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_size)
        self.inputs = probed.inputs
        self.outputs = probed.outputs
        self.arena_used = probed.arena_used

    def invoke(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        for i, t in enumerate(inputs):
            self._interp.set_input(t.numpy(), i)
        self._interp.invoke()
        return [Tensor.from_numpy(np.asarray(self._interp.get_output(i)), s.scale, s.zero_point)
                for i, s in enumerate(self.outputs)]


class TflmRuntime:
    """The emulator's runtime: real TFLM kernels, probed out of process."""

    name = "tflm-emulator"

    def load(self, model: bytes, arena_size: int) -> TflmModel:
        """Raises ModelLoadError (ARENA_TOO_SMALL or MODEL_INVALID) instead of crashing."""
        result = probe(model, arena_size)
        if not result.fits:
            if result.arena_used:
                raise ModelLoadError(ErrorCode.ARENA_TOO_SMALL, result.arena_used,
                                     f"model needs a {result.arena_used}-byte arena, the board has {arena_size}")
            raise ModelLoadError(ErrorCode.MODEL_INVALID, 0, result.error[:200])
        return TflmModel(model, arena_size, result)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.tflm",
                                     description="Probe a .tflite model on stdin with TFLM (child of probe()), or load model files (child of check_models()).")
    parser.add_argument("--arena", type=int, required=True, help="tensor arena size in bytes")
    parser.add_argument("--check", nargs="+", metavar="FILE",
                        help="load these model files (child of check_models()) instead of probing stdin")
    args = parser.parse_args(argv)
    if args.check:
        return _check_child(args.check, args.arena)
    return _child(args.arena)


if __name__ == "__main__":
    sys.exit(main())
