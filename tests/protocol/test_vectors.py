"""The Python codec against the golden vectors the firmware must also pass (PROTOCOL.md section 10)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from app.protocol import messages as m
from app.protocol.framing import FrameDecoder, frame

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
INDEX = json.loads((VECTORS / "index.json").read_text())
BAD = json.loads((VECTORS / "bad_frames.json").read_text())


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("vector", INDEX, ids=[v["name"] for v in INDEX])
def test_decodes_to_documented_fields(vector):
    packet = m.decode((VECTORS / vector["file"]).read_bytes())
    assert packet.seq == vector["seq"]
    assert packet.msg.TYPE.name == vector["type"]
    described = packet.msg.describe()
    for key, value in vector["fields"].items():
        assert _same(described[key], value), key


@pytest.mark.parametrize("vector", INDEX, ids=[v["name"] for v in INDEX])
def test_reencodes_byte_for_byte(vector):
    raw = (VECTORS / vector["file"]).read_bytes()
    packet = m.decode(raw)
    assert m.encode(packet.msg, packet.seq) == raw
    assert frame(raw) == (VECTORS / vector["frame"]).read_bytes()


def test_frames_split_at_every_byte_boundary_still_decode():
    stream = b"".join((VECTORS / v["frame"]).read_bytes() for v in INDEX)
    decoder = FrameDecoder()
    got = [msg for i in range(len(stream)) for msg in decoder.feed(stream[i : i + 1])]
    assert got == [(VECTORS / v["file"]).read_bytes() for v in INDEX]


@pytest.mark.parametrize("bad", BAD["frames"], ids=[b["name"] for b in BAD["frames"]])
def test_bad_frame_is_dropped_counted_and_the_next_frame_survives(bad):
    good = bytes.fromhex(BAD["good_message_hex"])
    decoder = FrameDecoder()
    out = list(decoder.feed(bytes.fromhex(bad["hex"]) + frame(good)))
    assert out == [good]
    assert decoder.counters[bad["counter"]] == 1


def test_garbage_without_delimiter_then_flush_resynchronises():
    good = bytes.fromhex(BAD["good_message_hex"])
    decoder = FrameDecoder()
    assert list(decoder.feed(b"\xff\xfe line noise \x13\x37")) == []
    assert list(decoder.feed(b"\x00" + frame(good))) == [good]
