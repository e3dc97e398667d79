"""The virtual device's protocol engine, driven directly with encoded messages."""

import dataclasses
import hashlib
import random

import numpy as np
import pytest

from app.domain.errors import ModelError
from app.domain.profiles import PROFILES
from app.fleet.device import STREAM_WINDOW, VirtualDevice
from app.protocol import messages as m
from app.protocol.codes import (
    HELLO_INTERVAL_S,
    PULL_STATUS_INTERVAL_S,
    XFER_STALE_S,
    CommitMode,
    DeviceState,
    ErrorCode,
    EventCode,
    FaultMask,
    MsgType,
    TelemetryFlags,
    XferFlags,
)
from app.protocol.framing import crc32
from app.protocol.topics import REPLY, STATUS, STREAM, TELEMETRY

T0 = 1000.0


class Host:
    """Drives a device as the operator would, with explicit time."""

    def __init__(self, device: VirtualDevice) -> None:
        self.dev = device
        self.seq = 0
        self.now = T0
        self.out: list[tuple[str, m.Packet]] = []

    def send(self, msg: m.Message) -> list[m.Message]:
        self.seq += 1
        return self.raw(m.encode(msg, self.seq), self.seq)

    def raw(self, data: bytes, seq: int | None = None) -> list[m.Message]:
        got = [(ch, m.decode(b)) for ch, b in self.dev.handle(data, self.now)]
        self.out += got
        return [p.msg for ch, p in got if ch == REPLY and (seq is None or p.seq == seq)]

    def one(self, msg: m.Message) -> m.Message:
        return self.send(msg)[0]

    def error(self, msg: m.Message) -> int:
        reply = self.one(msg)
        assert isinstance(reply, m.Error), reply
        assert reply.ref_type == int(msg.TYPE) and reply.message
        return reply.code

    def tick(self, dt: float) -> list[tuple[str, m.Message]]:
        self.now += dt
        got = [(ch, m.decode(b).msg) for ch, b in self.dev.tick(self.now)]
        return got

    def push(self, image: bytes, tid: int = 7, chunk: int = 1024, skip: set[int] = frozenset(),
             version: int = 2) -> m.XferStatus:
        st = self.one(m.XferBegin(tid, len(image), chunk, 0, hashlib.sha256(image).digest(), "pump-ae", version, ""))
        assert isinstance(st, m.XferStatus), st
        for i in range(st.n_chunks):
            if i in skip:
                continue
            data = image[i * chunk:(i + 1) * chunk]
            assert isinstance(self.one(m.XferChunk(tid, i, crc32(data), data)), m.Ack)
        return st

    def deploy(self, image: bytes, mode: int = CommitMode.ACTIVATE, tid: int = 7, **kw) -> m.Message:
        self.push(image, tid, **kw)
        return self.one(m.XferCommit(tid, int(mode), 0, 5))


def make_device(image: bytes, profile=PROFILES["stm32l4r5"], **kw) -> VirtualDevice:
    return VirtualDevice("sim-001", "plant-a/line-1/pump-1", profile, image, seed=1, now=T0, **kw)


@pytest.fixture
def host(model_image) -> Host:
    return Host(make_device(model_image))


def active_version(host: Host) -> int:
    return host.one(m.GetInfo()).model_version


def test_hello_describes_device(host, model_image):
    h = host.one(m.GetInfo())
    assert isinstance(h, m.Hello)
    assert (h.device_id, h.location, h.profile) == ("sim-001", "plant-a/line-1/pump-1", "stm32l4r5")
    assert h.model_name == "pump-ae" and h.model_version == 2 and h.prev_version == 0
    assert h.model_sha == hashlib.sha256(model_image).digest()[:8]
    assert h.slot_size == PROFILES["stm32l4r5"].slot_size and h.ram_budget == PROFILES["stm32l4r5"].arena_budget
    assert h.state == DeviceState.ONLINE and h.sample_rate == 3200


def test_factory_model_must_be_valid(model_factory, model_image):
    with pytest.raises(ModelError, match="SELFTEST_FAILED"):
        make_device(model_factory.selftest_wrong(model_image))
    with pytest.raises(ModelError, match="BAD_IMAGE"):
        make_device(b"not a model")


