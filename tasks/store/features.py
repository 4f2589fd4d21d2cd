"""The feature store (Feast): definitions from the features folder, point-in-time training frames, the online
store that serving reads, and materialization between the two.

Definitions are Python files in `features/` (TABLOOP_FEATURES_DIR), each with `definitions(settings)` returning
its Feast entities and feature views: their sources sit in our storage (local or s3://), so the paths come from
the settings at call time. The registry lives in storage too; the online store is a SQLite file on this machine,
or Redis (TABLOOP_FEATURE_ONLINE_STORE=redis://host:port).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from tasks.settings import Settings
from tasks.store import data, storage

PROJECT = "tabloop"
ROW = "__tabloop_row"  # carried through Feast's join to put each row back where it was
EVENT_TIMESTAMP = "event_timestamp"


class FeatureError(ValueError):
    """Features that cannot be had as asked: an unknown reference, a missing entity column."""


def feature_columns(refs: Sequence[str]) -> list[str]:
    """The columns `view:feature` references become in a frame: the feature names."""
    return [ref.split(":", 1)[-1] for ref in refs]


def online_store_config(settings: Settings) -> dict[str, Any]:
    url = settings.feature_online_store
    if url is None:
        return {"type": "sqlite", "path": str(settings.local_state_dir / "feast" / "online.db")}
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise FeatureError(f"TABLOOP_FEATURE_ONLINE_STORE must be a redis:// URL, not {url!r}")
    db = parts.path.strip("/") or "0"
    options = [f"db={db}", *([f"password={parts.password}"] if parts.password else [])]
    options += ["ssl=true"] if parts.scheme == "rediss" else []
    return {"type": "redis", "connection_string": ",".join([f"{parts.hostname}:{parts.port or 6379}", *options])}


def feature_store(settings: Settings) -> Any:
    """A Feast FeatureStore configured from the settings (no feature_store.yaml to keep in step)."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    local = settings.local_state_dir / "feast"
    local.mkdir(parents=True, exist_ok=True)
    if settings.s3_endpoint_url:  # Feast's S3 registry takes its endpoint from this variable only (0.67)
        os.environ["FEAST_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    registry = storage.join(settings.storage_url, "feast", "registry.db")
    if not settings.is_remote_storage:
        Path(registry).parent.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=registry,
        offline_store={"type": "file"},
        online_store=online_store_config(settings),
        entity_key_serialization_version=3,
        repo_path=str(local),
    )
    return FeatureStore(config=config)


