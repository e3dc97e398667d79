"""Protocol scenarios (firmware/PROTOCOL.md), written once and run against every device
implementation (conftest.py): the Python virtual device and the C core's POSIX port on a real
Mosquitto and on a pty, and the firmware images under QEMU on their UART. Where a device lacks a
capability, the scenario checks that the host does not use it."""

from __future__ import annotations

import struct
import zlib

import pytest

from app.deploy.api import DeploymentResult
from app.domain.errors import DeviceError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import MAX_FRAME, Caps, DeviceState, ErrorCode, EventCode, TelemetryFlags
from app.protocol.framing import frame
from app.protocol.image import ModelImage, sha256
from tests.conformance.host import Host

# Scenarios that make sense on a serial line too run over MQTT and over a serial line: the ptys of
# the virtual device and the POSIX port, the QEMU images' UARTs (conftest.py).
SERIAL_TOO = pytest.mark.links("mqtt", "pty")
# Capabilities every implementation has (PROTOCOL.md 4.1); PULL_XFER, FAULT_SIM and the trust ones vary.
COMMON_CAPS = Caps.STREAM | Caps.PUSH_XFER | Caps.TRIAL | Caps.BENCHMARK
# Inferences the deployments below ask for: a few, the figures are not what is tested here.
BENCH = 5
# A trial this short reverts by itself within the scenario.
SHORT_TRIAL_S = 1
# A trial this long never runs out during a scenario.
LONG_TRIAL_S = 600
# A stream lease long enough to see a few windows (80 ms each), short enough to end by itself.
LEASE_S = 2
# Device and host reconnect with back-off after a broker restart; a loaded machine gets this long.
BROKER_COMEBACK_S = 60.0
# PROTOCOL.md 2.2: the status heartbeat period.
HELLO_INTERVAL_S = 10


def _deploy(host, image: bytes, **kwargs) -> DeploymentResult:
    """The application's deployment over the host's link (MQTT, or the serial port)."""
    return host.deploy(image, bench_count=BENCH, **kwargs)


def _status(host, where=lambda h: True) -> m.Hello:
    return host.wait_for(topics.STATUS, m.Hello, where)


@SERIAL_TOO
def test_hello_retained_status_and_get_info_agree(dut, host):
    status = _status(host)  # retained: there for a host that connects after the device (serial: GET_INFO)
    assert status.state == DeviceState.ONLINE and status.proto_min <= 1 <= status.proto_max
    assert status.caps & COMMON_CAPS == COMMON_CAPS
    assert status.device_id == dut.device_id
    assert status.location.split("/")[0] == dut.site and status.profile == dut.profile
    assert status.slot_size == dut.slot_size and status.ram_budget == dut.ram_budget  # what it really has
    assert status.model_name == "factory" and status.model_version == 1 and status.prev_version == 0
    assert status.sample_rate == 3200 and 256 <= status.max_chunk <= 4096
    info = host.request(m.GetInfo())
    assert isinstance(info, m.Hello)
    assert (info.device_id, info.caps, info.model_sha, info.slot_size) == \
        (status.device_id, status.caps, status.model_sha, status.slot_size)


def test_last_will_announces_a_vanished_device(dut, host):
    _status(host, lambda h: h.state == DeviceState.ONLINE)
    dut.kill()
    offline = _status(host, lambda h: h.state == DeviceState.OFFLINE)
    assert offline.device_id == dut.device_id and offline.model_name == "factory"


@SERIAL_TOO
def test_telemetry_scores_the_factory_model(dut, host):
    tele = host.wait_for(topics.TELEMETRY, m.Telemetry)
    assert tele.model_version == 1 and tele.threshold > 0 and len(tele.features) == 36
    assert not tele.flags & TelemetryFlags.NO_MODEL and tele.score >= 0


@SERIAL_TOO
def test_push_deploy_activates_and_status_follows(dut, host, model_image_v3):
    result = _deploy(host, model_image_v3)
    assert result.outcome == "ok", result.error_message
    assert result.transport == host.push_transport and result.bench_n == BENCH
    info = host.request(m.GetInfo())
    assert info.model_version == 3 and info.model_sha == sha256(model_image_v3)[:8] and info.prev_version == 1
    # the retained status follows without a GET_INFO: a new operator sees the new model at once
    _status(host, lambda h: h.model_version == 3 and h.state == DeviceState.ONLINE)
    threshold = ModelImage.from_bytes(model_image_v3).threshold
    tele = host.wait_for(topics.TELEMETRY, m.Telemetry, lambda t: t.model_version == 3)
    assert tele.threshold == pytest.approx(threshold, rel=1e-6)


