"""The online feature store on the machine's real Redis (the stack's online store): materialized values are
read back per entity, an unknown entity gets None. The test uses its own Redis database and empties it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.store import features
from tests.unit.test_feature_store import REFS, write_activity

pytestmark = pytest.mark.integration
REDIS_DB = 11


@pytest.fixture
def redis_settings(settings):
    import redis

    connection = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    connection.flushdb()
    yield settings.model_copy(update={"feature_online_store": f"redis://127.0.0.1:6379/{REDIS_DB}"})
    connection.flushdb()


def test_materialized_values_are_served_from_redis(redis_settings):
    import redis

    write_activity(redis_settings, [("a", "2026-01-01", 1, 10.0), ("a", "2026-01-10", 5, 20.0)])
    store = features.apply(redis_settings)
    features.materialize(
        store, ["customer_activity"], until=datetime(2026, 1, 20, tzinfo=UTC), since=datetime(2025, 12, 1, tzinfo=UTC)
    )
    assert redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).dbsize() > 0, "the values are in Redis"
    online = features.online_features(store, REFS, [{"customer_id": "a"}, {"customer_id": "zz"}])
    assert online == {"tickets_30d": [5, None], "usage_30d_gb": [20.0, None]}
