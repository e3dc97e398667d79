"""What every transfer does after its last chunk: XFER_COMMIT, then BENCHMARK (PROTOCOL.md 5.3).

Push (app/deploy/transfer.py) and pull (app/deploy/rollout.py) share this, so a lost reply is
recovered the same way on both paths and within deadlines of its own:

* a COMMIT reply that has not come after `COMMIT_PROBE_S` is asked about with GET_INFO (the HELLO's
  `model_sha` says whether the new image is active) rather than waited for a full minute; the
  COMMIT is re-sent until `COMMIT_DEADLINE_S`. A COMMIT is never cancelled half-way: the device may
  be activating the image, and only its answer says which model runs.
* BENCHMARK changes nothing on the device, so a lost reply is simply asked again, each attempt
  bounded by `bench_reply_s(count)` (7 s for the default 100 inferences), `BENCHMARK_ATTEMPTS` of
  them at most: its own deadline, not the COMMIT's; cancel is honoured at once. The deployment
  has succeeded by then: "no inference figures" is a note, not a failure. A device without the
  BENCHMARK capability is never sent one.

`request(msg, timeout, retries)` is the caller's: it returns the reply message or raises
DeviceError (an ERROR reply), LinkError (no reply) or Cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.domain.errors import Cancelled, DeviceError, LinkError, ProtocolError, TinyMLOpsError
from app.protocol.codes import ERROR_TEXT, Caps, CommitMode, ErrorCode
from app.protocol.messages import Benchmark, GetInfo, Latency, Message, XferCommit

log = logging.getLogger(__name__)

# A COMMIT verifies the SHA-256, loads and self-tests: a second or two on the slowest profile and
# the emulator. A reply not here by then is more likely lost than late, so the device is asked.
COMMIT_PROBE_S = 5.0
# GET_INFO answers at once on every device (after a COMMIT it is processing, at the latest when done).
PROBE_TIMEOUT_S = 3.0
# Pause between two rounds of COMMIT + GET_INFO that both failed at once (a serial port that is
# gone fails every write immediately): a reconnecting link gets a moment, the CPU is not burnt.
COMMIT_RETRY_PAUSE_S = 0.5
# Overall bound on resolving one COMMIT: several probe rounds, enough for a reconnecting MQTT link.
COMMIT_DEADLINE_S = 60.0
# A BENCHMARK reply not here this long after the inferences should have ended was lost: ask again.
BENCH_REPLY_S = 3.0
# Time one inference may take on the slowest device: the MLPerf AE (1.76M instructions) takes ~27 ms
# on the 64 MHz nRF52840; the fixture and factory models far less.
BENCH_PER_INFERENCE_S = 0.04
# BENCHMARK is idempotent: a lost reply is asked this many times before giving up on the figures.
BENCHMARK_ATTEMPTS = 3

RequestFn = Callable[[Message, float, int], Message]


def error_text(code: int) -> str:
    try:
        return ERROR_TEXT[ErrorCode(code)]
    except (ValueError, KeyError):
        return f"error code {code}"


def device_error(device_id: str, code: int, detail: str = "") -> DeviceError:
    """A DeviceError whose message names the device, the code and its human text."""
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = str(code)
    text = error_text(code)
    # the device's own message often repeats the code's text: "NAME (text): text" says it twice
    detail = detail.replace(f"({text}): {text}", f"({text})")
    if name in detail:  # the channel already said "<device> refused <command>: NAME (text): detail"
        text = detail if device_id in detail else f"device {device_id}: {detail}"
    else:
        text = f"device {device_id}: {name} ({code}): {text}"
        if detail and detail not in text:
            text += f" ({detail})"
    return DeviceError(text, code=code)


def active_sha(request: RequestFn, device_id: str, timeout: float = PROBE_TIMEOUT_S) -> bytes | None:
    """The first 8 bytes of the SHA-256 of the image the device runs, or None when it does not answer."""
    try:
        reply = request(GetInfo(), timeout, 0)
    except TinyMLOpsError as exc:
        log.info("%s: GET_INFO after a lost COMMIT reply failed: %s", device_id, exc)
        return None
    return reply.model_sha  # GetInfo's reply is a Hello (typed request, PROTOCOL.md 3)


def commit(request: RequestFn, device_id: str, transfer_id: int, sha: bytes, model_version: int,
           mode: CommitMode, trial_timeout_s: int, *, probe_s: float = COMMIT_PROBE_S,
           deadline_s: float = COMMIT_DEADLINE_S, on_link_error: Callable[[], None] | None = None) -> Latency:
    """XFER_COMMIT with `bench_count = 0`; a lost reply is resolved with GET_INFO.

    Returns the device's Latency, or `Latency(model_version)` (no device figures) when the reply
    was lost but the device runs the new image. Raises DeviceError (with the device's code) when
    the device refused, LinkError when neither the COMMIT nor GET_INFO was answered in `deadline_s`.
    `on_link_error` runs after a lost reply, before the probe (a serial port is re-opened there)."""
    msg = XferCommit(transfer_id, int(mode), trial_timeout_s, 0)
    deadline = time.monotonic() + deadline_s
    last = ""
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply = request(msg, min(probe_s, left), 0)
        except DeviceError as exc:
            # NO_TRANSFER: an earlier COMMIT of ours worked (the device dropped the transfer) and its
            # reply was lost; anything else is the device's verdict
            if exc.code == ErrorCode.NO_TRANSFER and active_sha(request, device_id) == sha[:8]:
                log.info("%s: COMMIT reply lost, but the device runs the new image", device_id)
                return Latency(model_version)
            raise device_error(device_id, exc.code, str(exc)) from exc
        except LinkError as exc:
            last = str(exc)
            log.info("%s: no COMMIT reply (%s); asking the device which image it runs", device_id, exc)
            if on_link_error is not None:
                on_link_error()
            if active_sha(request, device_id, min(PROBE_TIMEOUT_S, max(left, 0.001))) == sha[:8]:
                log.info("%s: COMMIT reply lost, but the device runs the new image", device_id)
                return Latency(model_version)
            time.sleep(max(0.0, min(COMMIT_RETRY_PAUSE_S, deadline - time.monotonic())))
            continue
        return reply  # XferCommit's reply is a Latency: the channel accepts no other
    raise LinkError(f"device {device_id} did not answer XFER_COMMIT within {deadline_s:g} s ({last})")


def bench_reply_s(bench_count: int) -> float:
    """How long one BENCHMARK of `bench_count` inferences may take before its reply counts as lost."""
    return BENCH_REPLY_S + bench_count * BENCH_PER_INFERENCE_S


def benchmark(request: RequestFn, device_id: str, committed: Latency, bench_count: int, *,
              caps: int = int(Caps.BENCHMARK), cancel: threading.Event | None = None,
              reply_s: float | None = None) -> tuple[Latency, str]:
    """Inference figures of the model just activated, merged into the COMMIT's Latency.

    BENCHMARK runs after the host stops its deployment clock, so the deployment latency never
    includes the device's inference run. Returns the merged Latency and, when the device gave no
    figures, why (the deployment itself has succeeded: the model is active). `request` should
    honour `cancel` while it waits (DeviceChannel.request does); a cancel ends the figures, not the
    deployment."""
    if bench_count <= 0:
        return committed, ""
    if not caps & Caps.BENCHMARK:
        return committed, f"device {device_id} has no BENCHMARK capability"
    timeout = bench_reply_s(bench_count) if reply_s is None else reply_s
    last = ""
    for _ in range(BENCHMARK_ATTEMPTS):
        if cancel is not None and cancel.is_set():
            last = "cancelled"
            break
        try:
            reply = request(Benchmark(bench_count), timeout, 0)
        except Cancelled:
            last = "cancelled"
            break
        except DeviceError as exc:
            last = str(device_error(device_id, exc.code, str(exc)))
            break
        except (LinkError, ProtocolError) as exc:
            last = f"no BENCHMARK reply from {device_id}: {exc}"
            continue
        return Latency(committed.model_version or reply.model_version, committed.flags | reply.flags,
                       committed.deploy_us, committed.load_us or reply.load_us, reply.n, reply.min_us,
                       reply.median_us, reply.p95_us, reply.max_us), ""
    log.warning("%s: no inference figures: %s", device_id, last)
    return committed, last
