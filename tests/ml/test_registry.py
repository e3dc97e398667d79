"""Registry round-trips, export, import of every supported format, and every bad model file:
each gets a clear error and leaves the registry as it was."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from app.domain.errors import ModelError
from app.ml import conversion, export, importer, store
from app.ml.registry import Registry
from app.protocol.codes import ErrorCode
from app.protocol.image import ModelImage


def add(reg: Registry, trained, name: str = "pump", **kw):
    return reg.add(name=name, tflite=trained.tflite, card=trained.card, image=trained.image, **kw)


def snapshot(data_dir) -> tuple[list, list]:
    """(registry rows, artifact files): what must not change when an import fails."""
    with Registry() as reg:
        rows = [(v.ref, v.sha256) for v in reg.list()]
    arts = data_dir / "artifacts"
    return rows, sorted(p.name for p in arts.iterdir()) if arts.exists() else []


def test_versions_round_trip(data_dir, trained):
    with Registry() as reg:
        v1 = add(reg, trained)
        v2 = add(reg, trained, parent=v1.ref, dataset="ds-1", notes="retrained")
        assert (v1.version, v2.version) == (1, 2)
        assert reg.resolve("pump@latest").ref == "pump@2" == reg.resolve("pump").ref
        assert reg.resolve("pump@1").sha256 == v1.sha256
        assert [v.ref for v in reg.list("pump")] == ["pump@1", "pump@2"] and reg.families() == ["pump"]
        image = reg.image_bytes(v2)
        assert store.sha256_hex(image) == v2.sha256 and len(image) == v2.image_size
        parsed = ModelImage.from_bytes(image)
        assert (parsed.name, parsed.version) == ("pump", 2)  # the registry stamps the version in META
        assert parsed.threshold == pytest.approx(v2.threshold)
        assert reg.tflite_bytes(v2) == trained.tflite
        assert (v2.parent, v2.dataset, v2.notes) == ("pump@1", "ds-1", "retrained")
        assert v2.fit["stm32f446"]["fits"] and v2.metrics["auc"] > 0.9 and v2.ops == ["FULLY_CONNECTED"]
        # content addressing: both versions share the flatbuffer, images differ only by version
        names = {p.name for p in (data_dir / "artifacts").iterdir()}
        assert names == {v1.tflite_sha256, v1.sha256, v2.sha256}
    with Registry() as again:  # persisted
        assert again.resolve("pump@latest").card["notes"] == "retrained"


def test_unknown_refs_are_clear(data_dir, trained):
    with Registry() as reg:
        add(reg, trained)
        with pytest.raises(ModelError, match="no model 'pump@7'"):
            reg.resolve("pump@7")
        with pytest.raises(ModelError, match="expected NAME@VERSION"):
            reg.resolve("pump@seven")
        with pytest.raises(ModelError, match="bad model name"):
            reg.add(name="bad/name", tflite=trained.tflite, card=trained.card, image=trained.image)


def test_failed_insert_leaves_nothing(data_dir, trained, monkeypatch):
    with Registry() as reg:
        reg._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON model_versions BEGIN "
                          "SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(sqlite3.IntegrityError):
            add(reg, trained)
        assert reg.list() == []
    assert list((data_dir / "artifacts").iterdir()) == []


def test_corrupted_artifact_is_detected(data_dir, trained):
    with Registry() as reg:
        mv = add(reg, trained)
        path = data_dir / "artifacts" / mv.sha256
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ModelError, match="corrupted"):
            reg.image_bytes(mv)


def test_export_package_and_header(data_dir, trained, tmp_path):
    with Registry() as reg:
        mv = add(reg, trained)
        files = export.export_package(reg, mv, tmp_path / "out")
        header = export.export_header(reg, mv, tmp_path / "out", symbol="pump_model")
        image = reg.image_bytes(mv)
    assert [p.name for p in files] == ["pump-v1.tflite", "pump-v1.tmlm", "pump-v1.json"]
    manifest = json.loads(files[2].read_text())
    assert manifest["model"] == "pump@1" and manifest["files"]["image"]["sha256"] == mv.sha256
    assert files[0].read_bytes() == trained.tflite and files[1].read_bytes() == image
    text = header.read_text()
    assert "const unsigned char pump_model[] __attribute__((aligned(16))) = {" in text
    body = text.split("= {", 1)[1].split("};", 1)[0]
    assert bytes(int(tok, 16) for tok in body.replace(",", " ").split()) == image
    assert f"pump_model_len = {len(image)}u" in text


def test_exported_image_imports_back(data_dir, trained, tmp_path):
    with Registry() as reg:
        mv = add(reg, trained)
        path = export.export_package(reg, mv, tmp_path)[1]
    imported = importer.import_model(path)
    assert imported.image.threshold == pytest.approx(mv.threshold)
    with Registry() as reg:
        back = reg.add(name="copy", tflite=imported.tflite, card=imported.card, image=imported.image)
        assert back.tflite_sha256 == mv.tflite_sha256 and back.arena == mv.arena


def test_import_int8_tflite_calibrates_on_data(trained, normal_rows, tmp_path):
    (tmp_path / "m.tflite").write_bytes(trained.tflite)
    imported = importer.import_model(tmp_path / "m.tflite", normal=normal_rows)
    assert imported.image is not None and imported.card["fit"]["stm32f446"]["fits"]
    assert imported.card["threshold"]["value"] > 0


def test_import_keras_float_model_converts_it(trained, normal_rows, tmp_path):
    path = tmp_path / "ae.keras"
    trained.keras_model.save(path)
    imported = importer.import_model(path, normal=normal_rows)
    assert set(imported.card["conversion"]["seconds"]) == {"float32", "dynamic", "int8"}
    assert imported.card["conversion"]["int8_vs_float"]["pearson"] > 0.9
    assert importer.tensor_io(imported.tflite)[0] == [(importer.INT8, [1, 36])]


def test_import_h5_and_savedmodel(trained, normal_rows, tmp_path):
    h5 = tmp_path / "ae.h5"
    trained.keras_model.save(h5)
    assert importer.import_model(h5, normal=normal_rows).image is not None
    saved = tmp_path / "saved"
    trained.keras_model.export(str(saved))
    assert importer.import_model(saved, normal=normal_rows).image is not None


BAD_FILES = {
    "truncated": (lambda t: t[: len(t) // 2], "m.tflite", "TFLite flatbuffer"),
    "corrupted header": (lambda t: t[:4] + b"XXXX" + t[8:], "m.tflite", "not a TFLite flatbuffer"),
    "not a model": (lambda t: b"x,y,z\n1,2,3\n" * 50, "m.tflite", "not a TFLite flatbuffer"),
    "text as keras": (lambda t: b"hello", "m.keras", "not a Keras model archive"),
    "empty": (lambda t: b"", "m.tflite", "is empty"),
    "unknown suffix": (lambda t: t, "m.onnx", "unsupported model format"),
    "truncated image": (lambda t: ModelImage("x", 1, 1.0, np.zeros(36, np.float32), np.ones(36, np.float32),
                                             t).to_bytes()[:-100], "m.tmlm", "truncated"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_model_files_are_refused_and_store_nothing(data_dir, trained, tmp_path, case):
    from app.ml.workflows import import_and_register

    make, name, message = BAD_FILES[case]
    before = snapshot(data_dir)
    path = tmp_path / name
    path.write_bytes(make(trained.tflite))
    with pytest.raises(ModelError, match=message):
        import_and_register(path, "bad")
    assert snapshot(data_dir) == before


def test_float_tflite_is_refused(trained, tmp_path):
    (tmp_path / "f.tflite").write_bytes(conversion.to_float32(trained.keras_model))
    with pytest.raises(ModelError, match="not full-int8") as err:
        importer.import_model(tmp_path / "f.tflite")
    assert err.value.code == ErrorCode.UNSUPPORTED_OP


def test_wrong_shape_needs_external(tmp_path):
    from app.ml import mlperf

    small = mlperf.build_reference(input_dim=64)
    tflite = conversion.to_int8(small, np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    path = tmp_path / "other.tflite"
    path.write_bytes(tflite)
    with pytest.raises(ModelError, match=r"takes input \[1, 64\].*--external"):
        importer.import_model(path)
    external = importer.import_model(path, external=True)
    assert external.image is None and external.card["input_shape"] == [1, 64]


def test_int8_spec_model_needs_data(trained, tmp_path):
    (tmp_path / "nodata.tflite").write_bytes(trained.tflite)
    with pytest.raises(ModelError, match="needs normal data"):
        importer.import_model(tmp_path / "nodata.tflite")


def test_corrupted_flatbuffer_never_crashes_the_operator(trained, normal_rows, tmp_path):
    """Bytes flipped all over the flatbuffer: TFLM may crash on it, but only inside a probe child;
    here the result is a ModelError naming the cause, or a model that proved itself in TFLM."""
    data = bytearray(trained.tflite)
    for pos in np.random.default_rng(1).integers(64, len(data) - 64, 200):
        data[pos] ^= 0xFF
    path = tmp_path / "flipped.tflite"
    path.write_bytes(bytes(data))
    try:
        imported = importer.import_model(path, normal=normal_rows)
    except ModelError as exc:
        assert str(exc)
    else:
        from app.ml import tflm

        assert tflm.Scorer(imported.image, imported.card["arena"]).self_test()[0]


def test_concurrent_writers_get_distinct_versions(data_dir, trained):
    """Two registries (say the GUI and a CI job) adding to one family at once."""
    import threading

    results, errors = [], []

    def worker():
        try:
            with Registry() as reg:
                for _ in range(3):
                    results.append(add(reg, trained, name="shared").version)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(results) == [1, 2, 3, 4, 5, 6]
