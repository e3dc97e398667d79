"""Model registry: families and auto-numbered versions, metadata in the application's SQLite file,
artifacts content-addressed by SHA-256 under `artifacts/`. Adding a version is one step: artifacts
written atomically, metadata in one transaction, and on any failure both are undone.

Two kinds of version:
* "spec": a feature-spec-1 anomaly detector with a TMLM image (threshold, normalisation,
  self-test): deployable.
* "external": any full-int8 TFLite model of another input shape (the MLPerf Tiny reference, a
  foreign model): ops, arena and fit are checked, but no image exists, because a device computes
  feature spec 1 and cannot feed it.

A version may also keep other conversions of the same model (float32, dynamic-range), stored
content-addressed next to the int8 flatbuffer and listed in `model_artifacts`: for comparison and
for hosts that run float TFLite, never for a device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.domain import database, paths
from app.domain.errors import ModelError
from app.ml import store
from app.protocol.image import ModelImage
from app.trust.keys import KeyStore
from app.trust.signing import SignatureBlock, sign_image

log = logging.getLogger(__name__)

KIND_SPEC = "spec"
KIND_EXTERNAL = "external"
# Family names travel in the TMLM META `str` and in file names: keep them short and plain.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    image_sha256 TEXT,
    tflite_sha256 TEXT NOT NULL,
    image_size INTEGER NOT NULL,
    tflite_size INTEGER NOT NULL,
    arena INTEGER NOT NULL,
    ops TEXT NOT NULL,
    threshold REAL,
    quantization TEXT NOT NULL,
    feature_spec TEXT,
    metrics TEXT NOT NULL,
    fit TEXT NOT NULL,
    card TEXT NOT NULL,
    created REAL NOT NULL,
    parent TEXT,
    dataset TEXT,
    notes TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS model_artifacts (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (name, version, kind)
);
CREATE TABLE IF NOT EXISTS model_signatures (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    block BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version, key_id)
);
CREATE TABLE IF NOT EXISTS model_revocations (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    revoked REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
);
"""
# Other conversions a version may keep beside its int8 flatbuffer (see the module docstring).
ARTIFACT_KINDS = ("float32", "dynamic")


@dataclass
class ModelVersion:
    name: str
    version: int
    kind: str
    sha256: str  # of the TMLM image (what a device reports); of the flatbuffer for external models
    image_sha256: str | None
    tflite_sha256: str
    image_size: int
    tflite_size: int
    arena: int
    ops: list[str]
    threshold: float | None
    quantization: str
    feature_spec: dict | None
    metrics: dict
    fit: dict
    card: dict
    created: float
    parent: str | None = None
    dataset: str | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # other conversions kept with the version: kind -> {"sha256": ..., "size": ...}
    artifacts: dict[str, dict] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def deployable(self) -> bool:
        return self.kind == KIND_SPEC

    def summary(self) -> dict:
        """JSON-able view (everything but the full card)."""
        return {k: getattr(self, k) for k in (
            "name", "version", "kind", "sha256", "image_size", "tflite_size", "arena", "ops",
            "threshold", "quantization", "metrics", "fit", "created", "parent", "dataset", "notes",
            "artifacts")}


