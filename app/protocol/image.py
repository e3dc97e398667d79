"""Model image container "TMLM" (firmware/PROTOCOL.md section 6).

The image is what travels to a device and sits in a slot: the TFLite flatbuffer plus everything
the device needs to score with it (threshold, normalisation, a self-test), so a slot is
self-describing and a device never pairs a model with the wrong constants.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from app.domain.errors import ModelError

MAGIC = b"TMLM"
FORMAT_VERSION = 1
ALIGN = 16
FEATURE_SPEC_ID = 1

SECTION_META = 1
SECTION_NORM = 2
SECTION_TFLITE = 3
SECTION_SELFTEST = 4

_HEADER = struct.Struct("<4sHHII")
_SECTION = struct.Struct("<II8x")
_META = struct.Struct("<IfHH")


def _pad(n: int) -> int:
    return (-n) % ALIGN


@dataclass
class ModelImage:
    name: str
    version: int
    threshold: float
    mean: np.ndarray
    std: np.ndarray
    tflite: bytes
    selftest_input: np.ndarray | None = None
    selftest_score: float = 0.0
    selftest_tolerance: float = 0.0

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def to_bytes(self) -> bytes:
        name = self.name.encode("utf-8")
        if len(name) > 255:
            raise ModelError("model name longer than 255 bytes")
        sections = [
            (SECTION_META, _META.pack(self.version, self.threshold, self.n_features, FEATURE_SPEC_ID)
             + bytes([len(name)]) + name),
            (SECTION_NORM, np.asarray(self.mean, "<f4").tobytes() + np.asarray(self.std, "<f4").tobytes()),
            (SECTION_TFLITE, bytes(self.tflite)),
        ]
        if self.selftest_input is not None:
            sections.append((SECTION_SELFTEST, np.asarray(self.selftest_input, "<f4").tobytes()
                             + struct.pack("<ff", self.selftest_score, self.selftest_tolerance)))
        body = bytearray()
        for stype, data in sections:
            body += _SECTION.pack(stype, len(data)) + data + b"\0" * _pad(len(data))
        total = _HEADER.size + len(body)
        return _HEADER.pack(MAGIC, FORMAT_VERSION, len(sections), total, 0) + bytes(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelImage:
        """Parse and validate; every defect is a ModelError naming it (device code BAD_IMAGE)."""
        if len(data) < _HEADER.size:
            raise ModelError("image shorter than its 16-byte header")
        magic, fmt, n_sections, total, _ = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise ModelError("not a Tiny-MLOps model image (bad magic)")
        if fmt != FORMAT_VERSION:
            raise ModelError(f"image format {fmt} not supported")
        if total != len(data):
            raise ModelError(f"image says {total} bytes but holds {len(data)} (truncated?)")
        pos = _HEADER.size
        found: dict[int, bytes] = {}
        for _ in range(n_sections):
            if pos + _SECTION.size > len(data):
                raise ModelError("section header beyond the end of the image")
            stype, length = _SECTION.unpack_from(data, pos)
            pos += _SECTION.size
            if pos + length > len(data):
                raise ModelError(f"section {stype} runs past the end of the image")
            found[stype] = data[pos : pos + length]
            pos += length + _pad(length)
        for required in (SECTION_META, SECTION_NORM, SECTION_TFLITE):
            if required not in found:
                raise ModelError(f"image lacks required section {required}")
        meta = found[SECTION_META]
        if len(meta) < _META.size + 1:
            raise ModelError("META section too short")
        version, threshold, n, spec = _META.unpack_from(meta, 0)
        if spec != FEATURE_SPEC_ID:
            raise ModelError(f"feature specification {spec} not supported")
        name_len = meta[_META.size]
        if _META.size + 1 + name_len > len(meta):
            raise ModelError("model name runs past the end of the META section")
        try:
            name = meta[_META.size + 1 : _META.size + 1 + name_len].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError("model name is not valid UTF-8") from exc
        norm = found[SECTION_NORM]
        if len(norm) != 8 * n:
            raise ModelError(f"NORM section holds {len(norm)} bytes, expected {8 * n}")
        mean = np.frombuffer(norm[: 4 * n], "<f4").copy()
        std = np.frombuffer(norm[4 * n :], "<f4").copy()
        img = cls(name, version, threshold, mean, std, bytes(found[SECTION_TFLITE]))
        if SECTION_SELFTEST in found:
            st = found[SECTION_SELFTEST]
            if len(st) != 4 * n + 8:
                raise ModelError("SELFTEST section has the wrong size")
            img.selftest_input = np.frombuffer(st[: 4 * n], "<f4").copy()
            img.selftest_score, img.selftest_tolerance = struct.unpack_from("<ff", st, 4 * n)
        return img


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
