"""Announce new data: labelled rows to train on, or rows of a feature view's source.

    python flows/new_data.py customers-2026-11.parquet --dataset customers --target churned
    python flows/new_data.py activity-2026-12-01.parquet --feature-view customer_activity

Labelled rows are copied into storage under inbox/<dataset>/ and announced as `tabloop.data.arrived`: the
`retrain-on-new-data` deployment in prefect.yaml trains the named model (default: the dataset's name) on the copy.
Feature rows are added to the view's source (features/) and announced as `tabloop.features.arrived`: the
`materialize-on-new-features` deployment copies them to the online store, from the earliest time added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow

from tasks.ops import events
from tasks.ops.shell import shell_run
from tasks.settings import get_settings
from tasks.store import data, features, storage


@flow(name="new-data", log_prints=True)
def new_data(source: str, dataset: str, target: str, task_type: str = "binary", model_name: str | None = None) -> str:
    settings = get_settings()
    payload = storage.read_bytes(source, settings)
    name = Path(source.split("://")[-1]).name
    data.table_format(name)  # refuse what the train flow could not read, before announcing it
    uri = storage.join(settings.storage_url, "inbox", dataset, name)
    storage.write_bytes(uri, payload, settings)
    model = model_name or dataset
    events.dataset_event(
        events.DATA_ARRIVED, dataset, uri=uri, dataset=dataset, target=target, task_type=task_type, model=model
    )
    print(f"{uri}: announced as {events.DATA_ARRIVED} for dataset {dataset} (model {model})")
    return uri


@flow(name="new-features", log_prints=True)
def new_features(source: str, view: str) -> str:
    """Add the file's rows to the view's source and announce them, with where materializing should start."""
    settings = get_settings()
    rows = data.load_table(source, settings)
    written, since = features.add_source_rows(features.apply(settings), view, rows, settings)
    materialize_params = {"views": [view], "since": since.isoformat()}
    events.feature_view_event(
        events.FEATURES_ARRIVED, view, view=view, uri=written, rows=len(rows), materialize_params=materialize_params
    )
    print(f"{len(rows)} rows added to {written}: announced as {events.FEATURES_ARRIVED} (from {since:%Y-%m-%d %H:%M})")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="local path or s3:// URL of a CSV/Parquet file")
    parser.add_argument("--dataset", help="labelled rows: the dataset they belong to")
    parser.add_argument("--target", help="labelled rows: the column the model predicts")
    parser.add_argument("--task-type", default="binary", choices=["binary", "multiclass", "regression"])
    parser.add_argument("--model", help="the registered model to retrain; default: the dataset's name")
    parser.add_argument("--feature-view", help="feature rows: the view (features/) whose source they add to")
    args = parser.parse_args(argv)
    if args.feature_view and (args.dataset or args.target):
        parser.error("--feature-view announces feature rows; --dataset and --target are for labelled rows")
    if not args.feature_view and not (args.dataset and args.target):
        parser.error("labelled rows need --dataset and --target (or give --feature-view for feature rows)")
    with shell_run():
        if args.feature_view:
            new_features(args.source, args.feature_view)
        else:
            new_data(args.source, args.dataset, args.target, args.task_type, args.model)


if __name__ == "__main__":
    main()
