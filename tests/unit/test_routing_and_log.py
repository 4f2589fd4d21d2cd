"""Traffic split and stickiness, and the prediction log's write/read round trip, without Ray."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from serving.routing import PredictionBuffer, bucket, choose_variant, sticky_key
from tasks.store import prediction_log


def test_ab_split_follows_the_weight_and_sticks_to_the_key():
    keys = [f"customer-{i}" for i in range(20_000)]
    share = sum(choose_variant("ab", k, 0.2) == "challenger" for k in keys) / len(keys)
    assert share == pytest.approx(0.2, abs=0.015)
    assert all(choose_variant("ab", k, 0.2) == choose_variant("ab", k, 0.2) for k in keys[:500])
    assert {choose_variant("champion", k, 0.9) for k in keys[:500]} == {"champion"}
    assert {choose_variant("shadow", k, 0.9) for k in keys[:500]} == {"champion"}
    assert min(map(bucket, keys)) >= 0 and max(map(bucket, keys)) < 1


def test_sticky_key_prefers_header_then_entity_id_then_request():
    records = [{"customer_id": "C1", "x": 1}]
    assert sticky_key("vip-7", records, ["customer_id"], "req") == "vip-7"
    assert sticky_key(None, records, ["customer_id"], "req") == "C1"
    assert sticky_key(None, [{"x": 1}], ["customer_id"], "req") == "req"


def rows(
    request_id: str,
    at: datetime,
    version: str = "3",
    variant: str = "champion",
    classes: tuple = (0, 1),
    first_index: int = 0,
) -> prediction_log.LogChunk:
    """One request's log chunk (two records), as the serving app builds it."""
    inputs = {"tenure_months": np.array([3.0, 9.0]), "contract": np.array(["one-year", "two-year"], dtype=object)}
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    return prediction_log.log_columns(
        inputs,
        np.array([1, 0]),
        probabilities,
        list(classes),
        request_id=request_id,
        model_name="churn",
        model_version=version,
        variant=variant,
        logged_at=at,
        first_index=first_index,
    )


def frame(*chunks: prediction_log.LogChunk) -> pa.Table:
    return prediction_log.table_from_chunks(list(chunks))


def test_log_round_trip_partitioned_by_day_and_filtered_by_window(settings):
    today = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    files = prediction_log.write(frame(rows("a", today - timedelta(days=1)), rows("b", today)), settings)
    assert len(files) == 2 and {f.split("date=")[1][:10] for f in files} == {"2026-11-22", "2026-11-23"}
    everything = prediction_log.read(settings)
    assert list(everything["request_id"]) == ["a", "a", "b", "b"]
    assert list(everything["tenure_months"]) == [3, 9, 3, 9]
    assert set(everything["model_version"]) == {"3"}
    assert str(everything["logged_at"].dt.tz) == "UTC" and everything["logged_at"].iloc[-1] == today
    recent = prediction_log.read(settings, since=today - timedelta(hours=1))
    assert list(recent["request_id"]) == ["b", "b"]
    assert prediction_log.read(settings, since=today + timedelta(days=2)).empty


def test_empty_log_reads_as_empty_frame(settings):
    assert prediction_log.read(settings).empty


def test_buffer_keeps_rows_when_storage_fails_and_writes_them_later(settings, monkeypatch):
    buffer = PredictionBuffer(settings, flush_every_s=3600, max_rows=100, writer="test")
    buffer.add(rows("a", datetime.now(UTC)))
    real_write = prediction_log.write

    def broken(*args, **kwargs):
        raise OSError("S3 unreachable")

    monkeypatch.setattr(prediction_log, "write", broken)
    assert buffer.flush() == 0
    monkeypatch.setattr(prediction_log, "write", real_write)
    assert buffer.flush() == 2
    assert list(prediction_log.read(settings)["request_id"]) == ["a", "a"]
    for _ in range(60):  # 120 rows into a 100-row buffer: the oldest 20 go
        buffer.add(rows("b", datetime.now(UTC)))
    buffer.close()
    assert len(prediction_log.read(settings)) == 2 + 100