def test_telemetry_about_1hz_with_score_and_shaft(host):
    got = [msg for _ in range(30) for ch, msg in host.tick(0.1) if ch == TELEMETRY]
    assert len(got) == 3
    t = got[-1]
    assert t.model_version == 2 and len(t.features) == 36 and t.score > 0 and t.threshold > 0
    assert not t.flags & TelemetryFlags.ALARM
    assert abs(t.shaft_hz - host.dev.machine.shaft_hz) < 1.0
    assert [x.window_seq for x in got] == [1, 2, 3]


def test_fault_raises_score_above_threshold(host):
    for _ in range(3):
        host.tick(1.0)
    assert isinstance(host.one(m.SetFault(int(FaultMask.BEARING_OUTER), 0.8)), m.Ack)
    assert any(isinstance(msg, m.Event) and msg.code == EventCode.FAULT_CHANGED for _, p in host.out
               for msg in [p.msg])
    tele = [msg for _ in range(3) for ch, msg in host.tick(1.0) if ch == TELEMETRY]
    assert tele[-1].score > tele[-1].threshold and tele[-1].flags & TelemetryFlags.ALARM
    status = [msg for ch, msg in host.tick(0.1) if ch == STATUS]
    assert host.dev.hello(host.now).fault_mask == FaultMask.BEARING_OUTER or status
    assert host.error(m.SetFault(0x80, 0.5)) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.SetFault(1, 1.5)) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.SetFault(1, float("nan"))) == ErrorCode.BAD_ARGUMENT


def test_stream_windows_while_leased(host):
    assert isinstance(host.one(m.StreamStart(2)), m.Ack)
    windows = [msg for _ in range(30) for ch, msg in host.tick(0.1) if ch == STREAM]
    # 2 s lease at 3200 Hz -> 25 windows of 256 samples, then silence
    assert 24 <= len(windows) <= 26
    assert all(w.samples.shape == (STREAM_WINDOW, 3) for w in windows)
    assert [w.window_seq for w in windows] == list(range(1, len(windows) + 1))
    g = windows[0].acceleration_g()
    assert 0.01 < float(np.abs(g).max()) < 16
    assert host.one(m.StreamStart(0)) == m.Ack(int(MsgType.STREAM_START))
    assert [msg for ch, msg in host.tick(0.5) if ch == STREAM]
    host.one(m.StreamStop())
    assert not [msg for ch, msg in host.tick(0.5) if ch == STREAM]


def test_heartbeat_and_status_on_change(host):
    first = [msg for ch, msg in host.tick(0.1) if ch == STATUS]
    assert len(first) == 1
    assert not [msg for ch, msg in host.tick(1.0) if ch == STATUS]
    beats = [msg for _ in range(int(HELLO_INTERVAL_S) + 1) for ch, msg in host.tick(1.0) if ch == STATUS]
    assert len(beats) == 1 and beats[0].uptime_s >= HELLO_INTERVAL_S
    host.one(m.StreamStart(5))
    assert [p.msg.state for ch, p in host.out if ch == STATUS][-1] == DeviceState.STREAMING


def test_deploy_activate_reports_latency_and_keeps_previous(host, model_image_v3):
    lat = host.deploy(model_image_v3, version=3)
    assert isinstance(lat, m.Latency), lat
    assert lat.model_version == 3 and lat.n == 5 and lat.load_us > 0 and lat.deploy_us > 0
    assert 0 < lat.min_us <= lat.median_us <= lat.p95_us <= lat.max_us
    h = host.one(m.GetInfo())
    assert h.model_version == 3 and h.prev_version == 2 and h.trial == 0
    assert any(isinstance(p.msg, m.Event) and p.msg.code == EventCode.MODEL_ACTIVATED for _, p in host.out)
    tele = [msg for _ in range(2) for ch, msg in host.tick(1.0) if ch == TELEMETRY]
    assert tele[-1].model_version == 3
    # roll back answers HELLO and swaps again
    h = host.one(m.Rollback())
    assert isinstance(h, m.Hello) and h.model_version == 2 and h.prev_version == 3


def test_store_then_activate(host, model_image_v3):
    lat = host.deploy(model_image_v3, mode=CommitMode.STORE, version=3)
    assert isinstance(lat, m.Latency) and lat.model_version == 3
    assert active_version(host) == 2
    lat = host.one(m.Activate(0, 0, 3))
    assert isinstance(lat, m.Latency) and lat.n == 3 and lat.deploy_us == 0
    assert active_version(host) == 3


