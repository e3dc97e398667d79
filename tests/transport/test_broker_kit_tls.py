"""The plant broker kit against the real Mosquitto: TLS with a client certificate per identity and the
kit's ACL. The operator deploys; a device identity cannot command another device, push a model to it,
read its data or speak for it; certificates from another CA or out of date are refused at connect."""

from __future__ import annotations

import datetime as dt
import os
import queue

import pytest

from app.deploy import api, links
from app.domain.errors import LinkError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import FaultMask
from app.transport.mqtt_link import MqttConnection
from app.trust import broker_kit
from tests.fixtures.brokers import MosquittoProcess

# Generous: a TLS handshake with ECDSA keys takes milliseconds, a loaded CI machine more.
REPLY_TIMEOUT_S = 20.0
SITE = "plant-a"
DEVICES = ["sim-001", "sim-002", "sim-003"]  # sim-002 sits in plant-b (VirtualFleet alternates sites)


@pytest.fixture
def kit(tmp_path):
    spec = broker_kit.KitSpec(SITE, DEVICES, ["operator"], ["localhost"])
    return broker_kit.write_kit(spec, tmp_path / "kit")["dir"]


@pytest.fixture
def broker(kit):
    # started as root (CI), Mosquitto would drop to the `mosquitto` user, who cannot read the kit
    run_as = "root" if os.geteuid() == 0 else ""
    proc = MosquittoProcess(config=lambda port: broker_kit.mosquitto_conf(kit, port, "127.0.0.1", run_as))
    proc.start()
    yield proc
    proc.close()


def url(kit, broker, folder: str, name: str) -> str:
    return broker_kit.client_url(kit, "localhost", broker.port, folder, name)


@pytest.fixture
def fleet(kit, broker, virtual_fleet):
    return virtual_fleet(url(kit, broker, "devices", "{device}"), len(DEVICES))


def test_kit_files_are_private_and_the_acl_denies_by_default(kit):
    for key in (kit / "ca.key", kit / "broker" / "broker.key", kit / "devices" / "sim-001.key"):
        assert oct(key.stat().st_mode & 0o777) == "0o600", key
    acl = (kit / "acl").read_text()
    assert f"pattern read tinymlops/v1/{SITE}/%u/cmd" in acl
    assert f"topic write tinymlops/v1/{SITE}/+/cmd" in acl.split("user operator", 1)[1]
    conf = (kit / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "allow_anonymous false" in conf


def test_operator_sees_the_fleet_and_deploys_over_tls(kit, broker, fleet, model_image_v3):
    operator = url(kit, broker, "operators", "operator")
    with links.mqtt_device(_connected(operator), "sim-001", operator) as link:
        assert link.hello.device_id == "sim-001"
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=operator)
    assert result.ok, result.error_message
    assert fleet.device("sim-001").active_model.image.version == 3


def _connected(broker_url: str) -> MqttConnection:
    conn = MqttConnection(broker_url)
    conn.connect()
    return conn


