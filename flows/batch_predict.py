"""Batch predict: score a file or s3:// prefix with @champion, chunk by chunk, and log like online traffic.

python flows/batch_predict.py s3://bucket/to-score/ --output s3://bucket/scored/2026-11-23
python flows/batch_predict.py s3://bucket/to-score/ --engine ray --ray-address auto    # on a Ray cluster

Parts are written to a staging folder and moved into the output at the end, with _manifest.json last: an output
with a manifest is complete, and a run that fails (a chunk that breaks the schema) leaves nothing in it.

A model trained with feature-store inputs (its spec's `features`) gets those the files do not carry from the
offline store, as of each row's timestamp column or else --features-as-of (default now): the join training used.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks import demo
from tasks.ops.shell import shell_run
from tasks.runtime import batch, ray_batch
from tasks.runtime.loaded import load_version, resolve_alias
from tasks.settings import Settings, get_settings
from tasks.store import data, features, ray_cluster, registry, storage


class BatchParams(BaseModel):
    input_uri: str = Field(description="A CSV/Parquet file or a folder/prefix of them (local or s3://).")
    output_uri: str | None = Field(
        None, description="Where part-NNNNN.parquet files and _manifest.json go; default in storage."
    )
    model_name: str | None = Field(None, description="Registered model; default TABLOOP_MODEL_NAME, else the demo's.")
    alias: str = "champion"
    chunk_rows: int = Field(100_000, ge=1, description="Rows scored at once (and held in memory per worker).")
    features_as_of: datetime | None = Field(
        None,
        description="A model with feature-store inputs: the time they are looked up as of, for rows without the "
        "model's timestamp column (default: when the run starts).",
    )
    log_predictions: bool = True
    engine: Literal["local", "ray"] = Field(
        "local", description="local: chunk by chunk in this process; ray: Ray Data, on an actor pool."
    )
    ray_address: str | None = Field(
        None,
        description="engine ray: a running cluster (e.g. auto, ray://head:10001); default RAY_ADDRESS, else local.",
    )
    actors: int | None = Field(None, ge=1, description="engine ray: scoring actors (default: one per CPU).")


class BatchResult(BaseModel):
    rows: int
    model_version: str
    output_uri: str
    parts: int
    rows_without_features: int = Field(0, description="Rows the feature store knew no values for (scored missing).")
    nodes: int = Field(1, description="The Ray nodes that scored parts (1 for the local engine).")


@flow(name="batch-predict", log_prints=True)
def batch_predict(params: BatchParams) -> BatchResult:
    settings = get_settings()
    name = demo.model_name(params.model_name, settings.model_name)
    version = resolve_alias(registry.connect(settings), name, params.alias)
    run_id = f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    output = params.output_uri or storage.join(settings.storage_url, "batch_predictions", run_id)
    batch.check_output_free(output, settings)
    staging = batch.staging_uri(output, run_id)
    job = ScoringJob(name, version, params.alias, staging, run_id, params.features_as_of or datetime.now(UTC))
    try:
        staged = on_ray(params, settings, job) if params.engine == "ray" else in_process(params, settings, job)
    except BaseException:
        batch.abandon(staging, settings)
        raise
    about = {"model_name": name, "model_version": version, "input_uri": params.input_uri, "run_id": run_id}
    parts = batch.commit(staged, output, {**about, "engine": params.engine}, settings)
    batch.abandon(staging, settings)  # the emptied staging folder
    unknown = sum(part.rows_without_features for part in staged)
    rows = sum(part.rows for part in staged)
    if unknown:
        get_run_logger().warning("%d of %d rows had no feature-store values; scored with them missing", unknown, rows)
    return BatchResult(
        rows=rows,
        model_version=version,
        output_uri=output,
        parts=len(parts),
        rows_without_features=unknown,
        nodes=len({part.node for part in staged}) or 1,
    )


@dataclass(frozen=True)
class ScoringJob:
    """What every engine's workers need to score a part: the version, where parts go, the features' time."""

    model_name: str
    version: str
    alias: str
    staging: str
    run_id: str
    as_of: datetime


def in_process(params: BatchParams, settings: Settings, job: ScoringJob) -> list[batch.StagedPart]:
    model = load_version(settings, job.model_name, job.version, job.alias)
    store = features.feature_store(settings) if model.contract.features else None
    staged: list[batch.StagedPart] = []
    rows = 0
    for source in data.input_files(params.input_uri, settings):
        for chunk in batch.chunks(source, settings, params.chunk_rows):
            where = f"{source} rows {rows}-{rows + len(chunk) - 1}"
            part_uri = storage.join(job.staging, f"part-{len(staged):05d}.parquet")
            log_as = (job.run_id, rows) if params.log_predictions else None
            staged.append(batch.score_chunk(chunk, model, store, job.as_of, where, part_uri, settings, log_as))
            rows += len(chunk)
            get_run_logger().info("scored %d rows (%d parts) with %s v%s", rows, len(staged), model.name, job.version)
    return staged


def on_ray(params: BatchParams, settings: Settings, job: ScoringJob) -> list[batch.StagedPart]:
    with ray_cluster.connected(params.ray_address) as started_here:
        scorer = {**asdict(job), "log": params.log_predictions, "source": params.input_uri}
        staged = ray_batch.score_on_ray(
            params.input_uri, settings, scorer, params.chunk_rows, params.actors, fixed_cluster=started_here
        )
    get_run_logger().info("scored %d rows in %d parts on Ray", sum(p.rows for p in staged), len(staged))
    return staged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_uri")
    parser.add_argument("--output", default=None)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--model", help="registered model; default TABLOOP_MODEL_NAME, else the demo's")
    parser.add_argument(
        "--features-as-of",
        type=datetime.fromisoformat,
        help="feature-store inputs as of this time (ISO 8601) for rows without the model's timestamp column",
    )
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Data, on an actor pool")
    parser.add_argument("--ray-address", help="engine ray: a running cluster; default RAY_ADDRESS, else a local Ray")
    parser.add_argument(
        "--actors",
        type=int,
        help="engine ray: scoring actors, each asking for half a CPU and using one OpenMP thread (default: one "
        "per CPU); at most twice the CPUs less two, as Ray Data's read tasks need a whole CPU beside them",
    )
    args = parser.parse_args(argv)
    params = BatchParams(
        input_uri=args.input_uri,
        output_uri=args.output,
        chunk_rows=args.chunk_rows,
        model_name=args.model,
        features_as_of=args.features_as_of,
        engine=args.engine,
        ray_address=args.ray_address,
        actors=args.actors,
    )
    with shell_run(more_user_errors=(batch.OutputTaken, ray_batch.PoolTooLarge)):
        result = batch_predict(params)
    print(f"scored {result.rows} rows with v{result.model_version} into {result.output_uri} ({result.parts} parts)")


if __name__ == "__main__":
    main()
