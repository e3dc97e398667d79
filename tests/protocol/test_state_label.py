"""StateLabel: the one home of a device state's word, and the word every output keeps."""

from __future__ import annotations

import json

from app.protocol.codes import DeviceState, StateLabel
from app.services.fleet_monitor import DeviceRecord


def test_every_wire_state_has_its_word_and_back() -> None:
    assert [s.label for s in DeviceState] == list(StateLabel)
    assert all(s.label is StateLabel[s.name] for s in DeviceState)
    assert DeviceState.from_wire(99).label is StateLabel.ONLINE  # newer firmware's state: shown online


def test_the_word_prints_and_serialises_as_before() -> None:
    record = DeviceRecord(device_id="d1", state=StateLabel.OFFLINE)
    assert json.loads(json.dumps(record.as_dict()))["state"] == "offline"
    assert f"{record.state}" == str(record.state) == "offline"
    assert f"{StateLabel.STREAMING:<10}|" == "streaming |"  # the CLI table pads it like a str
    assert not record.online and DeviceRecord(device_id="d2").online
    assert DeviceRecord(device_id="d2").state is StateLabel.ONLINE