def check_name(name: str) -> str:
    """`name` if it is a valid family name, else ModelError (checked before any long work)."""
    if not NAME_RE.fullmatch(name):  # not match(): `$` also matches before a trailing newline
        raise ModelError(f"bad model name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name


def parse_ref(ref: str) -> tuple[str, str]:
    """'NAME@VERSION' or 'NAME@latest' (or bare 'NAME', meaning latest) -> (name, version-text)."""
    name, _, version = ref.partition("@")
    return name, (version or "latest")


class Registry(database.Store):
    def __init__(self, db_path: Path | None = None, artifacts_dir: Path | None = None,
                 keys: KeyStore | None = None) -> None:
        super().__init__(db_path, _SCHEMA)
        # the operator's signing keys live beside the database they sign for
        self.keys = keys or KeyStore(self.db_path.parent / "keys")
        self.artifacts = store.ContentStore(Path(artifacts_dir) if artifacts_dir else paths.artifacts_dir())

    # --- reading -------------------------------------------------------------------------------
    def _row(self, row) -> ModelVersion:
        artifacts = {r["kind"]: {"sha256": r["sha256"], "size": r["size"]} for r in self._query(
            "SELECT kind, sha256, size FROM model_artifacts WHERE name=? AND version=? ORDER BY kind",
            (row["name"], row["version"]))}
        return ModelVersion(
            name=row["name"], version=row["version"], kind=row["kind"], sha256=row["sha256"],
            image_sha256=row["image_sha256"], tflite_sha256=row["tflite_sha256"],
            image_size=row["image_size"], tflite_size=row["tflite_size"], arena=row["arena"],
            ops=json.loads(row["ops"]), threshold=row["threshold"], quantization=row["quantization"],
            feature_spec=json.loads(row["feature_spec"]) if row["feature_spec"] else None,
            metrics=json.loads(row["metrics"]), fit=json.loads(row["fit"]), card=json.loads(row["card"]),
            created=row["created"], parent=row["parent"], dataset=row["dataset"], notes=row["notes"],
            artifacts=artifacts)

    def _query(self, sql: str, args: tuple = ()) -> list:
        with self._conn.lock:  # never read another thread's half-done transaction on this connection
            return self._conn.execute(sql, args).fetchall()

    def families(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT name FROM model_versions ORDER BY name")]

    def list(self, family: str | None = None) -> list[ModelVersion]:
        if family:
            rows = self._query("SELECT * FROM model_versions WHERE name=? ORDER BY version", (family,))
        else:
            rows = self._query("SELECT * FROM model_versions ORDER BY name, version")
        return [self._row(r) for r in rows]

    def resolve(self, ref: str) -> ModelVersion:
        """'NAME@VERSION', 'NAME@latest' or 'NAME' -> ModelVersion, or ModelError."""
        name, version = parse_ref(ref.strip())
        if version == "latest":
            rows = self._query("SELECT * FROM model_versions WHERE name=? ORDER BY version DESC LIMIT 1", (name,))
        else:
            try:
                number = int(version)
            except ValueError:
                raise ModelError(f"bad model reference {ref!r}: expected NAME@VERSION or NAME@latest") from None
            rows = self._query("SELECT * FROM model_versions WHERE name=? AND version=?", (name, number))
        row = rows[0] if rows else None
        if row is None:
            known = ", ".join(self.families()) or "none"
            raise ModelError(f"no model {ref!r} in the registry (families: {known})")
        return self._row(row)

    def _artifact(self, digest: str, what: str) -> bytes:
        try:
            return self.artifacts.get(digest)
        except FileNotFoundError:
            raise ModelError(f"the {what} artifact {digest[:12]} is missing from "
                             f"{self.artifacts.root}") from None
        except OSError as exc:
            raise ModelError(str(exc)) from exc

    def image_bytes(self, mv: ModelVersion) -> bytes:
        """The TMLM image to deploy. External models have none (see module docstring)."""
        if mv.kind != KIND_SPEC or not mv.image_sha256:
            raise ModelError(f"{mv.ref} is an external model ({mv.card.get('input_shape', '?')} input, not "
                             "feature spec 1): it can be checked against devices but not deployed")
        return self._artifact(mv.image_sha256, "image")

    def image(self, mv: ModelVersion) -> ModelImage:
        return ModelImage.from_bytes(self.image_bytes(mv))

    def tflite_bytes(self, mv: ModelVersion) -> bytes:
        return self._artifact(mv.tflite_sha256, "TFLite")

    def artifact_bytes(self, mv: ModelVersion, kind: str) -> bytes:
        """Another conversion kept with the version ("float32", "dynamic"), or ModelError."""
        if kind not in mv.artifacts:
            kept = ", ".join(mv.artifacts) or "none"
            raise ModelError(f"{mv.ref} keeps no {kind!r} conversion (kept: {kept})")
        return self._artifact(mv.artifacts[kind]["sha256"], f"{kind} conversion")

    def next_version(self, name: str) -> int:
        row = self._query("SELECT MAX(version) FROM model_versions WHERE name=?", (name,))[0]
        return (row[0] or 0) + 1

    # --- writing -------------------------------------------------------------------------------
    def add(self, *, name: str, tflite: bytes, card: dict, image: ModelImage | None = None,
            parent: str | None = None, dataset: str | None = None, notes: str = "",
            artifacts: dict[str, bytes] | None = None) -> ModelVersion:
        """Store a new version of `name` (numbered here, stamped into the image's META).

        `card` must hold ops, arena, image_size and fit (from app.ml.validation); `image` is
        required for a deployable ("spec") model and absent for an external one. `artifacts`:
        other conversions to keep with it, by kind (ARTIFACT_KINDS)."""
        check_name(name)
        for key in ("ops", "arena", "fit"):
            if key not in card:
                raise ModelError(f"model card lacks {key!r} (validate the model before registering it)")
        artifacts = dict(artifacts or {})
        unknown = sorted(set(artifacts) - set(ARTIFACT_KINDS))
        if unknown:
            raise ModelError(f"unknown artifact kind(s) {', '.join(unknown)}; known: {', '.join(ARTIFACT_KINDS)}")
        created: list[str] = []
        version = 0
        with database.transaction(self._conn):
            try:
                version = self.next_version(name)
                image_bytes = None
                if image is not None:
                    image_bytes = dataclasses.replace(image, name=name, version=version).to_bytes()
                tflite_sha, new = self.artifacts.put(bytes(tflite))
                if new:
                    created.append(tflite_sha)
                image_sha = None
                if image_bytes is not None:
                    image_sha, new = self.artifacts.put(image_bytes)
                    if new:
                        created.append(image_sha)
                kept: dict[str, dict] = {}
                for kind in ARTIFACT_KINDS:
                    if kind not in artifacts:
                        continue
                    digest, new = self.artifacts.put(bytes(artifacts[kind]))
                    if new:
                        created.append(digest)
                    kept[kind] = {"sha256": digest, "size": len(artifacts[kind])}
                    self._conn.execute("INSERT INTO model_artifacts (name, version, kind, sha256, size) "
                                       "VALUES (?,?,?,?,?)", (name, version, kind, digest, len(artifacts[kind])))
                now = time.time()
                full_card = {**card, "name": name, "version": version, "created": now, "artifacts": kept,
                             "parent": parent, "dataset": dataset, "notes": notes,
                             "kind": KIND_SPEC if image is not None else KIND_EXTERNAL,
                             "sha256": image_sha or tflite_sha}
                self._conn.execute(
                    "INSERT INTO model_versions (name, version, kind, sha256, image_sha256, tflite_sha256, "
                    "image_size, tflite_size, arena, ops, threshold, quantization, feature_spec, metrics, "
                    "fit, card, created, parent, dataset, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, version, full_card["kind"], image_sha or tflite_sha, image_sha, tflite_sha,
                     len(image_bytes) if image_bytes is not None else int(card.get("image_size", 0)),
                     len(tflite), int(card["arena"]), json.dumps(card["ops"]),
                     image.threshold if image is not None else None, card.get("quantization", "int8"),
                     json.dumps(card.get("feature_spec")) if card.get("feature_spec") else None,
                     json.dumps(card.get("metrics", {})), json.dumps(card["fit"]),
                     json.dumps(full_card, default=float), now, parent, dataset, notes))
                if image_bytes is not None:
                    self._insert_signature(name, version, sign_image(image_bytes, self.keys.private_key()))
            except BaseException:
                # still inside the write transaction: no other writer can commit a reference
                # to one of these files between the check and the removal
                for digest in created:
                    if not self._referenced(digest, other_than=(name, version)):
                        self.artifacts.remove(digest)
                raise
        mv = self.resolve(f"{name}@{version}")
        log.info("registered %s (%s, %d bytes)", mv.ref, mv.kind, mv.image_size)
        return mv

    def _referenced(self, digest: str, other_than: tuple[str, int] = ("", 0)) -> bool:
        return bool(self._query("SELECT 1 FROM model_versions WHERE (image_sha256=? OR tflite_sha256=?) "
                                "AND NOT (name=? AND version=?) UNION ALL SELECT 1 FROM model_artifacts "
                                "WHERE sha256=? AND NOT (name=? AND version=?) LIMIT 1",
                                (digest, digest, *other_than, digest, *other_than)))

    # --- signatures and revocations (PROTOCOL.md 6.2) -------------------------------------------
    def _insert_signature(self, name: str, version: int, block: SignatureBlock) -> None:
        self._conn.execute("INSERT OR REPLACE INTO model_signatures (name, version, key_id, block, created) "
                           "VALUES (?,?,?,?,?)", (name, version, block.key_hex, block.to_bytes(), time.time()))

    def signature(self, mv: ModelVersion, *, sign_if_missing: bool = True) -> SignatureBlock | None:
        """The version's signature by the operator's active key if it has one, else by any key it
        was signed with; a deployable version registered before signing existed is signed now."""
        rows = self._query("SELECT key_id, block FROM model_signatures WHERE name=? AND version=? "
                           "ORDER BY created DESC", (mv.name, mv.version))
        active = self.keys.active()
        for row in rows:
            if active is not None and row["key_id"] == active.id:
                return SignatureBlock.from_bytes(bytes(row["block"]))
        if rows and not sign_if_missing:
            return SignatureBlock.from_bytes(bytes(rows[0]["block"]))
        if not mv.deployable or not sign_if_missing:
            return None
        block = sign_image(self.image_bytes(mv), self.keys.private_key())
        with database.transaction(self._conn):
            self._insert_signature(mv.name, mv.version, block)
        return block

    def revoke(self, ref: str, reason: str = "") -> ModelVersion:
        mv = self.resolve(ref)
        with database.transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO model_revocations (name, version, revoked, reason) "
                               "VALUES (?,?,?,?)", (mv.name, mv.version, time.time(), reason))
        log.info("revoked %s", mv.ref)
        return mv

    def revoked(self, mv: ModelVersion) -> bool:
        return bool(self._query("SELECT 1 FROM model_revocations WHERE name=? AND version=?",
                                (mv.name, mv.version)))

    def revocations(self) -> list[tuple[str, int]]:
        return [(r["name"], r["version"]) for r in
                self._query("SELECT name, version FROM model_revocations ORDER BY name, version")]
