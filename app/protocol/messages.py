"""Protocol v1 messages as dataclasses, and their byte layout (firmware/PROTOCOL.md sections 3-5).

Each message class lists its fields in wire order with a layout kind; one generic packer and
unpacker serve every type, so the byte layout is written once, next to the field it describes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

import numpy as np

from app.domain.errors import ProtocolError
from app.protocol.codes import (
    HEADER_SIZE,
    MAX_CHUNK,
    MAX_PAYLOAD,
    MAX_SAMPLE_RATE_HZ,
    MIN_CHUNK,
    PROTOCOL_VERSION,
    STREAM_AXES,
    ErrorCode,
    MsgType,
)

_HEADER = struct.Struct("<BBHH")
_SCALARS = {"u8": struct.Struct("<B"), "u16": struct.Struct("<H"), "u32": struct.Struct("<I"),
            "f32": struct.Struct("<f")}
# An f32list holds at most 255 values (its count is a u8): one compiled unpacker per length gives
# Python floats in one call, where numpy would add an array and a conversion per value.
_F32LISTS = tuple(struct.Struct(f"<{n}f") for n in range(256))


def _f32(value: float) -> float:
    """Round a Python float to binary32, so a decoded message compares equal to its source.

    Beyond the binary32 range the result is +-inf, as an IEEE conversion gives (struct raises)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


