"""Training from a point-in-time training set: labelled customers with their event times, the demo's activity
features in the feature store (real Feast, file offline store), a real Prefect engine and MLflow store."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate, publish_activity
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


def test_batch_scoring_looks_up_the_features_a_file_does_not_carry(prefect_server, settings, tmp_path):
    """A file of customer ids and request columns only: the flow joins the view's values as of the given time,
    scores the assembled rows as the model would, and logs the values it used."""
    import mlflow

    from flows.batch_predict import BatchParams, batch_predict
    from flows.train import train
    from tasks.model.features import model_input
    from tasks.store import prediction_log

    labelled, events = labelled_with_activity(settings, tmp_path)
    trained = train(train_params(tmp_path))
    as_of = pd.Timestamp(events[TIMESTAMP_COLUMN].quantile(0.6)).floor("s")
    to_score = labelled.head(300).drop(columns=[TARGET, TIMESTAMP_COLUMN])
    to_score = pd.concat([to_score, to_score.head(1).assign(**{ID_COLUMN: "no-such-customer"})], ignore_index=True)
    to_score.to_csv(tmp_path / "to-score.csv", index=False)

    result = batch_predict(
        BatchParams(
            input_uri=str(tmp_path / "to-score.csv"),
            output_uri=str(tmp_path / "out"),
            model_name=trained.model_name,
            chunk_rows=120,
            features_as_of=as_of.to_pydatetime(),
        )
    )
    assert (result.rows, result.rows_without_features) == (301, 1)

    known = events[events[TIMESTAMP_COLUMN] <= as_of].sort_values(TIMESTAMP_COLUMN)
    known = known[known[TIMESTAMP_COLUMN] > as_of - pd.Timedelta(days=45)]  # the view's TTL
    latest = known.groupby(ID_COLUMN).last()
    scored = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    scored = scored.set_index(ID_COLUMN)
    looked_up = scored.loc[latest.index.intersection(scored.index)]
    assert len(looked_up) > 250
    pd.testing.assert_series_equal(
        looked_up["usage_30d_gb"], latest.loc[looked_up.index, "usage_30d_gb"].astype(float), check_names=False
    )
    assert scored.loc["no-such-customer", ["tickets_30d", "usage_30d_gb"]].isna().all()

    model = mlflow.sklearn.load_model(f"models:/{trained.model_name}/{trained.model_version}")
    contract = registry.load_contract(trained.model_name, trained.model_version)
    expected = model.predict_proba(model_input(scored.reset_index(), contract.spec))[:, 1]
    assert scored["probability_1"].to_numpy() == pytest.approx(expected, abs=1e-9)
    log = prediction_log.read(settings).set_index(ID_COLUMN)
    assert log.loc[looked_up.index, "usage_30d_gb"].to_numpy() == pytest.approx(looked_up["usage_30d_gb"].to_numpy())
