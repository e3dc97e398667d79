"""A pull transfer recovers a chunk it never got by fetching again (PULL_REFETCH_S), without the
operator re-sending anything: the retained chunks in the broker are the single copy of the model."""

from __future__ import annotations

import hashlib

from app.deploy.api import deploy
from app.fleet.device import PULL_REFETCH_S, VirtualDevice
from app.fleet.fleet import load_factory_image
from app.protocol import messages as m
from app.protocol.codes import XferFlags
from app.protocol.framing import crc32
from tests.fleet.test_fleet_mqtt import Listener


def _chunks(image: bytes, size: int) -> list[bytes]:
    return [m.encode(m.XferChunk(0, i // size, crc32(image[i : i + size]), image[i : i + size]))
            for i in range(0, len(image), size)]


def test_engine_starts_a_new_fetch_round_only_after_silence(model_image_v3):
    dev = VirtualDevice("sim-x", "plant-a/line-1/pump-1", "stm32l4r5", load_factory_image(), seed=1)
    sha = hashlib.sha256(model_image_v3).digest()
    now = 1000.0
    dev.handle(m.encode(m.XferBegin(9, len(model_image_v3), 1024, int(XferFlags.PULL), sha, "ae", 3,
                                    "tinymlops/v1/plant-a/models/x"), 1), now)
    chunks = _chunks(model_image_v3, 1024)
    for c in chunks[:-1]:
        dev.handle_pull_chunk(c, now + 0.1)
    assert dev.pull_request == ("tinymlops/v1/plant-a/models/x", 0)
    dev.tick(now + 0.1 + PULL_REFETCH_S / 2)
    assert dev.pull_request[1] == 0  # not silent long enough
    dev.tick(now + 0.2 + PULL_REFETCH_S)
    assert dev.pull_request[1] == 1
    out = dev.handle_pull_chunk(chunks[-1], now + 0.3 + PULL_REFETCH_S)
    status = m.decode(out[-1][1]).msg
    assert isinstance(status, m.XferStatus) and status.received == status.n_chunks
    assert dev.pull_request is None  # complete: the adapter unsubscribes


def test_rollout_completes_when_a_device_lost_a_chunk(mosquitto_url, virtual_fleet, model_image_v3, tmp_path,
                                                      monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    fleet = virtual_fleet(mosquitto_url, 2, seed=5, profiles=["stm32l4r5"])
    victim = fleet.devices[0]
    original = victim.handle_pull_chunk
    dropped: list[int] = []

    def lossy(data: bytes, now: float | None = None):
        index = m.decode(data).msg.index
        if index == 1 and not dropped:  # the broker's first delivery of chunk 1 never arrives
            dropped.append(index)
            return []
        return original(data, now)

    monkeypatch.setattr(victim, "handle_pull_chunk", lossy)
    listener = Listener(mosquitto_url)
    try:
        results = deploy(model_image_v3, [d.device_id for d in fleet.devices], via="mqtt", broker=mosquitto_url,
                         bench_count=3)
        assert [r.ok for r in results] == [True, True], [r.error_message for r in results]
        assert dropped == [1]
        listener.wait(lambda t, r, p: t.endswith(f"{victim.device_id}/telemetry") and p.msg.model_version == 3)
    finally:
        listener.close()
