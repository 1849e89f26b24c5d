"""firmware_bridge: serial-attached TFLM boards as nodes of a ParaDiS mesh.

Grouped by purpose:

* wire format: `Frame`, `FrameDecoder`, `encode_frame`, `decode_frame`
  (framing.py); messages and tensors in `protocol` (protocol.py);
  the whole spec in PROTOCOL.md.
* host side: `Board` (board.py), a client over any pyserial URL.
* board side: `BoardEmulator`, `BoardConfig`, `EmulatorServer`
  (emulator.py), the reference board with real TFLM kernels; `c/` holds
  the portable C99 version of framing and dispatch for firmware.
* test gear: `FaultProxy` (fault_proxy.py), a lossy serial line.
* errors: `SerialBridgeError` and its family (errors.py).

Imports without TensorFlow.
"""

from firmware_bridge.board import Board, FlashResult
from firmware_bridge.emulator import BoardConfig, BoardEmulator, EmulatorServer
from firmware_bridge.errors import (BoardError, BoardProtocolError, BoardRemoteError, BoardTimeoutError,
                                    FlashError, FramingError, MessageError, PortError, SerialBridgeError)
from firmware_bridge.framing import (PROTOCOL_VERSION, BadFrame, Frame, FrameDecoder, FrameErrorKind,
                                     decode_frame, encode_frame)
from firmware_bridge.protocol import ErrorCode, Info, MsgType, Tensor, TensorSpec

__all__ = [
    "PROTOCOL_VERSION", "Frame", "FrameDecoder", "BadFrame", "FrameErrorKind", "encode_frame", "decode_frame",
    "MsgType", "ErrorCode", "Info", "Tensor", "TensorSpec",
    "Board", "FlashResult",
    "BoardConfig", "BoardEmulator", "EmulatorServer",
    "SerialBridgeError", "FramingError", "MessageError", "BoardError", "PortError", "BoardTimeoutError",
    "BoardProtocolError", "BoardRemoteError", "FlashError",
]
