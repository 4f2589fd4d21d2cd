"""Announce new data: copy a file into storage under inbox/<dataset>/ and emit `churnops.data.arrived`.

    python flows/new_data.py customers-2026-11.parquet --dataset customers --target churned

The `retrain-on-new-data` deployment in prefect.yaml is triggered by that event and trains on the copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow

from tasks import data, events, storage
from tasks.runtime import shell_run
from tasks.settings import get_settings


@flow(name="new-data", log_prints=True)
def new_data(source: str, dataset: str, target: str = "churned", task_type: str = "binary") -> str:
    settings = get_settings()
    payload = storage.read_bytes(source, settings)
    name = Path(source.split("://")[-1]).name
    data.table_format(name)  # refuse what the train flow could not read, before announcing it
    uri = storage.join(settings.storage_url, "inbox", dataset, name)
    storage.write_bytes(uri, payload, settings)
    events.dataset_event(events.DATA_ARRIVED, dataset, uri=uri, dataset=dataset, target=target, task_type=task_type)
    print(f"{uri}: announced as churnops.data.arrived for dataset {dataset}")
    return uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="local path or s3:// URL of a CSV/Parquet file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", default="churned")
    parser.add_argument("--task-type", default="binary", choices=["binary", "multiclass", "regression"])
    args = parser.parse_args(argv)
    with shell_run():
        new_data(args.source, args.dataset, args.target, args.task_type)


if __name__ == "__main__":
    main()
