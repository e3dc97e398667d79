"""The model CLI and workflows: machine output that is pure JSON, a bad family
name refused before minutes of training, progress a CI log can follow, nothing written for an
export that is refused."""

from __future__ import annotations

import io
import json

import pytest

from app.cli import model as model_cli
from app.cli.main import main
from app.domain.errors import ModelError

from .conftest import recording


def test_model_import_json_is_pure_json(data_dir, model_image, tmp_path, capsys):
    path = tmp_path / "pump.tmlm"
    path.write_bytes(model_image)
    capsys.readouterr()
    assert main(["model", "import", str(path), "--name", "pump-j", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # a CI job pipes this into jq
    assert report["name"] == "pump-j" and report["version"] == 1


def test_bad_family_name_is_refused_before_training(data_dir):
    from app.ml.datasets import DatasetStore
    from app.ml.workflows import train_and_register

    with DatasetStore() as store:
        ds = store.add(recording(2, 20.0), 3200, "normal", source="test")
    stages: list[str] = []
    with pytest.raises(ModelError, match="bad model name"):
        train_and_register([ds.id], [], "pump 3/line", progress=lambda stage, *_: stages.append(stage))
    assert stages == []  # not one epoch was spent on a version that could never be stored


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_shows_a_long_stage_advancing(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(model_cli.time, "monotonic", clock)
    log = io.StringIO()  # not a terminal: a CI log or `| tee`
    progress = model_cli.ProgressPrinter(log)
    for second in range(31):  # a 30 s recording reports every ~0.3 s
        for tick in range(3):
            clock.now = second + tick / 3
            progress("record", (second * 3 + tick) / 93, f"{second * 3 + tick}/93 windows")
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("record: 0%")
    assert len(lines) >= 5, lines  # a line every few seconds, not just 0% ... then silence


def test_progress_bar_on_a_terminal_ends_with_one_newline():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Tty()
    progress = model_cli.ProgressPrinter(term)
    progress("convert", 0.5, "converting")
    progress("convert", 1.0, "done")
    progress.done()
    assert term.getvalue().endswith("done" + " " * 56 + "\n")  # no blank line after the bar


def test_export_with_a_bad_symbol_writes_nothing(data_dir, model_image, tmp_path, capsys):
    path = tmp_path / "pump.tmlm"
    path.write_bytes(model_image)
    assert main(["model", "import", str(path), "--name", "pump-x"]) == 0
    out_dir = tmp_path / "out"
    assert main(["model", "export", "pump-x@1", "--out", str(out_dir), "--header", "--symbol", "9model"]) == 2
    assert "not a C identifier" in capsys.readouterr().err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_importing_a_keras_model_reports_progress(data_dir, tmp_path, capsys):
    from app.ml import training
    from app.ml.datasets import DatasetStore

    path = tmp_path / "ae.keras"
    training.build_autoencoder(36, (8,), 4).save(path)
    with DatasetStore() as store:
        ds = store.add(recording(3, 20.0), 3200, "normal", source="test")
    capsys.readouterr()
    assert main(["model", "import", str(path), "--name", "pump-k", "--data", ds.id]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "pump-k@1"
    # seconds of loading, converting and TFLM checks: the operator sees each stage go by
    for stage in ("load:", "convert:", "validate:"):
        assert stage in err, err


@pytest.mark.parametrize("option", [["--epochs", "0"], ["--latent", "0"], ["--margin", "0"], ["--percentile", "0"]])
def test_zero_training_settings_are_refused_not_silently_replaced(data_dir, capsys, option):
    code = main(["model", "train", "--data", "ds-whatever", "--name", "pump", *option])
    assert code == 2
    assert "bad training configuration" in capsys.readouterr().err


def test_record_longer_than_a_dataset_may_hold_is_refused_before_connecting(data_dir, capsys):
    # without this the operator would record for over an hour and then lose it all at the store
    code = main(["data", "record", "--device", "x", "--seconds", "4000", "--label", "normal",
                 "--broker", "mqtt://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and "at most" in err and "4000" in err, err
