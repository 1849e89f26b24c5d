"""Interpreter backends behind one small interface.

=================  ===========================================  ==============
name               package                                      batch
=================  ===========================================  ==============
``litert``         ``ai_edge_litert`` (default)                 resized
``tflite_runtime`` ``tflite_runtime`` (older boards; numpy < 2)  resized
``tf``             ``tensorflow.lite``                          resized
``tflm``           ``tflite_micro`` (real TFLM kernels)          1, looped
=================  ===========================================  ==============

`load_interpreter(model, backend)` returns an `Interpreter`; its `run` takes
one array per model input with any batch size and returns one array per
output. None of this imports TensorFlow unless the ``tf`` backend is chosen.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from paradis_tf.errors import ParaDiSError
from paradis_tf.quant import QuantParams
from paradis_tf.tflite_file import read_tflite

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendError",
    "TensorDetail",
    "Interpreter",
    "load_interpreter",
    "available_backends",
    "tflm_arena_bytes",
    "quiet_native_stderr",
]

DEFAULT_BACKEND = "litert"


class BackendError(ParaDiSError, RuntimeError):
    """An interpreter backend that is missing, or a model it cannot run."""


@dataclass(frozen=True)
class TensorDetail:
    """An input or output tensor of a loaded model (batch dimension first)."""

    name: str
    shape: tuple[int, ...]
    quant: QuantParams


class Interpreter(abc.ABC):
    """One loaded .tflite model on one backend.

    Attributes:
        backend: the backend name.
        inputs: input tensors, in the model's input order.
        outputs: output tensors, in the model's output order.
        resizable: whether `run` resizes the batch dimension (else it loops
            over samples).
    """

    backend: str
    resizable: bool

    def __init__(self, what: str, inputs: Sequence[TensorDetail], outputs: Sequence[TensorDetail]) -> None:
        self.what = what
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        # TFLite and TFLM interpreters are not thread-safe; one run at a time.
        self._lock = threading.Lock()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Runs the model on a batch (thread-safe: calls are serialized).

        Args:
            inputs: one array per model input, shape ``(N,) + shape[1:]``,
                dtype exactly the input's; N >= 1 and the same for all.

        Returns:
            One array per model output, with batch N.

        Raises:
            BackendError: wrong number, shape or dtype of inputs, or the
                interpreter failed.
        """
        if len(inputs) != len(self.inputs):
            raise BackendError(f"{self.what} takes {len(self.inputs)} input(s); received {len(inputs)}.")
        arrays = []
        batch = None
        for i, (x, d) in enumerate(zip(inputs, self.inputs)):
            x = np.asarray(x)
            if x.dtype != d.quant.np_dtype or x.shape[1:] != d.shape[1:] or x.ndim != len(d.shape) or x.shape[0] < 1:
                raise BackendError(
                    f"{self.what} input {i} ('{d.name}') expects {d.quant.dtype} of shape (N, "
                    f"{', '.join(map(str, d.shape[1:]))}); received {x.dtype} of shape {x.shape}."
                )
            if batch is not None and x.shape[0] != batch:
                raise BackendError(f"{self.what}: inputs disagree on the batch size ({batch} vs {x.shape[0]}).")
            batch = x.shape[0]
            arrays.append(np.ascontiguousarray(x))
        try:
            with self._lock:
                return self._run(arrays, batch)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"{self.what}: {self.backend} failed to invoke ({type(e).__name__}: {e})") from e

    @abc.abstractmethod
    def _run(self, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]: ...


def _quant_of(detail: dict) -> QuantParams:
    dtype = np.dtype(detail["dtype"]).name
    if dtype == "float32":
        return QuantParams("float32")
    scale, zp = detail["quantization"]
    return QuantParams(dtype, scale, zp)


