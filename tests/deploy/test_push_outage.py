"""Issue 11.15: after a broker outage mid-push the host asks the device which chunks it holds
(XFER_QUERY) and sends only the missing ones, instead of queueing retransmissions into the dead
MQTT session for the reconnect. Real Mosquitto killed (SIGKILL) at 30 % of the image and started
again on the same port after an outage longer than a chunk's ACK timeout; real virtual device."""

from __future__ import annotations

import threading

from app.deploy import api
from app.deploy.transfer import ACK_TIMEOUT_S
from app.protocol.image import sha256

# Longer than an ACK timeout: the old pump had retransmitted the window into the queue by then.
OUTAGE_S = ACK_TIMEOUT_S + 1.0
# Where the broker dies, as a fraction of the image acknowledged.
CUT_AT = 0.3


def test_broker_outage_at_30_percent_sends_only_the_missing_chunks(mosquitto_factory, virtual_fleet,
                                                                   model_image_v3, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=["stm32f446"])  # 1 KB chunks: the image is many of them
    dev = fleet.device("sim-001")
    cut = threading.Event()

    def progress(_device: str, done: int, total: int) -> None:
        if done >= CUT_AT * total and done < total and not cut.is_set():
            cut.set()
            broker.kill()
            threading.Timer(OUTAGE_S, broker.restart).start()

    (r,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=broker.url, pull=False, progress=progress)
    assert cut.is_set(), "the broker was never killed: the test did not test anything"
    assert r.ok, r.error_message
    assert dev.active_model.sha256 == sha256(model_image_v3)
    n_chunks = -(-len(model_image_v3) // dev.profile.max_chunk)
    # the device said what it held after the outage, and that was not sent again
    assert r.resumed_chunks >= CUT_AT * n_chunks - 1, (r.resumed_chunks, n_chunks)
    # every chunk the broker lost is sent again once at most, none of what the device holds
    assert r.retransmits <= n_chunks - r.resumed_chunks, (r.retransmits, r.resumed_chunks, n_chunks)
    assert r.wire_bytes < 2 * r.image_size, (r.wire_bytes, r.image_size)
