"""Traffic policy (champion only, A/B by weight, shadow) and the off-request-path prediction log buffer."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from tasks.settings import Settings
from tasks.store import prediction_log
from tasks.store.registry import TrafficMode as Mode

log = logging.getLogger("ray.serve")


def bucket(key: str) -> float:
    """A stable number in [0, 1) for a key: the same customer always lands in the same bucket."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def choose_variant(mode: Mode, key: str, challenger_weight: float) -> str:
    if mode == "ab" and bucket(key) < challenger_weight:
        return "challenger"
    return "champion"


def sticky_key(header_value: str | None, records: list[Any], id_columns: list[str], request_id: str) -> str:
    """The A/B key: an explicit header, else the first record's entity id, else the request (not sticky)."""
    if header_value:
        return header_value
    first = records[0] if records and isinstance(records[0], dict) else {}
    ids = [str(first[c]) for c in id_columns if first.get(c) is not None]
    return "|".join(ids) if ids else request_id


class PredictionBuffer:
    """Collects log chunks (prediction_log.log_columns) in memory and writes them from a background thread.

    Adding is a list append under a lock, so the request path never waits for storage. A failed write keeps
    its rows for the next attempt (bounded by `max_rows`, oldest dropped first, with a warning).
    """

    def __init__(self, settings: Settings, flush_every_s: float, max_rows: int, writer: str) -> None:
        self.settings, self.flush_every_s, self.max_rows, self.writer = settings, flush_every_s, max_rows, writer
        self._chunks: list[prediction_log.LogChunk] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(self, chunk: prediction_log.LogChunk) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._rows += chunk.rows
            dropped = 0
            while self._rows > self.max_rows and len(self._chunks) > 1:
                oldest = self._chunks.pop(0)
                self._rows -= oldest.rows
                dropped += oldest.rows
        if dropped:
            log.warning("prediction log buffer full: dropped the %d oldest rows", dropped)

    def flush(self) -> int:
        with self._lock:
            chunks, self._chunks, self._rows = self._chunks, [], 0
        if not chunks:
            return 0
        by_model: dict[str, list[prediction_log.LogChunk]] = {}
        for chunk in chunks:  # one table per model: their columns and prediction types differ
            by_model.setdefault(chunk.shared["model_name"], []).append(chunk)
        written = 0
        for model, group in by_model.items():
            try:
                prediction_log.write(prediction_log.table_from_chunks(group), self.settings, self.writer)
            except Exception as err:  # storage down: keep this model's rows and try again next time
                log.warning("prediction log write for %s failed, will retry: %s", model, err)
                with self._lock:
                    self._chunks[:0] = group
                    self._rows += sum(c.rows for c in group)
                continue
            written += sum(c.rows for c in group)
        return written

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
