"""The cost of online feature lookups at serving: requests carrying only the customer id (the replica looks the
features up in the online store) against requests carrying every feature (no lookup), same app, same model.

    python benchmarks/online_features.py [--seconds 10] [--concurrency 32] [--rows 1]

Trains one model on a point-in-time training set (the demo's customers and features/churn.py's activity view,
HistGradientBoosting) in a throwaway store, materializes it to the SQLite online store, serves it with our Ray
Serve app as serving/config.yaml deploys it, and drives closed-loop load (wrk when installed, else asyncio),
alternating the two cells. Target (issue #19): lookups cost at most 25% of throughput and 10 ms of p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serving import drive, drive_wrk, free_port, throwaway_store, wait_http

REFS = ["customer_activity:tickets_30d", "customer_activity:usage_30d_gb"]


def trained_with_features(workdir: Path) -> tuple[list[dict], list[dict]]:
    """Train and materialize; return (id-only records, the same records with their online feature values)."""
    from flows.train import TrainParams, train
    from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate, publish_activity
    from tasks.ops.shell import shell_run
    from tasks.settings import get_settings
    from tasks.store import features

    settings = get_settings()
    labelled = generate(n_rows=5000, seed=5)
    publish_activity(labelled, settings, seed=6)
    labelled.to_csv(workdir / "labelled.csv", index=False)
    params = TrainParams(
        data_uri=str(workdir / "labelled.csv"),
        target=TARGET,
        id_columns=[ID_COLUMN],
        timestamp_column=TIMESTAMP_COLUMN,
        features=REFS,
        families=["hist_gradient_boosting"],
        n_trials=2,
        cv_folds=2,
    )
    with shell_run():
        assert train(params).promoted
    store = features.apply(settings)
    features.materialize(store, ["customer_activity"], since=datetime(2025, 1, 1, tzinfo=UTC))
    ids_only = json.loads(labelled.drop(columns=[TARGET, TIMESTAMP_COLUMN]).head(2000).to_json(orient="records"))
    online = features.online_features(store, REFS, [{ID_COLUMN: r[ID_COLUMN]} for r in ids_only])
    full = [{**r, **{name: online[name][i] for name in online}} for i, r in enumerate(ids_only)]
    return ids_only, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--rows", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=2, help="each cell this many times, alternating")
    parser.add_argument("--client", choices=["auto", "wrk", "asyncio"], default="auto")
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "asyncio"
    workdir = throwaway_store("tabloop-online-bench-")
    ids_only, full = trained_with_features(workdir)

    import ray
    from ray import serve

    from serving.app import app_from_config
    from serving.ray_env import use_in_this_process

    use_in_this_process()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_from_config(poll_interval_s=30), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/predict"
    results: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/ready")
        for records in (full, ids_only):  # warm both paths
            asyncio.run(drive(url, lambda i, r=records: json.dumps(r[i % len(r) : i % len(r) + 1]).encode(), 8, 3))
        for _ in range(args.rounds):
            for rows in args.rows:
                for concurrency in args.concurrency:
                    for name, records in (("features sent", full), ("id only", ids_only)):

                        def body(i: int, r: list[dict] = records, n: int = rows) -> bytes:
                            start = (i * n) % (len(r) - n)
                            return json.dumps(r[start : start + n]).encode()

                        if args.client == "wrk":
                            result = drive_wrk(url, body(0), concurrency, args.seconds)
                        else:
                            result = asyncio.run(drive(url, body, concurrency, args.seconds))
                        results.setdefault((name, rows, concurrency), []).append(result)
                        print(
                            f"  {name:14s} rows={rows:<4d} conc={concurrency:<3d} {result['rps']:8.1f} req/s "
                            f"p50 {result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms  errors {result['errors']}",
                            flush=True,
                        )
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nload generator: {args.client}; best of {args.rounds} rounds per cell")
    for rows in args.rows:
        for concurrency in args.concurrency:
            sent = max(results[("features sent", rows, concurrency)], key=lambda r: r["rps"])
            ids = max(results[("id only", rows, concurrency)], key=lambda r: r["rps"])
            print(
                f"rows={rows} conc={concurrency}: id only {ids['rps']:.1f} req/s vs {sent['rps']:.1f} "
                f"({ids['rps'] / sent['rps']:.0%} of the throughput); p99 {ids['p99']:.1f} vs {sent['p99']:.1f} ms "
                f"({ids['p99'] - sent['p99']:+.1f} ms)"
            )


if __name__ == "__main__":
    main()
