"""A progress line for long commands (`convert`, `qcheck`, `flash --serial`)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """One status line on a terminal, rewritten in place: ``desc [####....] done/total unit  note``.

    Args:
        desc: what is being done ("converting").
        total: how many units in all, or None when unknown.
        unit: what is counted ("segments", "bytes").
        file: the stream (default: standard error).
        every_s: when the stream is not a terminal, also print a plain line
            at most every ``every_s`` seconds and at the end; None keeps
            pipes and logs free of progress.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "", file: TextIO | None = None,
                 every_s: float | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.file = file or sys.stderr
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.every_s = 0.1 if self.tty else every_s
        self.done, self.note = 0, ""
        self._last = float("-inf")
        self._width = 0

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more units done (``note``: what comes next, shown after the count)."""
        self.set(self.done + n, note=note)

    def set(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """``done`` units of ``total`` done so far."""
        self.done = done
        self.total = self.total if total is None else total
        self.note = self.note if note is None else note
        finished = self.total is not None and done >= self.total
        if self.every_s is None or (not finished and time.monotonic() - self._last < self.every_s):
            return
        self._last = time.monotonic()
        self._write(end="\n" if finished else "")
        if finished:
            self._width = 0  # the line is ended

    def text(self) -> str:
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        bar = ""
        if self.total:
            filled = 30 * min(self.done, self.total) // self.total
            bar = f" [{'#' * filled:<30}]"
        return f"{self.desc}{bar} {count} {self.unit}".rstrip() + (f"  {self.note}" if self.note else "")

    def _write(self, end: str) -> None:
        line = self.text()
        if self.tty:
            pad = max(0, self._width - len(line))
            self._width = len(line)
            self.file.write("\r" + line + " " * pad + end)
        else:
            self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        """Ends the line (a terminal's cursor moves to the next line)."""
        if self.tty and self._width:
            self._write(end="\n")
            self._width = 0

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
