"""The virtual device's safe-activation state machine (PROTOCOL.md 5.3).

A model TFLM refuses (or crashes on) at every arena answers LOAD_FAILED and changes nothing; a
transfer cannot turn an unconfirmed trial into a permanent model; and a hypothesis state machine
drives random interleavings of every transfer/activation command, valid and corrupted, against a
reference model of the spec, checking after every step that the device answered and that its active
slot holds a verified image whose SHA-256 is the one HELLO reports.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from app.domain.profiles import PROFILES
from app.fleet.device import VirtualDevice
from app.ml import tflm
from app.protocol import messages as m
from app.protocol.codes import (
    DEFAULT_TRIAL_TIMEOUT_S,
    XFER_STALE_S,
    CommitMode,
    ErrorCode,
    EventCode,
    MsgType,
    TelemetryFlags,
)
from app.protocol.framing import crc32
from app.protocol.image import ModelImage
from app.protocol.topics import REPLY, TELEMETRY

T0 = 1000.0
PROFILE = PROFILES["stm32l4r5"]
# TFLite schema: TensorType BOOL (FULLY_CONNECTED has no kernel for a BOOL filter).
TENSOR_TYPE_BOOL = 6


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------- flatbuffer surgery


def _first_filter_tensor(tflite: bytes):
    """The weights tensor of the graph's first operator (a FULLY_CONNECTED filter)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite, 0)
    sub = model.Subgraphs(0)
    return model, sub.Tensors(int(sub.Operators(0).Inputs(1)))


def _patched(image: bytes, patch) -> bytes:
    img = ModelImage.from_bytes(image)
    fb = bytearray(img.tflite)
    model, tensor = _first_filter_tensor(img.tflite)
    patch(fb, model, tensor)
    img.tflite = bytes(fb)
    return img.to_bytes()


def weights_of_wrong_type(image: bytes) -> bytes:
    """TFLM refuses to prepare the graph (FULLY_CONNECTED has no BOOL filter kernel): clean error."""

    def patch(fb: bytearray, model, tensor) -> None:
        field = tensor._tab.Offset(6)  # Tensor.type
        assert field, "type stored explicitly in the fixture model"
        fb[tensor._tab.Pos + field] = TENSOR_TYPE_BOOL

    return _patched(image, patch)


def weights_in_missing_buffer(image: bytes) -> bytes:
    """The filter points past the buffer table: TFLM reads out of bounds and crashes the process."""

    def patch(fb: bytearray, model, tensor) -> None:
        field = tensor._tab.Offset(8)  # Tensor.buffer
        assert field, "buffer index stored explicitly in the fixture model"
        struct.pack_into("<I", fb, tensor._tab.Pos + field, model.BuffersLength() + 100)

    return _patched(image, patch)


# ---------------------------------------------------------------------------- a small host


class Host:
    def __init__(self, device: VirtualDevice) -> None:
        self.dev = device
        self.seq = 0
        self.now = T0

    def send_raw(self, data: bytes, seq: int) -> tuple[list[m.Packet], list[tuple[str, m.Packet]]]:
        out = [(ch, m.decode(b)) for ch, b in self.dev.handle(data, self.now)]
        return [p for ch, p in out if ch == REPLY and p.seq == seq], out

    def one(self, msg: m.Message) -> m.Message:
        self.seq = (self.seq + 1) & 0xFFFF
        replies, _ = self.send_raw(m.encode(msg, self.seq), self.seq)
        assert replies, f"no reply to {msg.TYPE.name}"
        return replies[0].msg

    def tick(self, dt: float) -> list[tuple[str, m.Message]]:
        self.now += dt
        return [(ch, m.decode(b).msg) for ch, b in self.dev.tick(self.now)]

    def push(self, image: bytes, tid: int, chunk: int = 1024) -> m.Message:
        st_ = self.one(m.XferBegin(tid, len(image), chunk, 0, sha(image), "pump-ae", 9, ""))
        if not isinstance(st_, m.XferStatus):
            return st_
        for i in range(st_.n_chunks):
            data = image[i * chunk:(i + 1) * chunk]
            assert isinstance(self.one(m.XferChunk(tid, i, crc32(data), data)), m.Ack)
        return st_