def test_trial_reverts_on_timeout_unless_confirmed(host, model_image_v3):
    host.push(model_image_v3, version=3)
    lat = host.one(m.XferCommit(7, int(CommitMode.TRIAL), 5, 1))
    assert isinstance(lat, m.Latency) and lat.flags & 2
    h = host.one(m.GetInfo())
    assert h.model_version == 3 and h.trial == 1
    tele = [msg for ch, msg in host.tick(1.0) if ch == TELEMETRY]
    assert tele[0].flags & TelemetryFlags.TRIAL
    events = [msg for _ in range(5) for ch, msg in host.tick(1.0) if isinstance(msg, m.Event)]
    assert [e.code for e in events] == [EventCode.TRIAL_REVERTED]
    h = host.one(m.GetInfo())
    assert h.model_version == 2 and h.trial == 0
    assert host.error(m.Rollback()) == ErrorCode.NO_PREVIOUS  # a reverted trial is no rollback target
    # again, confirmed this time
    host.one(m.Activate(1, 5, 0))
    assert isinstance(host.one(m.Confirm()), m.Hello)
    assert not [msg for _ in range(8) for ch, msg in host.tick(1.0) if isinstance(msg, m.Event)]
    assert active_version(host) == 3
    assert host.error(m.Confirm()) == ErrorCode.NOT_TRIAL


def test_trial_reverts_on_reboot(host, model_image_v3):
    host.push(model_image_v3, version=3)
    host.one(m.XferCommit(7, int(CommitMode.TRIAL), 300, 0))
    replies = host.send(m.Reboot())
    assert isinstance(replies[0], m.Hello)
    codes = [p.msg.code for _, p in host.out if isinstance(p.msg, m.Event)]
    assert codes[-2:] == [EventCode.TRIAL_REVERTED, EventCode.BOOTED]
    assert active_version(host) == 2


def test_reboot_mid_transfer_then_resume(host, model_image_v3):
    st = host.push(model_image_v3, chunk=512, skip={3, 5, 6})
    host.send(m.Reboot())
    assert host.dev.hello(host.now).uptime_s == 0
    sha = hashlib.sha256(model_image_v3).digest()
    st = host.one(m.XferBegin(8, len(model_image_v3), 512, 0, sha, "pump-ae", 3, ""))
    assert isinstance(st, m.XferStatus) and st.transfer_id == 8
    assert st.missing() == [3, 5, 6] and st.received == st.n_chunks - 3
    assert host.error(m.XferCommit(8, 1, 0, 0)) == ErrorCode.INCOMPLETE
    for i in st.missing():
        data = model_image_v3[i * 512:(i + 1) * 512]
        host.one(m.XferChunk(8, i, crc32(data), data))
    assert isinstance(host.one(m.XferCommit(8, 1, 0, 0)), m.Latency)
    assert active_version(host) == 3


def test_duplicated_and_reordered_chunks(host, model_image_v3):
    chunk = 256
    image = model_image_v3
    sha = hashlib.sha256(image).digest()
    st = host.one(m.XferBegin(9, len(image), chunk, 0, sha, "pump-ae", 3, ""))
    order = list(range(st.n_chunks)) * 2
    random.Random(3).shuffle(order)
    for i in order:
        data = image[i * chunk:(i + 1) * chunk]
        assert isinstance(host.one(m.XferChunk(9, i, crc32(data), data)), m.Ack)
    st = host.one(m.XferQuery(9))
    assert st.received == st.n_chunks and not st.missing()
    assert isinstance(host.one(m.XferCommit(9, 1, 0, 0)), m.Latency)


