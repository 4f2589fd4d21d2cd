"""The training flow with its storage on S3: data read from, snapshots and MLflow artifacts written to a bucket."""

from __future__ import annotations

import uuid

import pytest
import s3fs

from flows.train import TrainParams, train
from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.settings import get_settings

pytestmark = pytest.mark.integration
ONLINE = "redis://127.0.0.1:6379/13"  # the machine's Redis; this database is this test's, flushed before and after


def storage_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, prefix: str) -> tuple[s3fs.S3FileSystem, str]:
    """A new bucket on moto's server, with the storage of this test's settings in it."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir(bucket)
    monkeypatch.setenv("TABLOOP_STORAGE_URL", f"s3://{bucket}/tabloop")
    monkeypatch.setenv("TABLOOP_S3_ENDPOINT_URL", s3_endpoint)
    return fs, bucket


def test_train_reads_and_writes_through_s3(prefect_server, s3_endpoint, tmp_path, monkeypatch):
    fs, bucket = storage_bucket(s3_endpoint, monkeypatch, "churn")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("TABLOOP_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TABLOOP_EXPERIMENT_NAME", f"s3-{bucket}")
    with fs.open(f"{bucket}/incoming/customers.parquet", "wb") as fh:
        generate(n_rows=500, seed=31).to_parquet(fh, index=False)

    result = train(
        TrainParams(
            data_uri=f"s3://{bucket}/incoming/customers.parquet",
            target=TARGET,
            id_columns=[ID_COLUMN],
            timestamp_column=TIMESTAMP_COLUMN,
            n_trials=3,
            cv_folds=2,
        )
    )

    assert result.promoted
    assert fs.exists(f"{bucket}/tabloop/datasets/customers/{result.data_digest}.parquet")
    assert fs.exists(f"{bucket}/tabloop/datasets/customers/schema.json")
    assert get_settings().artifact_location == f"s3://{bucket}/tabloop/mlartifacts"
    stored = fs.find(f"{bucket}/tabloop/mlartifacts")
    assert any(p.endswith("model_card.md") for p in stored)
    assert any(p.endswith("MLmodel") for p in stored), "the model itself is in the bucket"


def test_a_stalled_s3_fails_a_read_in_bounded_time(monkeypatch):
    """An endpoint that accepts connections and never answers: the configured timeouts end the call, with the
    timeout named, instead of botocore's 60 s waits several times over."""
    import socket
    import threading
    import time

    from tasks.store import storage

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in iter(int, 1)], daemon=True).start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    settings = get_settings(
        storage_url="s3://stalled/prefix",
        s3_endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
        s3_read_timeout_s=0.5,
        s3_max_attempts=1,
    )
    s3fs.S3FileSystem.clear_instance_cache()
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timeout"):
        storage.read_bytes("s3://stalled/prefix/data.parquet", settings)
    assert time.monotonic() - started < 30  # botocore's defaults take minutes here
    silent.close()


def test_the_feature_store_keeps_its_sources_and_registry_in_the_bucket(s3_endpoint, monkeypatch):
    """Point-in-time joins, added rows and materialization with the storage on S3 (moto's server), as in the
    stack: Feast's registry and the view's Parquet source in the bucket, the online store the machine's Redis."""
    from datetime import UTC, datetime

    import pandas as pd
    import redis

    from tasks.demo import publish_activity
    from tasks.store import features

    fs, bucket = storage_bucket(s3_endpoint, monkeypatch, "features")
    monkeypatch.setenv("TABLOOP_FEATURE_ONLINE_STORE", ONLINE)
    redis.Redis.from_url(ONLINE).flushdb()
    settings = get_settings()
    customers = generate(n_rows=40, seed=12)
    events = publish_activity(customers, settings, seed=13)
    store = features.apply(settings)
    assert fs.exists(f"{bucket}/tabloop/feast/registry.db")

    refs = ["customer_activity:tickets_30d"]
    joined = features.training_frame(store, customers, refs, TIMESTAMP_COLUMN)
    assert len(joined) == 40 and joined["tickets_30d"].notna().any()
    late = pd.DataFrame({ID_COLUMN: ["C-new"], TIMESTAMP_COLUMN: ["2026-11-30T00:00:00Z"]})
    late = late.assign(tickets_30d=[4], usage_30d_gb=[1.5])
    _, since = features.add_source_rows(store, "customer_activity", late, settings)
    assert len(pd.read_parquet(fs.open(f"{bucket}/tabloop/features/customer_activity.parquet"))) == len(events) + 1
    features.materialize(store, ["customer_activity"], since=since, until=datetime(2026, 12, 1, tzinfo=UTC))
    assert features.online_features(store, refs, [{ID_COLUMN: "C-new"}]) == {"tickets_30d": [4]}
    redis.Redis.from_url(ONLINE).flushdb()
