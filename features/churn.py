"""The demo's features: a customer entity and its weekly activity (tasks/demo.py `activity`), in our storage.

Add your own beside this file: a `<name>.py` with `definitions(settings)` returning Feast entities and feature
views. A model uses them by listing `view:feature` references in its spec's `features`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks.demo import activity_uri
from tasks.settings import Settings


def definitions(settings: Settings) -> list[Any]:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        name="customer_activity_source",
        path=activity_uri(settings),
        timestamp_field="event_timestamp",
        s3_endpoint_override=settings.s3_endpoint_url,
    )
    activity = FeatureView(
        name="customer_activity",
        entities=[customer],
        ttl=timedelta(days=45),  # an older snapshot is not a customer's current activity
        schema=[Field(name="tickets_30d", dtype=Int64), Field(name="usage_30d_gb", dtype=Float64)],
        source=source,
        online=True,
    )
    return [customer, activity]