class _TfliteApiInterpreter(Interpreter):
    """The TFLite Python API, shared by ai_edge_litert, tflite_runtime and tf.lite."""

    resizable = True

    def __init__(self, backend: str, cls, content: bytes, what: str, num_threads: int | None, reference: bool):
        self.backend = backend
        kwargs = {"model_content": content, "num_threads": num_threads}
        if reference:
            kwargs["experimental_op_resolver_type"] = _op_resolver_ref(backend)
        self.delegate_fallback = False
        try:
            try:
                self._it = self._load(cls, kwargs)
            except RuntimeError as e:
                # XNNPACK refuses some valid int8 graphs (e.g. a layer whose
                # activations were all zero on the calibration set has a
                # requantization scale outside its range); TFLite's builtin
                # kernels run them, as TFLM does.
                if reference or "XNNPACK" not in str(e):
                    raise
                kwargs["experimental_op_resolver_type"] = _op_resolver_no_delegate(backend)
                self._it = self._load(cls, kwargs)
                self.delegate_fallback = True
        except Exception as e:
            raise BackendError(f"{what}: {backend} cannot load the model ({type(e).__name__}: {e})") from e
        ins = [TensorDetail(d["name"], tuple(int(v) for v in d["shape"]), _quant_of(d)) for d in self._it.get_input_details()]
        outs = [TensorDetail(d["name"], tuple(int(v) for v in d["shape"]), _quant_of(d)) for d in self._it.get_output_details()]
        self._in_idx = [d["index"] for d in self._it.get_input_details()]
        self._out_idx = [d["index"] for d in self._it.get_output_details()]
        self._batch = ins[0].shape[0] if ins and ins[0].shape else 1
        super().__init__(what, ins, outs)

    @staticmethod
    def _load(cls, kwargs):
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated in favour of LiteRT: we know.
            warnings.simplefilter("ignore", UserWarning)
            it = cls(**kwargs)
        it.allocate_tensors()
        return it

    def _run(self, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
        if batch != self._batch:
            for idx, x in zip(self._in_idx, inputs):
                self._it.resize_tensor_input(idx, list(x.shape), strict=False)
            self._it.allocate_tensors()
            self._batch = batch
        for idx, x in zip(self._in_idx, inputs):
            self._it.set_tensor(idx, x)
        self._it.invoke()
        return [self._it.get_tensor(idx) for idx in self._out_idx]


def _op_resolver_types(backend: str):
    if backend == "litert":
        from ai_edge_litert.interpreter import OpResolverType
    elif backend == "tflite_runtime":
        from tflite_runtime.interpreter import OpResolverType
    else:
        from tensorflow.lite.experimental import OpResolverType
    return OpResolverType


def _op_resolver_ref(backend: str):
    return _op_resolver_types(backend).BUILTIN_REF


def _op_resolver_no_delegate(backend: str):
    return _op_resolver_types(backend).BUILTIN_WITHOUT_DEFAULT_DELEGATES


@contextlib.contextmanager
def quiet_native_stderr(noise: "re.Pattern[str] | None" = None) -> Iterator[None]:
    """Silences file descriptor 2 for the block: C++ code that prints past Python's logging (TFLM prints every
    failed allocation; the MLIR quantizer a ``fully_quantize`` line per model; LiteRT its XNNPACK notice).

    Without ``noise`` anything written to descriptor 2 meanwhile is dropped
    too: keep the block short. With ``noise`` descriptor 2 goes to a file and
    every line that does not match it is written back after the block.
    """
    sys.stderr.flush()  # Python's own buffered output still goes where it was meant to
    try:
        fd = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    sink = open(os.devnull, "wb") if noise is None else tempfile.TemporaryFile()
    try:
        with sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(fd, 2)
                if noise is not None:
                    sink.seek(0)
                    kept = [ln for ln in sink.read().splitlines(keepends=True)
                            if not noise.search(ln.decode("utf-8", "replace"))]
                    if kept:
                        os.write(2, b"".join(kept))
    finally:
        os.close(fd)


class _TflmInterpreter(Interpreter):
    """TFLite Micro's reference kernels through `tflite_micro.runtime`: batch 1, looped."""

    backend = "tflm"
    resizable = False

    def __init__(self, content: bytes, what: str, arena_size: int | None):
        runtime = _import_backend("tflm")
        info = read_tflite(content, what)
        if arena_size is None:
            arena_size = max(10 * len(content), 64 * 1024)
        try:
            with quiet_native_stderr():
                self._it = runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except Exception as e:
            raise BackendError(
                f"{what}: tflm cannot allocate the model in an arena of {arena_size} bytes ({type(e).__name__}: {e})"
            ) from e
        ins = [TensorDetail(t.name, t.shape, t.quant) for t in info.inputs]
        outs = [TensorDetail(t.name, t.shape, t.quant) for t in info.outputs]
        for d in ins + outs:
            if d.shape[:1] != (1,):
                raise BackendError(f"{what}: tflm runs batch 1 models; tensor '{d.name}' has shape {d.shape}.")
        super().__init__(what, ins, outs)

    def _run(self, inputs: list[np.ndarray], batch: int) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for n in range(batch):
            for i, x in enumerate(inputs):
                self._it.set_input(x[n : n + 1], i)
            self._it.invoke()
            for o in range(len(self.outputs)):
                results[o].append(np.array(self._it.get_output(o), copy=True).reshape(self.outputs[o].shape))
        return [np.concatenate(r, axis=0) for r in results]


_INSTALL_HINTS = {
    "litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install tflite-runtime (its wheels need numpy<2; with numpy 2 use backend 'litert')",
    "tf": "pip install tensorflow-cpu",
    "tflm": "pip install tflite-micro",
}
BACKENDS = tuple(_INSTALL_HINTS)


def _import_backend(backend: str):
    try:
        if backend == "litert":
            from ai_edge_litert.interpreter import Interpreter as cls

            return cls
        if backend == "tflite_runtime":
            from tflite_runtime.interpreter import Interpreter as cls

            return cls
        if backend == "tf":
            import tensorflow as tf

            return tf.lite.Interpreter
        if backend == "tflm":
            from tflite_micro import runtime

            return runtime
    except Exception as e:  # tflite_runtime under numpy 2 raises ImportError or AttributeError
        raise BackendError(
            f"Interpreter backend '{backend}' is not usable here ({type(e).__name__}: {e}); "
            f"install it with: {_INSTALL_HINTS[backend]}, or choose another of {list(BACKENDS)}."
        ) from None
    raise BackendError(f"Unknown interpreter backend {backend!r}; choose one of {list(BACKENDS)}.")


def available_backends() -> tuple[str, ...]:
    """Backends that import on this machine."""
    ok = []
    for b in BACKENDS:
        try:
            _import_backend(b)
        except BackendError:
            continue
        ok.append(b)
    return tuple(ok)


def load_interpreter(
    model: bytes | str | os.PathLike,
    backend: str = DEFAULT_BACKEND,
    *,
    num_threads: int | None = None,
    arena_size: int | None = None,
    reference_kernels: bool = False,
) -> Interpreter:
    """Loads a .tflite model on a backend.

    Args:
        model: the model's bytes, or a path to the .tflite file.
        backend: one of `BACKENDS`.
        num_threads: CPU threads for the TFLite backends (None: backend default).
        arena_size: TFLM tensor arena in bytes (None: 10x the model size, at
            least 64 KiB). Ignored by the other backends.
        reference_kernels: TFLite backends use the reference kernels
            (``BUILTIN_REF``), without XNNPACK or optimized kernels.

    Raises:
        BackendError: unknown or missing backend, or a model it cannot load.
    """
    if backend not in BACKENDS:
        raise BackendError(f"Unknown interpreter backend {backend!r}; choose one of {list(BACKENDS)}.")
    if isinstance(model, (bytes, bytearray, memoryview)):
        content, what = bytes(model), "model"
    else:
        path = Path(model)
        try:
            content = path.read_bytes()
        except OSError as e:
            raise BackendError(f"{path}: cannot read the model ({e.strerror or e})") from None
        what = str(path)
    if backend == "tflm":
        return _TflmInterpreter(content, what, arena_size)
    return _TfliteApiInterpreter(backend, _import_backend(backend), content, what, num_threads, reference_kernels)


def tflm_arena_bytes(content: bytes, *, limit: int | None = None) -> int:
    """Smallest tensor arena (multiple of 16 bytes) in which TFLM runs the model.

    Measured by really allocating with the `tflite_micro` interpreter: it
    first runs in a generous arena (`limit`) and reports its allocations
    ("Arena allocation total N bytes"); N is a lower bound (it leaves out
    the memory planner's scratch and the buffer's alignment loss), and the
    answer is found by binary search between N and the generous size, then
    checked by an invoke. The search never goes below N: TFLM crashes
    (SIGSEGV) instead of failing cleanly when even its persistent
    allocations do not fit, so a caller that must survive a malformed model
    runs this in a child process (as the board emulator does).

    Args:
        content: the .tflite model.
        limit: the generous arena, bytes: the model is first run in it and
            the answer is at most this. Default: 16 MiB plus ten times the
            model's size, at most 64 MiB.

    Raises:
        BackendError: the model does not run in `limit` bytes, or the
            allocation report cannot be read.
    """
    runtime = _import_backend("tflm")
    info = read_tflite(content)
    zeros = [np.zeros(t.shape, t.quant.np_dtype) for t in info.inputs]
    arena = limit if limit is not None else min(64 * 1024 * 1024, 16 * 1024 * 1024 + 10 * len(content))

    def allocate(n: int, invoke: bool = False):
        it = runtime.Interpreter.from_bytes(content, arena_size=n)
        if invoke:
            for i, z in enumerate(zeros):
                it.set_input(z, i)
            it.invoke()
        return it

    try:
        with quiet_native_stderr():
            it = allocate(arena, invoke=True)
    except Exception as e:
        raise BackendError(f"The model does not run under tflm in a {arena}-byte arena ({type(e).__name__}: {e})") from e
    report = _capture_stderr(it.print_allocations)
    del it
    m = re.search(r"Arena allocation total (\d+) bytes", report)
    if not m:
        raise BackendError(f"Cannot read the TFLM allocation report: {report[:200]!r}")
    lo, hi = -(-int(m.group(1)) // 16), -(-arena // 16)
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            with quiet_native_stderr():
                allocate(mid * 16)
            hi = mid
        except Exception:
            lo = mid + 1
    try:
        with quiet_native_stderr():
            allocate(lo * 16, invoke=True)
    except Exception as e:
        raise BackendError(f"TFLM allocates the model in {lo * 16} bytes but does not invoke it ({e})") from e
    return lo * 16


def _capture_stderr(fn) -> str:
    """Runs `fn` and returns what C code wrote to fd 2 meanwhile."""
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        fd = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            fn()
        finally:
            os.dup2(fd, 2)
            os.close(fd)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")
