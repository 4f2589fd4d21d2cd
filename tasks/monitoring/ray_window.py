"""The window's drift statistics on Ray Data, for windows too large for one process: the prediction log's files
read as a Ray dataset, each block cut to the model's served rows in the window and summarised on the champion's
reference edges (summaries merge, tasks/monitoring/profile.py), so the verdicts are the in-process engine's.

What each block sends back is bounded by the block, not the window: its summary, its share of a uniform sample
for the HTML report (each row gets a random key and the smallest keys are kept, block by block and then
overall), and its rows that the late labels name (what a retrain adds to the reference).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from tasks.monitoring import profile as profiles
from tasks.settings import Settings
from tasks.store import prediction_log, ray_cluster

SAMPLE_KEY = "_sample_key"


@dataclass(frozen=True)
class LabelKeys:
    """The rows to send back whole: those whose `column` holds one of `values`."""

    column: str
    values: np.ndarray


@dataclass(frozen=True)
class WindowPass:
    summary: profiles.Summary | None  # None: no block (drift.check then summarises the empty sample)
    rows: int  # served rows in the window
    sample: pd.DataFrame  # a uniform sample of them, at most `sample_rows`
    labelled: pd.DataFrame  # the served rows the label keys named, every column
    nodes: int  # the Ray nodes that summarised blocks


@dataclass(frozen=True)
class BlockPart:
    summary: profiles.Summary
    rows: int
    sample: pd.DataFrame
    labelled: pd.DataFrame
    node: str


@dataclass(frozen=True)
class WindowCut:
    """What each block is cut to and summarised with: one model's served rows in [since, until), on the
    champion's reference edges, with a sample of at most `sample_rows` and the rows `keys` names."""

    profile: profiles.ReferenceProfile
    model: str
    since: datetime
    until: datetime
    keys: LabelKeys | None
    sample_rows: int
    seed: int = 0


def summarise_on_ray(files: list[str], settings: Settings, cut: WindowCut) -> WindowPass:
    """Every block of the window's files summarised where Ray puts it; the parts merged here as they arrive."""
    if not files:
        return merge_parts([summarise_block(pd.DataFrame(), cut)], cut.sample_rows)
    summarised = ray_cluster.read_parquet(files, settings).map_batches(
        summarise_arrow_block,
        fn_kwargs={"cut": cut},
        batch_size=None,  # whole blocks: the summary costs the same per row at any size
        batch_format="pyarrow",
    )
    parts = (pickle.loads(row["part"]) for row in summarised.iter_rows())
    return merge_parts(parts, cut.sample_rows)


def summarise_arrow_block(block: Any, cut: WindowCut) -> dict[str, np.ndarray]:
    part = summarise_block(block.to_pandas(), cut)
    return {"part": np.array([pickle.dumps(part)], dtype=object)}


def summarise_block(frame: pd.DataFrame, cut: WindowCut) -> BlockPart:
    import ray

    if not frame.empty:
        frame = prediction_log.served(prediction_log.in_window(frame, cut.since, cut.until, cut.model))
    labelled, keys = frame.iloc[0:0], cut.keys
    if keys is not None and keys.column in frame:
        labelled = frame[frame[keys.column].isin(keys.values)]
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    summary, sample = profiles.summarise(frame, cut.profile), keyed_sample(frame, cut.sample_rows, cut.seed)
    return BlockPart(summary, len(frame), sample, labelled, node)


def keyed_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """The block's rows with the `rows` smallest random keys: the window's smallest keys among all blocks' are a
    uniform sample of the window. Seeded by the block's first request, so a rerun draws the same sample."""
    first = str(frame["request_id"].iloc[0]) if len(frame) and "request_id" in frame else ""
    draws = np.random.default_rng([seed, zlib.crc32(first.encode())]).random(len(frame))
    keep = np.argsort(draws)[:rows] if len(frame) > rows else np.arange(len(frame))
    return frame.iloc[keep].assign(**{SAMPLE_KEY: draws[keep]})


def merge_parts(parts: Iterable[BlockPart], sample_rows: int) -> WindowPass:
    summary, rows, samples, labelled, nodes = None, 0, [], [], set()
    for part in parts:
        summary = part.summary if summary is None else summary.merge(part.summary)
        rows += part.rows
        if len(part.sample):
            samples = [smallest_keys(pd.concat([*samples, part.sample], ignore_index=True), sample_rows)]
        if len(part.labelled):
            labelled.append(part.labelled)
        nodes.add(part.node)
    sample = samples[0].drop(columns=[SAMPLE_KEY]).reset_index(drop=True) if samples else pd.DataFrame()
    found = pd.concat(labelled, ignore_index=True) if labelled else sample.iloc[0:0]
    return WindowPass(summary, rows, sample, found, len(nodes - {""}))


def smallest_keys(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.nsmallest(rows, SAMPLE_KEY)
