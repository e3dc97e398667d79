"""a bench count or trial timeout outside the protocol's u16 was noticed only when
XFER_COMMIT was encoded, after the whole image had crossed the link, leaving a failed deployment
in the history for a typo. It is refused before anything is sent."""

from __future__ import annotations

import pytest

from app.deploy import api
from app.deploy.history import DeploymentHistory
from app.domain.errors import TinyMLOpsError
from app.protocol.codes import ErrorCode


@pytest.mark.parametrize("kwargs", [{"bench_count": 70000}, {"bench_count": -1},
                                    {"trial": True, "trial_timeout_s": 65536}, {"trial_timeout_s": -5}])
def test_out_of_range_commit_settings_are_refused_before_a_byte_is_sent(virtual_fleet, model_image_v3, tmp_path,
                                                                         kwargs):
    fleet = virtual_fleet(None, 1, serial=True)
    port = fleet.serial_ports["sim-001"]
    hist = DeploymentHistory(tmp_path / "h.sqlite")
    with pytest.raises(TinyMLOpsError, match=next(iter(kwargs.keys() - {"trial"}))) as err:
        api.deploy(model_image_v3, via="serial", port=port, history=hist, **kwargs)
    assert err.value.code == ErrorCode.BAD_ARGUMENT
    assert hist.list() == []  # nothing was attempted
    (ok,) = api.deploy(model_image_v3, via="serial", port=port, history=hist)  # the device is not left BUSY
    assert ok.ok, ok.error_message
