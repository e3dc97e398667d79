"""Hypothesis: random and mutated input never breaks the decoders; every message type round-trips."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import ProtocolError
from app.protocol import messages as m
from app.protocol.codes import MAX_SAMPLE_RATE_HZ
from app.protocol.framing import FrameDecoder, frame

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
f32 = st.floats(width=32, allow_nan=False)
text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)

_STRATEGIES = [
    st.builds(m.Hello, proto_min=u8, proto_max=u8, caps=u32, state=u8, device_id=text, location=text, profile=text,
              firmware=text, model_name=text, model_version=u32, model_sha=st.binary(min_size=8, max_size=8),
              prev_version=u32, trial=u8, slot_size=u32, free_slot=u32, ram_budget=u32, max_chunk=u16,
              sample_rate=u32, uptime_s=u32, fault_mask=u8, trust_keys=u8),
    st.builds(m.Telemetry, uptime_ms=u32, window_seq=u32, model_version=u32, score=f32, threshold=f32, flags=u8,
              shaft_hz=f32, features=st.lists(f32, max_size=40).map(tuple)),
    st.builds(m.Stream, window_seq=u32, sample_rate=st.integers(1, MAX_SAMPLE_RATE_HZ), scale=f32,
              samples=st.lists(st.integers(-32768, 32767), max_size=60).map(
                  lambda v: np.array(v[: len(v) // 3 * 3], dtype=np.int16).reshape(-1, 3))),
    st.builds(m.Ack, ref_type=u8),
    st.builds(m.Error, ref_type=u8, code=u16, message=text),
    st.builds(m.Latency, model_version=u32, flags=u8, deploy_us=u32, load_us=u32, n=u16, min_us=u32, median_us=u32,
              p95_us=u32, max_us=u32),
    # the bitmap is exactly ceil(n_chunks / 8) bytes (PROTOCOL.md 4.5)
    st.integers(0, 512).flatmap(lambda n: st.builds(
        m.XferStatus, transfer_id=u32, image_size=u32, chunk_size=u16, n_chunks=st.just(n), received=u32,
        bitmap=st.binary(min_size=-(-n // 8), max_size=-(-n // 8)))),
    st.builds(m.Event, code=u16, message=text),
    st.builds(m.GetInfo), st.builds(m.StreamStart, lease_s=u16), st.builds(m.StreamStop),
    st.builds(m.XferBegin, transfer_id=u32, image_size=u32, chunk_size=u16, flags=u8,
              sha256=st.binary(min_size=32, max_size=32), model_name=text, model_version=u32, source=text),
    st.builds(m.XferChunk, transfer_id=u32, index=u32, crc32=u32, data=st.binary(max_size=4096)),
    st.builds(m.XferQuery, transfer_id=u32),
    st.builds(m.XferCommit, transfer_id=u32, mode=u8, trial_timeout_s=u16, bench_count=u16),
    st.builds(m.XferAbort, transfer_id=u32), st.builds(m.Confirm), st.builds(m.Rollback),
    st.builds(m.Benchmark, count=u16), st.builds(m.Reboot), st.builds(m.SetFault, mask=u8, severity=f32),
    st.builds(m.Activate, trial=u8, trial_timeout_s=u16, bench_count=u16),
    st.builds(m.XferSign, transfer_id=u32, block=st.binary(min_size=80, max_size=80)),
    st.builds(m.TrustAdd, public_key=st.binary(min_size=32, max_size=32), auth=st.binary(min_size=80, max_size=80)),
    st.builds(m.Revoke, model_name=text, model_version=u32, auth=st.binary(min_size=80, max_size=80)),
]
MESSAGES = st.one_of(_STRATEGIES)


def test_every_message_type_is_covered() -> None:
    assert len(_STRATEGIES) == len(m.MESSAGE_CLASSES)


@settings(max_examples=300, deadline=None)
@given(MESSAGES, u16)
def test_round_trip_through_codec_and_framing(msg: m.Message, seq: int) -> None:
    raw = m.encode(msg, seq)
    assert m.decode(raw) == m.Packet(seq, msg)
    out = list(FrameDecoder().feed(frame(raw)))
    assert out == [raw]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_into_decode_raise_only_protocol_error(data: bytes) -> None:
    try:
        m.decode(data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_into_frame_decoder_never_raise(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        for message in decoder.feed(chunk):
            try:
                m.decode(message)
            except ProtocolError:
                pass


@settings(max_examples=300, deadline=None)
@given(MESSAGES, st.data())
def test_mutated_valid_messages_decode_or_raise_protocol_error(msg: m.Message, data: st.DataObject) -> None:
    raw = bytearray(m.encode(msg, 1))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "length"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw[4:6] = data.draw(u16).to_bytes(2, "little")
    try:
        m.decode(bytes(raw))
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(MESSAGES, st.data())
def test_mutated_frames_lose_only_themselves(msg: m.Message, data: st.DataObject) -> None:
    good = frame(m.encode(m.Ack(ref_type=7), 5))
    bad = bytearray(frame(m.encode(msg, 1)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(bad) - 1))
        bad[i] = data.draw(u8)
    decoder = FrameDecoder()
    out = list(decoder.feed(good + bytes(bad) + b"\x00" + good))
    assert out[0] == out[-1] == m.encode(m.Ack(ref_type=7), 5)