def make_device(image: bytes) -> VirtualDevice:
    return VirtualDevice("sim-001", "plant-a/line-1/pump-1", PROFILE, image, seed=1, now=T0)


# ---------------------------------------------------------------------------- LOAD_FAILED


@pytest.mark.parametrize("variant", [weights_of_wrong_type, weights_in_missing_buffer],
                         ids=["interpreter-refuses", "interpreter-crashes"])
def test_model_tflm_cannot_load_answers_load_failed_and_keeps_old_model(variant, model_image, model_image_v3):
    bad = variant(model_image_v3)
    tflite = ModelImage.from_bytes(bad).tflite
    # the premise: the container and the op table are fine, only the interpreter rejects it, at any arena
    assert set(tflm.model_ops(tflite)) <= set(PROFILE.ops)
    assert tflm.probe_load(tflite, [PROFILE.arena_budget, tflm.MAX_ARENA_PROBE]) == [False, False]

    host = Host(make_device(model_image))
    before = host.one(m.GetInfo())
    host.push(bad, tid=40)
    reply = host.one(m.XferCommit(40, int(CommitMode.ACTIVATE), 0, 3))
    assert isinstance(reply, m.Error), reply
    assert reply.code == ErrorCode.LOAD_FAILED and reply.ref_type == MsgType.XFER_COMMIT and reply.message

    after = host.one(m.GetInfo())
    assert (after.model_version, after.model_sha, after.trial) == (before.model_version, before.model_sha, 0)
    assert host.dev.active_model.sha256 == sha(model_image)
    # still running: telemetry scores with the old model, benchmark works
    tele = [msg for ch, msg in host.tick(1.5) if ch == TELEMETRY]
    assert tele and tele[-1].model_version == 2 and not tele[-1].flags & TelemetryFlags.NO_MODEL
    assert isinstance(host.one(m.Benchmark(3)), m.Latency)
    # the inactive slot holds nothing that could ever be activated
    assert host.one(m.Activate(0, 0, 0)).code == ErrorCode.NO_MODEL
    # and a good model still deploys afterwards
    host.push(model_image_v3, tid=41)
    assert isinstance(host.one(m.XferCommit(41, int(CommitMode.ACTIVATE), 0, 0)), m.Latency)
    assert host.one(m.GetInfo()).model_version == 3


# ---------------------------------------------------------------------------- trial hole


@pytest.mark.parametrize("then_store", [False, True], ids=["begin-only", "begin-and-store"])
def test_transfer_during_a_trial_cannot_make_the_trial_permanent(then_store, model_image, model_image_v3,
                                                                 model_factory):
    """A trial's rollback target lives in the inactive slot; a transfer into that slot used to erase
    it, so an unconfirmed trial model stayed active for good (or a merely stored model got activated)."""
    host = Host(make_device(model_image))
    host.push(model_image_v3, tid=50)
    assert isinstance(host.one(m.XferCommit(50, int(CommitMode.TRIAL), 5, 0)), m.Latency)
    assert host.one(m.GetInfo()).trial == 1

    v4 = model_factory.with_version(model_image_v3, 4)
    begin = host.push(v4, tid=51)
    assert isinstance(begin, m.Error) and begin.code == ErrorCode.BUSY and "trial" in begin.message, begin
    if then_store:
        assert host.one(m.XferCommit(51, int(CommitMode.STORE), 0, 0)).code == ErrorCode.NO_TRANSFER

    events = [msg for _ in range(7) for ch, msg in host.tick(1.0) if isinstance(msg, m.Event)]
    assert [e.code for e in events] == [EventCode.TRIAL_REVERTED]
    h = host.one(m.GetInfo())
    assert h.model_version == 2 and h.trial == 0 and h.model_sha == sha(model_image)[:8]
    # once the trial is settled, the transfer goes through
    host.push(v4, tid=52)
    assert isinstance(host.one(m.XferCommit(52, int(CommitMode.ACTIVATE), 0, 0)), m.Latency)
    assert host.one(m.GetInfo()).model_version == 4


