"""Drift check time and peak memory: ours against a bare Evidently call and a scipy test per column.

    python benchmarks/monitoring.py [--rows 100000 1000000 10000000] [--evidently-max 1000000] [--ray]

Synthetic reference and current tables of N rows x 20 columns (15 numeric, 5 categorical), 3 of them shifted
in the current table. Each measurement runs in its own fresh process (peak RSS is that process's own; the
tables themselves are in it), and prints the drifted columns it found, so the verdicts can be compared with
the full-data Evidently run.
(a) ours: what the monitor flow does. Once per champion it profiles the reference
    (tasks.monitoring.profile.profile_reference, plus the kept sample); every check then summarises the window
    and reads Evidently's tests off the two summaries, and renders the HTML report on a 20,000-row sample
    (tasks.monitoring.drift.check). The check is the time compared, the window's summary within it and the
    reference's profile printed apart. Every side imports before its clock starts, as a long-lived monitoring
    worker imports once (Evidently's import takes about 3 s here).
(b) bare: Evidently's DataDriftPreset on every row (skipped above --evidently-max rows);
(c) scipy: KS test (numeric) / chi-square (categorical) per column, the floor (other tests than Evidently's
    at these sizes, so its verdicts may differ).
(d) with --ray, ours on Ray Data (the monitor's --engine ray): the current table written beforehand, by another
    process, as prediction-log files of at most 1,000,000 rows, with the reference's profile and kept sample; the
    check reads the files on a local Ray (started before the clock, as a monitoring worker joins a running
    cluster), summarises them block by block and renders the report on the sample the blocks send back. Its
    peak is the driver's own (it never holds the table); Ray's workers are not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
NUMERIC = [f"x{i}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = ["x0", "x1", "c0"]


def tables(rows: int):
    import numpy as np
    import pandas as pd

    def make(seed: int, shift: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({c: rng.normal(0, 1, rows) for c in NUMERIC})
        for i, c in enumerate(CATEGORICAL):
            frame[c] = rng.choice([f"v{k}" for k in range(4 + i)], rows)
        if shift:
            frame["x0"] += 0.5
            frame["x1"] *= 1.5
            frame["c0"] = rng.choice(["v0", "v1", "v2", "v3"], rows, p=[0.55, 0.15, 0.15, 0.15])
        return frame

    return make(1, False), make(2, True)


def write_log(rows: int, folder: Path) -> None:
    """The current table as the prediction log holds it, and the reference's profile and sample, for (d)."""
    import pandas as pd

    from tasks.model.features import FeatureSpec
    from tasks.monitoring import drift, profile

    reference, current = tables(rows)
    spec = FeatureSpec(tuple(NUMERIC), tuple(CATEGORICAL))
    reference_profile = profile.profile_reference(reference, spec)
    (folder / "profile.json").write_bytes(profile.to_json(reference_profile))
    drift.reference_sample(reference, reference_profile).to_parquet(folder / "sample.parquet", index=False)
    for start in range(0, rows, 1_000_000):
        part = current.iloc[start : start + 1_000_000]
        part.assign(
            request_id=[f"r{start + i}" for i in range(len(part))],
            logged_at=pd.Timestamp("2026-12-01T12:00:00", tz="UTC"),
            model_name="bench",
            variant="champion",
        ).to_parquet(folder / f"part-{start // 1_000_000:05d}.parquet", index=False)


def measure_on_ray(rows: int, folder: Path) -> dict:
    from datetime import UTC, datetime

    import evidently  # noqa: F401  (imported before the clock, as for (a))
    import pandas as pd

    from tasks.monitoring import drift, profile, ray_window
    from tasks.settings import get_settings
    from tasks.store import ray_cluster

    settings = get_settings()
    reference_profile = profile.from_json((folder / "profile.json").read_bytes())
    kept = pd.read_parquet(folder / "sample.parquet")
    files = sorted(str(p) for p in folder.glob("part-*.parquet"))
    since, until = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    with ray_cluster.connected(None):
        started = time.perf_counter()
        cut = ray_window.WindowCut(reference_profile, "bench", since, until, None, drift.REPORT_ROWS)
        window = ray_window.summarise_on_ray(files, settings, cut)
        summary_s = time.perf_counter() - started
        result = drift.check(kept, window.sample, reference_profile, 0.3, window.summary, rows=window.rows)
        seconds = time.perf_counter() - started
    assert window.rows == rows, (window.rows, rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "kind": "ray",
        "rows": rows,
        "seconds": seconds,
        "peak_mb": peak_mb,
        "drifted": result.drifted_columns,
        "summary_s": summary_s,
        "profile_s": 0.0,
    }