@dataclass
class Message:
    """Base of every protocol message; `TYPE` and `LAYOUT` describe the wire form."""

    TYPE: ClassVar[MsgType]
    LAYOUT: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Index in LAYOUT of the first field appended by a later minor revision: a payload that ends
    # exactly before it (an older sender) decodes the rest as their defaults (PROTOCOL.md 1).
    OPTIONAL_FROM: ClassVar[int | None] = None

    def payload(self) -> bytes:
        layout = self.LAYOUT
        if self.OPTIONAL_FROM is not None:
            # appended fields still at their defaults are left out: an older receiver, and the
            # golden vectors of the revision before, see the same bytes as before
            defaults = {f.name: f.default for f in fields(self)}
            end = len(layout)
            while end > self.OPTIONAL_FROM and getattr(self, layout[end - 1][0]) == defaults[layout[end - 1][0]]:
                end -= 1
            layout = layout[:end]
        out = bytearray()
        for name, kind in layout:
            _pack_field(out, kind, getattr(self, name), name)
        return bytes(out)

    @classmethod
    def from_payload(cls, data: bytes | memoryview) -> Message:
        view = memoryview(data)
        pos = 0
        values: dict[str, Any] = {}
        for i, (name, kind) in enumerate(cls.LAYOUT):
            if cls.OPTIONAL_FROM is not None and i >= cls.OPTIONAL_FROM and pos == len(view):
                break
            values[name], pos = _unpack_field(view, pos, kind, name)
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """Plain-JSON form (bytes as hex, arrays as lists) for logs, vectors and `--json`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bytes | bytearray):
                value = value.hex()
            elif isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _pack_field(out: bytearray, kind: str, value: Any, name: str) -> None:
    try:
        if kind == "f32":
            out += _SCALARS[kind].pack(_f32(value))
        elif kind in _SCALARS:
            out += _SCALARS[kind].pack(value)
        elif kind == "str":
            raw = value.encode("utf-8")
            if len(raw) > 255:
                raise ProtocolError(f"field {name!r} is longer than 255 bytes", code=ErrorCode.BAD_ARGUMENT)
            out.append(len(raw))
            out += raw
        elif kind.startswith("bytes"):
            size = int(kind[5:])
            if len(value) != size:
                raise ProtocolError(f"field {name!r} must be {size} bytes", code=ErrorCode.BAD_ARGUMENT)
            out += value
        elif kind == "rest":
            out += value
        elif kind == "f32list":
            if len(value) > 255:
                raise ProtocolError(f"field {name!r} holds more than 255 values", code=ErrorCode.BAD_ARGUMENT)
            out.append(len(value))
            out += np.asarray(value, dtype="<f4").tobytes()
        else:  # pragma: no cover - a layout typo is a programming error
            raise AssertionError(kind)
    except struct.error as exc:
        raise ProtocolError(f"field {name!r} out of range: {exc}", code=ErrorCode.BAD_ARGUMENT) from exc


def _need(view: memoryview, pos: int, size: int, name: str) -> None:
    if pos + size > len(view):
        raise ProtocolError(f"payload ends inside field {name!r}", code=ErrorCode.MALFORMED)


def _unpack_field(view: memoryview, pos: int, kind: str, name: str) -> tuple[Any, int]:
    if kind in _SCALARS:
        st = _SCALARS[kind]
        _need(view, pos, st.size, name)
        return st.unpack_from(view, pos)[0], pos + st.size
    if kind == "str":
        _need(view, pos, 1, name)
        size = view[pos]
        _need(view, pos + 1, size, name)
        try:
            return bytes(view[pos + 1 : pos + 1 + size]).decode("utf-8"), pos + 1 + size
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"field {name!r} is not valid UTF-8", code=ErrorCode.MALFORMED) from exc
    if kind.startswith("bytes"):
        size = int(kind[5:])
        _need(view, pos, size, name)
        return bytes(view[pos : pos + size]), pos + size
    if kind == "rest":
        return bytes(view[pos:]), len(view)
    if kind == "f32list":
        _need(view, pos, 1, name)
        count = view[pos]
        _need(view, pos + 1, 4 * count, name)
        return _F32LISTS[count].unpack_from(view, pos + 1), pos + 1 + 4 * count
    raise AssertionError(kind)  # pragma: no cover


# --------------------------------------------------------------------------- device -> host


@dataclass
class Hello(Message):
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    LAYOUT: ClassVar = (
        ("proto_min", "u8"), ("proto_max", "u8"), ("caps", "u32"), ("state", "u8"),
        ("device_id", "str"), ("location", "str"), ("profile", "str"), ("firmware", "str"),
        ("model_name", "str"), ("model_version", "u32"), ("model_sha", "bytes8"),
        ("prev_version", "u32"), ("trial", "u8"), ("slot_size", "u32"), ("free_slot", "u32"),
        ("ram_budget", "u32"), ("max_chunk", "u16"), ("sample_rate", "u32"), ("uptime_s", "u32"),
        ("fault_mask", "u8"), ("trust_keys", "u8"),
    )
    OPTIONAL_FROM: ClassVar = 20  # trust_keys (PROTOCOL.md 6.2)
    proto_min: int = 1
    proto_max: int = 1
    caps: int = 0
    state: int = 1
    device_id: str = ""
    location: str = ""
    profile: str = ""
    firmware: str = ""
    model_name: str = ""
    model_version: int = 0
    model_sha: bytes = b"\0" * 8
    prev_version: int = 0
    trial: int = 0
    slot_size: int = 0
    free_slot: int = 0
    ram_budget: int = 0
    max_chunk: int = 0
    sample_rate: int = 0
    uptime_s: int = 0
    fault_mask: int = 0
    trust_keys: int = 0  # public keys in the device's trust store; 0 with caps SIGNED: not provisioned

    @property
    def site(self) -> str:
        return self.location.split("/", 1)[0] if self.location else "default"

    def clamped(self) -> Hello:
        """This HELLO with the values that size the host's work held to sane bounds.

        A retained HELLO is whatever anyone with publish rights left on the broker: a spoofed
        `max_chunk = 1` must not turn a deployment into one round trip per byte, nor a huge
        `sample_rate` size a buffer. 0 keeps its meaning ("not said")."""
        max_chunk = min(max(self.max_chunk, MIN_CHUNK), MAX_CHUNK) if self.max_chunk else 0
        sample_rate = min(self.sample_rate, MAX_SAMPLE_RATE_HZ)
        if (max_chunk, sample_rate) == (self.max_chunk, self.sample_rate):
            return self
        return replace(self, max_chunk=max_chunk, sample_rate=sample_rate)


@dataclass
class Telemetry(Message):
    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    LAYOUT: ClassVar = (
        ("uptime_ms", "u32"), ("window_seq", "u32"), ("model_version", "u32"), ("score", "f32"),
        ("threshold", "f32"), ("flags", "u8"), ("shaft_hz", "f32"), ("features", "f32list"),
    )
    uptime_ms: int = 0
    window_seq: int = 0
    model_version: int = 0
    score: float = 0.0
    threshold: float = 0.0
    flags: int = 0
    shaft_hz: float = 0.0
    features: tuple[float, ...] = ()

    # The fixed part up to and including the feature count, read in one unpack (see from_payload).
    _HEAD: ClassVar = struct.Struct("<IIIffBfB")

    def __post_init__(self) -> None:
        self.score = _f32(self.score)
        self.threshold = _f32(self.threshold)
        self.shaft_hz = _f32(self.shaft_hz)
        self.features = tuple(_f32(v) for v in self.features)

    @classmethod
    def from_payload(cls, data: bytes | memoryview) -> Telemetry:
        """The fleet's hottest message (every device, every window): two unpacks instead of one per
        field, and no constructor rounding, since values read as binary32 already are binary32.
        A payload too short for its feature count goes through the generic parser, which names the
        field it ends in; bytes after the features (a later revision's fields) are ignored as there."""
        head = cls._HEAD
        if len(data) >= head.size:
            uptime_ms, window_seq, model_version, score, threshold, flags, shaft_hz, count = \
                head.unpack_from(data, 0)
            if len(data) >= head.size + 4 * count:
                msg = cls.__new__(cls)
                msg.__dict__.update(uptime_ms=uptime_ms, window_seq=window_seq, model_version=model_version,
                                    score=score, threshold=threshold, flags=flags, shaft_hz=shaft_hz,
                                    features=_F32LISTS[count].unpack_from(data, head.size))
                return msg
        return super().from_payload(data)


@dataclass(eq=False)
class Stream(Message):
    """A raw window: `samples` is an int16 array of shape (n, axes); g = samples * scale."""

    TYPE: ClassVar[MsgType] = MsgType.STREAM
    window_seq: int = 0
    sample_rate: int = 0
    scale: float = 0.0
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int16))

    _HEAD: ClassVar = struct.Struct("<IIfHB")

    def __post_init__(self) -> None:
        self.scale = _f32(self.scale)
        self.samples = np.asarray(self.samples, dtype=np.int16)
        if self.samples.ndim != 2:
            raise ProtocolError("stream samples must be a (n, axes) array", code=ErrorCode.BAD_ARGUMENT)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stream) and self.window_seq == other.window_seq
                and self.sample_rate == other.sample_rate and self.scale == other.scale
                and np.array_equal(self.samples, other.samples))

    def payload(self) -> bytes:
        n, axes = self.samples.shape
        return self._HEAD.pack(self.window_seq, self.sample_rate, self.scale, n, axes) + \
            self.samples.astype("<i2").tobytes()

    @classmethod
    def from_payload(cls, data: bytes | memoryview) -> Stream:
        if len(data) < cls._HEAD.size:
            raise ProtocolError("stream payload shorter than its header", code=ErrorCode.MALFORMED)
        window_seq, rate, scale, n, axes = cls._HEAD.unpack_from(data, 0)
        # what a receiver sizes buffers and plots from is checked here, once, for every transport
        if axes != STREAM_AXES and not (axes == 0 and n == 0):
            raise ProtocolError(f"stream has {axes} axes, expected {STREAM_AXES}", code=ErrorCode.MALFORMED)
        if not 1 <= rate <= MAX_SAMPLE_RATE_HZ:
            raise ProtocolError(f"stream sample rate {rate} Hz outside 1..{MAX_SAMPLE_RATE_HZ}",
                                code=ErrorCode.MALFORMED)
        body = memoryview(data)[cls._HEAD.size :]
        if len(body) != n * axes * 2:
            raise ProtocolError(f"stream holds {len(body)} sample bytes, header says {n * axes * 2}",
                                code=ErrorCode.MALFORMED)
        if axes:
            samples = np.frombuffer(body, dtype="<i2").reshape(n, axes).astype(np.int16)
        else:  # an empty window: the same (0, 3) shape as one built here
            samples = np.zeros((0, STREAM_AXES), dtype=np.int16)
        return cls(window_seq, rate, scale, samples)

    def describe(self) -> dict[str, Any]:
        return {"window_seq": self.window_seq, "sample_rate": self.sample_rate, "scale": self.scale,
                "samples": self.samples.tolist()}

    def acceleration_g(self) -> np.ndarray:
        return self.samples.astype(np.float32) * np.float32(self.scale)


