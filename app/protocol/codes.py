"""Numeric constants of protocol v1 (firmware/PROTOCOL.md sections 3, 4 and 9)."""

from __future__ import annotations

from enum import IntEnum, IntFlag, StrEnum

# The error codes and texts are generated from PROTOCOL.md section 9 (scripts/gen_error_codes.py).
from app.protocol.error_codes import ERROR_TEXT as ERROR_TEXT  # re-exported: callers import codes
from app.protocol.error_codes import ErrorCode as ErrorCode

PROTOCOL_VERSION = 1
HEADER_SIZE = 6
# Largest payload: a 4096-byte chunk plus its 12-byte chunk header, with room for later fields.
MAX_PAYLOAD = 4200
MAX_MESSAGE = HEADER_SIZE + MAX_PAYLOAD
# Largest chunk of model data one XFER_CHUNK carries.
MAX_CHUNK = 4096
# Smallest XFER_CHUNK data a host sends, whatever a HELLO says: a 1-byte chunk would turn a 50 KB
# image into 50 000 round trips; every supported profile takes at least 1024.
MIN_CHUNK = 256
# Axes a STREAM window carries (PROTOCOL.md 4.3: x, y, z); 0 only for an empty window.
STREAM_AXES = 3
# Highest accelerometer sample rate believed from a device (STREAM or HELLO): fast MEMS/piezo sensors
# reach tens of kHz; it bounds the live view's ring buffer (4 s x 100 kHz x 3 axes x 4 B = 4.8 MB).
MAX_SAMPLE_RATE_HZ = 100_000
# Largest encoded serial frame: message + CRC32, plus COBS overhead (1 byte in 254) and slack.
MAX_FRAME = 4256
# A device re-publishes its HELLO this often, so "last seen" moves even when idle.
HELLO_INTERVAL_S = 10
# A stream stops by itself after this long unless renewed: a crashed operator cannot leave it on.
STREAM_LEASE_MAX_S = 60
# A transfer idle for this long may be taken over by another operator.
XFER_STALE_S = 30
# A device in a pull transfer reports progress at most this often.
PULL_STATUS_INTERVAL_S = 0.5
# Trial activation reverts after this many seconds when XFER_COMMIT asks for 0.
DEFAULT_TRIAL_TIMEOUT_S = 300
# Public keys a device's trust store holds (PROTOCOL.md 6.2): room for a rotation and a spare.
MAX_TRUST_KEYS = 4
# Revoked (name, version) pairs a device remembers; the oldest is forgotten first.
MAX_REVOCATIONS = 32


class MsgType(IntEnum):
    HELLO = 0x01
    TELEMETRY = 0x02
    STREAM = 0x03
    ACK = 0x04
    ERROR = 0x05
    LATENCY = 0x06
    XFER_STATUS = 0x07
    EVENT = 0x08
    GET_INFO = 0x20
    STREAM_START = 0x21
    STREAM_STOP = 0x22
    XFER_BEGIN = 0x23
    XFER_CHUNK = 0x24
    XFER_QUERY = 0x25
    XFER_COMMIT = 0x26
    XFER_ABORT = 0x27
    CONFIRM = 0x28
    ROLLBACK = 0x29
    BENCHMARK = 0x2A
    REBOOT = 0x2B
    SET_FAULT = 0x2C
    ACTIVATE = 0x2D
    XFER_SIGN = 0x2E
    TRUST_ADD = 0x2F
    REVOKE = 0x30


# Why a received message was dropped, when its ProtocolError code is none of ErrorCode.
INVALID_REASON = "invalid"


def drop_reason(code: int) -> str:
    """The reason a message that failed to decode with error `code` was dropped, as the receivers
    count it (`bad_<reason>`: "malformed", "unknown_type", ...; "invalid" for an unknown code)."""
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return INVALID_REASON


class EventCode(IntEnum):
    BOOTED = 100
    TRIAL_REVERTED = 101
    FAULT_CHANGED = 102
    MODEL_ACTIVATED = 103


class DeviceState(IntEnum):
    """A HELLO's state byte (PROTOCOL.md 4.1); `label` is its word (StateLabel)."""

    OFFLINE = 0
    ONLINE = 1
    STREAMING = 2
    UPDATING = 3

    @property
    def label(self) -> StateLabel:
        """The word records, `--json` output and the fleet view use: StateLabel.OFFLINE, ..."""
        return StateLabel[self.name]

    @classmethod
    def from_wire(cls, value: int) -> DeviceState:
        """A HELLO's state byte; a value this host does not know (newer firmware) counts as ONLINE."""
        try:
            return cls(value)
        except ValueError:
            return cls.ONLINE


# A device's state as a word: what records, `--json` output, the CLI table and the fleet view hold.
# One member per DeviceState, of the same name, valued in lower case ("offline", "online", ...); a
# StrEnum, so it prints, compares and serialises as the plain word.
StateLabel = StrEnum("StateLabel", [(s.name, s.name.lower()) for s in DeviceState], module=__name__)


class Caps(IntFlag):
    STREAM = 1
    PUSH_XFER = 2
    PULL_XFER = 4
    TRIAL = 8
    BENCHMARK = 16
    FAULT_SIM = 32
    # verifies image signatures against a trust store; takes XFER_SIGN (PROTOCOL.md 6.2)
    SIGNED = 64
    # its trust store is managed over the protocol: takes TRUST_ADD and REVOKE
    TRUST_ADMIN = 128


class TelemetryFlags(IntFlag):
    ALARM = 1
    TRIAL = 2
    NO_MODEL = 4


class LatencyFlags(IntFlag):
    EMULATED = 1
    TRIAL = 2


class XferFlags(IntFlag):
    PULL = 1


class CommitMode(IntEnum):
    STORE = 0
    ACTIVATE = 1
    TRIAL = 2


class FaultMask(IntFlag):
    IMBALANCE = 1
    MISALIGNMENT = 2
    BEARING_OUTER = 4
    BEARING_INNER = 8
    LOOSENESS = 16
