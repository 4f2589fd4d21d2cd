"""The prediction log's flush: one Arrow table from a replica's buffered requests, against pandas.

    python benchmarks/log_flush.py [--requests 2700] [--rows 1 100] [--repeat 7]

A serving replica keeps each request's log rows as a chunk (prediction_log.log_columns) and every `log_flush_s`
builds one table of them on a background thread. That thread holds the GIL while it builds, and requests in
flight wait for it, so its time shows in their tail latency. Times, for the same chunks (11 features and a
binary classifier's outputs, as the demo model logs them):
(a) ours: prediction_log.table_from_chunks;
(b) pandas: a frame per chunk, concatenated, then pa.Table.from_pandas, as one would write it by hand.
Prints the medians of --repeat alternating runs and the ratio. Both tables hold as many rows as were logged.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def request_chunk(rows: int, rng: np.random.Generator):
    from tasks.store import prediction_log

    inputs = {f"number_{i}": rng.random(rows) for i in range(8)}
    inputs |= {f"text_{i}": np.array(rng.choice(["a", "b", "c"], rows), dtype=object) for i in range(3)}
    return prediction_log.log_columns(
        inputs,
        rng.integers(0, 2, rows),
        rng.random((rows, 2)),
        [0, 1],
        request_id=uuid.uuid4().hex,
        model_name="bench",
        model_version="1",
        variant="champion",
        latency_ms=3.0,
    )


def with_pandas(chunks: list) -> pa.Table:
    frames = [
        pd.DataFrame({**chunk.per_row, **chunk.shared, "record_index": np.arange(chunk.rows) + chunk.first_index})
        for chunk in chunks
    ]
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)


def timed(build, chunks: list, times: list[float]) -> None:
    started = time.perf_counter()
    build(chunks)
    times.append((time.perf_counter() - started) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2700, help="chunks in one flush (2 s of one replica's load)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100], help="records per request")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from tasks.store import prediction_log

    rng = np.random.default_rng(0)
    for rows in args.rows:
        chunks = [request_chunk(rows, rng) for _ in range(args.requests)]
        ours, baseline = prediction_log.table_from_chunks(chunks), with_pandas(chunks)
        assert ours.num_rows == baseline.num_rows == rows * args.requests
        ours_ms: list[float] = []
        pandas_ms: list[float] = []
        for _ in range(args.repeat):  # alternate, so drift in machine load hits both alike
            timed(prediction_log.table_from_chunks, chunks, ours_ms)
            timed(with_pandas, chunks, pandas_ms)
        a, b = statistics.median(ours_ms), statistics.median(pandas_ms)
        print(
            f"{args.requests} requests of {rows} row(s): (a) ours {a:7.1f} ms  (b) pandas {b:7.1f} ms  "
            f"(a)/(b) {a / b:.2f}x  (medians of {args.repeat})"
        )


if __name__ == "__main__":
    main()