@dataclass
class Ack(Message):
    TYPE: ClassVar[MsgType] = MsgType.ACK
    LAYOUT: ClassVar = (("ref_type", "u8"),)
    ref_type: int = 0


@dataclass
class Error(Message):
    TYPE: ClassVar[MsgType] = MsgType.ERROR
    LAYOUT: ClassVar = (("ref_type", "u8"), ("code", "u16"), ("message", "str"))
    ref_type: int = 0
    code: int = 0
    message: str = ""


@dataclass
class Latency(Message):
    TYPE: ClassVar[MsgType] = MsgType.LATENCY
    LAYOUT: ClassVar = (
        ("model_version", "u32"), ("flags", "u8"), ("deploy_us", "u32"), ("load_us", "u32"),
        ("n", "u16"), ("min_us", "u32"), ("median_us", "u32"), ("p95_us", "u32"), ("max_us", "u32"),
    )
    model_version: int = 0
    flags: int = 0
    deploy_us: int = 0
    load_us: int = 0
    n: int = 0
    min_us: int = 0
    median_us: int = 0
    p95_us: int = 0
    max_us: int = 0


@dataclass
class XferStatus(Message):
    TYPE: ClassVar[MsgType] = MsgType.XFER_STATUS
    LAYOUT: ClassVar = (
        ("transfer_id", "u32"), ("image_size", "u32"), ("chunk_size", "u16"), ("n_chunks", "u32"),
        ("received", "u32"), ("bitmap", "rest"),
    )
    transfer_id: int = 0
    image_size: int = 0
    chunk_size: int = 0
    n_chunks: int = 0
    received: int = 0
    bitmap: bytes = b""

    @classmethod
    def from_payload(cls, data: bytes | memoryview) -> XferStatus:
        """The bitmap is exactly ceil(n_chunks / 8) bytes: fewer is MALFORMED, more is a later field."""
        msg = super().from_payload(data)
        size = -(-msg.n_chunks // 8)
        if len(msg.bitmap) < size:
            raise ProtocolError(f"bitmap of {len(msg.bitmap)} bytes cannot cover {msg.n_chunks} chunks",
                                code=ErrorCode.MALFORMED)
        msg.bitmap = msg.bitmap[:size]
        return msg

    def has(self, index: int) -> bool:
        byte = index // 8
        return byte < len(self.bitmap) and bool(self.bitmap[byte] & (1 << (index % 8)))

    def missing(self) -> list[int]:
        return [i for i in range(self.n_chunks) if not self.has(i)]


@dataclass
class Event(Message):
    TYPE: ClassVar[MsgType] = MsgType.EVENT
    LAYOUT: ClassVar = (("code", "u16"), ("message", "str"))
    code: int = 0
    message: str = ""


# --------------------------------------------------------------------------- host -> device

# The reply type a command names: `channel.request(GetInfo())` returns a Packet[Hello].
ReplyT = TypeVar("ReplyT", bound=Message)


@dataclass
class Request(Message, Generic[ReplyT]):
    """A host -> device command. Its parameter names the replies that answer it (PROTOCOL.md
    section 3; ERROR answers any): `class GetInfo(Request[Hello])`, and `REPLY` holds them at
    run time, (Hello,), so a channel matches replies by type without a table of its own."""

    REPLY: ClassVar[tuple[type[Message], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for parent in getattr(cls, "__orig_bases__", ()):
            if get_origin(parent) is Request:
                (reply,) = get_args(parent)
                cls.REPLY = get_args(reply) or (reply,)



@dataclass
class GetInfo(Request[Hello]):
    TYPE: ClassVar[MsgType] = MsgType.GET_INFO


@dataclass
class StreamStart(Request[Ack]):
    TYPE: ClassVar[MsgType] = MsgType.STREAM_START
    LAYOUT: ClassVar = (("lease_s", "u16"),)
    lease_s: int = 0


@dataclass
class StreamStop(Request[Ack]):
    TYPE: ClassVar[MsgType] = MsgType.STREAM_STOP


@dataclass
class XferBegin(Request[XferStatus]):
    TYPE: ClassVar[MsgType] = MsgType.XFER_BEGIN
    LAYOUT: ClassVar = (
        ("transfer_id", "u32"), ("image_size", "u32"), ("chunk_size", "u16"), ("flags", "u8"),
        ("sha256", "bytes32"), ("model_name", "str"), ("model_version", "u32"), ("source", "str"),
    )
    transfer_id: int = 0
    image_size: int = 0
    chunk_size: int = 0
    flags: int = 0
    sha256: bytes = b"\0" * 32
    model_name: str = ""
    model_version: int = 0
    source: str = ""


@dataclass
class XferChunk(Request[Ack]):
    TYPE: ClassVar[MsgType] = MsgType.XFER_CHUNK
    LAYOUT: ClassVar = (("transfer_id", "u32"), ("index", "u32"), ("crc32", "u32"), ("data", "rest"))
    transfer_id: int = 0
    index: int = 0
    crc32: int = 0
    data: bytes = b""


@dataclass
class XferQuery(Request[XferStatus]):
    TYPE: ClassVar[MsgType] = MsgType.XFER_QUERY
    LAYOUT: ClassVar = (("transfer_id", "u32"),)
    transfer_id: int = 0


@dataclass
class XferCommit(Request[Latency]):
    TYPE: ClassVar[MsgType] = MsgType.XFER_COMMIT
    LAYOUT: ClassVar = (("transfer_id", "u32"), ("mode", "u8"), ("trial_timeout_s", "u16"),
                        ("bench_count", "u16"))
    transfer_id: int = 0
    mode: int = 1
    trial_timeout_s: int = 0
    bench_count: int = 0


@dataclass
class XferAbort(Request[Ack]):
    TYPE: ClassVar[MsgType] = MsgType.XFER_ABORT
    LAYOUT: ClassVar = (("transfer_id", "u32"),)
    transfer_id: int = 0


@dataclass
class Confirm(Request[Hello | Ack]):
    TYPE: ClassVar[MsgType] = MsgType.CONFIRM


@dataclass
class Rollback(Request[Hello]):
    TYPE: ClassVar[MsgType] = MsgType.ROLLBACK


@dataclass
class Benchmark(Request[Latency]):
    TYPE: ClassVar[MsgType] = MsgType.BENCHMARK
    LAYOUT: ClassVar = (("count", "u16"),)
    count: int = 0


@dataclass
class Reboot(Request[Hello | Ack]):
    TYPE: ClassVar[MsgType] = MsgType.REBOOT


@dataclass
class SetFault(Request[Ack]):
    TYPE: ClassVar[MsgType] = MsgType.SET_FAULT
    LAYOUT: ClassVar = (("mask", "u8"), ("severity", "f32"))
    mask: int = 0
    severity: float = 0.0

    def __post_init__(self) -> None:
        self.severity = _f32(self.severity)


@dataclass
class Activate(Request[Latency]):
    TYPE: ClassVar[MsgType] = MsgType.ACTIVATE
    LAYOUT: ClassVar = (("trial", "u8"), ("trial_timeout_s", "u16"), ("bench_count", "u16"))
    trial: int = 0
    trial_timeout_s: int = 0
    bench_count: int = 0


@dataclass
class XferSign(Request[Ack]):
    """The signature block (PROTOCOL.md 6.2) of the image a transfer carries; checked at COMMIT."""

    TYPE: ClassVar[MsgType] = MsgType.XFER_SIGN
    LAYOUT: ClassVar = (("transfer_id", "u32"), ("block", "bytes80"))
    transfer_id: int = 0
    block: bytes = b"\0" * 80


@dataclass
class TrustAdd(Request[Hello]):
    """Add a public key to the device's trust store: taken while the store is empty, else only
    with `auth`, a signature block by a key it already trusts over the key-add statement."""

    TYPE: ClassVar[MsgType] = MsgType.TRUST_ADD
    LAYOUT: ClassVar = (("public_key", "bytes32"), ("auth", "bytes80"))
    public_key: bytes = b"\0" * 32
    auth: bytes = b"\0" * 80


@dataclass
class Revoke(Request[Ack]):
    """Revoke one model version, signed by a trusted key: the device refuses it from now on."""

    TYPE: ClassVar[MsgType] = MsgType.REVOKE
    LAYOUT: ClassVar = (("model_name", "str"), ("model_version", "u32"), ("auth", "bytes80"))
    model_name: str = ""
    model_version: int = 0
    auth: bytes = b"\0" * 80


MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (Hello, Telemetry, Stream, Ack, Error, Latency, XferStatus, Event, GetInfo, StreamStart,
                StreamStop, XferBegin, XferChunk, XferQuery, XferCommit, XferAbort, Confirm, Rollback,
                Benchmark, Reboot, SetFault, Activate, XferSign, TrustAdd, Revoke)
}


MessageT = TypeVar("MessageT", bound=Message)


@dataclass(frozen=True)
class Packet(Generic[MessageT]):
    """A decoded message with its header sequence number (a request's reply: Packet[its REPLY])."""

    seq: int
    msg: MessageT


def encode(msg: Message, seq: int = 0) -> bytes:
    """Header + payload, the form MQTT carries and serial frames wrap."""
    try:
        body = msg.payload()
    except (struct.error, OverflowError) as exc:  # a field outside its wire type (u8, u16, u32, ...)
        raise ProtocolError(f"{msg.TYPE.name} cannot be encoded: {exc}", code=ErrorCode.BAD_ARGUMENT) from exc
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError(f"{msg.TYPE.name} payload of {len(body)} bytes exceeds {MAX_PAYLOAD}",
                            code=ErrorCode.BAD_ARGUMENT)
    return _HEADER.pack(PROTOCOL_VERSION, int(msg.TYPE), seq & 0xFFFF, len(body)) + body


def decode(data: bytes | bytearray | memoryview) -> Packet:
    """Parse one message; raises ProtocolError whose `code` is the protocol error to answer."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"message of {len(data)} bytes is shorter than the header", code=ErrorCode.MALFORMED)
    version, mtype, seq, length = _HEADER.unpack_from(data, 0)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} not supported", code=ErrorCode.UNSUPPORTED_VERSION)
    if length != len(data) - HEADER_SIZE:
        raise ProtocolError(f"header says {length} payload bytes, message holds {len(data) - HEADER_SIZE}",
                            code=ErrorCode.MALFORMED)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}", code=ErrorCode.MALFORMED)
    cls = MESSAGE_CLASSES.get(mtype)
    if cls is None:
        raise ProtocolError(f"unknown message type 0x{mtype:02x}", code=ErrorCode.UNKNOWN_TYPE)
    return Packet(seq, cls.from_payload(memoryview(data)[HEADER_SIZE:]))


def peek_type(data: bytes) -> int | None:
    """The type byte of an encoded message, for replying ERROR to one that does not decode."""
    return data[1] if len(data) >= 2 else None
