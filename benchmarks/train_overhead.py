"""Framework overhead of the training flow against a bare Optuna + scikit-learn sweep, side by side.

    python benchmarks/train_overhead.py [--trials 30] [--rows 5000] [--folds 3]

(a) the flow: `train()` end to end: validation, snapshot, MLflow parent run, one nested run per trial, final
    fit, evaluation with plots, model logging, registration and the gate, on a Prefect server already started,
    run as `python flows/train.py` runs it (tasks.runtime.shell_run: no heartbeats on Prefect's temporary server);
(b) bare: the same study (same seed, sampler, pruner, search space, folds, data rows) with Optuna and
    scikit-learn only, no Prefect and no MLflow.
Prefect's one-off start (the temporary server of ephemeral mode) is timed apart, with a trivial flow first,
and so is the creation of the fresh SQLite MLflow store (its schema migrations), which happens once per store.
Everything runs in one process against a throwaway storage folder and MLflow store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_sweep(trials: int, rows: int, folds: int, seed: int) -> tuple[float, dict]:
    import optuna

    from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
    from tasks.demo import schema as demo_schema
    from tasks.model import schemas
    from tasks.model.families import suggest_params
    from tasks.model.features import feature_spec, model_input
    from tasks.model.sweep import SweepConfig, cross_validate
    from tasks.store import data

    frame = schemas.validate(generate(n_rows=rows, seed=42), demo_schema(), "demo")
    train, _ = data.split(frame, 0.2, [ID_COLUMN])
    spec = feature_spec(demo_schema(), TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    config = SweepConfig(
        task_type="binary",
        target=TARGET,
        numeric=spec.numeric,
        categorical=spec.categorical,
        seed=seed,
        cv_folds=folds,
        n_trials=trials,
        parent_run_id="",
        experiment_id="",
        tracking_uri="",
        data_uri="",
        test_size=0.2,
        split_keys=(ID_COLUMN,),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    features, target = model_input(train, spec), train[TARGET]
    study.optimize(lambda t: cross_validate(t, features, target, config, suggest_params(t)), n_trials=trials)
    return time.perf_counter() - started, study.best_params


def cpu_seconds() -> tuple[float, float]:
    """CPU used so far by this process (every thread) and by its live child processes (Prefect's temporary
    server). On a noisy machine CPU moves less than wall time. Reads Linux's /proc; NaN for children elsewhere."""
    try:
        tick, stats = os.sysconf("SC_CLK_TCK"), {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:  # exited while we looked
                    continue
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    except (AttributeError, OSError):
        return time.process_time(), float("nan")
    children, frontier = 0.0, {os.getpid()}
    while frontier:
        frontier = {pid for pid, (parent, _) in stats.items() if parent in frontier}
        children += sum(stats[pid][1] for pid in frontier)
    return time.process_time(), children


def task_seconds(flow_run_id, name: str) -> float:
    """How long one task of a finished flow run took, as Prefect recorded it."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    (run,) = [r for r in runs if r.name.startswith(f"{name}-")]
    return (run.end_time - run.start_time).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5, help="alternate bare and flow runs; report medians")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tabloop-bench-"))
    os.environ.update(
        TABLOOP_STORAGE_URL=str(workdir / "storage"),
        TABLOOP_MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    (workdir / "storage").mkdir()

    bare_times, flow_times, sweep_task_times, same = [], [], [], True
    bare_cpu, flow_cpu, server_cpu = [], [], []

    from prefect import flow

    @flow
    def noop() -> None:
        return None

    started = time.perf_counter()
    noop()
    prefect_start_s = time.perf_counter() - started

    from flows.train import TrainParams, train
    from tasks import demo
    from tasks.ops.shell import shell_run
    from tasks.settings import get_settings
    from tasks.store import registry

    started = time.perf_counter()
    settings = get_settings()  # the MLflow store is created once per store, like Prefect's start
    registry.connect(settings, demo.model_name(configured=settings.model_name))
    mlflow_store_s = time.perf_counter() - started

    for _ in range(args.repeat):  # alternate, so drift in machine load hits both sides alike
        own, children = cpu_seconds()
        bare_s, bare_best = bare_sweep(args.trials, args.rows, args.folds, args.seed)
        own_after_bare, _ = cpu_seconds()
        started = time.perf_counter()
        with shell_run():
            state = train(
                TrainParams(demo_rows=args.rows, n_trials=args.trials, cv_folds=args.folds, seed=args.seed),
                return_state=True,
            )
        flow_times.append(time.perf_counter() - started)
        own_after_flow, children_after = cpu_seconds()
        bare_cpu.append(own_after_bare - own)
        flow_cpu.append(own_after_flow - own_after_bare + children_after - children)  # the server's, all pair
        server_cpu.append(children_after - children)
        bare_times.append(bare_s)
        sweep_task_times.append(task_seconds(state.state_details.flow_run_id, "sweep"))
        same = same and state.result().best_params == bare_best
    bare_s, flow_s = statistics.median(bare_times), statistics.median(flow_times)
    sweep_s = statistics.median(sweep_task_times)
    print(
        f"\ntraining overhead: {args.trials} trials, 3 families, {args.folds}-fold CV, {args.rows} demo rows "
        f"({args.rows - int(args.rows * 0.2)}-ish training rows x 11 features)"
    )
    print(f"  (b) bare Optuna + scikit-learn sweep  {bare_s:8.1f} s  (median of {[round(t, 1) for t in bare_times]})")
    print(f"  (a) train flow, end to end           {flow_s:8.1f} s  (median of {[round(t, 1) for t in flow_times]})")
    print(f"  ratio (a)/(b)                        {flow_s / bare_s:8.2f}x  (overhead {flow_s / bare_s - 1:+.0%})")
    # Each pair ran back to back, so it shares the machine's load at that moment; on a noisy machine the
    # median of pair ratios moves less than the ratio of the two medians.
    pairs = [f / b for f, b in zip(flow_times, bare_times, strict=True)]
    print(
        f"  ratio, median of pairs               {statistics.median(pairs):8.2f}x  "
        f"(each pair: {[round(r, 2) for r in pairs]})"
    )
    print(
        f"  of (a), the sweep task alone         {sweep_s:8.1f} s  ({sweep_s / bare_s:.2f}x bare; median of "
        f"{[round(t, 1) for t in sweep_task_times]}: nested MLflow runs, progress logs, Prefect task)"
    )
    bare_c, flow_c = statistics.median(bare_cpu), statistics.median(flow_cpu)
    print(
        f"  CPU, bare / flow (medians)           {bare_c:5.1f} / {flow_c:.1f} s = {flow_c / bare_c:.2f}x  (flow: this "
        f"process plus Prefect's server process, {statistics.median(server_cpu):.1f} s; sklearn uses both cores)"
    )
    # CPU seconds move less than wall time when something else shares the machine: pairs whose wall ratio
    # strays while their CPU ratio does not were slowed from outside, not by the flow
    cpu_pairs = [f / b for f, b in zip(flow_cpu, bare_cpu, strict=True)]
    print(
        f"  CPU ratio, median of pairs           {statistics.median(cpu_pairs):8.2f}x  "
        f"(each pair: {[round(r, 2) for r in cpu_pairs]})"
    )
    print(f"  first flow run of the process        {flow_times[0]:8.1f} s  (first use of pandera, skops...)")
    print(f"  Prefect one-off start (apart)        {prefect_start_s:8.1f} s")
    print(f"  MLflow store creation (apart)        {mlflow_store_s:8.1f} s")
    print(f"  same best parameters in both runs:   {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
