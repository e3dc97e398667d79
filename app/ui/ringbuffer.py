"""Bounded numpy ring buffers: IO threads write, the display timer reads (friture's pattern).

Memory is fixed at construction, so hours of live plotting never grow the process.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """The last `capacity` rows of shape `(columns,)`; `write` from any thread, `latest` copies."""

    def __init__(self, capacity: int, columns: int = 1, dtype: type = np.float32) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data = np.zeros((capacity, columns), dtype)
        self._head = 0  # next write position
        self._count = 0
        self.total = 0  # rows ever written: readers compare it to see whether anything is new
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, self._data.dtype).reshape(-1, self._data.shape[1])
        written = len(rows)
        if len(rows) >= self.capacity:
            rows = rows[-self.capacity:]
        with self._lock:
            n = len(rows)
            end = self._head + n
            if end <= self.capacity:
                self._data[self._head:end] = rows
            else:
                first = self.capacity - self._head
                self._data[self._head:] = rows[:first]
                self._data[: n - first] = rows[first:]
            self._head = end % self.capacity
            self._count = min(self.capacity, self._count + n)
            self.total += written

    def latest(self, n: int | None = None) -> np.ndarray:
        """A copy of the newest `n` rows (all when None), oldest first."""
        with self._lock:
            n = self._count if n is None else min(n, self._count)
            start = (self._head - n) % self.capacity
            if start + n <= self.capacity:
                return self._data[start:start + n].copy()
            return np.concatenate([self._data[start:], self._data[: (start + n) % self.capacity]])

    def clear(self) -> None:
        with self._lock:
            self._head = self._count = 0
