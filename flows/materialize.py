"""Materialize: copy the latest feature values from the offline sources (features/) to the online store.

    python flows/materialize.py                                  # from where the last run stopped, to now
    python flows/materialize.py --since 2026-01-01T00:00:00Z     # backfill from a date
    python flows/materialize.py --views customer_activity        # one view

Serving looks a model's feature-store inputs up in the online store; this keeps it current. Scheduled by the
materialize-hourly deployment, and run by materialize-on-new-features when `flows/new_data.py --feature-view`
announces rows for a view (prefect.yaml).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from tasks.ops import cli
from tasks.ops.shell import shell_run
from tasks.settings import Settings, get_settings
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import features


class MaterializeParams(BaseModel):
    views: list[str] | None = Field(None, description="Only these feature views (default: every view).")
    until: datetime | None = Field(None, description="Values up to this time (default now).")
    since: datetime | None = Field(
        None, description="Backfill from this time; default: where the last run stopped (one TTL back the first time)."
    )


@step(**IO_RETRIES)
def register(settings: Settings) -> Any:
    """The features folder's definitions, applied to the registry (new views, changed sources)."""
    return features.apply(settings)


@step(**IO_RETRIES)
def written_views(store: Any, settings: Settings, asked: list[str] | None) -> list[str]:
    """The views (all, or those asked for) with a source to read. A view whose source was never written is
    skipped with a warning, not failed: a schedule that runs before the first data arrives is not an incident."""
    views = [features.feature_view(store, name) for name in asked] if asked else store.list_feature_views()
    unwritten = features.unwritten_sources(store, settings)
    if unwritten:
        get_run_logger().warning("skipped, source not written yet (write it, then materialize): %s", unwritten)
    return [view.name for view in views if view.name not in unwritten]


@step(**IO_RETRIES)
def copy_to_online(store: Any, views: list[str], params: MaterializeParams) -> list[str]:
    return features.materialize(store, views, params.until, params.since)


@flow(name="materialize", log_prints=True)
def materialize(params: MaterializeParams | None = None) -> list[str]:
    params = params or MaterializeParams()
    settings = get_settings()
    store = register(settings)
    views = copy_to_online(store, written_views(store, settings, params.views), params)
    print(f"materialized {views or 'nothing'} up to {params.until or 'now'}")
    return views


if __name__ == "__main__":
    parsed = cli.parse(MaterializeParams, None, __doc__)
    with shell_run():
        materialize(parsed)