def test_rollout_pulls_only_from_devices_that_pull(dut, host, model_image_v3):
    caps = _status(host).caps
    result = _deploy(host, model_image_v3, canary=1, canary_threshold=1.0)  # a rollout: the host prefers pull
    assert result.outcome == "ok", result.error_message
    # a device without PULL_XFER is never sent XFER_BEGIN with flag PULL: the host pushes to it
    assert result.transport == ("mqtt-pull" if caps & Caps.PULL_XFER else "mqtt-push")
    assert host.request(m.GetInfo()).model_version == 3


@SERIAL_TOO
def test_trial_then_confirm(dut, host, model_image_v3):
    result = _deploy(host, model_image_v3, trial=True, trial_timeout_s=LONG_TRIAL_S)
    assert result.outcome == "ok", result.error_message
    info = host.request(m.GetInfo())
    assert info.trial == 1 and info.model_version == 3
    confirmed = host.request(m.Confirm())
    assert isinstance(confirmed, m.Hello) and confirmed.trial == 0 and confirmed.model_version == 3
    with pytest.raises(DeviceError) as err:
        host.request(m.Confirm())
    assert err.value.code == ErrorCode.NOT_TRIAL


@SERIAL_TOO
def test_unconfirmed_trial_reverts_by_itself(dut, host, model_image_v3):
    result = _deploy(host, model_image_v3, trial=True, trial_timeout_s=SHORT_TRIAL_S)
    assert result.outcome == "ok", result.error_message
    if host.link == "mqtt":  # on a pty the EVENT may go out while the deployment hands the port back
        event = host.wait_for(topics.REPLY, m.Event, lambda e: e.code == EventCode.TRIAL_REVERTED)
        assert event.message
    _status(host, lambda h: h.model_version == 1 and h.trial == 0)


@SERIAL_TOO
def test_rollback_returns_to_the_previous_model(dut, host, model_image_v3):
    with pytest.raises(DeviceError) as err:
        host.request(m.Rollback())
    assert err.value.code == ErrorCode.NO_PREVIOUS
    assert _deploy(host, model_image_v3).outcome == "ok"
    back = host.request(m.Rollback())
    assert isinstance(back, m.Hello) and back.model_version == 1 and back.prev_version == 3
    _status(host, lambda h: h.model_version == 1)


@SERIAL_TOO
def test_duplicate_command_is_answered_without_acting_twice(dut, host, model_image_v3):
    """A host resends a command whose reply it lost with the same seq (PROTOCOL.md 5.2): a second
    ROLLBACK acted on would swap the models back. Every link: the C core keeps the cache, not a port."""
    assert _deploy(host, model_image_v3).outcome == "ok"
    rollback = m.encode(m.Rollback(), 0x7001)
    host.publish_raw(rollback)
    first = host.wait_reply_seq(0x7001).msg
    host.publish_raw(rollback)
    again = host.wait_reply_seq(0x7001).msg
    assert first == again and first.model_version == 1
    assert host.request(m.GetInfo()).model_version == 1