def definitions(settings: Settings) -> list[Any]:
    """Every entity and feature view the features folder declares."""
    found: list[Any] = []
    folder = settings.features_dir
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        if path.name.startswith("_"):
            continue
        module_spec = importlib.util.spec_from_file_location(f"tabloop_features_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        declare = getattr(module, "definitions", None)
        if declare is None:
            raise FeatureError(f"{path}: a feature definitions file needs a definitions(settings) function")
        found.extend(declare(settings))
    return found


def apply(settings: Settings) -> Any:
    """Register the folder's definitions in the store (idempotent) and return the store."""
    store = feature_store(settings)
    store.apply(definitions(settings))
    return store


def check_refs(store: Any, refs: Sequence[str]) -> None:
    views = {view.name: {f.name for f in view.features} for view in store.list_feature_views()}
    for ref in refs:
        view, _, feature = ref.partition(":")
        if view not in views or feature not in views[view]:
            known = sorted(f"{v}:{f}" for v, fs in views.items() for f in fs)
            raise FeatureError(f"no feature {ref!r} in the feature store; known: {known}")


def join_keys(store: Any, refs: Sequence[str]) -> list[str]:
    """The entity columns the referenced views join on."""
    names = {ref.split(":", 1)[0] for ref in refs}
    keys: list[str] = []
    for view in store.list_feature_views():
        if view.name in names:
            keys += [column.name for column in view.entity_columns if column.name not in keys]
    return keys


def training_frame(store: Any, rows: pd.DataFrame, refs: Sequence[str], timestamp_column: str) -> pd.DataFrame:
    """`rows` with the referenced features as of each row's timestamp (a point-in-time join: a value stamped
    after the row's time is never in it). Every row comes back, in its order; a feature with no value known at
    that time is missing (NaN), for validation and the model's imputing to see. Columns of `rows` named like a
    feature are replaced by the store's values (a retraining frame holds the values served before).

    Only the join keys, the timestamp and a row number go to Feast: its file store infers the entity timestamp
    from the frame's datetime columns, and (0.67) leaves out the rows of an entity whose values all come after
    the row's time, which the row number puts back."""
    check_refs(store, refs)
    keys = join_keys(store, refs)
    missing = [c for c in [*keys, timestamp_column] if c not in rows.columns]
    if missing:
        raise FeatureError(f"the data needs columns {missing} to look up features {list(refs)}")
    entities = rows[keys].copy()
    entities[EVENT_TIMESTAMP] = pd.to_datetime(rows[timestamp_column], utc=True)
    entities[ROW] = range(len(rows))
    joined = store.get_historical_features(entity_df=entities, features=list(refs)).to_df()
    found = joined.set_index(ROW)[feature_columns(refs)].reindex(range(len(rows)))
    kept = rows.drop(columns=[c for c in feature_columns(refs) if c in rows.columns]).reset_index(drop=True)
    return pd.concat([kept, found.reset_index(drop=True)], axis=1)


def feature_view(store: Any, name: str) -> Any:
    views = {view.name: view for view in store.list_feature_views()}
    if name not in views:
        raise FeatureError(f"no feature view {name!r} in the feature store; known: {sorted(views)}")
    return views[name]


def add_source_rows(store: Any, view_name: str, rows: pd.DataFrame, settings: Settings) -> tuple[str, datetime]:
    """Add rows to a view's Parquet source (a row for an entity and time already there replaces it) and return
    the source and the earliest time added: materializing from there brings the online store up to date even
    when the rows arrive late. The whole source is rewritten: for sources too large for that, write them with
    your own pipeline and run the materialize flow with `since`."""
    view = feature_view(store, view_name)
    source = getattr(view.batch_source, "path", None)
    if not source:
        raise FeatureError(f"feature view {view_name!r} has no file source to add rows to")
    keys = [column.name for column in view.entity_columns]
    stamp = view.batch_source.timestamp_field
    needed = [*keys, stamp, *(f.name for f in view.features)]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise FeatureError(f"rows for {view_name!r} need columns {missing} (it has {needed})")
    if rows.empty:
        raise FeatureError(f"no rows to add to {view_name!r}")
    added = rows[needed].copy()
    try:
        added[stamp] = pd.to_datetime(added[stamp], utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise FeatureError(f"rows for {view_name!r}: column {stamp!r} holds values that are not times: {err}") from None
    if added[stamp].isna().any():
        raise FeatureError(f"rows for {view_name!r}: {int(added[stamp].isna().sum())} rows have no {stamp!r}")
    for key in keys:
        added[key] = added[key].astype(str)
    before = data.load_table(source, settings) if storage.exists(source, settings) else added.iloc[:0]
    merged = pd.concat([before, added], ignore_index=True).drop_duplicates(subset=[*keys, stamp], keep="last")
    storage.write_parquet(source, merged.sort_values(stamp, kind="stable").reset_index(drop=True), settings)
    return source, added[stamp].min().to_pydatetime()


def unwritten_sources(store: Any, settings: Settings) -> dict[str, str]:
    """The views whose Parquet source does not exist yet, with its path: nothing to materialize from there."""
    return {
        view.name: view.batch_source.path
        for view in store.list_feature_views()
        if getattr(view.batch_source, "path", None) and not storage.exists(view.batch_source.path, settings)
    }


def materialize(
    store: Any, views: Sequence[str], until: datetime | None = None, since: datetime | None = None
) -> list[str]:
    """Copy the views' latest feature values up to `until` (default now) from the offline sources to the online
    store: from `since`, or else from where the last run stopped (a view never materialized starts one TTL back,
    as Feast does; pass `since` to backfill older data)."""
    if not views:
        return []
    end = until or datetime.now(UTC)
    if since is not None:
        store.materialize(start_date=since, end_date=end, feature_views=list(views))
    else:
        store.materialize_incremental(end_date=end, feature_views=list(views))
    return list(views)


def online_features(store: Any, refs: Sequence[str], entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The latest materialized values for each entity row: {feature: [value per row]}; None where the online
    store holds no value for that entity."""
    values = store.get_online_features(features=list(refs), entity_rows=entity_rows).to_dict()
    return {name: values[name] for name in feature_columns(refs)}
