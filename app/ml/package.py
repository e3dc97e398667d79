"""A version's export package with every conversion it keeps: app.ml.export writes the int8
`.tflite`, the `.tmlm` image and the JSON manifest; this adds the float32 and dynamic-range
conversions the registry keeps with the version (`<name>-v<version>.<kind>.tflite`) and lists
them in the manifest's `files` with their SHA-256, like the others. They are for comparison and
for hosts that run float TFLite; a device takes the `.tmlm`."""

from __future__ import annotations

import json
from pathlib import Path

from app.domain.errors import ModelError
from app.ml import export, store
from app.ml.registry import ARTIFACT_KINDS, ModelVersion, Registry

MANIFEST_SUFFIX = ".json"


def artifact_file_name(mv: ModelVersion, kind: str) -> str:
    return f"{mv.name}-v{mv.version}.{kind}.tflite"


def export_with_artifacts(reg: Registry, mv: ModelVersion, out_dir: Path) -> list[Path]:
    """export.export_package plus the version's other conversions; returns the paths written
    (the manifest last). Every artifact is read (and its SHA-256 checked) before a file is written."""
    extras = {kind: reg.artifact_bytes(mv, kind) for kind in ARTIFACT_KINDS if kind in mv.artifacts}
    written = export.export_package(reg, mv, out_dir)
    if not extras:
        return written
    manifests = [p for p in written if p.suffix == MANIFEST_SUFFIX]
    if len(manifests) != 1:
        raise ModelError(f"export of {mv.ref} wrote {len(manifests)} manifests, expected one")
    manifest_path = manifests[0]
    manifest = json.loads(manifest_path.read_text())
    added = []
    for kind, data in extras.items():
        path = Path(out_dir) / artifact_file_name(mv, kind)
        store.write_atomic(path, data)
        manifest["files"][kind] = {"file": path.name, "sha256": store.sha256_hex(data), "size": len(data),
                                   "deployable": False}
        added.append(path)
    store.write_atomic(manifest_path, (json.dumps(manifest, indent=2, default=float) + "\n").encode())
    return [p for p in written if p != manifest_path] + added + [manifest_path]
