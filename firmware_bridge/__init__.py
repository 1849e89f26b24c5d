"""firmware_bridge: serial-attached TFLM boards as nodes of a ParaDiS mesh.

Grouped by purpose:

* wire format: `Frame`, `FrameDecoder`, `encode_frame`, `decode_frame`
  (framing.py); messages and tensors in `protocol` (protocol.py);
  the whole spec in PROTOCOL.md.
* host side: `Board` (board.py), a client over any pyserial URL.
* board side: `BoardEmulator`, `BoardConfig` (emulated_board.py), the
  reference board with real TFLM kernels, its flash (flash_store.py);
  `EmulatorServer` (emulator.py) serves it on a pty or a TCP port over
  the links of links.py; `c/` holds the portable C99 version of framing
  and dispatch for firmware.
* line faults: `FaultProxy`, `FaultRates` (fault_proxy.py), a lossy serial
  line between a host and a board (real or emulated).
* errors: `SerialBridgeError` and its family (errors.py).

Imports without TensorFlow.
"""

import importlib

# Public names and the module that holds each; imported on first use, so
# `python -m firmware_bridge.emulator` (and friends) run their module once.
_EXPORTS = {
    "PROTOCOL_VERSION": "framing", "Frame": "framing", "FrameDecoder": "framing", "BadFrame": "framing",
    "FrameErrorKind": "framing", "encode_frame": "framing", "decode_frame": "framing",
    "MsgType": "protocol", "ErrorCode": "protocol", "Info": "protocol", "Tensor": "protocol", "TensorSpec": "protocol",
    "Board": "board", "FlashResult": "board",
    "BoardConfig": "emulated_board", "BoardEmulator": "emulated_board", "EmulatorServer": "emulator",
    "FaultProxy": "fault_proxy", "FaultRates": "fault_proxy",
    "SerialBridgeError": "errors", "FramingError": "errors", "MessageError": "errors", "BoardError": "errors",
    "PortError": "errors", "BoardTimeoutError": "errors", "BoardProtocolError": "errors",
    "BoardRemoteError": "errors", "FlashError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"firmware_bridge.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