def test_confirmed_trial_accepts_the_next_transfer(model_image, model_image_v3, model_factory):
    host = Host(make_device(model_image))
    host.push(model_image_v3, tid=60)
    host.one(m.XferCommit(60, int(CommitMode.TRIAL), 0, 0))
    assert isinstance(host.one(m.Confirm()), m.Hello)
    v4 = model_factory.with_version(model_image_v3, 4)
    assert isinstance(host.push(v4, tid=61), m.XferStatus)


# ---------------------------------------------------------------------------- state machine

_IMAGES: dict[str, bytes] = {}
_VERSION = {"v2": 2, "v3": 3, "v4": 4}
# What committing each bad image must answer (PROTOCOL.md 5.3).
_BAD = {"selftest": ErrorCode.SELFTEST_FAILED, "truncated": ErrorCode.BAD_IMAGE,
        "noselftest": ErrorCode.BAD_IMAGE, "refused": ErrorCode.LOAD_FAILED, "crashes": ErrorCode.LOAD_FAILED}


@pytest.fixture(scope="module")
def images(model_image, model_image_v3, model_factory) -> dict[str, bytes]:
    return {
        "v2": model_image, "v3": model_image_v3, "v4": model_factory.with_version(model_image_v3, 4),
        "selftest": model_factory.selftest_wrong(model_image_v3),
        "truncated": model_factory.truncated(model_image_v3),
        "noselftest": model_factory.no_selftest(model_image_v3),
        "refused": weights_of_wrong_type(model_image_v3),
        "crashes": weights_in_missing_buffer(model_image_v3),
    }


