"""Fleet > Maintenance report…: the report of `tinymlops report` in one click, written in a worker,
with clear words for a file it cannot write (real window, real recordings and machine descriptions)."""

from __future__ import annotations

import logging

import pytest

from tests.analysis.test_report import plant  # noqa: F401  (the recordings of plant-a and plant-b)
from tests.ui.conftest import JOB_TIMEOUT_S, wait_for


@pytest.mark.usefixtures("plant")
def test_one_click_writes_the_sites_report_and_bad_files_are_sentences(qtbot, window, tmp_path, caplog):
    dialog = window.open_report(exec_=False)
    qtbot.addWidget(dialog)
    assert dialog.since.currentText() == "7d" and dialog.out.text().endswith(".html")
    dialog.site.setCurrentText("plant-a")
    out = tmp_path / "round.html"
    dialog.out.setText(str(out))
    dialog.write_button.click()
    wait_for(qtbot, lambda: dialog.written is not None, JOB_TIMEOUT_S, "the report")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "4 machines" in dialog.status.text() and dialog.open_button.isEnabled()

    dialog.out.setText(str(tmp_path / "round.docx"))
    assert dialog.start() is None and ".html or .pdf" in dialog.status.text()

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dialog.out.setText(str(blocker / "round.html"))  # its folder is a file: cannot be written
    with caplog.at_level(logging.WARNING):
        worker = dialog.start()
        wait_for(qtbot, lambda: worker.done and dialog.write_button.isEnabled(), JOB_TIMEOUT_S, "the refusal")
    assert "cannot write the report" in dialog.status.text()
    assert not [r for r in caplog.records if r.exc_info], "bad input must not log a traceback"
