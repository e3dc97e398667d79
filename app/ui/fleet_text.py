"""How the fleet tree words a device (Qt-free): ages, scores and ratios in few digits, what the
search looks in, and what a device's HELLO says of its trust store."""

from __future__ import annotations

import time

# A score above this share of the threshold is shown amber: close to alarming.
SCORE_WARN_RATIO = 0.7
# The group a device without a location (or a short one) is listed under.
UNKNOWN = "(unknown)"


def group_path(record) -> tuple[str, str, str]:
    """(site, line, machine) from the device's location "site/line/machine..."."""
    parts = [p for p in (record.location or "").split("/") if p]
    if not parts and record.site:
        parts = [record.site]
    parts += [UNKNOWN] * (3 - len(parts))
    return parts[0], parts[1], "/".join(parts[2:])


def score_level(score: float | None, threshold: float | None) -> str | None:
    if score is None or not threshold:
        return None
    ratio = score / threshold
    return "alarm" if ratio > 1.0 else "warn" if ratio > SCORE_WARN_RATIO else "ok"


def age_text(last_seen: float, now: float | None = None) -> str:
    if not last_seen:
        return "never"
    age = max(0.0, (now or time.time()) - last_seen)
    if age < 60:
        return f"{age:.0f} s ago"
    if age < 3600:
        return f"{age / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(last_seen))


def num_text(value: float) -> str:
    """Scores span orders of magnitude (a faulty machine scores 1000x its threshold): 4 digits."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def ratio_text(ratio: float) -> str:
    """Two significant digits below 10 ("0.42", "1.3"), whole numbers above ("870")."""
    return f"{ratio:.2f}" if ratio < 1 else f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"


def search_text(record) -> str:
    """What the fleet search looks in: id, location, profile, firmware, model, transport."""
    return " ".join((record.device_id, record.location, record.profile, record.firmware,
                     f"{record.model_name}@{record.model_version}", record.transport)).lower()


def trust_text(hello) -> str:
    """What the device's HELLO says of its trust store (PROTOCOL.md 6.2), in words."""
    from app.protocol.codes import Caps

    if hello is None:
        return "signatures: not known yet"
    if not hello.caps & Caps.SIGNED:
        return "signatures: this firmware does not check them"
    if not hello.trust_keys:
        return "<b>signatures: not provisioned</b> — takes unsigned images (tinymlops keys provision)"
    return f"signatures: checked against {hello.trust_keys} trusted key(s)"


def device_tooltip(rec, status: str) -> str:
    """A device row's tooltip: identity, model, score, shaft speed, uptime and trust store."""
    lines = [f"<b>{rec.device_id}</b> — {status}", f"location: {rec.location or '?'}",
             f"profile: {rec.profile or '?'}, firmware {rec.firmware or '?'}",
             f"model: {rec.model_name or 'none'}@{rec.model_version}"
             + (f" (trial, previous {rec.prev_version})" if rec.trial else
                f" (previous {rec.prev_version})" if rec.prev_version else "")]
    if rec.score is not None:
        lines.append(f"anomaly score {rec.score:.4f}, threshold {rec.threshold or 0:.4f}"
                     + (" — ALARM" if rec.alarm else ""))
    if rec.shaft_hz:
        lines.append(f"shaft {rec.shaft_hz:.1f} Hz ({rec.shaft_hz * 60:.0f} rpm)")
    lines.append(f"uptime {rec.uptime_s} s, last seen {age_text(rec.last_seen)}, via {rec.transport}")
    lines.append(trust_text(rec.hello))
    return "<br>".join(lines)
