"""The MQTT fault campaign's moving parts (issue 11): a seeded chaos thread that hits a running
deployment with real faults, and the outcome table.

Faults, all real: the operator's or the devices' TCP link to Mosquitto (through tests/deploy/tcp_proxy.py)
is cut, taken down for a while or stalled; Mosquitto is killed and restarted on the same port
(without persistence: retained chunks and sessions are lost); a device is rebooted (REBOOT command)
mid-transfer. A second operator deploying at the same time is set up by the campaign itself.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from app.protocol.messages import Reboot
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection
from tests.deploy.tcp_proxy import TcpProxy
from tests.fixtures.brokers import MosquittoProcess

log = logging.getLogger(__name__)

# Longest pause between two faults (seconds, drawn uniformly from 0): faults land at random
# moments of a deployment that takes a few seconds without them.
MAX_GAP_S = 1.0
# Longest outage or stall; a rollout rides out up to LINK_RIDE_OUT_S, so these are all survivable.
MAX_OUTAGE_S = 4.0
# Faults per run at most: enough to hit publishing, fetching and committing.
MAX_FAULTS = 3

OUTCOMES = ("ok", "clear error", "hung", "no valid model", "unexpected model")
FAULTS = ("operator cut", "operator outage", "operator stall", "devices cut", "devices outage",
          "broker restart", "device reboot")


@dataclass
class Campaign:
    """Counts over all runs."""

    outcomes: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # informational: left busy, failed-but-new, ...
    errors: Counter = field(default_factory=Counter)  # the clear errors, by message (ids blanked)
    runs: int = 0

    def table(self) -> str:
        lines = [f"MQTT fault campaign: {self.runs} runs, {sum(self.outcomes.values())} device outcomes"]
        lines += [f"  {name:<18} {self.outcomes[name]:>5}" for name in OUTCOMES]
        lines.append("  faults injected: " + ", ".join(f"{k} {self.faults[k]}" for k in FAULTS))
        lines += [f"    {n:>4} x {text}" for text, n in self.errors.most_common()]
        if self.notes:
            lines.append("  notes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.notes.items())))
        return "\n".join(lines)


class Chaos:
    """Injects faults at random moments until stopped; `heal()` undoes whatever is still on."""

    def __init__(self, rng: random.Random, broker: MosquittoProcess, operator: TcpProxy, devices: TcpProxy,
                 device_targets: list[tuple[str, str]], campaign: Campaign) -> None:
        self.rng = rng
        self.broker = broker
        self.operator = operator
        self.devices = devices
        self.device_targets = device_targets  # (site, device id) that may be rebooted
        self.campaign = campaign
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self.injected: list[str] = []

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def _run(self) -> None:
        for _ in range(self.rng.randint(1, MAX_FAULTS)):
            if self.stop.wait(self.rng.uniform(0.0, MAX_GAP_S)):
                return
            fault = self.rng.choice(FAULTS)
            duration = self.rng.uniform(0.3, MAX_OUTAGE_S)
            self.injected.append(fault)
            self.campaign.faults[fault] += 1
            log.info("chaos: %s (%.1f s)", fault, duration)
            try:
                self._inject(fault, duration)
            except Exception:  # a fault that could not be made is not the system's failure
                log.exception("chaos: injecting %s failed", fault)

    def _inject(self, fault: str, duration: float) -> None:
        if fault == "operator cut":
            self.operator.cut()
        elif fault == "devices cut":
            self.devices.cut()
        elif fault in ("operator outage", "devices outage"):
            proxy = self.operator if fault.startswith("operator") else self.devices
            proxy.set_down(True)
            self.stop.wait(duration)
            proxy.set_down(False)
        elif fault == "operator stall":
            self.operator.set_stalled(True)
            self.stop.wait(duration)
            self.operator.set_stalled(False)
        elif fault == "broker restart":
            self.broker.kill()
            self.stop.wait(min(duration, 1.0))
            self.broker.start(fixed_port=True)
        elif fault == "device reboot":
            site, device_id = self.rng.choice(self.device_targets)
            with MqttConnection(self.broker.url) as conn:
                channel = MqttChannel(conn, site, device_id)
                channel.send(Reboot())
                conn.wait_published()
                channel.close()

    def finish(self, timeout: float) -> None:
        """Stop injecting and heal: links up, nothing stalled, the broker running."""
        self.stop.set()
        self._thread.join(timeout)
        self.operator.set_stalled(False)
        self.operator.set_down(False)
        self.devices.set_down(False)
        if not self.broker.running:
            self.broker.start(fixed_port=True)
