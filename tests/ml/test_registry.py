"""Registry round-trips, export, import of every supported format, and every bad model file:
each gets a clear error and leaves the registry as it was."""

from __future__ import annotations

import functools
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


def test_float_and_dynamic_conversions_are_kept_and_exported(data_dir, trained, tmp_path):
    """Training makes three conversions; the version keeps all three, content-addressed, and the
    export package carries the float32 and dynamic-range ones with their checksums."""

    extras = trained.extra_artifacts
    assert set(extras) == {"float32", "dynamic"}
    assert {k: len(v) for k, v in extras.items()} == {
        k: v for k, v in trained.card["conversion"]["sizes"].items() if k != "int8"}
    with Registry() as reg:
        v1 = add(reg, trained, artifacts=extras)
        v2 = add(reg, trained, artifacts=extras)
        assert set(v1.artifacts) == {"float32", "dynamic"}
        for kind, data in extras.items():
            assert v1.artifacts[kind] == {"sha256": store.sha256_hex(data), "size": len(data)}
            assert reg.artifact_bytes(v2, kind) == data
        # float input and output: a host-side model, not the int8 one a device runs
        assert importer.tensor_io(reg.artifact_bytes(v1, "float32"))[0][0][0] != importer.INT8
        names = {p.name for p in (data_dir / "artifacts").iterdir()}
        assert names == {v1.tflite_sha256, v1.sha256, v2.sha256, *(store.sha256_hex(d) for d in extras.values())}
        files = export.export_package(reg, v1, tmp_path / "out")
    with Registry() as again:  # persisted
        assert again.resolve("pump@1").artifacts == v1.artifacts
        assert again.resolve("pump@1").card["artifacts"] == v1.artifacts
    assert [p.name for p in files] == ["pump-v1.tflite", "pump-v1.tmlm", "pump-v1.float32.tflite",
                                       "pump-v1.dynamic.tflite", "pump-v1.json"]
    manifest = json.loads(files[-1].read_text())
    for kind, path in (("float32", files[2]), ("dynamic", files[3])):
        entry = manifest["files"][kind]
        assert entry["file"] == path.name and not entry["deployable"]
        assert entry["sha256"] == store.sha256_hex(path.read_bytes()) == v1.artifacts[kind]["sha256"]
    assert manifest["files"]["image"]["image_sha256"] == v1.sha256  # the int8 entries are still there


def test_missing_or_unknown_artifact_kinds_are_clear(data_dir, trained):
    with Registry() as reg:
        mv = add(reg, trained)
        assert mv.artifacts == {}
        with pytest.raises(ModelError, match=r"keeps no 'float32' conversion \(kept: none\)"):
            reg.artifact_bytes(mv, "float32")
        with pytest.raises(ModelError, match="unknown artifact kind"):
            add(reg, trained, artifacts={"onnx": b"x"})
        assert [v.ref for v in reg.list()] == ["pump@1"]


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
            add(reg, trained, artifacts=trained.extra_artifacts)
        assert reg.list() == []
        assert reg._conn.execute("SELECT COUNT(*) FROM model_artifacts").fetchone()[0] == 0
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
    assert manifest["model"] == "pump@1" and manifest["files"]["image"]["image_sha256"] == mv.sha256
    # the .tmlm is the image followed by its signature block (tests/trust covers the block)
    assert files[0].read_bytes() == trained.tflite and files[1].read_bytes()[:len(image)] == image
    text = header.read_text()
    # declared for every includer, defined only under the implementation macro (one copy per firmware;
    # tests/firmware/test_model_header.py compiles and links it from several files)
    assert "extern const unsigned char pump_model[];" in text
    assert text.index("#ifdef TINYMLOPS_MODEL_IMPLEMENTATION") < text.index("const unsigned char pump_model[] __attr")
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
    # the dataset is split: some windows set the threshold, the others measure false alarms
    m = imported.card["metrics"]
    assert m["n_calibration"] + m["n_normal"] == len(normal_rows) and min(m["n_calibration"], m["n_normal"]) >= 8
    assert imported.card["threshold"]["n_windows"] == m["n_calibration"]


