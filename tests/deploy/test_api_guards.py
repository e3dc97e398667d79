"""What the deploy API checks before and after it moves bytes: the device's protocol range
(PROTOCOL.md 4.1) and the broker credentials that must never reach the shared history."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.deploy import api
from app.deploy.history import DeploymentHistory
from app.domain.errors import LinkError
from app.protocol.codes import ErrorCode
from app.protocol.image import sha256


def test_device_speaking_another_protocol_version_is_refused_before_a_byte_is_sent(
        virtual_fleet, model_image_v3, tmp_path, monkeypatch):
    fleet = virtual_fleet(None, 1, serial=True)
    dev = fleet.device("sim-001")
    before = dev.active_model.sha256
    real_hello = dev.hello
    monkeypatch.setattr(dev, "hello", lambda *a, **kw: replace(real_hello(*a, **kw), proto_min=2, proto_max=3))
    hist = DeploymentHistory(tmp_path / "h.sqlite")
    (result,) = api.deploy(model_image_v3, via="serial", port=fleet.serial_ports["sim-001"], history=hist)
    assert result.outcome == "refused" and result.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert "protocol 2..3" in result.error_message and "sim-001" in result.error_message
    assert result.wire_bytes == 0 and dev.active_model.sha256 == before != sha256(model_image_v3)
    assert hist.list()[0].outcome == "refused"


def test_history_keeps_the_user_but_not_the_password(tmp_path, model_image_v3):
    hist = DeploymentHistory(tmp_path / "h.sqlite")
    with pytest.raises(LinkError):  # nothing listens on port 1: a failed row per named device
        api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker="mqtt://op:s3cret@127.0.0.1:1", history=hist)
    (row,) = hist.list()
    assert row.outcome == "failed" and row.broker == "mqtt://op@127.0.0.1:1"
    assert "s3cret" not in repr(row)
