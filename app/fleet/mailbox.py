"""A few worker threads that run callables in order per key (one key = one device), keys in parallel.

The network thread must never wait on a device: verifying a model (TFLM load, self-test, a
2,000-inference benchmark) takes tens of milliseconds to seconds. Commands are posted here, so a
device handles its own commands one after another, as firmware would, while other devices and the
network carry on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

# A busy key gives up its worker after this many tasks, so one flooded device cannot starve the others.
BATCH_PER_TURN = 16


class OrderedPool:
    """`submit(key, fn)`: fn runs on one of `workers` threads after every earlier fn of the same key."""

    def __init__(self, workers: int, name: str = "fleet-worker") -> None:
        if workers < 1:
            raise ValueError("an ordered pool needs at least one worker")
        self._lock = threading.Lock()
        self._pending: dict[Hashable, deque[Callable[[], object]]] = {}
        self._ready: queue.SimpleQueue[Hashable | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        self._started = False
        self._closed = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()

    def submit(self, key: Hashable, fn: Callable[[], object]) -> None:
        with self._lock:
            if self._closed:
                return
            tasks = self._pending.get(key)
            if tasks is None:  # the key is idle: queue it for a worker
                self._pending[key] = deque([fn])
                self._ready.put(key)
            else:  # a worker owns the key (or will): it picks this up in order
                tasks.append(fn)

    def stop(self, timeout: float) -> None:
        """Drop queued work, let running tasks finish, join the workers."""
        with self._lock:
            self._closed = True
            for tasks in self._pending.values():
                tasks.clear()
        for _ in self._threads:
            self._ready.put(None)
        if self._started:
            for t in self._threads:
                t.join(timeout)

    def _work(self) -> None:
        while (key := self._ready.get()) is not None:
            for _ in range(BATCH_PER_TURN):
                with self._lock:
                    tasks = self._pending[key]
                    if not tasks:
                        del self._pending[key]
                        break
                    fn = tasks.popleft()
                try:
                    fn()
                except Exception:  # a task must never kill a worker shared by the whole fleet
                    log.exception("task for %s failed", key)
            else:
                with self._lock:  # more work remains: back of the line, fair to other keys
                    if self._pending.get(key):
                        self._ready.put(key)
                    else:
                        self._pending.pop(key, None)
