"""Batch scoring at scale: the in-process engine and the Ray Data engine on the same generated files, against the
model's own in-process rate (the ceiling) measured in the same run.

    python benchmarks/batch.py [--rows 10000000] [--files 10] [--chunk-rows 100000] [--actors N]

Registers one HistGradientBoosting model of the demo data in a throwaway store (benchmarks/serving.py's), writes
`--rows` demo rows (generated, not downloaded) as `--files` Parquet files, then runs `flows/batch_predict.py`
from the shell once per engine, each in its own process: validation, scoring, writing the parts and logging
every row, as a user's run does (the Ray engine's time includes starting a local Ray). Peak memory is the
largest sum over the run's whole process tree (the flow, and for Ray its raylet and actors), sampled every
second, of resident set sizes and of proportional set sizes (shared pages split among their sharers: the
honest figure when Ray's processes map one object store); the ceiling is `predict_proba` on 100,000-row
frames already in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serving import register_model, throwaway_store

ROOT = Path(__file__).resolve().parent.parent


def write_input(folder: Path, rows: int, files: int) -> None:
    from tasks.demo import TARGET, generate

    folder.mkdir()
    per_file = rows // files
    for number in range(files):
        frame = generate(n_rows=per_file, seed=1000 + number).drop(columns=[TARGET])
        frame.to_parquet(folder / f"part-{number:03d}.parquet", index=False, row_group_size=100_000)


def ceiling(model: object, folder: Path) -> float:
    """Rows/s of predict_proba alone, on 100,000-row frames typed and in memory before the clock starts."""
    import pandas as pd

    from tasks import demo
    from tasks.model.features import feature_spec, model_input

    spec = feature_spec(demo.schema(), demo.TARGET, exclude=(demo.ID_COLUMN, demo.TIMESTAMP_COLUMN))
    frame = pd.read_parquet(next(folder.glob("*.parquet")))
    inputs = [model_input(frame.iloc[i : i + 100_000], spec) for i in range(0, min(len(frame), 500_000), 100_000)]
    model.predict_proba(inputs[0])
    started = time.perf_counter()
    for chunk in inputs:
        model.predict_proba(chunk)
    return sum(len(c) for c in inputs) / (time.perf_counter() - started)


def tree_memory(process) -> tuple[int, int]:
    """Resident and proportional set sizes summed over the process tree. Ray's workers map the same object-store
    pages, so summed RSS counts them once per process; PSS splits each shared page among its sharers."""
    import psutil

    rss = pss = 0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that ended between the listing and the read
            info = each.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def run_engine(args: list[str]) -> tuple[float, int, int, str]:
    """Seconds, peak RSS and peak PSS of the process tree (bytes), and the flow's own last line."""
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "flows" / "batch_predict.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process, peak_rss, peak_pss = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        rss, pss = tree_memory(process)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(1)
    seconds = time.perf_counter() - started
    output = child.stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"batch_predict {' '.join(args)} failed:\n{output[-3000:]}")
    said = [line for line in output.splitlines() if line.startswith("scored ")]  # not Prefect's closing log
    return seconds, peak_rss, peak_pss, said[-1] if said else output.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=None, help="Ray engine: scoring actors (default: the flow's)")
    parser.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    args = parser.parse_args()

    workdir = throwaway_store("tabloop-batch-bench-")
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    try:
        _, model = register_model(workdir)
        started = time.perf_counter()
        write_input(workdir / "input", args.rows, args.files)
        print(f"wrote {args.rows:,} rows in {args.files} Parquet files in {time.perf_counter() - started:.1f} s")
        top = ceiling(model, workdir / "input")
        print(f"ceiling: predict_proba on 100,000-row frames in memory: {top:,.0f} rows/s")
        for engine in args.engines:
            flags = [str(workdir / "input"), "--output", str(workdir / f"out-{engine}"), "--model", "bench"]
            flags += ["--chunk-rows", str(args.chunk_rows), "--engine", engine]
            flags += ["--actors", str(args.actors)] if engine == "ray" and args.actors else []
            seconds, peak_rss, peak_pss, said = run_engine(flags)
            rate = args.rows / seconds
            print(
                f"{engine:5s}: {seconds:7.1f} s  {rate:10,.0f} rows/s  {rate / top:5.0%} of the ceiling  "
                f"peak RSS {peak_rss / 1024**2:,.0f} MB, PSS {peak_pss / 1024**2:,.0f} MB   ({said})",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
