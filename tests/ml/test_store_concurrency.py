"""The stores shared by the GUI and the CLI (two processes, one data dir): a
writer's clean-up after a failure must never delete a file another writer has just committed.

Two store objects on one database stand for the two processes; the other "process" acts at the
exact moment of the race, from inside the first one's clean-up or file write."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.ml import store as store_mod
from app.ml.datasets import DatasetStore
from app.ml.registry import Registry
from app.protocol.image import ModelImage

from .conftest import recording

# The other writer gives up on the database lock after this long (instead of DB_BUSY_TIMEOUT_S).
SHORT_BUSY_MS = 200


def _every_version_readable(reg: Registry) -> None:
    for mv in reg.list():
        reg.tflite_bytes(mv)
        if mv.deployable:
            reg.image_bytes(mv)


def test_failed_registry_add_never_deletes_an_artifact_another_writer_committed(data_dir, model_image):
    image = ModelImage.from_bytes(model_image)
    card = {"ops": ["FULLY_CONNECTED"], "arena": 4096, "fit": {}}
    gui, cli = Registry(), Registry()
    cli._conn.execute(f"PRAGMA busy_timeout = {SHORT_BUSY_MS}")
    # the GUI's insert fails (disk full, Ctrl-C): a temp trigger hits its connection only
    gui._conn.execute("CREATE TEMP TRIGGER fail BEFORE INSERT ON model_versions BEGIN "
                      "SELECT RAISE(ABORT, 'disk full'); END")
    remove = gui.artifacts.remove
    raced: list[str] = []

    def remove_after_the_cli_stored_the_same_model(digest: str) -> None:
        if not raced:
            raced.append("started")
            try:  # the CLI imports the same model exactly now
                raced[0] = cli.add(name="pump", tflite=image.tflite, card=card, image=image).ref
            except sqlite3.OperationalError:
                raced[0] = "locked"  # it had to wait: the GUI still held the write lock
        remove(digest)

    gui.artifacts.remove = remove_after_the_cli_stored_the_same_model
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        gui.add(name="pump", tflite=image.tflite, card=card, image=image)
    assert raced
    if raced == ["locked"]:
        cli.add(name="pump", tflite=image.tflite, card=card, image=image)
    _every_version_readable(cli)
    assert [v.ref for v in cli.list()] == ["pump@1"]
    gui.close()
    cli.close()


def test_same_recording_stored_by_two_writers_at_once_stays_readable(data_dir, monkeypatch):
    samples = recording(7, 4.0)
    gui, cli = DatasetStore(), DatasetStore()
    cli._conn.execute(f"PRAGMA busy_timeout = {SHORT_BUSY_MS}")
    write_atomic = store_mod.write_atomic
    raced: list[str] = []

    def write_then_the_cli_stores_it_too(path, data) -> None:
        write_atomic(path, data)
        if not raced:
            raced.append("started")
            try:
                raced[0] = cli.add(samples, 3200, "normal", source="cli").id
            except sqlite3.OperationalError:
                raced[0] = "locked"

    monkeypatch.setattr(store_mod, "write_atomic", write_then_the_cli_stores_it_too)
    ds = gui.add(samples, 3200, "normal", source="gui")  # the same content: the same dataset
    assert raced
    if raced == ["locked"]:
        assert cli.add(samples, 3200, "normal", source="cli").id == ds.id
    for store in (gui, cli):
        (listed,) = store.list()
        assert listed.id == ds.id
        np.testing.assert_array_equal(store.samples(listed), samples.astype(np.float32))
    gui.close()
    cli.close()
