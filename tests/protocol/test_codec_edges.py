"""The codec, topics and image container: each test failed before its fix."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from app.domain.errors import ModelError, ProtocolError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import ErrorCode
from app.protocol.image import ModelImage


@pytest.mark.parametrize("bad", ["sim-001\n", "plant-a\n", "\nsim-001", "sim 001", "a/b", "+", "#", ""])
def test_ids_with_newline_or_topic_characters_are_invalid(bad: str) -> None:
    # `$` in a regex also matches before a trailing newline: "sim-001\n" was accepted as an id
    assert not topics.valid_id(bad)


def test_valid_ids_still_pass() -> None:
    assert topics.valid_id("sim-001") and topics.valid_id("plant_a.b-1") and topics.valid_id("x" * 64)
    assert not topics.valid_id("x" * 65)


def _status_payload(n_chunks: int, bitmap: bytes) -> bytes:
    body = struct.pack("<IIHII", 7, 4096, 1024, n_chunks, 0) + bitmap
    return struct.pack("<BBHH", 1, 0x07, 1, len(body)) + body


def test_xfer_status_with_a_short_bitmap_is_malformed() -> None:
    # 20 chunks need 3 bitmap bytes: a shorter payload is MALFORMED (PROTOCOL.md section 1)
    with pytest.raises(ProtocolError) as err:
        m.decode(_status_payload(20, b"\xff\xff"))
    assert err.value.code == ErrorCode.MALFORMED


def test_xfer_status_claiming_billions_of_chunks_is_rejected_not_iterated() -> None:
    # a broken device's n_chunks = 2^32-1 with a tiny bitmap would make `missing()` loop for minutes
    with pytest.raises(ProtocolError) as err:
        m.decode(_status_payload(0xFFFFFFFF, b"\x00"))
    assert err.value.code == ErrorCode.MALFORMED


def test_xfer_status_ignores_bytes_appended_after_its_bitmap() -> None:
    # a later minor revision may append fields: they must not become part of the bitmap
    st = m.decode(_status_payload(9, b"\xff\x01" + b"\xaa\xbb")).msg
    assert isinstance(st, m.XferStatus)
    assert st.bitmap == b"\xff\x01" and st.missing() == []
    again = m.decode(m.encode(st, 1)).msg
    assert again == st


def test_xfer_status_round_trip_unchanged() -> None:
    st = m.XferStatus(3, 10_000, 1024, 10, 2, bytes([0b101, 0]))
    assert m.decode(m.encode(st, 9)).msg == st
    assert st.missing() == [1, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
def test_out_of_range_f32_becomes_infinity_not_an_overflow_traceback(value: float) -> None:
    # `tinymlops sim fault --severity 1e39` used to die with OverflowError inside the codec; binary32
    # conversion overflows to +-inf, and the device then refuses it with BAD_ARGUMENT
    msg = m.SetFault(1, value)
    got = m.decode(m.encode(msg, 1)).msg
    assert math.isinf(got.severity) and math.copysign(1, got.severity) == math.copysign(1, value)
    tel = m.Telemetry(score=value, threshold=1.0, features=(value, 0.5))
    back = m.decode(m.encode(tel, 2)).msg
    assert math.isinf(back.score) and math.isinf(back.features[0]) and back.features[1] == 0.5


def test_image_whose_name_runs_past_its_meta_section_is_rejected() -> None:
    img = ModelImage("pump-ae", 3, 0.5, np.zeros(2, np.float32), np.ones(2, np.float32), b"\0" * 32)
    raw = bytearray(img.to_bytes())
    # META data starts after the 16-byte image header and 16-byte section header; name length at +12
    assert raw[32 + 12] == len("pump-ae")
    raw[32 + 12] = 200  # claims 200 name bytes, the section holds 7
    with pytest.raises(ModelError, match="name"):
        ModelImage.from_bytes(bytes(raw))


def test_a_field_outside_its_wire_type_is_a_protocol_error_not_a_struct_error():
    import numpy as np

    from app.domain.errors import ProtocolError
    from app.protocol import messages as msgs
    from app.protocol.codes import ErrorCode

    for msg in (msgs.Benchmark(70000), msgs.Stream(1, 3200, 0.001, np.zeros((1, 300), np.int16)),
                msgs.Latency(model_version=-1)):
        with pytest.raises(ProtocolError) as err:
            msgs.encode(msg, 1)
        assert err.value.code == ErrorCode.BAD_ARGUMENT, err.value
