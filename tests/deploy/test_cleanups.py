"""The file of remembered chunk clean-ups (app/deploy/cleanups.py): bad content loses nothing."""

from __future__ import annotations

import logging
import time

from app.services.cleanups import Cleanup, PendingCleanups


def test_an_unreadable_file_is_kept_aside_and_a_new_list_started(tmp_path, caplog):
    path = tmp_path / "pending.json"
    path.write_text("{not json")
    store = PendingCleanups(path)
    with caplog.at_level(logging.WARNING):
        assert store.for_broker("127.0.0.1:1883") == []
    assert (tmp_path / "pending.unreadable").read_text() == "{not json"  # kept for a person to look at
    assert "unreadable" in caplog.text and not any(r.exc_info for r in caplog.records)
    store.add(Cleanup("127.0.0.1:1883", "tinymlops/v1/a/models/ab", 3, since=time.time()))
    assert [c.prefix for c in store.for_broker("127.0.0.1:1883")] == ["tinymlops/v1/a/models/ab"]
    assert store.for_broker("127.0.0.1:1884") == []


def test_entries_are_keyed_by_broker_and_prefix_and_removed_when_done(tmp_path):
    store = PendingCleanups(tmp_path / "pending.json")
    a = Cleanup("h:1", "p/a", 3, since=time.time())
    store.add(a)
    store.add(Cleanup("h:1", "p/a", 5, since=time.time()))  # the same chunks again: one entry, latest count
    store.add(Cleanup("h:2", "p/a", 3, since=time.time()))
    assert [c.n_chunks for c in store.for_broker("h:1")] == [5]
    store.remove(a)
    assert store.for_broker("h:1") == [] and len(store.for_broker("h:2")) == 1
    store.remove(Cleanup("h:2", "p/a", 3))
    assert not store.path.exists()  # nothing left: no file
