"""The MLPerf Tiny anomaly-detection reference: built, converted to full int8, checked against
every profile (fits where it fits, refused with the reason where not), never deployable."""

from __future__ import annotations

import pytest

from app.domain.errors import ModelError
from app.ml import importer, mlperf, validation
from app.ml.registry import Registry
from app.protocol.codes import ErrorCode


@pytest.fixture(scope="module")
def reference():
    model = mlperf.build_reference()
    tflite, _ = mlperf.convert_reference(model)
    return model, tflite


def test_reference_architecture(reference):
    model, tflite = reference
    dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert dense == [128] * 4 + [8] + [128] * 4 + [640]
    assert sum(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers) == 9
    assert importer.tensor_io(tflite) == ([(importer.INT8, [1, 640])], [(importer.INT8, [1, 640])])
    assert 250 * 1024 < len(tflite) < 320 * 1024  # ~270 KB of int8 weights plus per-channel scales


def test_reference_fit_table(data_dir, reference):
    with Registry() as reg:
        mv = mlperf.register_reference(reg, built=reference)
        assert mv.kind == "external" and not mv.deployable and mv.ops == ["FULLY_CONNECTED"]
        fits = {k for k, f in mv.fit.items() if f["fits"]}
        assert {"stm32l4r5", "qemu-mps2-an386", "esp32-wroom-32"} <= fits
        assert "stm32f446" not in fits
        assert mv.fit["stm32f446"]["reasons"] == [
            f"image {mv.image_size / 1024:.1f} KB exceeds the 192.0 KB model slot"]
        with pytest.raises(ModelError) as err:
            validation.require_fit("stm32f446", mv.image_size, mv.arena, mv.ops, label=mv.ref)
        assert err.value.code == ErrorCode.TOO_LARGE
        with pytest.raises(ModelError, match=r"external model .* not feature spec 1.*not deployed"):
            reg.image_bytes(mv)
        assert len(reg.tflite_bytes(mv)) == mv.tflite_size


def test_reference_imports_as_external_tflite(data_dir, reference, tmp_path):
    from app.ml.workflows import import_and_register

    _, tflite = reference
    path = tmp_path / "ad.tflite"
    path.write_bytes(tflite)
    with pytest.raises(ModelError, match="--external"):
        import_and_register(path, "ad")
    mv = import_and_register(path, "ad", external=True)
    assert mv.ref == "ad@1" and mv.card["input_shape"] == [1, 640] and mv.fit["stm32l4r5"]["fits"]


def test_mlperf_command_stores_a_check_only_reference(data_dir, tmp_path, capsys):
    """`tinymlops model mlperf` end to end (build, convert, TFLM checks: a few seconds), then what
    an engineer does with it: check it against a board, export it, and try to deploy it."""
    import json

    from app.cli.main import main

    assert main(["model", "mlperf"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "mlperf-ad@1"
    for stage in ("build:", "convert:", "validate:"):
        assert stage in err, err
    assert main(["model", "check", "mlperf-ad@1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "external" and not report["deployable"] and report["ops"] == ["FULLY_CONNECTED"]
    assert report["fit"]["stm32l4r5"]["fits"] and not report["fit"]["stm32f446"]["fits"]
    assert main(["model", "check", "mlperf-ad@latest", "--require", "stm32f446"]) == 2
    assert "does not fit stm32f446: image" in capsys.readouterr().err
    assert main(["model", "show", "mlperf-ad@1"]) == 0
    assert "mlperf-ad@1 (external, check-only)" in capsys.readouterr().out
    assert main(["model", "export", "mlperf-ad@1", "--out", str(tmp_path)]) == 0
    written = [line.rsplit("/", 1)[1] for line in capsys.readouterr().out.split()]
    assert written == ["mlperf-ad-v1.tflite", "mlperf-ad-v1.json"]  # no .tmlm: nothing a device could take
    assert json.loads((tmp_path / "mlperf-ad-v1.json").read_text())["deployable"] is False
    # refused before any connection is attempted (port 9 has no broker)
    assert main(["deploy", "mlperf-ad@1", "--device", "sim-001", "--broker", "mqtt://127.0.0.1:9"]) == 2
    assert "external model ([1, 640] input, not feature spec 1)" in capsys.readouterr().err
