"""Batch scoring on Ray Data: the input read as a Ray dataset, scored in batches on a pool of actors (one model
load per actor, not per batch), each batch written to the staging folder (tasks/runtime/batch.py commits).

The connection, the actors' environment and the filesystem they read through: tasks/store/ray_cluster.py.
"""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from tasks.model.schemas import DataValidationError
from tasks.runtime import batch
from tasks.settings import Settings
from tasks.store import data, ray_cluster, storage

log = logging.getLogger(__name__)
ACTOR_START_TIMEOUT_S = 600
# One model call per actor at a time, on one OpenMP thread (Ray sets no thread count for a fractional CPU):
# many single-threaded actors run the Python around the model call (validation, writing the part and the log)
# side by side, where fewer two-threaded ones leave a core idle through it (benchmarks/README.md, session 18).
ACTOR_CPUS = 0.5
ACTOR_THREADS = "1"
TASK_CPUS = 1.0  # what Ray Data's listing and read tasks ask for


class BlockScorer:
    """A Ray Data actor: loads the model (and the feature store's client) once, then scores batch after batch."""

    def __init__(
        self,
        model_name: str,
        version: str,
        alias: str,
        staging: str,
        run_id: str,
        as_of: datetime,
        log: bool,
        source: str,
    ) -> None:
        import ray

        from tasks.runtime.loaded import load_version
        from tasks.settings import get_settings
        from tasks.store import features

        self.settings = get_settings()
        self.model = load_version(self.settings, model_name, version, alias)
        self.store = features.feature_store(self.settings) if self.model.contract.features else None
        self.staging, self.run_id, self.as_of, self.log, self.source = staging, run_id, as_of, log, source
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, block: Any) -> pd.DataFrame:
        """The staged part's row; a block that breaks the schema answers with the error itself, as Ray would
        otherwise hand the driver only its text. The block arrives as Arrow and becomes the frame the in-process
        engine reads (Ray's own pandas batches hold Arrow-backed columns, whose missing text is pd.NA)."""
        name = uuid.uuid4().hex[:12]
        try:
            part = self._score(block.to_pandas(), name)
        except DataValidationError as err:
            return pd.DataFrame([{**vars(batch.StagedPart("", 0)), "error": pickle.dumps(err)}])
        return pd.DataFrame([{**vars(part), "error": b""}])

    def _score(self, block: pd.DataFrame, name: str) -> batch.StagedPart:
        return batch.score_chunk(
            block.reset_index(drop=True),
            self.model,
            self.store,
            self.as_of,
            f"{self.source} (a block of {len(block)} rows)",
            storage.join(self.staging, f"block-{name}.parquet"),
            self.settings,
            (f"{self.run_id}-{name}", 0) if self.log else None,
            self.node,
        )


def datasets(input_uri: str, settings: Settings) -> list[Any]:
    """The input files as Ray datasets, one per format (a CSV's inferred column types may differ from a
    Parquet file's, so they are scored apart rather than as one union)."""
    files = data.input_files(input_uri, settings)
    by_format: dict[str, list[str]] = {}
    for uri in files:
        by_format.setdefault(data.table_format(uri), []).append(uri)
    found = []
    for kind, uris in sorted(by_format.items()):
        read = ray_cluster.read_parquet if kind == "parquet" else ray_cluster.read_csv
        found.append(read(uris, settings))
    return found


class PoolTooLarge(ValueError):
    """More scoring actors than the cluster's CPUs can hold beside a read task: the run would wait for good."""


@dataclass(frozen=True)
class Pool:
    actors: int
    actor_cpus: float  # what each actor asks Ray for


def default_actors(cluster_cpus: float) -> int:
    """One scoring actor per CPU, at least one (never more than plan_pool lets fit)."""
    return max(1, int(cluster_cpus))


def plan_pool(actors: int | None, cluster_cpus: float) -> Pool:
    """The scoring actors (default: one per CPU) on a cluster that cannot grow.

    Each actor asks for ACTOR_CPUS, and Ray Data's listing and read tasks for a whole CPU each, which must stay
    free beside the actors: a task that cannot be scheduled stalls the whole pipeline. So at most twice the
    CPUs less two actors; on a cluster of under two CPUs, one actor asking for what the tasks leave."""
    most = max(1, int(2 * cluster_cpus - 2))
    pool = actors or default_actors(cluster_cpus)
    if pool > most:
        raise PoolTooLarge(
            f"{pool} scoring actors ask for {pool * ACTOR_CPUS:g} CPUs, and Ray Data's read tasks beside them for "
            f"{TASK_CPUS:g}; the cluster has {cluster_cpus:g} CPUs: at most {most} actors fit"
        )
    return Pool(pool, min(ACTOR_CPUS, max(0.0, (cluster_cpus - TASK_CPUS) / pool)))


def pool_for_cluster(actors: int | None, cluster_cpus: float, fixed: bool) -> Pool:
    """plan_pool on a cluster that cannot grow. On one that may (an autoscaler adds nodes for what is asked),
    the actors always ask for ACTOR_CPUS, and a pool too large for the cluster as it is now is only a warning."""
    if fixed:
        return plan_pool(actors, cluster_cpus)
    pool = actors or default_actors(cluster_cpus)
    try:
        plan_pool(pool, cluster_cpus)
    except PoolTooLarge as err:
        log.warning("%s now; the run waits until the cluster has grown", err)
    return Pool(pool, ACTOR_CPUS)


def score_on_ray(
    input_uri: str,
    settings: Settings,
    scorer_args: dict[str, Any],
    chunk_rows: int,
    actors: int | None,
    fixed_cluster: bool = False,
) -> list[batch.StagedPart]:
    """Every input row scored by the actor pool; a batch that fails validation stops the run with its problems
    (the original error, not Ray's wrapper around it). `fixed_cluster`: Ray's CPUs cannot grow (a local
    instance), so a pool that does not fit is refused at once (PoolTooLarge)."""
    import ray

    pool = pool_for_cluster(actors, ray.cluster_resources().get("CPU", 0), fixed_cluster)
    actor_env = {**ray_cluster.forwarded_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ACTOR_THREADS)}
    staged: list[batch.StagedPart] = []
    # scoring starts once every actor has loaded the model: a node that cannot reach the registry fails the run
    # at once, and the first actor up does not take every batch while the others load
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    # a batch goes to the least busy actor, not to one on the node that read it: moving a block between nodes
    # costs little beside scoring it, and reads landing on one node would otherwise leave the others idle (Ray
    # 2.60 documents the option as deprecated but its actor pool still reads it; the two-node test checks it)
    context.execution_options.actor_locality_enabled = False
    for dataset in datasets(input_uri, settings):
        scored = dataset.map_batches(
            BlockScorer,
            fn_constructor_kwargs=scorer_args,
            batch_size=chunk_rows,
            batch_format="pyarrow",
            concurrency=pool.actors,
            num_cpus=pool.actor_cpus,
            # one actor per node before two on one (Ray Data's own SPREAD default is for its tasks, not actors);
            # Ray 2.60 warns that this keyword is deprecated, with no named replacement yet
            scheduling_strategy="SPREAD",
            runtime_env={"env_vars": actor_env},
        )
        for row in scored.iter_rows():  # streamed: the first bad block stops the run, the rest is not scored
            error = row.pop("error")
            if error:
                raise pickle.loads(error)
            staged.append(batch.StagedPart(**row))
    return staged
