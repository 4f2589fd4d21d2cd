"""Batch scoring through the flow: chunked reads of a folder of files, outputs beside the version, logged."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from flows.batch_predict import BatchParams, batch_predict
from flows.train import TrainParams, train
from tasks.demo import TARGET, generate
from tasks.model import schemas
from tasks.runtime import batch
from tasks.store import prediction_log

pytestmark = pytest.mark.integration


def test_scores_a_folder_in_chunks_and_logs_every_row(prefect_server, settings, tmp_path):
    champion = train(TrainParams(demo_rows=600, n_trials=2, cv_folds=2))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = generate(n_rows=1500, seed=40).drop(columns=[TARGET])
    second = generate(n_rows=700, seed=41).drop(columns=[TARGET])
    first.to_parquet(inbox / "a.parquet", index=False)
    second.to_csv(inbox / "b.csv", index=False)

    result = batch_predict(BatchParams(input_uri=str(inbox), output_uri=str(tmp_path / "out"), chunk_rows=500))

    assert (result.rows, result.parts, result.model_version) == (2200, 3 + 2, champion.model_version)
    scored = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    assert len(scored) == 2200 and set(scored["model_version"]) == {"1"}
    model = mlflow.sklearn.load_model(f"models:/{settings.model_name}/1")
    expected = model.predict_proba(first[list(model.feature_names_in_)])[:, 1]
    assert scored["probability_1"].to_numpy()[:1500] == pytest.approx(expected, abs=1e-9)
    log = prediction_log.read(settings)
    assert len(log) == 2200 and set(log["variant"]) == {"batch"} and set(log["model_version"]) == {"1"}
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert (manifest["rows"], len(manifest["parts"]), manifest["model_version"]) == (2200, 5, "1")
    assert not list((tmp_path / "out").glob("_staging-*")), "the staging folder is gone"
    with pytest.raises(batch.OutputTaken, match="already holds a committed batch"):
        batch_predict(BatchParams(input_uri=str(inbox), output_uri=str(tmp_path / "out")))


def test_a_bad_chunk_stops_with_the_rows_and_problem(prefect_server, settings, tmp_path):
    train(TrainParams(demo_rows=600, n_trials=2, cv_folds=2))
    frame = generate(n_rows=900, seed=42).drop(columns=[TARGET])
    frame.loc[650, "contract"] = "lifetime"
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    with pytest.raises(schemas.DataValidationError, match=r"(?s)rows 500-899.*'lifetime'"):
        batch_predict(
            BatchParams(input_uri=str(tmp_path / "in.parquet"), output_uri=str(tmp_path / "out"), chunk_rows=500)
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*")), "the good chunk is not left"
