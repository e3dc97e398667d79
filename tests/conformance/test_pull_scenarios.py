"""Pull transfers (PROTOCOL.md 5.2) on every MQTT device implementation: the host publishes the
chunks retained under the site's models topic and tells the device to fetch them. What must hold
whatever the broker does: a chunk missing or corrupted on the broker is taken once it is there
again, a broker that restarts (losing every retained chunk) mid-pull costs only the chunks still
missing, and the device ends up running a valid model, also after a reboot."""

from __future__ import annotations

import queue
import time
import zlib

from app.deploy import api
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import Caps, EventCode, XferFlags
from app.protocol.image import sha256
from tests.conformance.host import PUBLISH_WAIT_S, Host

# Chunk size of the hand-made pulls below: the v3 test image is then a handful of chunks.
CHUNK = 1024
# Inferences the deployments ask for: a few, the figures are not what is tested here.
BENCH = 5
# How long one look at the reply topic waits for an unsolicited XFER_STATUS before the scenario
# asks XFER_QUERY itself (a pulling device reports at most every 0.5 s, and not after its last
# chunk unless the image is complete).
STATUS_LOOK_S = 1.0
# Device and host reconnect with back-off after a broker restart; a loaded machine gets this long.
BROKER_COMEBACK_S = 60.0


def _chunks(image: bytes) -> list[bytes]:
    """The image as the host publishes it: one XFER_CHUNK message with transfer_id 0 per chunk."""
    parts = [image[i:i + CHUNK] for i in range(0, len(image), CHUNK)]
    return [m.encode(m.XferChunk(0, i, zlib.crc32(part), part), 0) for i, part in enumerate(parts)]


def _publish(host: Host, prefix: str, chunks: dict[int, bytes]) -> None:
    for index, payload in chunks.items():
        host.conn.publish(f"{prefix}/{index}", payload, qos=1, retain=True)
    host.conn.wait_published()


def _begin_pull(host: Host, image: bytes, transfer_id: int, prefix: str) -> m.XferStatus:
    status = host.request(m.XferBegin(transfer_id=transfer_id, image_size=len(image), chunk_size=CHUNK,
                                      flags=XferFlags.PULL, sha256=sha256(image), model_name="pump-ae",
                                      model_version=3, source=prefix))
    assert isinstance(status, m.XferStatus) and status.transfer_id == transfer_id
    return status


def _wait_held(host: Host, transfer_id: int, want: int, timeout: float = PUBLISH_WAIT_S) -> m.XferStatus:
    """The device's XFER_STATUS once it holds `want` chunks: from its own reports, or from XFER_QUERY
    when it stays quiet (its last report may predate its last chunk)."""
    deadline = time.monotonic() + timeout
    q = host.received[topics.REPLY]
    while time.monotonic() < deadline:
        try:
            msg = q.get(timeout=STATUS_LOOK_S).msg
        except queue.Empty:
            msg = host.request(m.XferQuery(transfer_id))
        if isinstance(msg, m.XferStatus) and msg.received >= want:
            assert msg.received == want, msg
            return msg
    raise AssertionError(f"the device never held {want} chunks within {timeout} s")


def _commit_and_check(host: Host, image: bytes, transfer_id: int) -> None:
    lat = host.request(m.XferCommit(transfer_id, 1, 0, BENCH))
    assert isinstance(lat, m.Latency) and lat.model_version == 3
    assert host.request(m.GetInfo()).model_sha == sha256(image)[:8]


def _clear(host: Host, prefix: str, n: int) -> None:
    _publish(host, prefix, dict.fromkeys(range(n), b""))  # empty retained payloads delete them


def test_every_mqtt_device_pulls_a_rollout(dut, host, model_image_v3):
    status = host.wait_for(topics.STATUS, m.Hello)
    assert status.caps & Caps.PULL_XFER  # both implementations fetch from the broker
    (result,) = api.deploy(model_image_v3, [dut.device_id], via="mqtt", broker=dut.url, bench_count=BENCH,
                           canary=1, canary_threshold=1.0)
    assert (result.outcome, result.transport) == ("ok", "mqtt-pull"), result.error_message
    assert host.request(m.GetInfo()).model_sha == sha256(model_image_v3)[:8]


