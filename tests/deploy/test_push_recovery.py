"""Issue 11 (reliability) on the push path, against the real VirtualDevice engine behind the lossy
serial link: a failed push leaves the device free (11.4), a lost BENCHMARK reply neither blocks nor
ignores cancel (11.6), a lost COMMIT reply is resolved by GET_INFO without the old minute-long wait
(11.12), and a device without the BENCHMARK capability is never sent one (11.11).

The faults are precise: a wrapper around the device drops the replies of one message type, so each
test provokes exactly the loss it is about. Deadlines are generous (a loaded 2-core machine) and far
below what the defect cost: the old code waited `commit_timeout_s` (set to an hour here) per reply.
"""

from __future__ import annotations

import hashlib
import threading

from app.deploy.transfer import PushTransfer
from app.fleet.device import CAPS, VirtualDevice
from app.protocol.codes import Caps, CommitMode, ErrorCode, MsgType
from app.protocol.messages import XferAbort, encode, peek_type
from tests.deploy.lossy import Faults, LossyLink

TEST_CHUNK = 256
PROFILE = "stm32l4r5"
# In-process delivery is synchronous: a reply that has not come in this long was lost.
FAST = {"ack_timeout_s": 0.005, "begin_timeout_s": 0.01, "resync_backoff_s": 0.0}
# The old code waited this long per lost reply (its commit timeout): a test that finishes at all
# within JOIN_S has not waited for it.
HOUR_S = 3600.0
# Time a push that recovers properly gets to finish on a loaded machine (the recovery waits one
# COMMIT_PROBE_S, 5 s, at most).
JOIN_S = 60.0


class Device:
    """A VirtualDevice whose replies to `drop` commands vanish (the first `drop_first` of them, or all)."""

    def __init__(self, factory: bytes, caps: int = int(CAPS)) -> None:
        self.dev = VirtualDevice("sim-001", "plant-a/line-1/pump-1", PROFILE, factory, seed=1, caps=caps)
        self.drop: set[int] = set()
        self.drop_first: int | None = None
        self.seen: dict[int, int] = {}
        self.on_command = lambda msg_type: None

    def handle(self, raw: bytes) -> list[bytes]:
        kind = peek_type(raw)
        self.seen[kind] = self.seen.get(kind, 0) + 1
        self.on_command(kind)
        out = [data for _, data in self.dev.handle(raw)]
        if kind in self.drop and (self.drop_first is None or self.seen[kind] <= self.drop_first):
            return []
        return out


def _push(device: Device, link: LossyLink, image: bytes, **kw) -> PushTransfer:
    return PushTransfer(link.channel(), image, device_id="sim-001", max_chunk=TEST_CHUNK, framed=True,
                        reconnect=link.channel, **{**FAST, **kw})


def _run_in_thread(push: PushTransfer, **kw) -> dict:
    """push.run(**kw) on a daemon thread: a defect that blocks for an hour fails the join, not the run."""
    out: dict = {}

    def work() -> None:
        try:
            out["stats"] = push.run(**kw)
        except Exception as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive(), "the push did not finish: it waits for a reply that was lost"
    return out


def test_lost_begin_reply_then_failure_aborts_so_the_next_push_is_not_busy(model_image, model_image_v3,
                                                                           model_factory):
    """11.4: the device accepted XFER_BEGIN, its reply never came; the push fails, and must abort."""
    device = Device(model_image)
    device.drop = {MsgType.XFER_BEGIN}
    link = LossyLink(device.handle, Faults(), seed=1)
    out = _run_in_thread(_push(device, link, model_image_v3))
    assert "sim-001" in str(out.get("error")), out
    assert device.seen.get(MsgType.XFER_ABORT, 0) >= 1
    # a fall-back to another model right away is not refused as BUSY
    device.drop = set()
    other = model_factory.with_version(model_image_v3, 9)
    stats = _push(device, LossyLink(device.handle, Faults(), seed=2), other).run(bench_count=1)
    assert stats.latency is not None
    assert device.dev.active_model.sha256 == hashlib.sha256(other).digest()


def test_commit_refusal_and_cancel_also_abort(model_image, model_image_v3, model_factory):
    """11.4 on the other failure paths: a refused COMMIT and a cancel both leave no transfer behind."""
    device = Device(model_image)
    bad = model_factory.selftest_wrong(model_image_v3)
    out = _run_in_thread(_push(device, LossyLink(device.handle, Faults(), seed=1), bad))
    assert getattr(out.get("error"), "code", None) == ErrorCode.SELFTEST_FAILED, out
    cancel = threading.Event()
    device.on_command = lambda kind: cancel.set() if kind == MsgType.XFER_CHUNK else None
    out = _run_in_thread(_push(device, LossyLink(device.handle, Faults(), seed=2), model_image_v3, cancel=cancel))
    assert "cancelled" in str(out.get("error")), out
    # nothing of either push is left on the device: XFER_ABORT of any id finds no transfer
    assert device.dev.handle(encode(XferAbort(0), 7))[0][1][1] == MsgType.ERROR
    assert device.dev.hello().state != 3  # not UPDATING


