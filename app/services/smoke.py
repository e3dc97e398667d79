"""End-to-end smoke check of an installation: the embedded default comes up and a model converts.

What a packaged bundle must prove before it goes to a plant-floor laptop: the in-process MQTT
broker starts (amqtt finds its plugins), the virtual fleet boots the factory model (TFLM's native
library and resources/ are there), the fleet monitor sees the devices over MQTT (paho), and
TensorFlow trains and converts a small autoencoder to int8 that TFLM then loads and self-tests.
Qt-free: `tinymlops smoke-test` runs it, and the GUI can run it in a worker.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from app import __version__
from app.domain.errors import Cancelled, LinkError

log = logging.getLogger(__name__)

# Virtual devices the check starts: more than one proves the monitor tells devices apart.
DEFAULT_DEVICE_COUNT = 3
# Virtual devices announce themselves within a second or two; a cold start of a frozen bundle on a
# slow laptop (unpacking, first imports) can take tens of seconds more.
DEVICES_TIMEOUT_S = 60.0
# How often the fleet model is polled while waiting for devices.
POLL_INTERVAL_S = 0.1
# The smoke model: enough windows for the train/early-stop/calibration split, few epochs (it is a
# check that training and conversion run, not a model anyone deploys).
SMOKE_MACHINES = 6
SMOKE_WINDOWS_PER_MACHINE = 10
SMOKE_EPOCHS = 3
SMOKE_SEED = 7

ProgressFn = Callable[[str, float, str], None]


@dataclass
class SmokeResult:
    """What the check saw; `ok` is False with `error` set when a step failed."""

    ok: bool = False
    version: str = __version__
    frozen: bool = bool(getattr(sys, "frozen", False))
    broker_url: str = ""
    devices: list[str] = field(default_factory=list)
    tensorflow: str = ""
    model: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _step(progress: ProgressFn | None, stage: str, fraction: float, message: str) -> None:
    log.info("smoke: %s", message)
    if progress:
        progress(stage, fraction, message)


def wait_for_devices(monitor, count: int, timeout: float = DEVICES_TIMEOUT_S,
                     cancel: threading.Event | None = None) -> list[str]:
    """Device ids once the fleet monitor knows at least `count` devices; LinkError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if cancel is not None and cancel.is_set():  # first: a cancel is obeyed however fast the devices were
            raise Cancelled("smoke test cancelled")
        ids = sorted(record.device_id for record in monitor.devices())
        if len(ids) >= count:
            return ids
        if time.monotonic() > deadline:
            raise LinkError(f"only {len(ids)} of {count} virtual devices appeared in the fleet "
                            f"within {timeout:.0f} s: {ids}")
        time.sleep(POLL_INTERVAL_S)


def convert_small_model(progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> dict:
    """Train a tiny autoencoder on simulated normal vibration, convert it to int8 and have TFLM load
    and self-test it: the whole TensorFlow + TFLM path, in seconds."""
    import numpy as np

    from app.fleet import factory
    from app.ml import pipeline, tflm, training
    from app.ml.tfimport import tensorflow

    normal = np.concatenate([factory.simulate(SMOKE_SEED + m, hz, SMOKE_WINDOWS_PER_MACHINE)
                             for m, hz in enumerate(np.linspace(15.0, 35.0, SMOKE_MACHINES))])
    config = training.TrainConfig(epochs=SMOKE_EPOCHS, seed=SMOKE_SEED)
    trained = pipeline.train_model(normal, name="smoke", config=config, progress=progress, cancel=cancel)
    passed, score = tflm.Scorer(trained.image, trained.card["arena"]).self_test()
    if not passed:
        raise RuntimeError(f"the converted smoke model fails its TFLM self-test (score {score:.4f})")
    return {"tensorflow": str(tensorflow().__version__), "tflite_size": trained.card["tflite_size"],
            "image_size": trained.card["image_size"], "arena": trained.card["arena"], "ops": trained.card["ops"],
            "self_test_score": float(score)}


def run(device_count: int = DEFAULT_DEVICE_COUNT, *, convert: bool = True, timeout: float = DEVICES_TIMEOUT_S,
        progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> SmokeResult:
    """Start broker + virtual fleet + fleet monitor, wait for the devices, convert a small model.
    Never raises for a failed step: the result says what failed, so a caller can print it."""
    from app.fleet.fleet import VirtualFleet
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.broker import EmbeddedBroker
    from app.transport.mqtt_link import MqttConnection

    result = SmokeResult()
    started = time.perf_counter()
    broker = fleet = connection = monitor = None
    try:
        _step(progress, "broker", 0.0, "starting the embedded MQTT broker")
        broker = EmbeddedBroker()
        result.broker_url = broker.start()
        result.seconds["broker"] = time.perf_counter() - started

        _step(progress, "fleet", 0.1, f"starting {device_count} virtual devices")
        connection = MqttConnection(result.broker_url, client_id="tinymlops-smoke")
        connection.connect()  # mqtt_link.CONNECT_TIMEOUT_S
        monitor = FleetMonitor(connection)
        fleet = VirtualFleet(result.broker_url, device_count, seed=SMOKE_SEED)
        fleet.start()
        result.devices = wait_for_devices(monitor, device_count, timeout, cancel)
        result.seconds["devices"] = time.perf_counter() - started
        _step(progress, "fleet", 0.3, f"devices online: {', '.join(result.devices)}")

        if convert:
            t0 = time.perf_counter()
            _step(progress, "convert", 0.4, "training and converting a small model")
            result.model = convert_small_model(progress, cancel)
            result.tensorflow = result.model.pop("tensorflow")
            result.seconds["convert"] = time.perf_counter() - t0
        result.ok = True
    except Exception as exc:  # the check reports every failure, it does not crash on one
        log.exception("smoke test failed")
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        for closer in (fleet and fleet.stop, monitor and monitor.close, connection and connection.close,
                       broker and broker.stop):
            if closer:
                try:
                    closer()
                except Exception:
                    log.exception("smoke test: error while shutting down")
        result.seconds["total"] = time.perf_counter() - started
    _step(progress, "done", 1.0, "passed" if result.ok else f"failed: {result.error}")
    return result
