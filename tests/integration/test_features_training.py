"""Training from a point-in-time training set: labelled customers with their event times, the demo's activity
features in the feature store (real Feast, file offline store), a real Prefect engine and MLflow store."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.demo import ID_COLUMN, TIMESTAMP_COLUMN, generate, publish_activity
from tasks.store import data, registry
from tests.feature_data import REFS, labelled_with_activity, train_params

pytestmark = pytest.mark.integration


def test_the_model_trains_on_the_values_known_at_each_rows_time(prefect_server, settings, tmp_path):
    from flows.train import train

    labelled, events = labelled_with_activity(settings, tmp_path)
    result = train(train_params(tmp_path))
    contract = registry.load_contract(result.model_name, result.model_version)
    assert contract.features == REFS
    assert {"tickets_30d", "usage_30d_gb"} <= set(contract.numeric)

    # the versioned snapshot holds, for each row, the latest value stamped at or before the row's time
    snapshot = data.load_table(contract.data.uri, settings)
    expected = pd.merge_asof(
        labelled.assign(at=pd.to_datetime(labelled[TIMESTAMP_COLUMN], utc=True)).sort_values("at"),
        events.rename(columns={TIMESTAMP_COLUMN: "at"}).sort_values("at"),
        on="at",
        by=ID_COLUMN,
        tolerance=pd.Timedelta(days=45),  # the view's TTL
    ).set_index(ID_COLUMN)
    got = snapshot.set_index(ID_COLUMN).loc[expected.index]
    pd.testing.assert_series_equal(
        got["tickets_30d"].astype(float), expected["tickets_30d"].astype(float), check_names=False
    )
    assert got["tickets_30d"].notna().mean() > 0.9


def test_the_materialize_flow_skips_an_unwritten_source_then_fills_the_online_store(prefect_server, settings, caplog):
    from datetime import UTC, datetime

    from flows.materialize import MaterializeParams, materialize
    from tasks.store import features

    assert materialize(MaterializeParams()) == []
    assert "skipped, source not written yet" in caplog.text and "customer_activity" in caplog.text
    events = publish_activity(generate(n_rows=50, seed=8), settings, seed=9)
    since = datetime(2025, 1, 1, tzinfo=UTC)
    assert materialize(MaterializeParams(since=since)) == ["customer_activity"]
    customer = events[ID_COLUMN].iloc[0]
    latest = events[events[ID_COLUMN] == customer].sort_values(TIMESTAMP_COLUMN).iloc[-1]
    online = features.online_features(features.feature_store(settings), REFS, [{ID_COLUMN: customer}])
    assert online["tickets_30d"] == [latest["tickets_30d"]]
