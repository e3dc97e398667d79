"""every attempt an operator makes shows up in the deployment history, failures
included, and a device's refusal reads once, not twice."""

from __future__ import annotations

import pytest

from app.deploy import api
from app.deploy.history import DeploymentHistory
from app.domain.errors import LinkError
from app.protocol.codes import ErrorCode
from app.protocol.image import sha256


@pytest.fixture
def hist(tmp_path) -> DeploymentHistory:
    return DeploymentHistory(tmp_path / "history.sqlite")


def test_a_refused_confirm_is_recorded_and_reads_once(virtual_fleet, hist):
    fleet = virtual_fleet(None, 1, serial=True)
    port = fleet.serial_ports["sim-001"]
    result = api.confirm(via="serial", port=port, history=hist)  # nothing is on trial
    assert not result.ok and result.error_code == ErrorCode.NOT_TRIAL
    assert result.error_message.count("no model on trial") == 1, result.error_message
    (row,) = hist.list()
    assert row.device == "sim-001" and row.outcome == "confirm-failed"
    assert row.error_code == ErrorCode.NOT_TRIAL and row.port == port


def test_a_refused_rollback_is_recorded(virtual_fleet, hist):
    fleet = virtual_fleet(None, 1, serial=True)
    port = fleet.serial_ports["sim-001"]
    result = api.rollback(via="serial", port=port, history=hist)  # factory model only: no previous
    assert not result.ok and result.error_code == ErrorCode.NO_PREVIOUS
    (row,) = hist.list()
    assert row.outcome == "rollback-failed" and row.error_code == ErrorCode.NO_PREVIOUS
    assert row.model_name == "factory"  # what the device still runs


def test_deploy_to_a_port_that_does_not_open_is_recorded(model_image_v3, tmp_path, hist):
    port = str(tmp_path / "ttyUSB-unplugged")
    with pytest.raises(LinkError, match="ttyUSB-unplugged"):
        api.deploy(model_image_v3, ["pump-7"], via="serial", port=port, history=hist)
    (row,) = hist.list()
    assert row.device == "pump-7" and row.outcome == "failed" and row.port == port
    assert row.model_version == 3 and row.transport == "serial" and "ttyUSB-unplugged" in row.error_message


def test_deploy_to_the_wrong_device_on_a_port_is_recorded(virtual_fleet, model_image_v3, hist):
    fleet = virtual_fleet(None, 1, serial=True)
    port = fleet.serial_ports["sim-001"]
    with pytest.raises(LinkError, match="not 'sim-002'"):
        api.deploy(model_image_v3, ["sim-002"], via="serial", port=port, history=hist)
    (row,) = hist.list()
    assert row.device == "sim-002" and row.outcome == "failed" and "sim-001" in row.error_message
    assert fleet.device("sim-001").active_model.image.name == "factory"


def test_deploy_through_an_unreachable_broker_is_recorded(model_image_v3, free_tcp_port, hist):
    broker = f"mqtt://127.0.0.1:{free_tcp_port}"  # nothing listens there
    with pytest.raises(LinkError):
        api.deploy(model_image_v3, ["sim-001", "sim-002"], via="mqtt", broker=broker, history=hist)
    rows = hist.list()
    assert sorted(r.device for r in rows) == ["sim-001", "sim-002"]
    assert all(r.outcome == "failed" and r.broker == broker and r.error_message for r in rows)


@pytest.fixture
def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_confirm_row_names_the_model_by_the_same_sha_as_its_deployment(virtual_fleet, model_image_v3, hist):
    fleet = virtual_fleet(None, 1, serial=True, baud=921600)
    port = fleet.serial_ports["sim-001"]
    (deployed,) = api.deploy(model_image_v3, via="serial", port=port, baud=921600, trial=True, history=hist)
    assert deployed.ok, deployed.error_message
    assert api.confirm(via="serial", port=port, baud=921600, history=hist).ok
    confirmed, deployment = hist.list()
    assert confirmed.outcome == "confirmed"
    # a report joins deployments and confirmations on the image's SHA-256 (64 hex digits)
    assert confirmed.model_sha == deployment.model_sha == sha256(model_image_v3).hex()
