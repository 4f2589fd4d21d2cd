"""Batch scoring on Ray Data: the input read as a Ray dataset, scored in batches on a pool of actors (one model
load per actor, not per batch), each batch written to the staging folder (tasks/runtime/batch.py commits).

The connection, the actors' environment and the filesystem they read through: tasks/store/ray_cluster.py.
"""

from __future__ import annotations

import os
import pickle
import uuid
from datetime import datetime
from typing import Any

import pandas as pd

from tasks.model.schemas import DataValidationError
from tasks.runtime import batch
from tasks.settings import Settings
from tasks.store import data, ray_cluster, storage

ACTOR_START_TIMEOUT_S = 600
# One model call per actor at a time, on one OpenMP thread (Ray sets no thread count for a fractional CPU):
# many single-threaded actors run the Python around the model call (validation, writing the part and the log)
# side by side, where fewer two-threaded ones leave a core idle through it (benchmarks/README.md, session 18).
ACTOR_CPUS = 0.5
ACTOR_THREADS = "1"


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


def default_pool() -> int:
    """One scoring actor per CPU of the cluster, at least one. Each asks Ray for half a CPU (ACTOR_CPUS), so
    the read tasks keep the other half of the logical CPUs: scoring is where the cores go, and a read task
    that cannot be scheduled stalls the whole pipeline."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def score_on_ray(
    input_uri: str,
    settings: Settings,
    scorer_args: dict[str, Any],
    chunk_rows: int,
    actors: int | None,
) -> list[batch.StagedPart]:
    """Every input row scored by the actor pool; a batch that fails validation stops the run with its problems
    (the original error, not Ray's wrapper around it)."""
    import ray

    pool = actors or default_pool()
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
            concurrency=pool,
            num_cpus=ACTOR_CPUS,
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