def test_import_with_too_little_data_to_split_is_refused(trained, normal_rows, tmp_path):
    from app.domain.errors import DataError

    (tmp_path / "m.tflite").write_bytes(trained.tflite)
    with pytest.raises(DataError, match=r"only 10 held-out normal windows; at least 16 are needed"):
        importer.import_model(tmp_path / "m.tflite", normal=normal_rows[:10])


def test_import_keras_float_model_converts_it(trained, normal_rows, tmp_path):
    path = tmp_path / "ae.keras"
    trained.keras_model.save(path)
    imported = importer.import_model(path, normal=normal_rows)
    assert set(imported.card["conversion"]["seconds"]) == {"float32", "dynamic", "int8"}
    assert imported.card["conversion"]["int8_vs_float"]["pearson"] > 0.9
    assert importer.tensor_io(imported.tflite)[0] == [(importer.INT8, [1, 36])]
    assert set(imported.extra_artifacts) == {"float32", "dynamic"}  # kept by the registry on import


def test_import_h5_and_savedmodel(trained, normal_rows, tmp_path):
    h5 = tmp_path / "ae.h5"
    trained.keras_model.save(h5)
    assert importer.import_model(h5, normal=normal_rows).image is not None
    saved = tmp_path / "saved"
    trained.keras_model.export(str(saved))
    assert importer.import_model(saved, normal=normal_rows).image is not None


# A SavedModel as wide as the MLPerf Tiny AD input (5 frames x 128 mel bins), with hidden layers
# small enough to export and convert in a second or two.
WIDE_INPUT = 640
WIDE_HIDDEN = (16, 8, 16)


def _wide_savedmodel(path):
    from app.ml.tfimport import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input(shape=(WIDE_INPUT,))
    x = inputs
    for units in WIDE_HIDDEN:
        x = k.layers.Dense(units, activation="relu")(x)
    k.Model(inputs, k.layers.Dense(WIDE_INPUT)(x)).export(str(path))
    return path


def test_savedmodel_input_width_comes_from_its_signature(data_dir, normal_rows, tmp_path):
    """A 640-wide SavedModel is read as 640-wide (not forced to 36 inputs): refused as a
    deployable model with the reason, stored check-only with --external, never deployable."""
    from app.ml.workflows import import_and_register

    saved = _wide_savedmodel(tmp_path / "wide")
    before = snapshot(data_dir)
    with pytest.raises(ModelError, match=r"maps \[1, 640\] to \[1, 640\], not feature spec 1's \[1, 36\].*--external"):
        import_and_register(saved, "wide")
    assert snapshot(data_dir) == before
    mv = import_and_register(saved, "wide", external=True)
    assert mv.kind == "external" and not mv.deployable and mv.card["input_shape"] == [1, WIDE_INPUT]
    with Registry() as reg:
        assert importer.tensor_io(reg.tflite_bytes(mv)) == ([(importer.INT8, [1, WIDE_INPUT])],
                                                            [(importer.INT8, [1, WIDE_INPUT])])
        with pytest.raises(ModelError, match=r"external model \(\[1, 640\] input, not feature spec 1\)"):
            reg.image_bytes(mv)


# An op in neither the C engine's set (every Cortex-M profile) nor ESP32's TFLM resolver; the int8
# converter keeps it as an int8 EXP kernel, so the file is otherwise a valid 36 -> 36 int8 model.
FOREIGN_OP = "EXP"


def _exp_keras():
    from app.ml.tfimport import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input(shape=(36,))
    x = k.layers.Lambda(lambda t: k.ops.exp(t))(k.layers.Dense(8)(inputs))
    return k.Model(inputs, k.layers.Dense(36)(x))


@functools.cache
def _exp_tflite() -> bytes:
    rows = np.random.default_rng(0).standard_normal((32, 36)).astype(np.float32)
    return conversion.to_int8(_exp_keras(), rows)