def test_lost_commit_reply_is_resolved_by_get_info_without_waiting_the_commit_timeout(model_image,
                                                                                      model_image_v3):
    """11.12: the COMMIT worked, its reply was lost; GET_INFO says so within COMMIT_PROBE_S."""
    device = Device(model_image)
    device.drop, device.drop_first = {MsgType.XFER_COMMIT}, 1
    push = _push(device, LossyLink(device.handle, Faults(), seed=1), model_image_v3, commit_timeout_s=HOUR_S)
    out = _run_in_thread(push, bench_count=1)
    assert "stats" in out, out
    assert device.seen.get(MsgType.GET_INFO, 0) >= 1
    assert device.dev.active_model.sha256 == hashlib.sha256(model_image_v3).digest()


def test_cancel_while_a_benchmark_reply_is_lost_reports_deployed_without_figures(model_image, model_image_v3):
    """11.6: the model is active; the lost BENCHMARK reply must not hold the operator, nor ignore cancel."""
    device = Device(model_image)
    device.drop = {MsgType.BENCHMARK}
    cancel = threading.Event()
    device.on_command = lambda kind: cancel.set() if kind == MsgType.BENCHMARK else None
    push = _push(device, LossyLink(device.handle, Faults(), seed=1), model_image_v3, commit_timeout_s=HOUR_S,
                 cancel=cancel)
    out = _run_in_thread(push, mode=CommitMode.ACTIVATE, bench_count=5)
    assert "stats" in out, out  # deployed: the cancel came after the commit
    stats = out["stats"]
    assert stats.latency is not None and stats.latency.n == 0
    assert any("no inference figures" in e for e in stats.events), stats.events
    assert device.dev.active_model.sha256 == hashlib.sha256(model_image_v3).digest()


def test_lost_benchmark_replies_give_up_within_the_benchmark_deadline(model_image, model_image_v3):
    """11.6: without cancel, the figures are asked again a few times, each bounded by the benchmark's
    own reply time (not the COMMIT's hour), then the deployment is reported without them."""
    device = Device(model_image)
    device.drop = {MsgType.BENCHMARK}
    push = _push(device, LossyLink(device.handle, Faults(), seed=1), model_image_v3, commit_timeout_s=HOUR_S,
                 bench_reply_s=0.05)
    out = _run_in_thread(push, bench_count=5)
    assert "stats" in out, out
    assert device.seen[MsgType.BENCHMARK] >= 2  # asked again
    assert any("no BENCHMARK reply" in e for e in out["stats"].events), out["stats"].events


def test_no_benchmark_sent_to_a_device_without_the_capability(model_image, model_image_v3):
    """11.11: caps without BENCHMARK: the deployment succeeds and no BENCHMARK crosses the wire."""
    caps = int(CAPS) & ~int(Caps.BENCHMARK)
    device = Device(model_image, caps=caps)
    push = _push(device, LossyLink(device.handle, Faults(), seed=1), model_image_v3, caps=caps)
    stats = push.run(bench_count=5)
    assert MsgType.BENCHMARK not in device.seen
    assert device.dev.counters.get("uncapable_command", 0) == 0
    assert any("BENCHMARK capability" in e for e in stats.events), stats.events


def test_chunks_are_encoded_once_not_again_to_count_their_bytes(model_image, model_image_v3, monkeypatch):
    """Issue 12: the engine counted each chunk's wire bytes by encoding (and framing) it a second time."""
    import app.deploy.transfer as transfer

    encoded: list[str] = []
    real = transfer.encode

    def counting(msg, seq=0):
        encoded.append(type(msg).__name__)
        return real(msg, seq)

    monkeypatch.setattr(transfer, "encode", counting)
    device = Device(model_image)
    stats = _push(device, LossyLink(device.handle, Faults(), seed=1), model_image_v3).run(bench_count=1)
    assert stats.chunks_sent >= stats.n_chunks > 1
    assert "XferChunk" not in encoded, encoded.count("XferChunk")
    # the count is still the bytes on the wire: every chunk framed, plus the commands
    assert stats.wire_bytes > len(model_image_v3)
