"""Batch predict: score a file or s3:// prefix with @champion, chunk by chunk, and log like online traffic.

python flows/batch_predict.py s3://bucket/to-score/ --output s3://bucket/scored/2026-11-23

A model trained with feature-store inputs (its spec's `features`) gets those the files do not carry from the
offline store, as of each row's timestamp column or else --features-as-of (default now): the join training used.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks import demo
from tasks.ops.shell import shell_run
from tasks.runtime import batch
from tasks.runtime.loaded import load_version, resolve_alias
from tasks.settings import get_settings
from tasks.store import data, features, prediction_log, registry, storage


class BatchParams(BaseModel):
    input_uri: str = Field(description="A CSV/Parquet file or a folder/prefix of them (local or s3://).")
    output_uri: str | None = Field(None, description="Where part-NNNNN.parquet files go; default in storage.")
    model_name: str | None = Field(None, description="Registered model; default TABLOOP_MODEL_NAME, else the demo's.")
    alias: str = "champion"
    chunk_rows: int = Field(100_000, ge=1, description="Rows held in memory at once.")
    features_as_of: datetime | None = Field(
        None,
        description="A model with feature-store inputs: the time they are looked up as of, for rows without the "
        "model's timestamp column (default: when the run starts).",
    )
    log_predictions: bool = True


class BatchResult(BaseModel):
    rows: int
    model_version: str
    output_uri: str
    parts: int
    rows_without_features: int = Field(0, description="Rows the feature store knew no values for (scored missing).")


@flow(name="batch-predict", log_prints=True)
def batch_predict(params: BatchParams) -> BatchResult:
    settings = get_settings()
    name = demo.model_name(params.model_name, settings.model_name)
    client = registry.connect(settings)
    version = resolve_alias(client, name, params.alias)
    model = load_version(settings, name, version, params.alias)
    run_id = f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    output = params.output_uri or storage.join(settings.storage_url, "batch_predictions", run_id)
    store = features.feature_store(settings) if model.contract.features else None
    as_of = params.features_as_of or datetime.now(UTC)
    rows = part = unknown = 0
    for source in data.input_files(params.input_uri, settings):
        for chunk in batch.chunks(source, settings, params.chunk_rows):
            if store is not None:  # the inputs the file does not carry, from the offline store
                chunk, without = batch.with_store_features(chunk, model, store, as_of)
                unknown += without
            accepted = batch.validate_chunk(chunk, model, f"{source} rows {rows}-{rows + len(chunk) - 1}")
            scored = batch.score(accepted, model)
            batch.write_part(accepted.join(batch.output_columns(scored, model, accepted.index)), output, part, settings)
            if params.log_predictions:
                prediction_log.write(batch.log_rows(accepted, scored, model, run_id, rows), settings, writer=run_id)
            rows, part = rows + len(chunk), part + 1
            get_run_logger().info("scored %d rows (%d parts) with %s v%s", rows, part, model.name, version)
    if unknown:
        get_run_logger().warning(
            "%d of %d rows had no feature-store values known; scored with them missing", unknown, rows
        )
    return BatchResult(rows=rows, model_version=version, output_uri=output, parts=part, rows_without_features=unknown)


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
    args = parser.parse_args(argv)
    params = BatchParams(
        input_uri=args.input_uri,
        output_uri=args.output,
        chunk_rows=args.chunk_rows,
        model_name=args.model,
        features_as_of=args.features_as_of,
    )
    with shell_run():
        result = batch_predict(params)
    print(f"scored {result.rows} rows with v{result.model_version} into {result.output_uri} ({result.parts} parts)")


if __name__ == "__main__":
    main()
