"""Exception family of firmware_bridge.

Everything the serial side raises on purpose derives from
`SerialBridgeError`, itself a `paradis_tf.errors.ParaDiSError`, so the
`paradis` command line prints one line and exits non-zero.

    SerialBridgeError
      FramingError        bytes that are not a valid frame (pure decoding)
      MessageError        a frame whose payload is not a valid message
      BoardError          the host client could not get a job done
        PortError         the serial port cannot be opened or used
        BoardTimeoutError no valid answer after every retransmission
        BoardProtocolError the board answered something the protocol forbids
        BoardRemoteError  the board answered ERROR (code, detail, text)
        FlashError        a flash was refused or did not complete
"""

from __future__ import annotations

from paradis_tf.errors import ParaDiSError


class SerialBridgeError(ParaDiSError):
    """Root of all errors raised by firmware_bridge on purpose."""


class FramingError(SerialBridgeError, ValueError):
    """A byte sequence that does not decode to a valid frame.

    Attributes:
        kind: the `firmware_bridge.framing.FrameErrorKind` that was detected.
    """

    def __init__(self, kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MessageError(SerialBridgeError, ValueError):
    """A frame payload that does not decode as the message its type names."""


class BoardError(SerialBridgeError):
    """The host-side board client could not complete an operation."""


class PortError(BoardError, OSError):
    """The serial port cannot be opened, read or written."""


class BoardTimeoutError(BoardError, TimeoutError):
    """The board gave no valid answer after every retransmission."""


class BoardProtocolError(BoardError):
    """The board answered with a message the protocol does not allow here."""


class BoardRemoteError(BoardError):
    """The board answered ERROR.

    Attributes:
        code: the `firmware_bridge.protocol.ErrorCode` the board sent.
        detail: the 32-bit detail value (meaning depends on the code, e.g.
            the expected offset for BAD_OFFSET).
        text: the board's human-readable text.
    """

    def __init__(self, code, detail: int, text: str, request: str = "") -> None:
        name = getattr(code, "name", str(code))
        where = f" to {request}" if request else ""
        super().__init__(f"board answered ERROR {name}{where}: {text or '(no text)'}")
        self.code = code
        self.detail = detail
        self.text = text


class FlashError(BoardError):
    """A flash that was refused before sending, or that did not complete.

    Attributes:
        offset: bytes of the image the board has acknowledged; a new
            `Board.flash` of the same image resumes there.
    """

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset
