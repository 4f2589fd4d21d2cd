"""Sweep worker: join a running study from another process or machine and run its trials.

Start the train flow with a shared `optuna_storage` and a `study_name`, then on any machine that reaches
the same storage, tracking server and data storage:

    python flows/sweep.py --study-name big-sweep --storage sqlite:///.storage/optuna.db

Workers stop when the study holds the train flow's `n_trials` finished trials.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow

from tasks.ops.shell import shell_run
from tasks.settings import get_settings
from tasks.steps import sweep as steps
from tasks.store import registry


@flow(name="sweep-worker", log_prints=True)
def sweep_worker(
    study_name: str,
    optuna_storage: str,
    seed: int = 42,
    n_jobs: int = 1,
    timeout_s: float | None = None,
    max_trials: int | None = None,
) -> int:
    settings = get_settings()
    registry.connect(settings)  # the same MLflow store and retry budget as the train flow
    study, config = steps.join_study(study_name, optuna_storage, seed, settings)
    train_rows = steps.training_rows(config, settings)
    return steps.run_trials_here(study, config, train_rows, n_jobs, timeout_s, max_trials)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--storage", required=True, help="Optuna storage URL shared with the train flow")
    parser.add_argument("--seed", type=int, default=42, help="Sampler seed (give each worker its own)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=None)
    parser.add_argument("--max-trials", type=int, default=None, help="Run at most this many of the study's trials")
    args = parser.parse_args(argv)
    with shell_run():
        ran = sweep_worker(args.study_name, args.storage, args.seed, args.n_jobs, args.timeout_s, args.max_trials)
    print(f"this worker ran {ran} trials of {args.study_name}")


if __name__ == "__main__":
    main()
