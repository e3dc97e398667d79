"""What only the C core's POSIX port has: a process per device with its flash in a file, so a
power cut (the injector tears one flash operation and ends the process) and a restart are real;
and `tinymlops sim --engine c`, which starts such devices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from app.domain.errors import DeviceError, LinkError
from app.fleet import c_device
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import DeviceState, ErrorCode, XferFlags
from app.protocol.image import sha256
from tests.conformance.conftest import PROFILE
from tests.conformance.host import Host

# A C device that loses power exits within moments of the flash operation; a loaded machine gets this.
EXIT_WAIT_S = 20.0
# `tinymlops sim --engine c` shows its devices within seconds; a loaded machine gets this long.
SIM_STARTUP_S = 60.0
# A stopped `tinymlops sim` ends its devices gracefully within seconds.
SIM_STOP_S = 60.0
CHUNK = 1024
TRANSFER_ID = 900


@pytest.fixture
def c_dev(c_device_binary, mosquitto_factory, tmp_path):
    url = mosquitto_factory().url
    dev = c_device.CDevice("c-001", "plant-a/line-1/pump-1", url, tmp_path / "c", profile=PROFILE,
                           binary=c_device_binary)
    yield dev
    dev.stop()


def _begin(host: Host, image: bytes) -> m.XferStatus:
    return host.request(m.XferBegin(transfer_id=TRANSFER_ID, image_size=len(image), chunk_size=CHUNK, flags=0,
                                    sha256=sha256(image), model_name="pump-ae", model_version=3, source=""))


def _chunk(image: bytes, index: int) -> m.XferChunk:
    data = image[index * CHUNK:(index + 1) * CHUNK]
    return m.XferChunk(TRANSFER_ID, index, zlib.crc32(data), data)


def _held(status: m.XferStatus) -> set[int]:
    return {i for i in range(status.n_chunks) if status.bitmap[i // 8] >> (i % 8) & 1}


def _online(dev: c_device.CDevice) -> None:
    c_device.wait_online(dev.broker_url, [dev], c_device.ONLINE_TIMEOUT_MIN_S)


@pytest.mark.parametrize("cut_at", [1, 12])
def test_power_cut_during_a_push_boots_a_valid_model_and_the_transfer_resumes(c_dev, model_image_v3, cut_at):
    """Cut 1 tears the journal write of XFER_BEGIN (the transfer may be lost: begin again); cut 12
    falls among the chunks (the chunks already in flash are kept: only the others are sent)."""
    image = model_image_v3
    n_chunks = -(-len(image) // CHUNK)
    c_dev.start()
    _online(c_dev)  # first boot installs the factory image; its flash operations are behind us
    c_dev.stop()
    c_dev.start(power_cut_at=cut_at)
    _online(c_dev)
    host = Host(c_dev.broker_url, c_dev.site, c_dev.device_id)
    try:
        # the device dies somewhere in here: nothing waits for its replies
        host.publish_raw(m.encode(m.XferBegin(transfer_id=TRANSFER_ID, image_size=len(image), chunk_size=CHUNK,
                                              sha256=sha256(image), model_name="pump-ae", model_version=3), 0xFF))
        for i in range(n_chunks):
            host.publish_raw(m.encode(_chunk(image, i), 0x100 + i))
        assert c_dev.wait(EXIT_WAIT_S) == c_device.POWER_CUT_EXIT
        c_dev.start()
        _online(c_dev)
        info = host.request(m.GetInfo())
        assert info.model_name == "factory" and info.model_version == 1  # a valid model runs
        try:
            status = host.request(m.XferQuery(TRANSFER_ID))
            held = _held(status)
            assert status.image_size == len(image) and len(held) == status.received
        except DeviceError as exc:
            assert exc.code == ErrorCode.NO_TRANSFER and cut_at == 1
            status, held = _begin(host, image), set()
        if cut_at == 12:
            assert 0 < len(held) < n_chunks  # resumed, not restarted
        for i in sorted(set(range(n_chunks)) - held):
            host.request(_chunk(image, i))
        latency = host.request(m.XferCommit(TRANSFER_ID, 1, 0, 0))
        assert isinstance(latency, m.Latency) and latency.model_version == 3
        assert host.request(m.GetInfo()).model_sha == sha256(image)[:8]
    finally:
        host.close()


def test_a_pull_cut_by_a_power_loss_resumes_by_itself_with_only_the_missing_chunks(c_dev, model_image_v3):
    """SIGKILL mid-pull leaves the flash file as a power cut does: the restarted device restores the
    transfer and its journaled pull source, subscribes again once connected and fetches the chunks it
    lacks, with no XFER_BEGIN from the host (PROTOCOL.md 5.1)."""
    from tests.conformance.test_pull_scenarios import _chunks, _clear, _publish, _wait_held

    image = model_image_v3
    chunks = _chunks(image)
    half = len(chunks) // 2
    c_dev.start()
    _online(c_dev)
    host = Host(c_dev.broker_url, c_dev.site, c_dev.device_id)
    prefix = topics.model_chunk_prefix(c_dev.site, sha256(image).hex())
    try:
        _publish(host, prefix, dict(enumerate(chunks[:half])))
        host.drain(topics.REPLY)
        status = host.request(m.XferBegin(transfer_id=TRANSFER_ID, image_size=len(image), chunk_size=CHUNK,
                                          flags=XferFlags.PULL, sha256=sha256(image), model_name="pump-ae",
                                          model_version=3, source=prefix))
        assert isinstance(status, m.XferStatus)
        _wait_held(host, TRANSFER_ID, half)
        c_dev.kill()
        host.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.OFFLINE)  # the last will
        c_dev.start()
        host.wait_for(topics.STATUS, m.Hello, lambda h: h.state != DeviceState.OFFLINE)  # back (mid-transfer)
        assert _held(host.request(m.XferQuery(TRANSFER_ID))) == set(range(half))  # the journal kept them
        host.drain(topics.REPLY)
        _publish(host, prefix, {i: chunks[i] for i in range(half, len(chunks))})
        _wait_held(host, TRANSFER_ID, len(chunks))
        latency = host.request(m.XferCommit(TRANSFER_ID, 1, 0, 0))
        assert isinstance(latency, m.Latency) and latency.model_version == 3
    finally:
        _clear(host, prefix, len(chunks))
        host.close()


def test_restarted_process_keeps_its_model_and_announces_itself(c_dev, model_image_v3):
    from app.deploy import api

    c_dev.start()
    _online(c_dev)
    (result,) = api.deploy(model_image_v3, [c_dev.device_id], via="mqtt", broker=c_dev.broker_url, bench_count=1)
    assert result.outcome == "ok", result.error_message
    c_dev.kill()
    host = Host(c_dev.broker_url, c_dev.site, c_dev.device_id)
    try:
        host.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.OFFLINE)  # the last will
        c_dev.start()
        hello = host.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.ONLINE)
        assert hello.model_version == 3 and hello.prev_version == 1
    finally:
        host.close()


def test_bad_command_line_is_a_clear_error(c_device_binary, tmp_path):
    bad = subprocess.run([str(c_device_binary), "--id", "bad/id", "--location", "plant-a/x", "--broker",
                          "mqtt://127.0.0.1:1", "--flash", str(tmp_path / "f"), "--factory", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=EXIT_WAIT_S)
    assert bad.returncode == 2 and "--id" in bad.stderr and "Sanitizer" not in bad.stderr


def test_flash_file_of_another_size_is_refused_not_overwritten(c_dev, tmp_path):
    c_dev.flash_path.parent.mkdir(parents=True, exist_ok=True)
    c_dev.flash_path.write_bytes(b"\x00" * 4096)
    c_dev.start()
    assert c_dev.wait(EXIT_WAIT_S) == 2
    assert "refusing to reuse it" in c_dev.log_text()
    assert c_dev.flash_path.read_bytes() == b"\x00" * 4096


def test_sim_engine_c_runs_c_devices(mosquitto_factory, c_device_binary, tmp_path):
    url = mosquitto_factory().url
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(tmp_path / "data"), c_device.BINARY_ENV: str(c_device_binary)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "sim", "--engine", "c", "--devices", "2", "--broker", url,
                             "--unprovisioned"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + SIM_STARTUP_S
        rows = lambda: {x.split()[0] for x in lines if x.startswith("c-00") and "factory@1" in x}  # noqa: E731
        while time.monotonic() < deadline and rows() != {"c-001", "c-002"}:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert rows() == {"c-001", "c-002"}, "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:  # communicate, not wait: a sim blocked on a full stdout/stderr pipe never ends
            _out, err = proc.communicate(timeout=SIM_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err


def test_sim_engine_c_refuses_options_it_does_not_have(capsys):
    from app.cli.main import main

    assert main(["sim", "--engine", "c", "--devices", "1", "--broker", "mqtt://127.0.0.1:1", "--serial"]) == 2
    assert "--serial" in capsys.readouterr().err


def test_a_device_that_cannot_start_is_a_clear_error_not_a_wait(c_dev):
    c_dev.flash_path.parent.mkdir(parents=True, exist_ok=True)
    c_dev.flash_path.write_bytes(b"\x00" * 4096)
    c_dev.start()
    with pytest.raises(LinkError, match="refusing to reuse it"):
        c_device.wait_online(c_dev.broker_url, [c_dev], c_device.ONLINE_TIMEOUT_MIN_S)


def test_sim_engine_c_without_the_binary_says_how_to_build_it(monkeypatch, tmp_path, capsys):
    from app.cli.main import main

    monkeypatch.setenv(c_device.BINARY_ENV, str(tmp_path / "missing"))
    assert main(["sim", "--engine", "c", "--devices", "1", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "cmake" in capsys.readouterr().err


def test_graceful_stop_announces_offline_and_exits_clean(c_dev):
    """SIGTERM: the device publishes OFFLINE itself (a clean disconnect fires no will) and exits 0
    (under ASan, a leak at exit would make it 1)."""
    c_dev.start()
    _online(c_dev)
    host = Host(c_dev.broker_url, c_dev.site, c_dev.device_id)
    try:
        host.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.ONLINE)
        c_dev.stop()
        assert c_dev.process is not None and c_dev.process.returncode == 0, c_dev.log_text()
        host.wait_for(topics.STATUS, m.Hello, lambda h: h.state == DeviceState.OFFLINE)
    finally:
        host.close()


def test_serial_over_a_pty_takes_a_deployment_from_the_cli(c_device_binary, tmp_path, model_image_v3, capsys,
                                                           monkeypatch):
    """The same C device on the serial transport (PROTOCOL.md 2.1, `--pty`): the CLI deploys to it
    and rolls it back, and garbage between frames costs nothing but itself."""
    import json

    from app.cli.main import main
    from app.services.channel import SerialChannel

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    dev = c_device.CDevice("c-serial", "lab/bench/pty-1", None, tmp_path / "c", serial=True, profile=PROFILE,
                           binary=c_device_binary)
    dev.start()
    try:
        port = str(dev.wait_serial(EXIT_WAIT_S))
        image = tmp_path / "pump-ae-v3.tmlm"
        image.write_bytes(model_image_v3)
        capsys.readouterr()
        assert main(["deploy", str(image), "--via", "serial", "--port", port, "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        assert result["outcome"] == "ok" and result["transport"] == "serial" and result["model_version"] == 3
        fd = os.open(port, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, bytes(range(1, 200)) + b"\x00" + b"\xff" * 50 + b"\x00")  # garbage, then resync
        finally:
            os.close(fd)
        assert main(["rollback", "--via", "serial", "--port", port]) == 0
        channel = SerialChannel.open(port)
        try:
            info = channel.request(m.GetInfo(), timeout=15).msg
        finally:
            channel.close()
        assert info.model_version == 1 and info.prev_version == 3
    finally:
        dev.stop()
    assert dev.process is not None and dev.process.returncode == 0, dev.log_text()
    assert not dev.serial_path.exists()  # the link goes with the device


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_devices_end_with_the_process_that_launched_them(c_device_binary, mosquitto_factory, tmp_path):
    """A launcher that dies without stopping its devices (a crashed simulator, a killed test run)
    leaves no orphaned device processes behind."""
    url = mosquitto_factory().url
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from app.fleet.c_device import CDevice, wait_online\n"
        f"d = CDevice('c-orphan', 'plant-a/x', {url!r}, Path({str(tmp_path)!r}),\n"
        f"            binary=Path({str(c_device_binary)!r}))\n"
        "d.start(); wait_online(d.broker_url, [d], 20)\n"
        "print(d.process.pid, flush=True)\n"
        "os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=SIM_STARTUP_S,
                         cwd=str(Path(__file__).resolve().parents[2]))
    pid = int(out.stdout.split()[-1])
    deadline = time.monotonic() + EXIT_WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
