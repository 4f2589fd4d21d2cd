"""Online features for scoring: records that carry an entity id get the rest of their inputs from the feature
store's online store, before they are validated like any other record.

A model's contract lists the feature-store references it was trained with (tasks/store/features.py). A
record may carry those values itself (they are then used as sent); otherwise they are looked up by the
views' entity columns, one online-store call for many records. An entity the online store has no values
for is refused with a field-level problem (422) under `missing: refuse` (the default), or scored with the
values missing under `missing: impute`, as training rows with no value known at their time were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from tasks.runtime.loaded import call_grouped
from tasks.runtime.validation import FieldProblem
from tasks.settings import Settings
from tasks.store import features

Missing = Literal["refuse", "impute"]


class OnlineFeatures:
    """One replica's client of the online store, with the entity columns of each set of references."""

    def __init__(self, settings: Settings) -> None:
        self.store = features.feature_store(settings)
        self._keys: dict[tuple[str, ...], list[str]] = {}

    def keys(self, refs: Sequence[str]) -> list[str]:
        key = tuple(refs)
        if key not in self._keys:
            features.check_refs(self.store, refs)
            self._keys[key] = features.join_keys(self.store, refs)
        return self._keys[key]

    def lookup(self, refs: Sequence[str], entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return features.online_features(self.store, refs, entity_rows)

    def lookup_grouped(self, items: list[tuple[tuple[str, ...], list[dict[str, Any]]]]) -> list[Any]:
        """Many requests' entity rows: one online-store call per set of references, split back per request;
        a call that fails (the store is down) gives its requests the exception."""
        return call_grouped(
            items,
            key=lambda item: item[0],
            call=lambda group: self.lookup(group[0][0], [row for _, rows in group for row in rows]),
            size=lambda item: len(item[1]),
            part=lambda values, start, stop: {name: column[start:stop] for name, column in values.items()},
        )


def to_look_up(records: list[Any], refs: Sequence[str]) -> list[int]:
    """The records that do not carry every feature themselves."""
    names = features.feature_columns(refs)
    return [i for i, record in enumerate(records) if isinstance(record, dict) and any(n not in record for n in names)]


def entity_rows(
    records: list[Any], indexes: list[int], keys: list[str]
) -> tuple[list[dict[str, Any]], list[FieldProblem]]:
    """The entity keys of the records to look up; a record without one is a problem of that record."""
    rows, problems = [], []
    for i in indexes:
        absent = [k for k in keys if records[i].get(k) is None]
        if absent:
            problems += [FieldProblem(i, k, "needed to look up the model's features") for k in absent]
        else:
            rows.append({k: str(records[i][k]) for k in keys})
    return rows, problems


def assemble(
    records: list[Any],
    indexes: list[int],
    refs: Sequence[str],
    keys: list[str],
    values: dict[str, list[Any]],
    missing: Missing,
) -> tuple[list[Any], list[FieldProblem]]:
    """The records with the looked-up values filled in where the record did not send them."""
    names = features.feature_columns(refs)
    out, problems = list(records), []
    for position, i in enumerate(indexes):
        found = {name: values[name][position] for name in names}
        if missing == "refuse" and all(v is None for v in found.values()):
            entity = ", ".join(f"{k}={records[i][k]!r}" for k in keys)
            problems.append(FieldProblem(i, keys[0], f"no online features for {entity}; send them or materialize"))
            continue
        out[i] = {**found, **records[i]}  # values the record sent win
    return out, problems