def test_a_device_identity_cannot_command_or_impersonate_another(kit, broker, fleet, model_image_v3):
    target = fleet.device("sim-001")
    before = target.active_model.sha256
    attacker = _connected(url(kit, broker, "devices", "sim-003"))
    operator = _connected(url(kit, broker, "operators", "operator"))
    try:
        cmd = topics.device_topic(SITE, "sim-001", topics.CMD)
        # QoS 1: the broker has judged each publish before it acknowledges it
        attacker.publish(cmd, m.encode(m.SetFault(int(FaultMask.IMBALANCE), 1.0), 1), qos=1)
        attacker.publish(topics.device_topic(SITE, "sim-001", topics.STATUS),
                         m.encode(m.Hello(device_id="sim-001", location=f"{SITE}/evil/x", state=0), 2),
                         qos=1, retain=True)
        attacker.wait_published(REPLY_TIMEOUT_S)
        # the operator's GET_INFO is queued behind whatever the broker let through
        channel = links.mqtt_channel(operator, SITE, "sim-001")
        hello = channel.request(m.GetInfo(), timeout=REPLY_TIMEOUT_S).msg
        assert hello.fault_mask == 0 and hello.location.startswith(f"{SITE}/line-")
        # the retained status is still the device's own
        got: queue.Queue[bytes] = queue.Queue()
        operator.subscribe(topics.device_topic(SITE, "sim-001", topics.STATUS), lambda _t, p: got.put(p))
        status = m.decode(got.get(timeout=REPLY_TIMEOUT_S)).msg
        assert status.location.startswith(f"{SITE}/line-") and status.state != 0
        # a device cannot read another device's data either: of the telemetry the operator receives
        # after both subscriptions stand, none reaches the attacker (if the ACL let it through, the
        # attacker would have its copies long before the operator's third message)
        telemetry = topics.device_topic(SITE, "sim-001", topics.TELEMETRY)
        stolen: list[bytes] = []
        attacker.subscribe(telemetry, lambda _t, p: stolen.append(p))
        attacker.wait_subscribed(REPLY_TIMEOUT_S)
        seen: queue.Queue[bytes] = queue.Queue()
        operator.subscribe(telemetry, lambda _t, p: seen.put(p))
        for _ in range(3):
            seen.get(timeout=REPLY_TIMEOUT_S)
        assert stolen == []
    finally:
        attacker.close()
        operator.close()
    # nor push a model through it
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=url(kit, broker, "devices", "sim-003"))
    assert not result.ok and result.error_message
    assert target.active_model.sha256 == before


def test_a_certificate_from_another_ca_is_refused(kit, broker, tmp_path):
    other = broker_kit.write_kit(broker_kit.KitSpec(SITE, ["sim-001"], ["operator"]), tmp_path / "other")["dir"]
    rogue = (f"mqtts://localhost:{broker.port}?ca={kit / 'ca.crt'}&cert={other / 'operators' / 'operator.crt'}"
             f"&key={other / 'operators' / 'operator.key'}")
    with pytest.raises(LinkError):
        MqttConnection(rogue).connect()


def test_a_broker_from_another_ca_is_not_trusted(kit, broker, tmp_path):
    other = broker_kit.write_kit(broker_kit.KitSpec(SITE, ["sim-001"], ["operator"]), tmp_path / "other")["dir"]
    wrong_ca = (f"mqtts://localhost:{broker.port}?ca={other / 'ca.crt'}&cert={kit / 'operators' / 'operator.crt'}"
                f"&key={kit / 'operators' / 'operator.key'}")
    with pytest.raises(LinkError):
        MqttConnection(wrong_ca).connect()


def test_an_expired_certificate_is_refused(kit, broker):
    ca_cert, ca_key = broker_kit.load_ca(kit)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    broker_kit.issue_client(kit, "operators", "late", ca_cert, ca_key, days=1, not_before=long_ago)
    with pytest.raises(LinkError):
        MqttConnection(url(kit, broker, "operators", "late")).connect()


def test_missing_certificate_files_are_named(kit, broker):
    with pytest.raises(LinkError, match=r"nope\.crt"):
        MqttConnection(url(kit, broker, "operators", "nope")).connect()


