"""The feature store on real Feast: the file offline store over Parquet in this test's storage folder, the
SQLite online store, the demo's definitions (features/churn.py). No server is needed for these."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from tasks.store import features, storage

REFS = ["customer_activity:tickets_30d", "customer_activity:usage_30d_gb"]


def write_activity(settings, rows: list[tuple[str, str, int, float]]) -> None:
    from features.churn import activity_uri

    frame = pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "tickets_30d", "usage_30d_gb"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    storage.write_parquet(activity_uri(settings), frame, settings)


@pytest.fixture
def store(settings):
    write_activity(
        settings,
        [("a", "2026-01-01", 1, 10.0), ("a", "2026-01-10", 5, 20.0), ("b", "2026-01-05", 2, 30.0)],
    )
    return features.apply(settings)


def test_a_value_stamped_after_a_row_is_not_in_that_row_and_is_in_a_later_one(store):
    rows = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "b"],
            "event_timestamp": pd.to_datetime(["2026-01-05", "2026-01-12", "2026-01-04", "2026-01-06", "2026-01-06"]),
            "churned": [0, 1, 0, 1, 1],
        }
    )
    joined = features.training_frame(store, rows, REFS, "event_timestamp")
    assert list(joined["churned"]) == [0, 1, 0, 1, 1], "every row comes back, in its order"
    assert joined["tickets_30d"].iloc[0] == 1  # a on Jan 5: the Jan 10 value was not known yet
    assert joined["tickets_30d"].iloc[1] == 5  # a on Jan 12: now it is
    assert joined[["tickets_30d", "usage_30d_gb"]].iloc[2].isna().all()  # b before its first value
    assert joined[["tickets_30d", "usage_30d_gb"]].iloc[3].isna().all()  # an entity the store never saw
    assert joined["usage_30d_gb"].iloc[4] == 30.0


def test_unknown_features_and_missing_entity_columns_are_refused_by_name(store):
    rows = pd.DataFrame({"customer_id": ["a"], "event_timestamp": pd.to_datetime(["2026-01-05"])})
    with pytest.raises(features.FeatureError, match=r"no feature 'customer_activity:nope'.*known"):
        features.training_frame(store, rows, ["customer_activity:nope"], "event_timestamp")
    with pytest.raises(features.FeatureError, match=r"needs columns \['customer_id'\]"):
        features.training_frame(store, rows.drop(columns=["customer_id"]), REFS, "event_timestamp")


def test_materialized_values_are_served_online_and_an_unknown_entity_gets_none(store):
    features.materialize(
        store, ["customer_activity"], until=datetime(2026, 1, 20, tzinfo=UTC), since=datetime(2025, 12, 1, tzinfo=UTC)
    )
    online = features.online_features(store, REFS, [{"customer_id": "a"}, {"customer_id": "zz"}])
    assert online == {"tickets_30d": [5, None], "usage_30d_gb": [20.0, None]}


def test_the_online_store_setting_chooses_sqlite_or_redis(settings):
    assert features.online_store_config(settings)["type"] == "sqlite"
    redis = features.online_store_config(settings.model_copy(update={"feature_online_store": "redis://h:6380/2"}))
    assert redis == {"type": "redis", "connection_string": "h:6380,db=2"}
    with pytest.raises(features.FeatureError, match="redis:// URL"):
        features.online_store_config(settings.model_copy(update={"feature_online_store": "memcached://h"}))


def test_records_are_assembled_from_looked_up_values_and_sent_values_win():
    from tasks.runtime import online

    records = [{"customer_id": "a", "x": 1}, {"customer_id": "b", "tickets_30d": 9, "usage_30d_gb": 1.0}, {"x": 2}]
    assert online.to_look_up(records, REFS) == [0, 2]
    rows, problems = online.entity_rows(records, [0, 2], ["customer_id"])
    assert rows == [{"customer_id": "a"}]
    assert [(p.record, p.field) for p in problems] == [(2, "customer_id")]

    values = {"tickets_30d": [5, None], "usage_30d_gb": [20.0, None]}
    both = [{"customer_id": "a"}, {"customer_id": "zz", "usage_30d_gb": 3.0}]
    refused, problems = online.assemble(both, [0, 1], REFS, ["customer_id"], values, "refuse")
    assert refused[0] == {"customer_id": "a", "tickets_30d": 5, "usage_30d_gb": 20.0}
    assert [p.record for p in problems] == [1] and "customer_id='zz'" in problems[0].problem
    imputed, problems = online.assemble(both, [0, 1], REFS, ["customer_id"], values, "impute")
    assert not problems and imputed[1] == {"customer_id": "zz", "tickets_30d": None, "usage_30d_gb": 3.0}


def test_added_rows_join_the_source_replacing_the_same_entity_and_time(store, settings):
    from features.churn import activity_uri

    late = pd.DataFrame(
        {
            "customer_id": ["a", "c"],
            "event_timestamp": ["2026-01-10T00:00:00Z", "2026-01-03T00:00:00Z"],  # a's Jan 10 corrected; c is new
            "tickets_30d": [7, 3],
            "usage_30d_gb": [21.0, 40.0],
            "comment": ["extra columns", "are left out"],
        }
    )
    source, since = features.add_source_rows(store, "customer_activity", late, settings)
    assert source == activity_uri(settings) and since == datetime(2026, 1, 3, tzinfo=UTC)
    written = pd.read_parquet(source)
    assert len(written) == 4 and "comment" not in written
    assert written.set_index(["customer_id", "tickets_30d"]).index.tolist() == [("a", 1), ("c", 3), ("b", 2), ("a", 7)]

    features.materialize(store, ["customer_activity"], since=since, until=datetime(2026, 1, 20, tzinfo=UTC))
    online = features.online_features(store, REFS, [{"customer_id": "a"}, {"customer_id": "c"}])
    assert online == {"tickets_30d": [7, 3], "usage_30d_gb": [21.0, 40.0]}


def test_rows_for_a_view_are_refused_when_they_cannot_be_its_source(store, settings):
    good = {"customer_id": ["a"], "event_timestamp": ["2026-02-01"], "tickets_30d": [1], "usage_30d_gb": [1.0]}
    with pytest.raises(features.FeatureError, match=r"no feature view 'activity'.*known: \['customer_activity'\]"):
        features.add_source_rows(store, "activity", pd.DataFrame(good), settings)
    with pytest.raises(features.FeatureError, match=r"need columns \['usage_30d_gb'\]"):
        features.add_source_rows(store, "customer_activity", pd.DataFrame(good).drop(columns="usage_30d_gb"), settings)
    with pytest.raises(features.FeatureError, match=r"'event_timestamp' holds values that are not times"):
        features.add_source_rows(
            store, "customer_activity", pd.DataFrame({**good, "event_timestamp": ["soon"]}), settings
        )
    assert len(pd.read_parquet(features.feature_view(store, "customer_activity").batch_source.path)) == 3
