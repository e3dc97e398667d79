"""Seed corpus of the libFuzzer targets (committed in corpus/engine and corpus/image): the valid
models and images of the test data, and a few deterministic mutants (truncations, a flipped header,
bytes flipped in the middle) so the fuzzers start on both sides of every early check.
Run from the repo root: `python3 firmware/tests/fuzz/gen_corpus.py` (standard library only)."""

from __future__ import annotations

import hashlib
import random
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


if __name__ == "__main__":
    main()
