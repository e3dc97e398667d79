"""What happened to a device between two of its records, as sentences for the operator: the GUI's
events panel and `tinymlops fleet events` tell the same story (Qt-free)."""

from __future__ import annotations

from collections.abc import Callable

from app.services.fleet_monitor import DeviceRecord

# Why a record alarms, as a phrase ("driven by x band 850-1603 Hz energy (46 %)"), or None.
CauseFn = Callable[[DeviceRecord], "str | None"]


def transitions(old: DeviceRecord | None, new: DeviceRecord,
                cause: CauseFn | None = None) -> list[tuple[str, str, str]]:
    """Events worth telling the operator when a device's record goes from `old` to `new`, as
    (level, device, text); `cause(record)` adds why an alarm was raised (AlarmExplainer.text)."""
    dev = new.device_id
    out = []
    if old is None:
        model = f"{new.model_name}@{new.model_version}" if new.model_name else "no model"
        out.append(("info", dev, f"appeared at {new.location or new.site or '?'} ({new.profile}, {model})"))
        if new.alarm and new.online:  # already alarming when first seen: the morning round needs it
            out.append(_alarm(new, cause))
        return out
    if old.online and not new.online:
        out.append(("warning", dev, "went offline"))
    elif not old.online and new.online:
        out.append(("ok", dev, "back online"))
    if not old.alarm and new.alarm and new.online:
        out.append(_alarm(new, cause))
    elif old.alarm and not new.alarm and new.online:
        out.append(("ok", dev, "alarm cleared"))
    if (old.model_name, old.model_version) != (new.model_name, new.model_version) and new.model_version:
        out.append(("info", dev, f"model now {new.model_name}@{new.model_version}"
                                 + (" (on trial)" if new.trial else "")))
    elif old.trial and not new.trial and old.model_version == new.model_version:
        out.append(("ok", dev, f"trial model {new.model_name}@{new.model_version} confirmed"))
    return out


def _alarm(rec: DeviceRecord, cause: CauseFn | None) -> tuple[str, str, str]:
    text = f"ALARM: anomaly score {rec.score or 0:.3f} above threshold {rec.threshold or 0:.3f}"
    why = cause(rec) if cause is not None else None
    return ("alarm", rec.device_id, f"{text}, {why}" if why else text)
