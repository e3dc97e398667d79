"""The firmware on an emulated Cortex-M4 (QEMU mps2-an386), spoken to over protocol v1 on its
serial socket: presence, telemetry, fault simulation, streaming, trial and every bad input the
issue names (each answered with its error code while the device keeps running)."""

from __future__ import annotations

import dataclasses
import random
import statistics
import zlib

import pytest

from app.domain.errors import DeviceError
from app.ml.tflm import Scorer
from app.protocol import messages as m
from app.protocol.codes import Caps, ErrorCode, EventCode, FaultMask, LatencyFlags, TelemetryFlags
from app.protocol.image import ModelImage, sha256
from tests.firmware.conftest import DATA, SMALL_ARENA
from tests.firmware.helpers import Device, framed, raw_exchange

# Chunk size of the out-of-order transfer: 1 KB cuts fw_test_v2.tmlm (11 968 B) into 12 chunks,
# enough for a shuffle to put most of them out of place (the device's largest is 4096).
SMALL_CHUNK = 1024
# A fixed shuffle, so a failure is reproducible.
SHUFFLE_SEED = 3
# Arena for the host-side TFLM scorer: these 36-feature models need about 4 KB.
HOST_ARENA = 64 * 1024


def test_hello_and_telemetry(qemu_device):
    with Device(qemu_device.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert isinstance(hello, m.Hello)
        assert hello.profile == "qemu-mps2-an386"
        assert hello.model_name == "factory" and hello.model_version >= 1
        assert hello.caps & Caps.PUSH_XFER and hello.caps & Caps.FAULT_SIM and not hello.caps & Caps.PULL_XFER
        assert hello.slot_size == 1024 * 1024 and hello.ram_budget == 256 * 1024 and hello.max_chunk == 4096
        tel = dev.telemetry(2)
        assert tel[1].window_seq == tel[0].window_seq + 1
        for t in tel:
            assert len(t.features) == 36
            assert t.model_version == hello.model_version
            assert not t.flags & TelemetryFlags.NO_MODEL
            assert 0 < t.score < t.threshold  # a healthy machine
            assert 20 < t.shaft_hz < 30  # 24.7 Hz shaft, one 3.1 Hz bin of resolution


def test_set_fault_raises_score(qemu_device):
    with Device(qemu_device.url) as dev:
        healthy = statistics.mean(t.score for t in dev.telemetry(2))
        ack = dev.request(m.SetFault(int(FaultMask.IMBALANCE), 1.0)).msg
        assert isinstance(ack, m.Ack)
        assert dev.wait_for(m.Event).code == EventCode.FAULT_CHANGED
        faulty = dev.telemetry(2)
        assert all(t.flags & TelemetryFlags.ALARM for t in faulty)
        assert min(t.score for t in faulty) > 10 * healthy
        assert dev.request(m.GetInfo()).msg.fault_mask == FaultMask.IMBALANCE


def test_garbage_and_corrupt_frames_are_dropped(qemu_device):
    good = framed(m.GetInfo(), 7)
    bad_crc = bytearray(framed(m.GetInfo(), 8))
    bad_crc[3] ^= 0x01
    garbage = bytes(range(1, 200)) + b"\x00" + b"\xff" * 5000 + b"\x00"  # junk, then an oversized frame
    replies = raw_exchange(qemu_device.port, garbage + bytes(bad_crc) + good)
    hellos = [p for p in replies if isinstance(p.msg, m.Hello)]
    assert [p.seq for p in hellos] == [7]  # only the good frame got an answer


@pytest.mark.parametrize(("raw", "code"), [
    (bytes([1, 0x7E, 1, 0, 0, 0]), ErrorCode.UNKNOWN_TYPE),
    (bytes([9, 0x20, 1, 0, 0, 0]), ErrorCode.UNSUPPORTED_VERSION),
    (bytes([1, 0x2A, 1, 0, 1, 0, 5]), ErrorCode.MALFORMED),  # BENCHMARK with half its u16
    (bytes([1, 0x2A, 1, 0, 9, 0, 5, 0]), ErrorCode.MALFORMED),  # length field says more than it holds
])
def test_undecodable_messages_get_error_codes(qemu_device, raw, code):
    from app.protocol.framing import frame

    replies = raw_exchange(qemu_device.port, frame(raw))
    errors = [p.msg for p in replies if isinstance(p.msg, m.Error)]
    assert [e.code for e in errors] == [code]
    assert replies[0].seq == 1


def _error_code(dev: Device, msg: m.Message) -> int:
    with pytest.raises(DeviceError) as info:
        dev.request(msg)
    return info.value.code


def test_transfer_errors_leave_the_model_running(qemu_device):
    image = (DATA / "fw_test_v2.tmlm").read_bytes()
    with Device(qemu_device.url) as dev:
        before = dev.request(m.GetInfo()).msg
        assert _error_code(dev, m.XferQuery(99)) == ErrorCode.NO_TRANSFER
        assert _error_code(dev, m.XferChunk(99, 0, 0, b"x")) == ErrorCode.NO_TRANSFER
        assert _error_code(dev, m.Confirm()) == ErrorCode.NOT_TRIAL
        assert _error_code(dev, m.XferBegin(1, 2 * 1024 * 1024, 1024, 0, sha256(image))) == ErrorCode.TOO_LARGE
        assert _error_code(dev, m.XferBegin(1, len(image), 0, 0, sha256(image))) == ErrorCode.BAD_ARGUMENT
        assert _error_code(dev, m.XferBegin(1, len(image), 1024, 1, sha256(image), source="x")) == \
            ErrorCode.BAD_ARGUMENT  # PULL: this serial-only device cannot fetch from a broker
        assert _error_code(dev, m.SetFault(1, 7.5)) == ErrorCode.BAD_ARGUMENT
        wrong_sha = bytes(32)
        status = dev.request(m.XferBegin(5, len(image), 4096, 0, wrong_sha, "fw-test", 2)).msg
        assert isinstance(status, m.XferStatus) and status.n_chunks == 3 and status.missing() == [0, 1, 2]
        chunk0 = image[:4096]
        assert _error_code(dev, m.XferChunk(5, 0, zlib.crc32(chunk0) ^ 1, chunk0)) == ErrorCode.CHUNK_CRC
        assert _error_code(dev, m.XferChunk(5, 7, zlib.crc32(chunk0), chunk0)) == ErrorCode.CHUNK_RANGE
        assert _error_code(dev, m.XferChunk(5, 2, zlib.crc32(chunk0), chunk0)) == ErrorCode.CHUNK_RANGE
        assert _error_code(dev, m.XferCommit(5, 1)) == ErrorCode.INCOMPLETE
        for i in range(3):
            data = image[i * 4096:(i + 1) * 4096]
            assert isinstance(dev.request(m.XferChunk(5, i, zlib.crc32(data), data)).msg, m.Ack)
        status = dev.request(m.XferQuery(5)).msg
        assert status.received == 3 and status.missing() == []
        assert _error_code(dev, m.XferCommit(5, 1)) == ErrorCode.HASH_MISMATCH
        _assert_model_unchanged(dev, before)


def test_chunks_out_of_order_commit_and_run(qemu_device):
    image = (DATA / "fw_test_v2.tmlm").read_bytes()
    order = list(range(-(-len(image) // SMALL_CHUNK)))
    random.Random(SHUFFLE_SEED).shuffle(order)
    assert order[-1] != len(order) - 1 and sum(i != k for k, i in enumerate(order)) > len(order) // 2
    with Device(qemu_device.url) as dev:
        status = dev.request(m.XferBegin(41, len(image), SMALL_CHUNK, 0, sha256(image), "fw-test", 2)).msg
        assert status.n_chunks == len(order)
        half = len(order) // 2
        _send_chunks(dev, image, 41, SMALL_CHUNK, order[:half])
        assert dev.request(m.XferQuery(41)).msg.missing() == sorted(order[half:])  # the bitmap, not a cursor
        _send_chunks(dev, image, 41, SMALL_CHUNK, order[half:])
        lat = dev.request(m.XferCommit(41, 1, 2, 5), timeout=30).msg
        assert isinstance(lat, m.Latency) and lat.model_version == 2
        hello = dev.request(m.GetInfo()).msg
        assert (hello.model_name, hello.model_version) == ("fw-test", 2)
        # the model assembled from shuffled chunks scores exactly as TFLM does with the original image
        scorer = Scorer(ModelImage.from_bytes(image), HOST_ARENA)
        for t in dev.telemetry(2):
            assert t.model_version == 2 and not t.flags & TelemetryFlags.NO_MODEL
            assert t.score == scorer.score(t.features)


def test_truncated_flatbuffer_in_a_valid_container_is_refused(qemu_device):
    image = ModelImage.from_bytes((DATA / "fw_test_v2.tmlm").read_bytes())
    broken = dataclasses.replace(image, tflite=image.tflite[:len(image.tflite) // 2]).to_bytes()
    assert ModelImage.from_bytes(broken).tflite == image.tflite[:len(image.tflite) // 2]  # container is fine
    with Device(qemu_device.url) as dev:
        before = dev.request(m.GetInfo()).msg
        with pytest.raises(DeviceError) as info:
            _push(dev, broken, 51)
        assert info.value.code == ErrorCode.LOAD_FAILED
        _assert_model_unchanged(dev, before)


def test_model_needing_more_arena_than_the_device_has_is_refused(small_arena_device):
    wide = (DATA / "wide_v5.tmlm").read_bytes()  # 36-128-8-128-36, needs 2576 B of arena on this engine
    with Device(small_arena_device.url) as dev:
        before = dev.request(m.GetInfo()).msg
        assert before.ram_budget == SMALL_ARENA  # really the small-arena build
        assert before.model_name == "factory"  # whose own model fits its arena
        with pytest.raises(DeviceError) as info:
            _push(dev, wide, 61)
        assert info.value.code == ErrorCode.ARENA_TOO_SMALL
        _assert_model_unchanged(dev, before)


def _send_chunks(dev: Device, image: bytes, transfer_id: int, chunk: int, order: list[int]) -> None:
    for i in order:
        data = image[i * chunk:(i + 1) * chunk]
        assert isinstance(dev.request(m.XferChunk(transfer_id, i, zlib.crc32(data), data)).msg, m.Ack)


def _push(dev: Device, image: bytes, transfer_id: int, mode: int = 1, bench: int = 5) -> m.Message:
    dev.request(m.XferBegin(transfer_id, len(image), 4096, 0, sha256(image), "x", 0))
    _send_chunks(dev, image, transfer_id, 4096, list(range(-(-len(image) // 4096))))
    return dev.request(m.XferCommit(transfer_id, mode, 2, bench), timeout=30).msg


def _assert_model_unchanged(dev: Device, before: m.Hello) -> None:
    after = dev.request(m.GetInfo()).msg
    assert (after.model_name, after.model_version, after.model_sha) == \
        (before.model_name, before.model_version, before.model_sha)
    tel = dev.telemetry(1)[0]
    assert tel.model_version == before.model_version and not tel.flags & TelemetryFlags.NO_MODEL  # still scoring


def test_unsupported_op_and_bad_image_are_refused(qemu_device):
    with Device(qemu_device.url) as dev:
        version = dev.request(m.GetInfo()).msg.model_version
        with pytest.raises(DeviceError) as info:
            _push(dev, (DATA / "tanh_v3.tmlm").read_bytes(), 11)
        assert info.value.code == ErrorCode.UNSUPPORTED_OP
        truncated = (DATA / "fw_test_v2.tmlm").read_bytes()[:-200]
        with pytest.raises(DeviceError) as info:
            _push(dev, truncated, 12)
        assert info.value.code == ErrorCode.BAD_IMAGE
        broken_selftest = bytearray((DATA / "fw_test_v2.tmlm").read_bytes())
        broken_selftest[-13] ^= 0x40  # exponent of the expected score
        with pytest.raises(DeviceError) as info:
            _push(dev, bytes(broken_selftest), 13)
        assert info.value.code == ErrorCode.SELFTEST_FAILED
        assert dev.request(m.GetInfo()).msg.model_version == version
        assert dev.telemetry(1)[0].model_version == version


def test_trial_reverts_without_confirm(qemu_device):
    with Device(qemu_device.url) as dev:
        v1 = dev.request(m.GetInfo()).msg.model_version
        lat = _push(dev, (DATA / "fw_test_v2.tmlm").read_bytes(), 21, mode=2)
        assert isinstance(lat, m.Latency)
        # LATENCY's TRIAL flag says it went live on trial; no GET_INFO here: a loaded host can take
        # longer than the 2 s trial to ask, and the device would rightly say it had reverted already
        assert lat.flags & LatencyFlags.TRIAL and lat.flags & LatencyFlags.EMULATED
        event = dev.wait_for(m.Event, where=lambda e: e.code == EventCode.TRIAL_REVERTED)
        assert "previous" in event.message
        hello = dev.request(m.GetInfo()).msg
        assert (hello.model_version, hello.trial) == (v1, 0)


def test_confirmed_model_survives_reboot(qemu_device):
    with Device(qemu_device.url) as dev:
        _push(dev, (DATA / "fw_test_v2.tmlm").read_bytes(), 31, mode=2)
        assert dev.request(m.Confirm()).msg.trial == 0
        dev.request(m.Reboot())
        booted = dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        assert booted.message == "booted"
        hello = dev.request(m.GetInfo()).msg
        assert (hello.model_name, hello.model_version) == ("fw-test", 2)
        assert hello.uptime_s < 5


def test_transfer_resumes_after_reboot(qemu_device):
    """The transfer state is journaled: after a reboot, XFER_BEGIN of the same image resumes it and
    asks only for the chunks that had not arrived."""
    image = (DATA / "fw_test_v2.tmlm").read_bytes()
    n = -(-len(image) // SMALL_CHUNK)
    held = [0, 3, 4, n - 1]
    with Device(qemu_device.url) as dev:
        dev.request(m.XferBegin(51, len(image), SMALL_CHUNK, 0, sha256(image), "fw-test", 2))
        _send_chunks(dev, image, 51, SMALL_CHUNK, held)
        dev.request(m.Reboot())
        dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        assert dev.request(m.XferQuery(51)).msg.missing() == sorted(set(range(n)) - set(held))
        status = dev.request(m.XferBegin(52, len(image), SMALL_CHUNK, 0, sha256(image), "fw-test", 2)).msg
        assert isinstance(status, m.XferStatus) and status.received == len(held)
        _send_chunks(dev, image, 52, SMALL_CHUNK, status.missing())
        lat = dev.request(m.XferCommit(52, 1, 0, 5), timeout=30).msg
        assert isinstance(lat, m.Latency) and lat.model_version == 2
        assert dev.request(m.GetInfo()).msg.model_version == 2


def test_stream_runs_for_its_lease(qemu_device):
    with Device(qemu_device.url) as dev:
        assert isinstance(dev.request(m.StreamStart(2)).msg, m.Ack)
        stream = dev.wait_for(m.Stream)
        assert stream.samples.shape == (256, 3) and stream.sample_rate == 3200
        g = stream.acceleration_g()
        assert 0.01 < float(g.std()) < 1.0  # a healthy machine, in g
        assert dev.request(m.GetInfo()).msg.state == 2  # STREAMING
        dev.telemetry(3)  # the 2 s lease runs out
        dev.drain()
        dev.telemetry(1)
        assert not any(isinstance(p.msg, m.Stream) for p in list(dev.packets.queue))
        assert dev.request(m.GetInfo()).msg.state == 1
