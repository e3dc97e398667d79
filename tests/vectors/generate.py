"""Regenerates the protocol golden vectors (firmware/PROTOCOL.md section 10).

Run `python -m tests.vectors.generate` only when PROTOCOL.md changes; the C firmware and the Python
codec both test against the committed files, so a silent change here would hide a break.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.protocol import messages as m
from app.protocol.framing import crc32, frame

HERE = Path(__file__).parent


def vectors() -> list[tuple[str, int, m.Message]]:
    sha = bytes(range(32))
    chunk = bytes((i * 7) & 0xFF for i in range(64))
    samples = (np.arange(8 * 3, dtype=np.int16).reshape(8, 3) - 12) * 1000
    return [
        ("hello", 0, m.Hello(1, 1, 0b111011, 1, "sim-001", "plant-a/line-1/pump-1", "stm32f446",
                             "0.1.0", "factory", 1, bytes.fromhex("0123456789abcdef"), 0, 0,
                             196608, 196608, 32768, 1024, 3200, 3600, 0)),
        ("hello_offline", 0, m.Hello(state=0, device_id="qemu-1", location="lab/bench/m4",
                                     profile="qemu-mps2-an386", firmware="fw-1.0")),
        ("hello_utf8", 3, m.Hello(device_id="pompe-7", location="usine-é/ligne-2/pompe-ß", profile="nrf52840")),
        ("telemetry", 513, m.Telemetry(123456, 42, 3, 0.0625, 0.5, 0, 24.75, (1.0, -2.5, 0.125, 1e-3))),
        ("telemetry_alarm", 514, m.Telemetry(1000, 7, 2, 1.75, 0.5, 1, 0.0, tuple(float(i) for i in range(36)))),
        ("stream", 9, m.Stream(77, 3200, 0.00048828125, samples)),
        ("ack", 65535, m.Ack(0x24)),
        ("error", 12, m.Error(0x26, 11, "image SHA-256 differs")),
        ("latency", 12, m.Latency(3, 1, 2500000, 1200, 100, 950, 1000, 1100, 1500)),
        ("xfer_status", 4, m.XferStatus(0xDEADBEEF, 9000, 1024, 9, 5, bytes([0b00010111, 0b1]))),
        ("event", 5, m.Event(101, "trial reverted to version 1")),
        ("get_info", 1, m.GetInfo()),
        ("stream_start", 2, m.StreamStart(30)),
        ("stream_stop", 3, m.StreamStop()),
        ("xfer_begin", 4, m.XferBegin(0xDEADBEEF, 9000, 1024, 0, sha, "pump-ae", 3, "")),
        ("xfer_begin_pull", 4, m.XferBegin(7, 300000, 4096, 1, sha, "pump-ae", 4,
                                           "tinymlops/v1/plant-a/models/" + sha.hex())),
        ("xfer_chunk", 5, m.XferChunk(0xDEADBEEF, 3, crc32(chunk), chunk)),
        ("xfer_chunk_zeros", 6, m.XferChunk(1, 0, crc32(bytes(300)), bytes(300))),
        ("xfer_query", 6, m.XferQuery(0xDEADBEEF)),
        ("xfer_commit", 7, m.XferCommit(0xDEADBEEF, 2, 120, 50)),
        ("xfer_abort", 8, m.XferAbort(0xDEADBEEF)),
        ("confirm", 9, m.Confirm()),
        ("rollback", 10, m.Rollback()),
        ("benchmark", 11, m.Benchmark(100)),
        ("reboot", 12, m.Reboot()),
        ("set_fault", 13, m.SetFault(4, 0.75)),
        ("activate", 14, m.Activate(1, 60, 10)),
    ]


def bad_frames(good: bytes) -> list[dict]:
    """Frames a decoder must drop, each with the counter it must increase."""
    from cobs import cobs

    body = good + crc32(good).to_bytes(4, "little")
    wrong_crc = bytearray(body)
    wrong_crc[-1] ^= 0xFF
    flipped = bytearray(body)
    flipped[3] ^= 0x01
    return [
        {"name": "wrong_crc", "hex": (cobs.encode(bytes(wrong_crc)) + b"\0").hex(), "counter": "bad_crc"},
        {"name": "bit_flip_in_payload", "hex": (cobs.encode(bytes(flipped)) + b"\0").hex(), "counter": "bad_crc"},
        {"name": "truncated", "hex": (cobs.encode(body[:7]) + b"\0").hex(), "counter": "truncated"},
        {"name": "bad_cobs", "hex": "05414243" + "00", "counter": "bad_cobs"},
        {"name": "oversized", "hex": ("01" * 5000) + "00", "counter": "oversized"},
    ]


def main() -> None:
    index = []
    for name, seq, msg in vectors():
        raw = m.encode(msg, seq)
        (HERE / f"{name}.bin").write_bytes(raw)
        (HERE / f"{name}.frame").write_bytes(frame(raw))
        index.append({"name": name, "file": f"{name}.bin", "frame": f"{name}.frame", "seq": seq,
                      "type": msg.TYPE.name, "type_code": int(msg.TYPE), "fields": msg.describe()})
    (HERE / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    good = m.encode(m.Benchmark(5), 1)
    (HERE / "bad_frames.json").write_text(json.dumps({"good_message_hex": good.hex(),
                                                      "frames": bad_frames(good)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