def measure(kind: str, rows: int) -> dict:
    # every side imports before its clock starts, as a monitoring worker does once (Evidently's import is ~3 s)
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from scipy import stats

    from tasks.model.features import FeatureSpec
    from tasks.monitoring import drift, profile

    reference, current = tables(rows)
    extra = {}
    started = time.perf_counter()
    if kind == "ours":
        spec = FeatureSpec(tuple(NUMERIC), tuple(CATEGORICAL))
        reference_profile = profile.profile_reference(reference, spec)
        kept = drift.reference_sample(reference, reference_profile)
        extra["profile_s"] = time.perf_counter() - started
        started = time.perf_counter()
        summary = profile.summarise_blocks(drift.blocks(current), reference_profile)
        extra["summary_s"] = time.perf_counter() - started
        drifted = drift.check(kept, current, reference_profile, 0.3, current_summary=summary).drifted_columns
    elif kind == "bare":
        definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
        snapshot = Report([DataDriftPreset(drift_share=0.3)], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        drifted = drift.from_snapshot(snapshot, NUMERIC + CATEGORICAL, 0.3, rows).drifted_columns
    else:
        drifted = [c for c in NUMERIC if stats.ks_2samp(reference[c], current[c]).pvalue < 0.05]
        for c in CATEGORICAL:
            counts = pd.concat([reference[c].value_counts(), current[c].value_counts()], axis=1).fillna(0)
            if stats.chi2_contingency(counts.to_numpy().T)[1] < 0.05:
                drifted.append(c)
        drifted = sorted(drifted)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "rows": rows, "seconds": seconds, "peak_mb": peak_mb, "drifted": drifted, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--evidently-max", type=int, default=1_000_000, help="bare Evidently up to this many rows")
    parser.add_argument("--ray", action="store_true", help="also ours on Ray Data, from prediction-log files")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rows, *folder = args.child
        if kind == "write-log":
            write_log(int(rows), Path(folder[0]))
            return
        found = measure_on_ray(int(rows), Path(folder[0])) if kind == "ray" else measure(kind, int(rows))
        print(json.dumps(found))
        return
    print(f"{'rows':>10} {'method':>6} {'seconds':>8} {'peak MB':>8}  drifted columns (shifted: {SHIFTED})")
    for rows in args.rows:
        kinds = ("ours", "bare", "scipy") if rows <= args.evidently_max else ("ours", "scipy")
        results = {kind: child(kind, rows) for kind in kinds}
        if args.ray:
            with tempfile.TemporaryDirectory() as folder:
                child("write-log", rows, folder, output=False)
                results["ray"] = child("ray", rows, folder)
        for kind, r in results.items():
            extra = (
                f"   (the window's summary {r['summary_s']:.1f} s, the rest the report on a sample; "
                f"+ {r['profile_s']:.1f} s to profile the reference, once per champion)"
                if kind == "ours"
                else f"   (the blocks' summaries {r['summary_s']:.1f} s)"
                if kind == "ray"
                else ""
            )
            print(f"{rows:>10,} {kind:>6} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f}  {r['drifted']}{extra}", flush=True)
        ours, floor = results["ours"], results["scipy"]
        line = (
            f"{'':>10} ours/scipy time {ours['seconds'] / floor['seconds']:.2f}x "
            f"(the summary alone {ours['summary_s'] / floor['seconds']:.2f}x)"
        )
        if "bare" in results:
            same = ours["drifted"] == results["bare"]["drifted"]
            line += (
                f", ours/bare {ours['seconds'] / results['bare']['seconds']:.2f}x, "
                f"verdicts {'identical' if same else 'DIFFER'} to full-data Evidently"
            )
        if "ray" in results:
            same = results["ray"]["drifted"] == ours["drifted"]
            line += (
                f"; on Ray {results['ray']['seconds'] / ours['seconds']:.2f}x ours in process, "
                f"verdicts {'identical' if same else 'DIFFER'}"
            )
        print(line, flush=True)


def child(kind: str, rows: int, *more: str, output: bool = True) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(rows), *more]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1]) if output else {}


if __name__ == "__main__":
    main()