BAD_FILES = {
    "truncated": (lambda t: t[: len(t) // 2], "m.tflite", "TFLite flatbuffer"),
    "corrupted header": (lambda t: t[:4] + b"XXXX" + t[8:], "m.tflite", "not a TFLite flatbuffer"),
    "not a model": (lambda t: b"x,y,z\n1,2,3\n" * 50, "m.tflite", "not a TFLite flatbuffer"),
    "text as keras": (lambda t: b"hello", "m.keras", "not a Keras model archive"),
    "empty": (lambda t: b"", "m.tflite", "is empty"),
    "unknown suffix": (lambda t: t, "m.onnx", "unsupported model format"),
    "truncated image": (lambda t: ModelImage("x", 1, 1.0, np.zeros(36, np.float32), np.ones(36, np.float32),
                                             t).to_bytes()[:-100], "m.tmlm", "truncated"),
    "op no device runs": (lambda t: _exp_tflite(), "m.tflite", f"ops no supported device runs: {FOREIGN_OP}"),
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


def test_an_op_no_device_runs_is_refused_in_every_import_path(data_dir, normal_rows, tmp_path, capsys):
    """Deployable or check-only, int8 file or float model converted here: a model using an op
    outside every profile's op set is refused with the op's name and stores nothing."""
    from app.cli.main import main
    from app.domain.profiles import PROFILES

    assert all(FOREIGN_OP not in p.ops for p in PROFILES.values())
    tflite = tmp_path / "exp.tflite"
    tflite.write_bytes(_exp_tflite())
    saved = tmp_path / "exp-savedmodel"  # a Lambda layer does not reload from .keras (safe mode)
    _exp_keras().export(str(saved))
    before = snapshot(data_dir)
    for path, kwargs in ((tflite, {"normal": normal_rows}), (tflite, {"external": True}),
                         (saved, {"normal": normal_rows})):
        with pytest.raises(ModelError, match=f"ops no supported device runs: {FOREIGN_OP}") as err:
            importer.import_model(path, **kwargs)
        assert err.value.code == ErrorCode.UNSUPPORTED_OP
    capsys.readouterr()
    assert main(["model", "import", str(tflite), "--name", "exp", "--external"]) == 2
    assert f"the model uses ops no supported device runs: {FOREIGN_OP}" in capsys.readouterr().err
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


def _file_writing_savedmodel(path, target):
    """A 36 -> 36 SavedModel whose serving function also writes `target`: a graph can do file I/O."""
    from app.ml.tfimport import tensorflow

    tf = tensorflow()

    class Writer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.eye(36))

        @tf.function(input_signature=[tf.TensorSpec([None, 36], tf.float32)])
        def __call__(self, x):
            tf.io.write_file(str(target), "written by a model file")
            return tf.matmul(x, self.w)

    module = Writer()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def test_a_savedmodel_with_file_io_is_refused_before_it_runs(data_dir, normal_rows, tmp_path):
    from app.ml.workflows import import_and_register

    target = tmp_path / "written.txt"
    saved = _file_writing_savedmodel(tmp_path / "writer", target)
    before = snapshot(data_dir)
    with pytest.raises(ModelError, match=r"holds operations a model does not need \(.*WriteFile.*\); it is not loaded"):
        importer.import_model(saved, normal=normal_rows)  # the path that calibrates: it runs the model
    with pytest.raises(ModelError, match="WriteFile"):
        import_and_register(saved, "writer", external=True)
    assert not target.exists()
    assert snapshot(data_dir) == before


def test_a_keras_file_with_a_lambda_layer_is_refused_in_safe_mode(data_dir, normal_rows, tmp_path):
    path = tmp_path / "lambda.keras"
    _exp_keras().save(path)
    before = snapshot(data_dir)
    with pytest.raises(ModelError, match=r"cannot load lambda\.keras as a Keras model: .*safe_mode"):
        importer.import_model(path, normal=normal_rows)
    assert snapshot(data_dir) == before


@pytest.mark.parametrize("name", ["pump\n", "pump\r\n", "\npump", "pump ", "", "a" * 65, "pump/1", "pump@2"])
def test_bad_model_names_are_refused_even_with_a_trailing_newline(data_dir, name):
    from app.ml.registry import check_name

    with pytest.raises(ModelError, match="bad model name"):
        check_name(name)


def test_a_garbage_savedmodel_graph_is_a_clear_error(data_dir, tmp_path):
    saved = tmp_path / "garbage"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f not a protobuf")
    before = snapshot(data_dir)
    with pytest.raises(ModelError, match=r"the SavedModel in garbage is not readable"):
        importer.import_model(saved, external=True)
    assert snapshot(data_dir) == before