def test_cli_writes_a_kit_and_refuses_to_overwrite_it(tmp_path, capsys):
    from app.cli.main import main

    assert main(["broker", "kit", "--site", SITE, "--devices", "sim-001,sim-003", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "mosquitto -c" in out and "{device}.crt" in out
    assert main(["broker", "kit", "--site", SITE, "--devices", "sim-001", "--out", str(tmp_path / "k")]) == 2
    assert "already holds a broker kit" in capsys.readouterr().err




def test_the_kit_password_file_lets_the_operator_log_in_by_password(tmp_path, monkeypatch, virtual_fleet):
    """`broker kit` with the operator's password in $TINYMLOPS_BROKER_PASSWORD writes a Mosquitto
    password file (made by mosquitto_passwd, the password through its standard input, never its
    command line) and a password listener: the real Mosquitto then lets the operator in by password,
    with the same ACL as its certificate, and refuses a wrong password."""
    import subprocess

    from app.cli.main import main
    from app.transport.credentials import PASSWORD_ENV
    from tests.fixtures.brokers import free_port

    secret = "kit-pass-7f3a"
    monkeypatch.setenv(PASSWORD_ENV, secret)
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(args, *a, **kw):
        argvs.append([str(x) for x in args])
        return real_run(args, *a, **kw)

    monkeypatch.setattr(subprocess, "run", recording_run)
    out, pw_port = tmp_path / "kit", free_port()
    assert main(["broker", "kit", "--site", SITE, "--devices", "sim-001", "--out", str(out),
                 "--password-port", str(pw_port)]) == 0
    kit, passwd = out.resolve(), out / "passwd"
    assert any(a and a[0].endswith("mosquitto_passwd") for a in argvs)
    assert not any(secret in arg for a in argvs for arg in a)  # never on a command line
    assert oct(passwd.stat().st_mode & 0o777) == "0o600"
    assert passwd.read_text().startswith("operator:$7$") and secret not in passwd.read_text()
    run_as = "root" if os.geteuid() == 0 else ""
    broker = MosquittoProcess(config=lambda port: broker_kit.mosquitto_conf(kit, port, "127.0.0.1", run_as,
                                                                            password_port=pw_port))
    broker.start()
    try:
        fleet = virtual_fleet(url(kit, broker, "devices", "{device}"), 1)
        by_password = broker_kit.password_url(kit, "localhost", pw_port, "operator")
        conn = _connected(by_password)
        try:
            hello = links.mqtt_channel(conn, SITE, "sim-001").request(m.GetInfo(), timeout=REPLY_TIMEOUT_S).msg
            assert hello.device_id == "sim-001" == fleet.device("sim-001").device_id
        finally:
            conn.close()
        monkeypatch.setenv(PASSWORD_ENV, "not-" + secret)
        with pytest.raises(LinkError):
            MqttConnection(by_password).connect()
    finally:
        broker.close()


def test_a_password_mosquitto_cannot_take_is_refused_before_a_file_is_written(tmp_path):
    spec = broker_kit.KitSpec(SITE, ["sim-001"], ["operator"])
    for bad, why in (({"operator": "two\nlines"}, "line break"), ({"intruder": "x"}, "not one of the kit")):
        with pytest.raises(broker_kit.KitError, match=why):
            broker_kit.write_kit(spec, tmp_path / "kit", operator_passwords=bad)
        assert not (tmp_path / "kit").exists()


def test_cli_identity_options_reach_the_broker_as_the_kit_url_does(kit, broker, fleet, capsys):
    """`--ca/--cert/--key` beside `--broker mqtts://host:port` build the same identity as the kit's URL:
    `fleet list` over the real TLS Mosquitto with the operator's certificate sees the kit's devices."""
    import json

    from app.cli.main import main

    operator = kit / "operators"
    assert main(["fleet", "list", "--broker", f"mqtts://localhost:{broker.port}", "--ca", str(kit / "ca.crt"),
                 "--cert", str(operator / "operator.crt"), "--key", str(operator / "operator.key"),
                 "--json"]) == 0
    seen = {d["device_id"] for d in json.loads(capsys.readouterr().out)["devices"]}
    assert {d for d in DEVICES if d != "sim-002"} <= seen  # sim-002 sits in plant-b (another site)


def test_cli_identity_options_without_a_broker_or_on_plain_mqtt_are_sentences(capsys, tmp_path):
    from app.cli.main import main

    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert main(["fleet", "list", "--ca", str(ca)]) == 2
    assert "--ca need --broker URL" in capsys.readouterr().err
    assert main(["fleet", "list", "--broker", "mqtt://localhost:1883", "--ca", str(ca)]) == 2
    assert "certificate files need mqtts://" in capsys.readouterr().err
    assert main(["fleet", "list", "--broker", "mqtts://localhost:8883", "--cert", str(ca)]) == 2
    assert "needs its key" in capsys.readouterr().err


def test_username_prompts_for_a_password_kept_in_memory_only(monkeypatch, tmp_path):
    """With --username and no password in the environment or keyring, a terminal is asked once; the
    answer is used for this process and written nowhere (not the environment, not the URL)."""
    import argparse

    from app.cli import broker_identity
    from app.transport import credentials
    from app.transport.urls import parse_broker_url

    monkeypatch.delenv(credentials.PASSWORD_ENV, raising=False)
    monkeypatch.setattr(credentials, "_session", {})
    asked: list[str] = []
    monkeypatch.setattr(broker_identity.getpass, "getpass", lambda text: asked.append(text) or "typed-secret")
    args = argparse.Namespace(broker="mqtts://broker.plant:8883", broker_identity_username="op")
    broker_identity.fold_identity(args, prompt=True)
    assert asked == ["broker password for op@broker.plant:8883: "]
    url = parse_broker_url(args.broker)
    assert url.username == "op" and url.password is None and "typed-secret" not in args.broker
    assert credentials.password_for(url) == "typed-secret"
    assert "typed-secret" not in str(dict(__import__("os").environ))
    # no terminal: no prompt, the login then fails at the broker with its own message
    args = argparse.Namespace(broker="mqtts://other.plant:8883", broker_identity_username="op")
    broker_identity.fold_identity(args, prompt=False)
    assert len(asked) == 1 and credentials.password_for(parse_broker_url(args.broker)) is None


# The C core's POSIX port with the same broker identity: its own kit certificate, the kit's CA.
C_DEVICE = "sim-003"  # a device of the kit (the ACL's %u is the certificate's name), in plant-a
C_LOCATION = f"{SITE}/line-1/pump-c"
# How often a test looks at a C device's log file (another process writes it; no event to wait on).
LOG_POLL_S = 0.05


def test_c_device_on_its_kit_certificate_joins_the_fleet_and_takes_a_push(kit, broker, tmp_path, c_device_binary,
                                                                         model_image_v3, monkeypatch):
    """`CDevice` hands the URL's CA and `{device}` certificate to the port (`--ca/--cert/--key`); the
    operator, on its own certificate, sees it on line over TLS and pushes it a model."""
    from app.fleet import c_device

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    operator = url(kit, broker, "operators", "operator")
    dev = c_device.CDevice(C_DEVICE, C_LOCATION, url(kit, broker, "devices", "{device}"), tmp_path / "c",
                           binary=c_device_binary)
    assert dev.command()[dev.command().index("--cert") + 1] == str(kit / "devices" / f"{C_DEVICE}.crt")
    dev.start()
    try:
        (hello,) = c_device.wait_online(operator, [dev], c_device.ONLINE_TIMEOUT_MIN_S).values()
        assert hello.location == C_LOCATION
        (result,) = api.deploy(model_image_v3, C_DEVICE, via="mqtt", broker=operator, bench_count=1)
        assert result.ok, result.error_message
        with links.mqtt_device(_connected(operator), C_DEVICE, operator) as link:
            assert link.hello.model_version == 3
    finally:
        dev.stop()
    assert "refused" not in dev.log_text()


@pytest.mark.parametrize("wrong", ["device certificate", "broker CA"])
def test_c_device_with_a_certificate_from_another_ca_is_refused_with_a_sentence(kit, broker, tmp_path,
                                                                                c_device_binary, wrong):
    """The broker refuses the device's certificate (or the device the broker's): the port stops with
    exit status 3 and says why, instead of retrying for ever with a certificate no retry makes good."""
    from app.fleet import c_device

    other = broker_kit.write_kit(broker_kit.KitSpec(SITE, [C_DEVICE], ["operator"]), tmp_path / "other")["dir"]
    ca, certs = (kit, other) if wrong == "device certificate" else (other, kit)
    rogue = (f"mqtts://localhost:{broker.port}?ca={ca / 'ca.crt'}&cert={certs / 'devices' / '{device}.crt'}"
             f"&key={certs / 'devices' / '{device}.key'}")
    dev = c_device.CDevice(C_DEVICE, C_LOCATION, rogue, tmp_path / "c", binary=c_device_binary).start()
    try:
        assert dev.wait(REPLY_TIMEOUT_S) == c_device.REFUSED_EXIT
    finally:
        dev.kill()
    assert f"TLS handshake with ssl://localhost:{broker.port} refused 3 times in a row" in dev.log_text()
    if wrong == "broker CA":  # our own check of the broker's certificate failed: OpenSSL's words follow
        assert "; OpenSSL: " in dev.log_text()


def test_c_device_names_a_missing_certificate_file(kit, broker, tmp_path, c_device_binary):
    from app.fleet import c_device

    missing = url(kit, broker, "devices", "nobody-{device}")
    dev = c_device.CDevice(C_DEVICE, C_LOCATION, missing, tmp_path / "c", binary=c_device_binary).start()
    assert dev.wait(REPLY_TIMEOUT_S) == 2
    assert f"client certificate {kit / 'devices' / ('nobody-' + C_DEVICE + '.crt')}: No such file" in dev.log_text()


def test_c_device_gets_the_login_name_on_its_command_line_and_the_password_only_in_its_environment(
        tmp_path, monkeypatch):
    from app.fleet import c_device
    from app.transport.credentials import PASSWORD_ENV

    monkeypatch.setenv(PASSWORD_ENV, "pw-5e1f")
    broker = "mqtts://dev@broker.plant:8883?ca=/k/ca.crt&cert=/k/{device}.crt&key=/k/{device}.key"
    args = c_device.broker_args(broker, "c-007")
    assert args == ["--broker", "mqtts://broker.plant:8883", "--ca", "/k/ca.crt", "--cert", "/k/c-007.crt",
                    "--key", "/k/c-007.key", "--username", "dev"]
    assert c_device.device_env(broker)[PASSWORD_ENV] == "pw-5e1f"
    assert c_device.device_env("mqtt://broker.plant:1883") is None  # no login: the environment as it is


def test_c_device_logs_in_by_password_from_its_environment_and_stops_on_a_wrong_one(tmp_path, monkeypatch,
                                                                                    c_device_binary):
    """`--username` over the kit's password listener (TLS, --ca only): the password reaches the
    broker from $TINYMLOPS_BROKER_PASSWORD; a wrong one is a CONNACK refusal, exit status 3."""
    from app.fleet import c_device
    from app.transport.credentials import PASSWORD_ENV
    from tests.fixtures.brokers import free_port

    secret = "c-login-91b2"
    kit = broker_kit.write_kit(broker_kit.KitSpec(SITE, [C_DEVICE], ["operator"], ["localhost"]), tmp_path / "kit",
                               operator_passwords={"operator": secret})["dir"]
    pw_port, run_as = free_port(), "root" if os.geteuid() == 0 else ""
    broker = MosquittoProcess(config=lambda port: broker_kit.mosquitto_conf(kit, port, "127.0.0.1", run_as,
                                                                            password_port=pw_port))
    broker.start()
    try:
        login = broker_kit.password_url(kit, "localhost", pw_port, "operator")
        for password, name in ((secret, "right"), ("not-" + secret, "wrong")):
            monkeypatch.setenv(PASSWORD_ENV, password)
            dev = c_device.CDevice(C_DEVICE, C_LOCATION, login, tmp_path / name, binary=c_device_binary).start()
            try:
                if name == "right":  # connected: the port says so once the CONNACK accepted the login
                    _wait_for_log(dev, "connected to ssl://localhost")
                else:
                    assert dev.wait(REPLY_TIMEOUT_S) == c_device.REFUSED_EXIT
                    assert "refused the login as operator" in dev.log_text()
            finally:
                dev.stop()
            assert secret not in " ".join(dev.command())
    finally:
        broker.close()


def _wait_for_log(dev, text: str) -> None:
    """Until the device's log holds `text` (polled: the log is a file another process writes)."""
    import time

    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while text not in dev.log_text():
        assert dev.running, dev.log_text()
        assert time.monotonic() < deadline, dev.log_text()
        time.sleep(LOG_POLL_S)


def test_sim_engine_c_on_a_per_device_url_says_it_cannot_watch_the_fleet(kit, capsys, c_device_binary):
    """Under the kit's ACL a device certificate reads no other device's status: `sim --engine c` with a
    `{device}` URL says so instead of failing on a certificate file named `.crt`."""
    from app.cli.main import main

    devices = broker_kit.client_url(kit, "localhost", 1, "devices", "{device}")
    assert main(["sim", "--engine", "c", "--devices", "1", "--broker", devices]) == 2
    assert "cannot watch the fleet" in capsys.readouterr().err