def test_transfer_errors(host, model_image_v3):
    img = model_image_v3
    sha = hashlib.sha256(img).digest()
    p = host.dev.profile
    assert host.error(m.XferBegin(1, len(img), 0, 0, sha, "x", 3, "")) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.XferBegin(1, len(img), p.max_chunk + 1, 0, sha, "x", 3, "")) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.XferBegin(1, p.slot_size + 1, 512, 0, sha, "x", 3, "")) == ErrorCode.TOO_LARGE
    assert host.error(m.XferBegin(1, len(img), 512, int(XferFlags.PULL), sha, "x", 3, "")) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.XferChunk(1, 0, crc32(b"a"), b"a")) == ErrorCode.NO_TRANSFER
    assert host.error(m.XferQuery(1)) == ErrorCode.NO_TRANSFER
    assert host.error(m.XferAbort(1)) == ErrorCode.NO_TRANSFER
    assert host.error(m.XferCommit(1, 1, 0, 0)) == ErrorCode.NO_TRANSFER
    host.one(m.XferBegin(1, len(img), 512, 0, sha, "x", 3, ""))
    data = img[:512]
    assert host.error(m.XferChunk(1, 0, crc32(data) ^ 1, data)) == ErrorCode.CHUNK_CRC
    assert host.error(m.XferChunk(1, 10_000, crc32(data), data)) == ErrorCode.CHUNK_RANGE
    assert host.error(m.XferChunk(1, 0, crc32(data[:100]), data[:100])) == ErrorCode.CHUNK_RANGE
    assert host.error(m.XferCommit(1, 9, 0, 0)) == ErrorCode.BAD_ARGUMENT
    # another operator is refused while the transfer is fresh, takes over once it is stale
    other = hashlib.sha256(b"other").digest()
    assert host.error(m.XferBegin(2, 1000, 512, 0, other, "y", 4, "")) == ErrorCode.BUSY
    assert host.error(m.Activate(0, 0, 0)) == ErrorCode.BUSY
    host.now += XFER_STALE_S + 1
    assert isinstance(host.one(m.XferBegin(2, 1000, 512, 0, other, "y", 4, "")), m.XferStatus)
    assert isinstance(host.one(m.XferAbort(2)), m.Ack)
    assert host.error(m.XferQuery(2)) == ErrorCode.NO_TRANSFER
    assert active_version(host) == 2


