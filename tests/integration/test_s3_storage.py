"""The training flow with its storage on S3: data read from, snapshots and MLflow artifacts written to a bucket."""

from __future__ import annotations

import uuid

import pytest
import s3fs

from flows.train import TrainParams, train
from tasks.demo_data import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, make_churn_data
from tasks.settings import get_settings

pytestmark = pytest.mark.integration


def test_train_reads_and_writes_through_s3(prefect_server, s3_endpoint, tmp_path, monkeypatch):
    bucket = f"churn-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir(bucket)
    monkeypatch.setenv("CHURNOPS_STORAGE_URL", f"s3://{bucket}/churnops")
    monkeypatch.setenv("CHURNOPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("CHURNOPS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CHURNOPS_EXPERIMENT_NAME", f"s3-{bucket}")
    with fs.open(f"{bucket}/incoming/customers.parquet", "wb") as fh:
        make_churn_data(n_rows=500, seed=31).to_parquet(fh, index=False)

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
    assert fs.exists(f"{bucket}/churnops/datasets/customers/{result.data_digest}.parquet")
    assert fs.exists(f"{bucket}/churnops/datasets/customers/schema.json")
    assert get_settings().artifact_location == f"s3://{bucket}/churnops/mlartifacts"
    stored = fs.find(f"{bucket}/churnops/mlartifacts")
    assert any(p.endswith("model_card.md") for p in stored)
    assert any(p.endswith("MLmodel") for p in stored), "the model itself is in the bucket"