def _push(host, image: bytes, transfer_id: int, sha: bytes | None = None, chunk: int = 1024) -> m.Message:
    """A push transfer by hand (PROTOCOL.md 5.2), for images the application itself would refuse to
    send: XFER_BEGIN, every chunk, XFER_COMMIT; the commit's reply (DeviceError when refused)."""
    status = host.request(m.XferBegin(transfer_id=transfer_id, image_size=len(image), chunk_size=chunk, flags=0,
                                      sha256=sha256(image) if sha is None else sha, model_name="pump-ae",
                                      model_version=3, source=""))
    assert isinstance(status, m.XferStatus) and status.received == 0
    for i in range(0, len(image), chunk):
        data = image[i:i + chunk]
        host.request(m.XferChunk(transfer_id, i // chunk, zlib.crc32(data), data))
    return host.request(m.XferCommit(transfer_id, 1, 0, 0))


def _factory_still_runs(host) -> None:
    info = host.request(m.GetInfo())
    assert info.model_version == 1 and info.model_name == "factory" and info.state == DeviceState.ONLINE


@SERIAL_TOO
def test_image_failing_its_selftest_is_refused_and_the_running_model_stays(dut, host, model_image_v3, model_factory):
    result = _deploy(host, model_factory.selftest_wrong(model_image_v3))
    assert result.outcome == "failed" and result.error_code == ErrorCode.SELFTEST_FAILED
    _factory_still_runs(host)


@SERIAL_TOO
def test_corrupted_model_is_refused_and_the_running_model_stays(dut, host, model_image_v3, model_factory):
    with pytest.raises(DeviceError) as err:
        _push(host, model_factory.corrupted(model_image_v3), 76)
    assert err.value.code in {ErrorCode.SELFTEST_FAILED, ErrorCode.LOAD_FAILED, ErrorCode.BAD_IMAGE}
    _factory_still_runs(host)


@SERIAL_TOO
def test_image_whose_hash_differs_is_refused(dut, host, model_image_v3):
    with pytest.raises(DeviceError) as err:
        _push(host, model_image_v3, 77, sha=bytes(32))
    assert err.value.code == ErrorCode.HASH_MISMATCH
    _factory_still_runs(host)
    with pytest.raises(DeviceError) as err:
        host.request(m.XferQuery(77))
    assert err.value.code == ErrorCode.NO_TRANSFER  # a refused image ends the transfer for good


@SERIAL_TOO
def test_chunk_with_a_bad_crc_is_refused(dut, host, model_image_v3):
    image = model_image_v3
    host.request(m.XferBegin(transfer_id=5, image_size=len(image), chunk_size=1024, flags=0,
                             sha256=sha256(image), model_name="pump-ae", model_version=3, source=""))
    with pytest.raises(DeviceError) as err:
        host.request(m.XferChunk(5, 0, 0xDEADBEEF, image[:1024]))
    assert err.value.code == ErrorCode.CHUNK_CRC
    host.request(m.XferAbort(5))


@SERIAL_TOO
def test_stream_lease_sends_windows(dut, host):
    ack = host.request(m.StreamStart(LEASE_S))
    assert isinstance(ack, m.Ack)
    window = host.wait_for(topics.STREAM, m.Stream)
    assert window.sample_rate == 3200 and window.samples.shape == (256, 3) and window.scale > 0
    assert isinstance(host.request(m.StreamStop()), m.Ack)


# Bad messages and the error each must get (PROTOCOL.md 1); seqs from 0x6001 no other scenario uses.
BAD_MESSAGES = [
    (struct.pack("<BBHH", 2, 0x20, 0x6001, 0), ErrorCode.UNSUPPORTED_VERSION),
    (struct.pack("<BBHH", 1, 0x7E, 0x6002, 0), ErrorCode.UNKNOWN_TYPE),
    (struct.pack("<BBHH", 1, 0x2A, 0x6003, 2) + b"\x01", ErrorCode.MALFORMED),  # length says 2, 1 byte follows
    (struct.pack("<BBHH", 1, 0x2A, 0x6004, 5000) + bytes(5000), ErrorCode.MALFORMED),  # above MAX_PAYLOAD
    (struct.pack("<BBHH", 1, 0x24, 0x6005, 20000) + bytes(20000), ErrorCode.MALFORMED),  # a chunk far too large
]


@SERIAL_TOO
def test_bad_messages_get_their_error(dut, host):
    for raw, code in BAD_MESSAGES:
        if host.link == "pty" and len(frame(raw)) > MAX_FRAME:
            continue  # no frame carries it: the line drops it as `oversized` (PROTOCOL.md 2.1, below)
        host.publish_raw(raw)
        reply = host.wait_reply_seq(struct.unpack_from("<H", raw, 2)[0]).msg
        assert isinstance(reply, m.Error) and reply.code == code, (raw[:6].hex(), reply)
    assert host.request(m.GetInfo()).state == DeviceState.ONLINE  # and the device carries on


@pytest.mark.links("pty")
def test_garbage_and_broken_frames_between_frames_cost_only_themselves(dut, host):
    """PROTOCOL.md 2.1: noise on the line (ended by a 0x00, as a sender flushes), a frame with a bad
    CRC, one that is no COBS, one too short and one far too long are dropped; the frames between
    them are answered, and the device carries on."""
    good = [m.encode(m.GetInfo(), 0x6101 + i) for i in range(3)]
    bad_crc = bytearray(frame(m.encode(m.GetInfo(), 0x6110)))
    bad_crc[2] ^= 0x55
    oversized = bytes(range(1, 256)) * 20 + b"\x00"  # 5100 bytes without a delimiter
    host.write_bytes(b"\xff\x13garbage\x7e\x00" + frame(good[0]) + bytes(bad_crc) + b"\x05\x01\x00"
                     + b"\x02\x01\x00" + frame(good[1]) + oversized + b"noise" + b"\x00" + frame(good[2]))
    for i in range(3):
        assert isinstance(host.wait_reply_seq(0x6101 + i).msg, m.Hello)
    assert host.request(m.GetInfo()).state == DeviceState.ONLINE


@SERIAL_TOO
def test_benchmark_times_the_active_model_and_refuses_zero(dut, host):
    """PROTOCOL.md 3: BENCHMARK count 1..65535 answers LATENCY with its n; 0 is BAD_ARGUMENT."""
    lat = host.request(m.Benchmark(BENCH))
    assert isinstance(lat, m.Latency) and lat.n == BENCH and lat.deploy_us == 0
    assert lat.min_us <= lat.median_us <= lat.p95_us <= lat.max_us
    with pytest.raises(DeviceError) as refused:
        host.request(m.Benchmark(0))
    assert refused.value.code == ErrorCode.BAD_ARGUMENT, refused.value


@SERIAL_TOO
def test_reboot_keeps_the_active_model(dut, host, model_image_v3):
    assert _deploy(host, model_image_v3).outcome == "ok"
    reply = host.request(m.Reboot())
    assert isinstance(reply, m.Hello)  # answered before restarting
    host.wait_for(topics.REPLY, m.Event, lambda e: e.code == EventCode.BOOTED)
    info = host.request(m.GetInfo())
    assert info.model_version == 3 and info.prev_version == 1 and info.state == DeviceState.ONLINE


def test_status_says_streaming_and_goes_back_when_the_lease_ends(dut, host):
    """The retained status follows a change the device makes by itself (its stream lease running
    out), not only the heartbeat: measured in the device's own uptime, so a slow host cannot fake it."""
    host.request(m.StreamStart(1))
    streaming = _status(host, lambda h: h.state == DeviceState.STREAMING)
    online = _status(host, lambda h: h.state == DeviceState.ONLINE)
    assert online.uptime_s - streaming.uptime_s < HELLO_INTERVAL_S


def test_message_shorter_than_its_header_is_malformed(dut, host):
    for raw in (b"", b"\x01", b"\x01\x20\x05"):  # no seq to match: one at a time
        host.publish_raw(raw)
        error = host.wait_for(topics.REPLY, m.Error)
        assert error.code == ErrorCode.MALFORMED and error.ref_type == (raw[1] if len(raw) > 1 else 0), raw
    assert host.request(m.GetInfo()).state == DeviceState.ONLINE


def test_device_comes_back_after_the_broker_restarts(dut, host):
    """A broker restarted without persistence has lost every retained status: the device reconnects
    by itself (with back-off) and announces itself again. A host that connects only after the
    restart can get that status from nobody but the device."""
    _status(host, lambda h: h.state == DeviceState.ONLINE)
    dut.broker.restart()
    late = Host(dut.url, dut.site, dut.device_id)
    try:
        hello = late.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.ONLINE,
                              timeout=BROKER_COMEBACK_S)
        assert hello.device_id == dut.device_id
        assert late.request(m.GetInfo()).model_version == 1  # and it takes commands again
    finally:
        late.close()


def test_push_rides_out_a_broker_restart_mid_transfer(dut, host, model_image_v3):
    """The broker restarts (without persistence) after the first chunk is acknowledged: device and
    host reconnect by themselves, the host asks XFER_QUERY and sends what is missing (PROTOCOL.md
    5.2), and the deployment completes."""
    restarted = []

    def progress(_device: str, done: int, total: int) -> None:
        if 0 < done < total and not restarted:
            restarted.append(done)
            dut.broker.restart()

    result = _deploy(host, model_image_v3, progress=progress)
    assert restarted, "the transfer never reported progress between its first and last chunk"
    assert result.outcome == "ok", result.error_message
    assert host.request(m.GetInfo()).model_sha == sha256(model_image_v3)[:8]