def test_hash_mismatch(host, model_image_v3):
    img = model_image_v3
    wrong = hashlib.sha256(b"something else").digest()
    host.one(m.XferBegin(3, len(img), 1024, 0, wrong, "pump-ae", 3, ""))
    for i in range(-(-len(img) // 1024)):
        data = img[i * 1024:(i + 1) * 1024]
        host.one(m.XferChunk(3, i, crc32(data), data))
    assert host.error(m.XferCommit(3, 1, 0, 0)) == ErrorCode.HASH_MISMATCH
    assert active_version(host) == 2


@pytest.mark.parametrize("variant,code", [
    ("truncated", ErrorCode.BAD_IMAGE),
    ("no_selftest", ErrorCode.BAD_IMAGE),
    ("selftest_wrong", ErrorCode.SELFTEST_FAILED),
])
def test_bad_images_never_activate(host, model_factory, model_image_v3, variant, code):
    bad = getattr(model_factory, variant)(model_image_v3)
    reply = host.deploy(bad)
    assert isinstance(reply, m.Error) and reply.code == code, reply
    assert active_version(host) == 2
    assert next(msg for ch, msg in host.tick(1.0) if ch == TELEMETRY).model_version == 2


def test_corrupted_model_never_activates(host, model_factory, model_image_v3):
    for seed in range(3):
        reply = host.deploy(model_factory.corrupted(model_image_v3, seed=seed), tid=seed + 20)
        assert isinstance(reply, m.Error), reply
        assert reply.code in (ErrorCode.BAD_IMAGE, ErrorCode.LOAD_FAILED, ErrorCode.SELFTEST_FAILED,
                              ErrorCode.UNSUPPORTED_OP)
    assert active_version(host) == 2


def test_unsupported_op_and_arena_and_size(model_image, tanh_model_image, model_factory):
    h = Host(make_device(model_image, PROFILES["stm32f446"]))
    reply = h.deploy(tanh_model_image)
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.UNSUPPORTED_OP and "TANH" in reply.message
    esp = Host(make_device(model_image, PROFILES["esp32-wroom-32"]))
    assert isinstance(esp.deploy(tanh_model_image), m.Latency)  # the full op resolver runs it
    big = model_factory.oversized(model_image, PROFILES["stm32f446"])
    st = h.send(m.XferBegin(5, len(big), 512, 0, hashlib.sha256(big).digest(), "x", 2, ""))[0]
    assert isinstance(st, m.Error) and st.code == ErrorCode.TOO_LARGE
    # an arena budget below what the model needs
    tiny = dataclasses.replace(PROFILES["stm32f446"], key="stm32f446", arena_budget=2048)
    small = Host(make_device(model_image, PROFILES["stm32f446"]))
    small.dev.profile = tiny
    reply = small.deploy(model_image)
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.ARENA_TOO_SMALL


def test_load_failed_when_interpreter_refuses(host, model_image_v3):
    from app.protocol.image import ModelImage

    img = ModelImage.from_bytes(model_image_v3)
    # cut the flatbuffer's tail (its weights buffers): the op table still parses, loading does not
    img.tflite = img.tflite[: len(img.tflite) // 2]
    reply = host.deploy(img.to_bytes())
    assert isinstance(reply, m.Error), reply
    assert reply.code in (ErrorCode.LOAD_FAILED, ErrorCode.BAD_IMAGE)
    assert active_version(host) == 2


def test_benchmark_and_errors(host):
    lat = host.one(m.Benchmark(50))
    assert isinstance(lat, m.Latency) and lat.n == 50 and lat.deploy_us == 0
    assert lat.min_us <= lat.median_us <= lat.p95_us <= lat.max_us
    assert host.error(m.Benchmark(0)) == ErrorCode.BAD_ARGUMENT
    assert host.error(m.Rollback()) == ErrorCode.NO_PREVIOUS
    assert host.error(m.Activate(0, 0, 0)) == ErrorCode.NO_MODEL


def test_malformed_unknown_and_wrong_version_input(host):
    good = m.encode(m.GetInfo(), 77)
    wrong_version = bytes([9]) + good[1:]
    r = host.raw(wrong_version)
    assert r[0].code == ErrorCode.UNSUPPORTED_VERSION
    unknown = bytes([1, 0x7E]) + good[2:]
    r = host.raw(unknown)
    assert r[0].code == ErrorCode.UNKNOWN_TYPE and r[0].ref_type == 0x7E
    short = m.encode(m.XferQuery(1), 5)[:-2]
    short = short[:4] + (len(short) - 6).to_bytes(2, "little") + short[6:]
    assert host.raw(short)[0].code == ErrorCode.MALFORMED
    assert host.raw(b"\x01")[0].code == ErrorCode.MALFORMED
    assert host.error(m.Telemetry()) == ErrorCode.UNKNOWN_TYPE  # not a command
    bad_utf8 = m.encode(m.XferBegin(1, 10, 10, 0, b"\0" * 32, "ab", 1, ""), 3)
    bad_utf8 = bad_utf8.replace(b"\x02ab", b"\x02\xff\xfe")
    assert host.raw(bad_utf8)[0].code == ErrorCode.MALFORMED
    rng = random.Random(1)
    for _ in range(300):  # random garbage never escapes as an exception
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        for reply in host.raw(junk):
            assert isinstance(reply, m.Error)
    assert active_version(host) == 2


def test_duplicate_command_is_answered_not_redone(host, model_image_v3):
    host.push(model_image_v3, version=3)
    commit = m.encode(m.XferCommit(7, 1, 0, 0), 500)
    first = host.raw(commit, 500)
    again = host.raw(commit, 500)
    assert isinstance(first[0], m.Latency) and first == again
    assert host.one(m.GetInfo()).prev_version == 2  # not activated twice


def test_pull_transfer(host, model_image_v3):
    img = model_image_v3
    sha = hashlib.sha256(img).digest()
    source = "tinymlops/v1/plant-a/models/" + sha.hex()
    st = host.one(m.XferBegin(11, len(img), 1024, int(XferFlags.PULL), sha, "pump-ae", 3, source))
    assert isinstance(st, m.XferStatus) and host.dev.pull_source == source
    assert host.one(m.GetInfo()).state == DeviceState.UPDATING
    chunks = [img[i:i + 1024] for i in range(0, len(img), 1024)]
    statuses: list[m.XferStatus] = []
    for i, data in enumerate(chunks):
        host.now += PULL_STATUS_INTERVAL_S / 4
        raw = m.encode(m.XferChunk(0, i, crc32(data), data), 0)
        statuses += [m.decode(b).msg for ch, b in host.dev.handle_pull_chunk(raw, host.now)]
        statuses += [m.decode(b).msg for ch, b in host.dev.handle_pull_chunk(raw, host.now)]  # duplicate
    assert statuses and statuses[-1].received == len(chunks)
    assert len(statuses) <= len(chunks) // 4 + 3  # rate-limited
    assert host.dev.pull_source is None
    assert isinstance(host.one(m.XferCommit(11, 1, 0, 0)), m.Latency)
    assert active_version(host) == 3
