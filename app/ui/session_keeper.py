"""The window's back-end session lifecycle, off the GUI thread: start an AppSession in a worker,
supersede a start still in flight, close replaced sessions in the background, and at exit wait
for them.

Each start is tagged with the next generation: a start's result that arrives after a newer start
(or after shutdown) is stale and closed, never attached. The window hears `attached(session)`,
`failed(message)`, `progress(text)` and, just before a session is let go, `detaching(session)`
(a direct signal: its slots run before the close begins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from app.services.app_session import AppSession, SessionConfig
from app.ui import workers
from app.ui.progress import Progress

log = logging.getLogger(__name__)

# At exit, a closing session gets this long: joining the virtual fleet's threads and stopping the
# embedded broker take up to ~15 s on a loaded machine; past this the process exits anyway.
SESSION_CLOSE_WAIT_MS = 30_000


class SessionKeeper(QObject):
    attached = Signal(object)  # the new current AppSession
    detaching = Signal(object)  # the current AppSession, about to be closed
    failed = Signal(str)  # why the newest start failed, as a sentence
    progress = Signal(str)  # the newest start's step

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session: AppSession | None = None
        self.start_worker: workers.Worker | None = None
        self._generation = 0
        self._closing: list[workers.Worker] = []  # sessions being closed in workers; referenced until done

    def start(self, config: SessionConfig) -> workers.Worker:
        """Let the current session go and start one for `config`; the worker runs AppSession.start."""
        self._generation += 1
        generation = self._generation
        if self.start_worker is not None and not self.start_worker.done:
            self.start_worker.cancel()  # checked between its steps; a late result is closed below
        self.detach()
        session = AppSession(config)

        def current() -> bool:
            return generation == self._generation

        def started(result: AppSession) -> None:
            if not current():
                log.info("a superseded session start finished: closing it")
                self._close_in_background(result)
                return
            self.session = result
            self.attached.emit(result)

        def failed(exc: BaseException) -> None:
            if current():  # a superseded start (usually the cancelled one): nothing to show
                self.failed.emit(workers.error_text(exc))

        def progress(step: Progress) -> None:
            if current():
                self.progress.emit(step.text)

        self.start_worker = workers.run_in_thread(session.start, name="session-start", on_result=started,
                                                  on_error=failed, on_progress=progress)
        return self.start_worker

    def detach(self) -> None:
        """Let the current session go (closed in the background)."""
        session, self.session = self.session, None
        if session is not None:
            self.detaching.emit(session)
            self._close_in_background(session)

    def shutdown(self, waiting: Callable[[], None] | None = None) -> None:
        """At exit: stop every worker, attach nothing in flight any more, close every session and
        wait up to SESSION_CLOSE_WAIT_MS for each (`waiting()` first, to say so)."""
        self._generation += 1  # a start still in flight is stale from now on
        start = self.start_worker
        workers.stop_all()
        if start is not None and start.done and start.value is not None and start.value is not self.session:
            # it came up while we waited, but its result was never delivered (the loop is ending)
            self._close_in_background(start.value)
        self.detach()
        pending = [w for w in self._closing if not w.done]
        if pending and waiting is not None:
            waiting()
            QApplication.processEvents()  # paint the caller's "closing" message before blocking
        for worker in pending:
            if not worker.wait(SESSION_CLOSE_WAIT_MS):
                log.warning("a session did not close within %d s", SESSION_CLOSE_WAIT_MS // 1000)

    @property
    def closing(self) -> bool:
        return any(not w.done for w in self._closing)

    def _close_in_background(self, session: AppSession) -> workers.Worker:
        """session.close() in a worker: joining the virtual fleet and stopping the embedded broker
        can take seconds. The worker stays referenced until the close is done (see shutdown)."""
        worker = workers.Worker(lambda _p, _c: session.close(), name="session-close")
        self._closing.append(worker)
        worker.finished.connect(lambda: self._closing.remove(worker) if worker in self._closing else None)
        return worker.start()
