"""How loud the command line is: `paradis --log-level LEVEL`.

Quiet by default: TensorFlow's C++ logs (oneDNN, CPU features, SavedModel
loading), absl's, tf.function retracing notices and Python warnings of the
libraries are shown only with ``--log-level DEBUG`` (INFO shows the
warnings and this kit's own INFO logs). Daemons (`node serve`, `bridge`)
log at INFO unless told otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import warnings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "WARNING"
# TF_CPP_MIN_LOG_LEVEL per level: 0 shows everything, 3 only fatal errors.
_TF_CPP_LEVEL = {"DEBUG": "0", "INFO": "1", "WARNING": "2", "ERROR": "3"}
# Python loggers of libraries that report routine internals at WARNING (tf.function retracing, absl notices).
_CHATTY_LOGGERS = ("tensorflow", "absl", "h5py", "jax")
_QUIET_FORMAT = "paradis: %(message)s"
# What TensorFlow's libraries print to descriptor 2 while they load, past TF_CPP_MIN_LOG_LEVEL (TensorFlow 2.21
# on a CPU with AVX512: absl's notice that it is not initialized, and oneDNN's and the CPU guard's INFO lines)
_TF_LOAD_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cpu_feature_guard"
    r"|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler flags")
_VERBOSE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's loader with TensorFlow's load-time noise filtered out of descriptor 2."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        from paradis_tf.runtime.backends import quiet_native_stderr

        with quiet_native_stderr(_TF_LOAD_NOISE):
            self._inner.exec_module(module)

    def __getattr__(self, name):  # resources, source, file names: the real loader's
        return getattr(self._inner, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and loads it through `_QuietLoader` (first import only)."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


@contextlib.contextmanager
def cli_logging(level: str, explicit: bool = True):
    """This process's logging while one command runs; the levels and filters are put back after it.

    Args:
        level: one of `LOG_LEVELS`.
        explicit: the user asked for this level; otherwise a
            ``TF_CPP_MIN_LOG_LEVEL`` already in the environment is kept.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"Expected a log level among {', '.join(LOG_LEVELS)}. Received {level!r}.")
    if explicit or "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _TF_CPP_LEVEL[level]  # read when TensorFlow loads
    loggers = [logging.getLogger(name) for name in ("", *_CHATTY_LOGGERS)]
    saved = [lg.level for lg in loggers]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_QUIET_FORMAT if level in ("WARNING", "ERROR") else _VERBOSE_FORMAT))
    loggers[0].addHandler(handler)
    loggers[0].setLevel(level)
    for lg in loggers[1:]:
        lg.setLevel(level if level == "DEBUG" else "ERROR")
    finder = None
    if level in ("WARNING", "ERROR") and "tensorflow" not in sys.modules:
        finder = _QuietTensorFlowImport()
        sys.meta_path.insert(0, finder)
    try:
        with warnings.catch_warnings():
            if level not in ("DEBUG", "INFO"):
                warnings.simplefilter("ignore")  # Keras' ignored `shuffle`, deprecations inside the libraries
            yield
    finally:
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        loggers[0].removeHandler(handler)
        for lg, lvl in zip(loggers, saved):
            lg.setLevel(lvl)
