"""How loud the command line is: `paradis --log-level LEVEL`.

Quiet by default: TensorFlow's C++ logs (oneDNN, CPU features, SavedModel
loading), absl's, tf.function retracing notices and Python warnings of the
libraries are shown only with ``--log-level DEBUG`` (INFO shows the
warnings and this kit's own INFO logs). Daemons (`node serve`, `bridge`)
log at INFO unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "WARNING"
# TF_CPP_MIN_LOG_LEVEL per level: 0 shows everything, 3 only fatal errors.
_TF_CPP_LEVEL = {"DEBUG": "0", "INFO": "1", "WARNING": "2", "ERROR": "3"}
# Python loggers of libraries that report routine internals at WARNING (tf.function retracing, absl notices).
_CHATTY_LOGGERS = ("tensorflow", "absl", "h5py", "jax")
_QUIET_FORMAT = "paradis: %(message)s"
_VERBOSE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


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
    try:
        with warnings.catch_warnings():
            if level not in ("DEBUG", "INFO"):
                warnings.simplefilter("ignore")  # Keras' ignored `shuffle`, deprecations inside the libraries
            yield
    finally:
        loggers[0].removeHandler(handler)
        for lg, lvl in zip(loggers, saved):
            lg.setLevel(lvl)