class DeviceCommands(RuleBasedStateMachine):
    """Random command sequences against a reference model of PROTOCOL.md 5 (slots, trial, transfer)."""

    @initialize()
    def boot(self) -> None:
        self.host = Host(make_device(_IMAGES["v2"]))
        self.active = "v2"
        self.inactive: tuple[str, str] | None = None  # (image key, role)
        self.trial = False
        self.deadline = 0.0
        self.xfer: dict | None = None
        self.last: tuple[bytes, int, list[m.Packet], float, int] | None = None

    # ------------------------------------------------------------------ reference helpers
    def _switch(self, key: str, trial: bool, timeout_s: int) -> None:
        self.inactive = (self.active, "previous")
        self.active = key
        self.trial = trial
        self.deadline = self.host.now + (timeout_s or DEFAULT_TRIAL_TIMEOUT_S)

    def _revert(self) -> None:
        assert self.inactive is not None and self.inactive[1] == "previous", "trial without a rollback target"
        self.inactive, self.active = (self.active, "reverted"), self.inactive[0]
        self.trial = False

    def _fresh_xfer(self) -> bool:
        return self.xfer is not None and self.host.now - self.xfer["last"] < XFER_STALE_S

    def _command(self, msg: m.Message) -> m.Message:
        """Send, check the device answered this command (right seq, ERROR naming its type)."""
        host = self.host
        host.seq = (host.seq + 1) & 0xFFFF
        data = m.encode(msg, host.seq)
        replies, _ = host.send_raw(data, host.seq)
        assert replies, f"device did not answer {msg.TYPE.name}"
        reply = replies[0].msg
        if isinstance(reply, m.Error):
            assert reply.ref_type == msg.TYPE and reply.message
        self.last = (data, host.seq, replies, host.now, msg.TYPE)
        return reply

    def _expect(self, msg: m.Message, code: ErrorCode | None, kind: type[m.Message] | None = None) -> m.Message:
        reply = self._command(msg)
        if code is None:
            assert not isinstance(reply, m.Error), (msg, reply)
            if kind is not None:
                assert isinstance(reply, kind), (msg, reply)
        else:
            assert isinstance(reply, m.Error) and reply.code == code, (msg, reply, code)
        return reply

    # ------------------------------------------------------------------ rules
    @rule(key=st.sampled_from(sorted(_VERSION) + sorted(_BAD)), tid=st.integers(1, 3),
          chunk=st.sampled_from([512, 2048]), lie=st.booleans())
    def begin(self, key: str, tid: int, chunk: int, lie: bool) -> None:
        image = _IMAGES[key]
        announced = sha(b"lie" + image) if lie else sha(image)
        msg = m.XferBegin(tid, len(image), chunk, 0, announced, "pump-ae", _VERSION.get(key, 9), "")
        x = self.xfer
        if self.trial:
            self._expect(msg, ErrorCode.BUSY)
            return
        if x is not None and x["sha"] == announced and x["chunk"] == chunk:
            x["tid"], x["last"] = tid, self.host.now
        elif self._fresh_xfer():
            self._expect(msg, ErrorCode.BUSY)
            return
        else:
            self.inactive = None
            self.xfer = {"tid": tid, "key": key, "sha": announced, "chunk": chunk, "have": set(),
                         "n": -(-len(image) // chunk), "last": self.host.now}
        status = self._expect(msg, None, m.XferStatus)
        assert status.transfer_id == tid and set(range(status.n_chunks)) - set(status.missing()) == self.xfer["have"]

    @rule(where=st.floats(0, 1, exclude_max=True), corrupt=st.booleans(), wrong_tid=st.booleans())
    def chunk(self, where: float, corrupt: bool, wrong_tid: bool) -> None:
        x = self.xfer
        if x is None:
            self._expect(m.XferChunk(1, 0, crc32(b"x"), b"x"), ErrorCode.NO_TRANSFER)
            return
        i = int(where * x["n"])
        data = _IMAGES[x["key"]][i * x["chunk"]:(i + 1) * x["chunk"]]
        tid = x["tid"] + 10 if wrong_tid else x["tid"]
        msg = m.XferChunk(tid, i, crc32(data) ^ (1 if corrupt else 0), data)
        if wrong_tid:
            self._expect(msg, ErrorCode.NO_TRANSFER)
        elif corrupt:
            self._expect(msg, ErrorCode.CHUNK_CRC)
        else:
            self._expect(msg, None, m.Ack)
            x["have"].add(i)
            x["last"] = self.host.now

    @rule()
    def all_chunks(self) -> None:
        x = self.xfer
        if x is None:
            return
        for i in sorted(set(range(x["n"])) - x["have"]):
            data = _IMAGES[x["key"]][i * x["chunk"]:(i + 1) * x["chunk"]]
            self._expect(m.XferChunk(x["tid"], i, crc32(data), data), None, m.Ack)
            x["have"].add(i)
            x["last"] = self.host.now

    @rule(key=st.sampled_from(sorted(_VERSION) + sorted(_BAD)), mode=st.sampled_from(list(CommitMode)),
          timeout=st.sampled_from([0, 5]))
    def deploy(self, key: str, mode: CommitMode, timeout: int) -> None:
        """A whole push deployment in one step (begin, every chunk, commit), as the host runs it."""
        self.begin(key, 4, 2048, False)
        if self.xfer is not None and self.xfer["tid"] == 4:
            self.all_chunks()
            self.commit(mode, timeout, False)

    @rule(mode=st.sampled_from(list(CommitMode)), timeout=st.sampled_from([0, 5]), wrong_tid=st.booleans())
    def commit(self, mode: CommitMode, timeout: int, wrong_tid: bool) -> None:
        x = self.xfer
        tid = (x["tid"] + 10 if wrong_tid else x["tid"]) if x else 1
        msg = m.XferCommit(tid, int(mode), timeout, 2)
        if x is None or wrong_tid:
            self._expect(msg, ErrorCode.NO_TRANSFER)
            return
        if len(x["have"]) < x["n"]:
            self._expect(msg, ErrorCode.INCOMPLETE)
            return
        self.xfer = None
        key = x["key"]
        if x["sha"] != sha(_IMAGES[key]):
            self._expect(msg, ErrorCode.HASH_MISMATCH)
        elif key in _BAD:
            self._expect(msg, _BAD[key])
        else:
            lat = self._expect(msg, None, m.Latency)
            assert lat.model_version == _VERSION[key] and lat.n == 2
            self.inactive = (key, "stored")
            if mode != CommitMode.STORE:
                self._switch(key, mode == CommitMode.TRIAL, timeout)

    @rule(trial=st.booleans(), timeout=st.sampled_from([0, 5]))
    def activate(self, trial: bool, timeout: int) -> None:
        msg = m.Activate(int(trial), timeout, 1)
        if self._fresh_xfer():
            self._expect(msg, ErrorCode.BUSY)
        elif self.inactive is None:
            self._expect(msg, ErrorCode.NO_MODEL)
        else:
            self._expect(msg, None, m.Latency)
            self._switch(self.inactive[0], trial, timeout)

    @rule()
    def rollback(self) -> None:
        if self.inactive is None or self.inactive[1] != "previous":
            self._expect(m.Rollback(), ErrorCode.NO_PREVIOUS)
        else:
            self._expect(m.Rollback(), None, m.Hello)
            self._switch(self.inactive[0], False, 0)

    @rule()
    def confirm(self) -> None:
        if not self.trial:
            self._expect(m.Confirm(), ErrorCode.NOT_TRIAL)
        else:
            self._expect(m.Confirm(), None, m.Hello)
            self.trial = False

    @rule()
    def reboot(self) -> None:
        self._expect(m.Reboot(), None, m.Hello)
        if self.trial:
            self._revert()

    @rule(wrong_tid=st.booleans())
    def abort(self, wrong_tid: bool) -> None:
        x = self.xfer
        if x is None or wrong_tid:
            self._expect(m.XferAbort((x["tid"] + 10) if x else 1), ErrorCode.NO_TRANSFER)
        else:
            self._expect(m.XferAbort(x["tid"]), None, m.Ack)
            self.xfer = None

    @rule()
    def query(self) -> None:
        if self.xfer is None:
            self._expect(m.XferQuery(1), ErrorCode.NO_TRANSFER)
        else:
            st_ = self._expect(m.XferQuery(self.xfer["tid"]), None, m.XferStatus)
            assert st_.received == len(self.xfer["have"])

    @rule(garbage=st.binary(max_size=40))
    def garbage(self, garbage: bytes) -> None:
        try:
            m.decode(garbage)
            return  # by chance a well-formed message: not garbage
        except Exception:
            pass
        seq = int.from_bytes(garbage[2:4], "little") if len(garbage) >= 4 else 0
        _, out = self.host.send_raw(garbage, seq)
        replies = [p.msg for ch, p in out if ch == REPLY]
        assert replies and isinstance(replies[0], m.Error), "device did not refuse garbage with an ERROR"

    @rule()
    def duplicate(self) -> None:
        """A QoS-1 re-delivery of the last command: same answer, nothing redone."""
        if self.last is None:
            return
        data, seq, replies, sent_at, mtype = self.last
        if mtype == MsgType.XFER_CHUNK or self.host.now - sent_at >= 10.0:
            return
        again, _ = self.host.send_raw(data, seq)
        assert [p.msg for p in again] == [p.msg for p in replies]

    @rule(dt=st.sampled_from([0.3, 2.0, 6.0, 31.0, 301.0]))
    def tick(self, dt: float) -> None:
        out = self.host.tick(dt)
        if self.trial and self.host.now >= self.deadline:
            self._revert()
            assert [msg.code for ch, msg in out if isinstance(msg, m.Event)] == [EventCode.TRIAL_REVERTED]
        for ch, msg in out:
            if ch == TELEMETRY:
                assert msg.model_version == _VERSION[self.active]
                assert not msg.flags & TelemetryFlags.NO_MODEL

    # ------------------------------------------------------------------ the invariant
    @invariant()
    def active_slot_is_valid_and_reported(self) -> None:
        dev = self.host.dev
        active = dev.active_model
        assert active is not None, "device without a model"
        assert self.active in _VERSION, "a bad image is active"
        assert active.raw == _IMAGES[self.active]
        assert sha(active.raw) == active.sha256
        hello = dev.hello(self.host.now)
        assert hello.model_sha == active.sha256[:8]
        assert hello.model_version == _VERSION[self.active]
        assert hello.trial == int(self.trial) and dev.trial == self.trial
        prev = self.inactive[0] if self.inactive and self.inactive[1] == "previous" else None
        assert hello.prev_version == (_VERSION[prev] if prev else 0)
        assert (hello.state == 3) == (self.xfer is not None)


DeviceCommands.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_random_command_sequences_keep_a_valid_reported_model(images) -> None:
    _IMAGES.clear()
    _IMAGES.update(images)
    DeviceCommands.TestCase("runTest").runTest()
