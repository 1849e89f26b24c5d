"""Exception family of paradis_tf.

Every error the kit raises on purpose derives from `ParaDiSError`, so the
command line can print `paradis: <message>` and exit non-zero, while
`--debug` re-raises with the traceback.
"""

from __future__ import annotations


class ParaDiSError(Exception):
    """Root of all errors raised by paradis_tf on purpose."""


class SwitchError(ParaDiSError, ValueError):
    """A switch text or width set that is not allowed."""


class ChannelSplitError(ParaDiSError, ValueError):
    """A layer whose channel count does not split exactly for a switch."""


class DatasetError(ParaDiSError, OSError):
    """A dataset that cannot be found or read."""


class InputError(ParaDiSError, ValueError):
    """Input data of the wrong shape, dtype or range."""
