"""Drift check time and peak memory: ours against a bare Evidently call and a scipy test per column.

    python benchmarks/monitoring.py [--rows 100000 1000000]

Synthetic reference and current tables of N rows x 20 columns (15 numeric, 5 categorical), 3 of them shifted
in the current table. Each measurement runs in its own fresh process (peak RSS is that process's own), and
prints the drifted columns it found, so the verdicts can be compared with the full-data Evidently run.
(a) ours: tasks.drift.run_report (samples each side to 100k rows, DataDriftPreset + DataSummaryPreset);
(b) bare: Evidently's DataDriftPreset on every row; (c) scipy: KS test (numeric) / chi-square (categorical).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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


def measure(kind: str, rows: int) -> dict:
    reference, current = tables(rows)
    started = time.perf_counter()
    if kind == "ours":
        from tasks.model.features import FeatureSpec
        from tasks.monitoring.drift import run_report

        drifted = run_report(reference, current, FeatureSpec(tuple(NUMERIC), tuple(CATEGORICAL)), 0.3).drifted_columns
    elif kind == "bare":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        from tasks.monitoring.drift import read_verdicts

        definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
        snapshot = Report([DataDriftPreset(drift_share=0.3)], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        drifted = read_verdicts(snapshot, NUMERIC + CATEGORICAL).drifted_columns
    else:
        import pandas as pd
        from scipy import stats

        drifted = [c for c in NUMERIC if stats.ks_2samp(reference[c], current[c]).pvalue < 0.05]
        for c in CATEGORICAL:
            counts = pd.concat([reference[c].value_counts(), current[c].value_counts()], axis=1).fillna(0)
            if stats.chi2_contingency(counts.to_numpy().T)[1] < 0.05:
                drifted.append(c)
        drifted = sorted(drifted)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "rows": rows, "seconds": seconds, "peak_mb": peak_mb, "drifted": drifted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    print(f"{'rows':>9} {'method':>6} {'seconds':>8} {'peak MB':>8}  drifted columns (shifted: {SHIFTED})")
    for rows in args.rows:
        results = {}
        for kind in ("ours", "bare", "scipy"):
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--child", kind, str(rows)], capture_output=True, text=True, check=True
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            results[kind] = json.loads(out)
            r = results[kind]
            print(f"{rows:>9,} {kind:>6} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f}  {r['drifted']}", flush=True)
        same = results["ours"]["drifted"] == results["bare"]["drifted"]
        print(
            f"{'':>9} ours/bare time {results['ours']['seconds'] / results['bare']['seconds']:.2f}x, "
            f"verdicts {'identical' if same else 'DIFFER'} to full-data Evidently"
        )


if __name__ == "__main__":
    main()
