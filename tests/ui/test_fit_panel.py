"""The deploy wizard's fit-to-machine panel, on the real window, broker and virtual fleet: the check
runs in a worker, shows each device's verdict with its reason, and a device that will false-alarm
is refused by the deployment unless "deploy anyway" is ticked."""

from __future__ import annotations

import dataclasses

from app.deploy import fit_check
from app.protocol.image import ModelImage
from app.ui.fit_panel import COLUMNS
from tests.ui.conftest import JOB_TIMEOUT_S, wait_for, wait_for_deploy_run

TARGET = "sim-002"
# A threshold every normal window of every machine exceeds: the real model, misfitted on purpose.
TINY_THRESHOLD = 1e-6


def test_wizard_shows_the_fit_check_and_refuses_a_misfit(window, qtbot, tmp_path, model_image):
    image = ModelImage.from_bytes(model_image)
    misfit = tmp_path / "misfit.tmlm"
    misfit.write_bytes(dataclasses.replace(image, threshold=TINY_THRESHOLD).to_bytes())
    wizard = window.open_deploy_wizard([TARGET])
    qtbot.addWidget(wizard)
    wizard.version_page.set_file(misfit)
    wizard.next()
    wizard.next()
    wizard.next()  # options page: the check starts in a worker, the GUI stays responsive
    panel = wizard.options_page.fit
    assert panel.worker is not None
    # the result is on screen once its queued slot ran on the GUI thread (`done` turns true in the worker)
    wait_for(qtbot, lambda: panel.reports is not None or panel.error is not None, JOB_TIMEOUT_S, "the fit check")
    assert panel.error is None, panel.error
    [report] = panel.reports
    assert report.device_id == TARGET and report.verdict == fit_check.WILL_FALSE_ALARM
    assert report.windows >= fit_check.MIN_FIT_WINDOWS
    assert panel.table.item(0, 1).text() == "will false-alarm"
    assert "score above the threshold" in panel.table.item(0, len(COLUMNS) - 1).text()
    assert TARGET in panel.status.text() and "deploy anyway" in panel.status.text()

    # ticked, the gate lets it through; unticked, the deployment refuses it and sends nothing
    panel.force.setChecked(True)
    assert panel.gate()(b"", [TARGET], None) == {}
    panel.force.setChecked(False)
    before = window.fleet_model.record(TARGET).model_version
    wizard.next()
    wait_for_deploy_run(qtbot, wizard)
    [result] = wizard.results
    assert result.outcome == "refused" and result.error_message.startswith("fit check: ")
    assert wizard.run_page.table.item(0, 1).text() == "refused"
    assert window.fleet_model.record(TARGET).model_version == before
    wizard.accept()


def test_model_card_shows_rates_with_counts_intervals_and_the_evidence_warning():
    """The shipped factory card (re-trained with the current pipeline) as the Models page shows it."""
    import json
    import types

    from app.fleet import factory
    from app.ui.models_page import card_html, metrics_text

    card = json.loads(factory.factory_paths()[1].read_text())
    mv = types.SimpleNamespace(ref="factory@1", deployable=True, created=0.0, parent=None, dataset=None,
                               image_size=card["image_size"], tflite_size=card["tflite_size"], arena=card["arena"],
                               ops=card["ops"], threshold=card["threshold"]["value"], metrics=card["metrics"],
                               card=card, fit={}, notes="", artifacts={}, kind="autoencoder", quantization="int8")
    m = card["metrics"]
    text = metrics_text(mv)
    assert f"FAR {m['false_alarm_rate_count']}/{m['false_alarm_rate_n']} (95 % CI up to" in text
    page = card_html(mv)
    assert f"{m['false_alarm_rate_count']}/{m['false_alarm_rate_n']} = " in page and "95 % CI" in page
    assert "false_alarm_rate_ci95" not in page  # shown in words, not as a raw list
    assert "too few to show it is under 1 %" in page and "s more normal data" in page
