"""The hand-written baseline of benchmarks/serving.py: what an engineer writes in ten minutes. FastAPI under
uvicorn, the model loaded once per worker from the registry, `predict_proba` on a frame of the posted records;
no validation, no log, no batching.

    BASELINE_MODEL_URI=models:/bench@champion OMP_NUM_THREADS=1 \
        uvicorn benchmarks.baseline_app:app --workers 2 --port 8010
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request

loaded: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    import mlflow.sklearn

    loaded["model"] = mlflow.sklearn.load_model(os.environ["BASELINE_MODEL_URI"])
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, list[float]]:
    records = await request.json()
    frame = pd.DataFrame(records if isinstance(records, list) else [records])
    return {"probabilities": loaded["model"].predict_proba(frame)[:, 1].tolist()}
