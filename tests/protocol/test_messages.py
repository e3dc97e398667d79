"""Decoder rejections with the protocol error a device would answer."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from app.domain.errors import ProtocolError
from app.protocol import messages as m
from app.protocol.codes import MAX_PAYLOAD, MAX_SAMPLE_RATE_HZ, ErrorCode


def test_wrong_version_is_unsupported_version():
    raw = bytearray(m.encode(m.GetInfo(), 1))
    raw[0] = 2
    with pytest.raises(ProtocolError) as err:
        m.decode(bytes(raw))
    assert err.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_unknown_type():
    with pytest.raises(ProtocolError) as err:
        m.decode(struct.pack("<BBHH", 1, 0x7F, 0, 0))
    assert err.value.code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("cut", [1, 5, 10, 20])
def test_truncated_payload_is_malformed(cut):
    raw = m.encode(m.Hello(device_id="sim-001", location="a/b/c"), 1)
    body = raw[6:-cut]
    with pytest.raises(ProtocolError) as err:
        m.decode(struct.pack("<BBHH", 1, 1, 1, len(body)) + body)
    assert err.value.code == ErrorCode.MALFORMED


def test_length_field_must_match():
    raw = bytearray(m.encode(m.Benchmark(3), 1))
    raw[4] += 1
    with pytest.raises(ProtocolError) as err:
        m.decode(bytes(raw))
    assert err.value.code == ErrorCode.MALFORMED


def test_invalid_utf8_in_device_id_is_malformed():
    raw = bytearray(m.encode(m.Hello(device_id="abc"), 1))
    at = raw.index(b"abc")
    raw[at] = 0xFF
    with pytest.raises(ProtocolError) as err:
        m.decode(bytes(raw))
    assert err.value.code == ErrorCode.MALFORMED


def test_extra_trailing_bytes_are_ignored_for_forward_compatibility():
    body = m.Benchmark(9).payload() + b"\x01\x02"
    packet = m.decode(struct.pack("<BBHH", 1, 0x2A, 5, len(body)) + body)
    assert packet.msg == m.Benchmark(9)


def test_stream_with_inconsistent_sample_count_is_malformed():
    raw = bytearray(m.encode(m.Stream(1, 3200, 0.001, np.zeros((4, 3), np.int16)), 1))
    body = bytes(raw[6:-2])
    with pytest.raises(ProtocolError) as err:
        m.decode(struct.pack("<BBHH", 1, 3, 1, len(body)) + body)
    assert err.value.code == ErrorCode.MALFORMED


def test_oversized_payload_refused_on_encode():
    with pytest.raises(ProtocolError):
        m.encode(m.XferChunk(1, 0, 0, bytes(MAX_PAYLOAD)))


def test_string_longer_than_255_bytes_refused_on_encode():
    with pytest.raises(ProtocolError):
        m.encode(m.Error(1, 1, "x" * 300))


def test_xfer_status_bitmap_helpers():
    status = m.XferStatus(1, 5000, 1024, 5, 3, bytes([0b10101]))
    assert [status.has(i) for i in range(5)] == [True, False, True, False, True]
    assert status.missing() == [1, 3]


def _stream_bytes(sample_rate: int, n: int, axes: int) -> bytes:
    body = struct.pack("<IIfHB", 1, sample_rate, 0.001, n, axes) + bytes(n * axes * 2)
    return struct.pack("<BBHH", 1, 3, 1, len(body)) + body


@pytest.mark.parametrize(("sample_rate", "n", "axes"), [
    (3200, 4, 1), (3200, 4, 2), (3200, 2, 4), (3200, 1, 255), (3200, 4, 0),  # axes other than 3
    (0, 4, 3), (0xFFFFFFFF, 4, 3), (MAX_SAMPLE_RATE_HZ + 1, 4, 3),  # a rate that would size a buffer
])
def test_stream_with_bad_axes_or_sample_rate_is_malformed(sample_rate, n, axes):
    with pytest.raises(ProtocolError) as err:
        m.decode(_stream_bytes(sample_rate, n, axes))
    assert err.value.code == ErrorCode.MALFORMED


def test_stream_at_the_bounds_decodes():
    assert m.decode(_stream_bytes(MAX_SAMPLE_RATE_HZ, 4, 3)).msg.samples.shape == (4, 3)
    assert m.decode(_stream_bytes(1, 0, 0)).msg.samples.shape == (0, 3)  # an empty window keeps its shape
