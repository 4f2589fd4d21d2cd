"""Materialize: copy the latest feature values from the offline sources (features/) to the online store.

    python flows/materialize.py                                  # from where the last run stopped, to now
    python flows/materialize.py --since 2026-01-01T00:00:00Z     # backfill from a date

Serving looks a model's feature-store inputs up in the online store; this keeps it current. Scheduled by the
materialize-hourly deployment (prefect.yaml).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow
from pydantic import BaseModel, Field

from tasks.ops import cli
from tasks.ops.shell import shell_run
from tasks.settings import Settings, get_settings
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import features


class MaterializeParams(BaseModel):
    until: datetime | None = Field(None, description="Values up to this time (default now).")
    since: datetime | None = Field(
        None, description="Backfill from this time; default: where the last run stopped (one TTL back the first time)."
    )


@step(**IO_RETRIES)
def register(settings: Settings) -> Any:
    """The features folder's definitions, applied to the registry (new views, changed sources)."""
    store = features.apply(settings)
    features.check_sources(store, settings)
    return store


@step(**IO_RETRIES)
def copy_to_online(store: Any, params: MaterializeParams) -> list[str]:
    return features.materialize(store, params.until, params.since)


@flow(name="materialize", log_prints=True)
def materialize(params: MaterializeParams | None = None) -> list[str]:
    params = params or MaterializeParams()
    settings = get_settings()
    store = register(settings)
    views = copy_to_online(store, params)
    print(f"materialized {views} up to {params.until or 'now'}")
    return views


if __name__ == "__main__":
    parsed = cli.parse(MaterializeParams, None, __doc__)
    with shell_run():
        materialize(parsed)