def test_pull_takes_a_missing_chunk_once_the_broker_has_it_and_drops_a_corrupted_one(dut, host, model_image_v3):
    image = model_image_v3
    chunks = _chunks(image)
    assert len(chunks) >= 3
    gap = len(chunks) // 2
    prefix = topics.model_chunk_prefix(dut.site, sha256(image).hex())
    corrupted = bytearray(chunks[gap])
    corrupted[-1] ^= 0xFF  # its data no longer matches its CRC
    _publish(host, prefix, {i: c for i, c in enumerate(chunks) if i != gap} | {gap: bytes(corrupted)})
    try:
        host.drain(topics.REPLY)
        _begin_pull(host, image, 41, prefix)
        held = _wait_held(host, 41, len(chunks) - 1)
        assert not held.bitmap[gap // 8] & (1 << gap % 8)  # the corrupted one is not held
        _publish(host, prefix, {gap: chunks[gap]})  # the host publishes it again
        _wait_held(host, 41, len(chunks))
        _commit_and_check(host, image, 41)
    finally:
        _clear(host, prefix, len(chunks))


def test_pull_survives_a_broker_restart_and_boots_the_model(dut, host, model_image_v3):
    """The broker restarts without persistence mid-pull: the retained chunks are gone, the device
    reconnects and subscribes again by itself, keeps what it held, takes the rest once the host
    publishes them again (PROTOCOL.md 5.2), and after a reboot runs the new model."""
    image = model_image_v3
    chunks = _chunks(image)
    half = len(chunks) // 2
    prefix = topics.model_chunk_prefix(dut.site, sha256(image).hex())
    _publish(host, prefix, dict(enumerate(chunks[:half])))
    host.drain(topics.REPLY)
    _begin_pull(host, image, 42, prefix)
    _wait_held(host, 42, half)
    host.drain(topics.STATUS)
    dut.broker.restart()
    host.wait_for(topics.STATUS, m.Hello, lambda h: h.device_id == dut.device_id, timeout=BROKER_COMEBACK_S)
    host.drain(topics.REPLY)
    _publish(host, prefix, dict(enumerate(chunks)))
    try:
        _wait_held(host, 42, len(chunks), timeout=BROKER_COMEBACK_S)
        _commit_and_check(host, image, 42)
        assert isinstance(host.request(m.Reboot()), m.Hello)
        host.wait_for(topics.REPLY, m.Event, lambda e: e.code == EventCode.BOOTED)
        assert host.request(m.GetInfo()).model_sha == sha256(image)[:8]
    finally:
        _clear(host, prefix, len(chunks))


def test_a_pull_resumes_by_itself_after_a_reboot_fetching_only_what_it_lacked(dut, host, model_image_v3):
    """PROTOCOL.md 5.1/5.2: the transfer survives a reboot, and a pull is the device's to fetch: after
    REBOOT it subscribes to its source again without a new XFER_BEGIN, keeps the chunks it held and
    takes the rest once they are there (the C core journals the source; before it, the C device
    forgot that the transfer was pulled and never fetched the rest)."""
    image = model_image_v3
    chunks = _chunks(image)
    half = len(chunks) // 2
    prefix = topics.model_chunk_prefix(dut.site, sha256(image).hex())
    _publish(host, prefix, dict(enumerate(chunks[:half])))
    try:
        host.drain(topics.REPLY)
        _begin_pull(host, image, 44, prefix)
        _wait_held(host, 44, half)
        assert isinstance(host.request(m.Reboot()), m.Hello)
        host.wait_for(topics.REPLY, m.Event, lambda e: e.code == EventCode.BOOTED)
        held = host.request(m.XferQuery(44))
        assert isinstance(held, m.XferStatus) and held.received == half  # the journal kept them
        host.drain(topics.REPLY)
        _publish(host, prefix, {i: chunks[i] for i in range(half, len(chunks))})  # no XFER_BEGIN
        _wait_held(host, 44, len(chunks))
        _commit_and_check(host, image, 44)
    finally:
        _clear(host, prefix, len(chunks))