def test_a_field_only_some_requests_send_is_null_in_the_others():
    with_id = rows("a", datetime.now(UTC))
    with_id.per_row["customer_id"] = np.array(["C1", "C2"], dtype=object)
    joined = frame(with_id, rows("b", datetime.now(UTC))).to_pandas()
    assert list(joined["customer_id"][:2]) == ["C1", "C2"] and joined["customer_id"][2:].isna().all()
    assert list(joined["record_index"]) == [0, 1, 0, 1] and list(joined["prediction"]) == [1, 0, 1, 0]


def test_chunks_become_rows_with_their_request_values_and_class_probabilities():
    """Shared values are spelled out per row only when the table is built; each version keeps its own classes."""
    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    table = frame(
        rows("a", at, version="3"),
        rows("b", at + timedelta(seconds=1), version="4", variant="challenger", classes=("no", "yes"), first_index=7),
    ).to_pandas()
    assert list(table.columns[:2]) == ["tenure_months", "contract"], "inputs first, as sent"
    assert list(table["request_id"]) == ["a", "a", "b", "b"]
    assert list(table["record_index"]) == [0, 1, 7, 8]
    assert list(table["model_version"]) == ["3", "3", "4", "4"]
    assert list(table["variant"]) == ["champion", "champion", "challenger", "challenger"]
    assert list(table["logged_at"].dt.second) == [0, 0, 1, 1] and str(table["logged_at"].dt.tz) == "UTC"
    assert list(table["probability_1"][:2]) == [0.8, 0.1] and table["probability_1"][2:].isna().all()
    assert list(table["probability_yes"][2:]) == [0.8, 0.1] and table["probability_yes"][:2].isna().all()


def test_class_probabilities_read_numeric_columns_and_older_json_logs_alike():
    import pandas as pd

    new = frame(rows("a", datetime.now(UTC))).to_pandas()
    old = pd.DataFrame({"prediction": [1], "probabilities": ['{"0":0.3,"1":0.7}']})  # before probability_<class>
    mixed = pd.concat([new, old], ignore_index=True)
    probabilities = prediction_log.class_probabilities(mixed)
    assert sorted(probabilities.columns) == ["0", "1"]
    assert list(probabilities["1"]) == [0.8, 0.1, 0.7]
    assert list(probabilities["0"]) == [0.2, 0.9, 0.3]


def test_one_buffer_logs_several_models_each_to_its_own_folder(settings):
    """A replica serving a classifier and a regressor: their predictions differ in type, so one table each."""
    buffer = PredictionBuffer(settings, flush_every_s=3600, max_rows=1000, writer="test")
    try:
        for name, predictions, probabilities, classes in (
            ("labels", np.array(["Yes", "No"], dtype=object), np.array([[0.2, 0.8], [0.7, 0.3]]), ["No", "Yes"]),
            ("values", np.array([1.5, 2.5]), None, []),
        ):
            chunk = prediction_log.log_columns(
                {"x": np.array([1.0, 2.0])},
                predictions,
                probabilities,
                classes,
                request_id=f"r-{name}",
                model_name=name,
                model_version="1",
                variant="champion",
            )
            buffer.add(chunk)
        assert buffer.flush() == 4
    finally:
        buffer.close()
    assert list(prediction_log.read(settings, model="labels")["prediction"]) == ["Yes", "No"]
    assert list(prediction_log.read(settings, model="values")["prediction"]) == [1.5, 2.5]
    assert len(prediction_log.read(settings)) == 4


def test_numbers_longer_than_a_float_holds_are_parsed_exactly() -> None:
    from serving.app import parse_json

    huge = 10**20 + 1  # orjson would read it as the float 1e20, which passes a bound of 1e20
    assert parse_json(f'{{"spend": {huge}, "plan": "pro"}}'.encode()) == {"spend": huge, "plan": "pro"}
    assert parse_json(b'[{"spend": 12.5, "plan": "0123456789012345678"}]') == [
        {"spend": 12.5, "plan": "0123456789012345678"}
    ]
    assert parse_json(b'{"spend": 0.1234567890123456}')["spend"] == 0.1234567890123456
