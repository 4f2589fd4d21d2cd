"""Announce new data: copy a file into storage under inbox/<dataset>/ and emit `tabloop.data.arrived`.

    python flows/new_data.py customers-2026-11.parquet --dataset customers --target churned

The `retrain-on-new-data` deployment in prefect.yaml is triggered by that event and trains the named model
(default: the dataset's name) on the copy.
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
from tasks.store import data, storage


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="local path or s3:// URL of a CSV/Parquet file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", required=True, help="the column the model predicts")
    parser.add_argument("--task-type", default="binary", choices=["binary", "multiclass", "regression"])
    parser.add_argument("--model", help="the registered model to retrain; default: the dataset's name")
    args = parser.parse_args(argv)
    with shell_run():
        new_data(args.source, args.dataset, args.target, args.task_type, args.model)


if __name__ == "__main__":
    main()
