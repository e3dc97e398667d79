"""What a group row of the fleet tree says of the devices below it (Qt-free): how many, online, in
alarm, the worst score, devices per status and per transport; the root's figures are the status
bar's.

Kept per node and recomputed only for groups marked dirty since (a device below them changed), one
level from the next: a machine from its devices, a line from its machines, a site from its lines.
Counting a 2,500-device site afresh whenever a group row was drawn held the GUI thread ~10 ms a
time at 10,000 devices (benchmarks/gui_responsiveness.py --profile)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.protocol.codes import DeviceState

OFFLINE = DeviceState.OFFLINE.label


@dataclass(frozen=True)
class GroupStats:
    total: int = 0
    online: int = 0
    alarms: int = 0  # online devices in alarm
    worst: tuple[float, str] | None = None  # (score / threshold, device id) of the worst online device
    statuses: dict[str, int] = field(default_factory=dict)  # the operator's status word -> devices
    transports: dict[str, int] = field(default_factory=dict)  # devices not offline per transport


def mark_dirty(node) -> None:
    """`node` and every group above it need recomputing (a device below changed)."""
    while node is not None:
        node.dirty = True
        node = node.parent


def group_stats(node, status: Callable[[object], str]) -> GroupStats:
    """`node`'s figures, recomputed where marked dirty; `status(device_node)` is its status word."""
    if not node.dirty and node.stats is not None:
        return node.stats
    total = online = alarms = 0
    worst: tuple[float, str] | None = None
    statuses: dict[str, int] = {}
    transports: dict[str, int] = {}
    for child in node.children:
        if child.kind == "device":
            rec = child.record
            word = status(child)
            on = bool(rec.online)
            total += 1
            online += on
            alarms += bool(rec.alarm) and on
            statuses[word] = statuses.get(word, 0) + 1
            if word != OFFLINE:
                transports[rec.transport] = transports.get(rec.transport, 0) + 1
            if on and rec.score is not None and rec.threshold:
                ratio = float(rec.score) / float(rec.threshold)
                if worst is None or ratio > worst[0]:
                    worst = (ratio, rec.device_id)
            continue
        sub = group_stats(child, status)
        total += sub.total
        online += sub.online
        alarms += sub.alarms
        if sub.worst is not None and (worst is None or sub.worst[0] > worst[0]):
            worst = sub.worst
        for key, n in sub.statuses.items():
            statuses[key] = statuses.get(key, 0) + n
        for key, n in sub.transports.items():
            transports[key] = transports.get(key, 0) + n
    node.stats = GroupStats(total, online, alarms, worst, statuses, transports)
    node.dirty = False
    return node.stats
