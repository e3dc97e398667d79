"""Seed corpus of the libFuzzer targets (committed in corpus/engine, corpus/image, corpus/store):
the valid models and images of the test data, and a few deterministic mutants (truncations, a
flipped header, bytes flipped in the middle) so the fuzzers start on both sides of every early
check; for the store, journal states in fuzz_store.c's input layout.
Run from the repo root: `python3 firmware/tests/fuzz/gen_corpus.py` (standard library only)."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
ROOT = HERE.parents[2]
ENGINE = ["ae36.tflite", "ae36_pc.tflite", "ae36_default.tflite", "ae36_tanh.tflite"]
IMAGES = [ROOT / "resources/models/factory.tmlm", DATA / "fw_test_v2.tmlm", DATA / "tanh_v3.tmlm"]
MUTANTS_PER_SEED = 3  # flipped-byte variants per seed: a handful, the fuzzer makes the rest
SEED = 11  # fixed: the committed corpus is reproducible


def mutants(blob: bytes, rng: random.Random) -> list[bytes]:
    out = [blob[: len(blob) // 2], blob[:24], b"XXXX" + blob[4:]]
    for _ in range(MUTANTS_PER_SEED):
        b = bytearray(blob)
        for _ in range(4):
            b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


SLOT_BYTES = 256  # fuzz_store.c SLOT_BYTES_FROM_INPUT
NONE = 0xFF  # TM_SLOT_NONE


def meta(seq: int, active: int, previous: int, trial: int, slots: list[tuple[int, int, int]]) -> bytes:
    """tm_meta_t up to its CRC (the harness fixes magic, CRC and the slots' SHA-256)."""
    body = struct.pack("<IIBBBBI", 0, seq, active, previous, trial, 0, 60)
    for valid, size, version in slots:
        body += struct.pack("<III", valid, size, version) + bytes(32)
    return body


def xfer(seq: int, target: int, image_size: int, chunk: int) -> bytes:
    """tm_xfer_rec_t up to its CRC."""
    return struct.pack("<IIIIIHBB", 0, seq, 9, image_size, 2, chunk, target, 0) + bytes(32)


TRUST_REC_BYTES = 12 + 4 * 32 + 32 * 16  # tm_trust_rec_t up to its CRC


def trust(n_keys: int, n_revoked: int) -> bytes:
    """tm_trust_rec_t up to its CRC (the harness fixes magic, seq and CRC); unused slots erased."""
    keys = b"".join(bytes([0x10 + i]) * 32 for i in range(n_keys)) + b"\xff" * 32 * (4 - n_keys)
    revoked = b"".join(bytes([0x20 + i]) * 16 for i in range(n_revoked)) + b"\xff" * 16 * (32 - n_revoked)
    return struct.pack("<IIBBBB", 0, 0, n_keys, n_revoked, 0, 0) + keys + revoked


def store_seeds() -> list[bytes]:
    loadable = b"TMLM" + bytes(range(SLOT_BYTES - 4))
    unloadable = b"XXXX" + bytes(range(SLOT_BYTES - 4))
    no_xfer = b"\xff" * 56
    bitmap_first_held = b"\xfe" + b"\xff" * 63
    both = [(1, 200, 1), (1, 200, 2)]
    return [
        # page 1 newest: slot 0 active, a transfer into slot 1 holding chunk 0
        b"\xff\x0f" + loadable + unloadable + meta(1, 1, 0, 0, both) + no_xfer + b"\xff" * 64
        + meta(2, 0, NONE, 0, [(1, 200, 1), (0, 0, 0)]) + xfer(2, 1, 3000, 1024) + bitmap_first_held,
        # trial on an unloadable image: revert, then the boot check passes over it
        b"\xff\x0f" + loadable + unloadable + meta(3, 1, 0, 1, both) + no_xfer + b"\xff" * 64,
        # both slots unloadable: the factory image is installed
        b"\xff\x0f" + unloadable + unloadable + meta(1, 0, 1, 0, both) + no_xfer + b"\xff" * 64,
        # an empty store
        b"\x00\x00",
        # page 1 newest with a trust record (one key, one revocation); page 0 without one
        b"\xff\x0f" + loadable + unloadable + meta(1, 1, 0, 0, both) + no_xfer + b"\xff" * 64
        + meta(2, 0, NONE, 0, [(1, 200, 1), (0, 0, 0)]) + no_xfer + b"\xff" * 64
        + b"\x0c" + b"\xff" * TRUST_REC_BYTES + trust(1, 1),
    ]


def write(folder: Path, blobs: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for blob in blobs:
        (folder / hashlib.sha1(blob).hexdigest()).write_bytes(blob)  # libFuzzer's own naming


def main() -> None:
    rng = random.Random(SEED)
    for name, paths in (("engine", [DATA / n for n in ENGINE]), ("image", IMAGES)):
        blobs = []
        for path in paths:
            blob = path.read_bytes()
            blobs += [blob, *mutants(blob, rng)]
        write(HERE / "corpus" / name, blobs)
        print(name, len(blobs), "seeds")
    write(HERE / "corpus" / "store", store_seeds())
    print("store", len(store_seeds()), "seeds")


if __name__ == "__main__":
    main()
