"""in a fleet rollout a COMMIT whose reply is lost (Wi-Fi drop right after the
device activated the model) was reported and recorded as "failed" while the device ran the new
model; the push path already asked the device. The operator would roll back or redeploy a device
that is fine. Real Mosquitto, real virtual devices; only the reply to XFER_COMMIT is lost."""

from __future__ import annotations

from app.deploy.rollout import Rollout, find_devices
from app.domain.errors import LinkError
from app.protocol.image import sha256
from app.protocol.messages import XferCommit
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection


class LosesCommitReply(MqttChannel):
    """The COMMIT reaches the device; its reply never reaches the operator."""

    def request(self, msg, timeout=None, retries=0, **kw):
        if isinstance(msg, XferCommit):
            super().request(msg, timeout=timeout, retries=retries, **kw)  # the device acts on it
            raise LinkError(f"{self.device_id}: no reply to XFER_COMMIT")
        return super().request(msg, timeout=timeout, retries=retries, **kw)


def test_lost_commit_reply_in_a_rollout_is_resolved_by_asking_the_device(mosquitto_url, virtual_fleet,
                                                                          model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 2, profiles=["stm32l4r5"])
    ids = [d.device_id for d in fleet.devices]
    conn = MqttConnection(mosquitto_url)
    conn.connect()
    try:
        targets = find_devices(conn, ids)
        report = Rollout(conn, model_image_v3, targets, model_name="pump-ae", model_version=3,
                         channel_factory=LosesCommitReply).run()
    finally:
        conn.close()
    for d in fleet.devices:
        assert d.active_model.sha256 == sha256(model_image_v3)
    assert [r.ok for r in report.results] == [True, True], [str(r.error) for r in report.results]


def test_cancel_during_the_canary_reads_as_cancelled_not_as_a_failed_canary(mosquitto_url, virtual_fleet,
                                                                             model_image_v3):
    import threading

    fleet = virtual_fleet(mosquitto_url, 3, profiles=["stm32l4r5"])
    ids = [d.device_id for d in fleet.devices]
    cancel = threading.Event()
    conn = MqttConnection(mosquitto_url)
    conn.connect()
    try:
        report = Rollout(conn, model_image_v3, find_devices(conn, ids), canary=1, cancel=cancel,
                         progress=lambda device, done, total: cancel.set()).run()  # operator hits Cancel
    finally:
        conn.close()
    rest = report.results[1:]
    assert [r.skipped for r in rest] == ["cancelled", "cancelled"], [r.skipped for r in rest]
    for d in fleet.devices:
        assert d.active_model.image.name == "factory"
