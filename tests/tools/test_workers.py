"""tools/workers.py: the benchmarks' pinned single-thread workers."""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def workers(tool):
    return tool("workers")


def test_pinned_worker_runs_on_its_core_with_one_thread_and_the_kit_first_on_its_path(workers, tmp_path):
    """The benchmarks' side-by-side workers: bound to the core asked for (where the platform binds processes),
    TensorFlow and OpenMP told to use one thread, the given folder first on PYTHONPATH ahead of the caller's, and
    the caller's own environment passed through."""
    core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    code = ("import json, os; print(json.dumps({'cores': sorted(os.sched_getaffinity(0)) if hasattr(os, "
            "'sched_getaffinity') else None, 'env': {k: os.environ.get(k) for k in ('TF_NUM_INTRAOP_THREADS', "
            "'TF_NUM_INTEROP_THREADS', 'OMP_NUM_THREADS', 'PYTHONPATH', 'MARK')}}))")
    env = dict(os.environ, PYTHONPATH="/caller/path", MARK="kept")
    proc = workers.start_pinned_worker([sys.executable, "-c", code], core, tmp_path, stdout=subprocess.PIPE,
                                       text=True, env=env)
    out, _ = proc.communicate(timeout=60)
    got = json.loads(out)
    assert proc.returncode == 0
    if hasattr(os, "sched_setaffinity"):
        assert got["cores"] == [core]
    assert got["env"] == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                          "PYTHONPATH": os.pathsep.join([str(tmp_path), "/caller/path"]), "MARK": "kept"}


def test_threads_are_refused_once_tensorflow_ran_naming_the_way_out(workers):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # the runtime and its thread pools exist now
    with pytest.raises(RuntimeError, match="cannot set 1 TensorFlow thread.*start a fresh process"):
        workers.set_threads(1)
