"""Worker helpers of the benchmarks that train side by side, one model per core.

`bench_accuracy --jobs`, `bench_data_autotune` and the single-thread timings
(`bench_pointwise`, `bench_train_time --threads`, `profile_train_step`) run
TensorFlow on one thread per process; these set that up. The tools import
this module by its file's folder (they run as scripts from ``tools/``).
"""

from __future__ import annotations

import os
import subprocess


def set_threads(threads: int) -> None:
    """Runs TensorFlow's ops on ``threads`` threads, both within an op and
    across ops (a benchmark's single-thread trainings pin one per core).

    Raises:
        RuntimeError: TensorFlow already ran in this process, so its thread
            pools are fixed; the message says to set the threads first or
            to start a fresh process.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as e:
        raise RuntimeError(f"cannot set {threads} TensorFlow thread(s): TensorFlow already ran in this process "
                           f"and its thread pools are fixed ({e}); set the threads first, or start a fresh "
                           "process.") from None


def start_pinned_worker(cmd: list[str], core: int, pythonpath: str | os.PathLike, **popen_kwargs) -> subprocess.Popen:
    """Starts ``cmd`` as a process bound to CPU ``core`` whose TensorFlow runs
    ops on one thread, with ``pythonpath`` first on its import path: the
    worker of a benchmark that trains one model per core side by side.
    ``popen_kwargs`` go to ``subprocess.Popen`` (output, text mode); an
    ``env`` among them is the base the thread settings are added to. Where
    the platform cannot bind a process to a core, the worker still runs on
    one thread, unbound.
    """
    base = popen_kwargs.pop("env", None)
    base = os.environ if base is None else base  # an empty env given is kept empty, as Popen would
    path = [str(pythonpath)] + [p for p in [base.get("PYTHONPATH")] if p]
    env = dict(base, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(path))
    pin = (lambda: os.sched_setaffinity(0, {core})) if hasattr(os, "sched_setaffinity") else None
    return subprocess.Popen(cmd, env=env, preexec_fn=pin, **popen_kwargs)
