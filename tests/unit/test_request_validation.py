"""Request validation compiled from the training schema: each client mistake named by field and problem."""

from __future__ import annotations

import json

import numpy as np
import pandera.pandas as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.demo import schema as demo_schema
from tasks.model import schemas
from tasks.model.features import feature_spec
from tasks.runtime.validation import RecordValidator, RequestValidationError


@pytest.fixture(scope="module")
def validator() -> RecordValidator:
    schema = demo_schema()
    spec = feature_spec(schema, TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    return RecordValidator(schema, spec.columns, optional=[ID_COLUMN, TIMESTAMP_COLUMN])


@pytest.fixture(scope="module")
def good_record() -> dict:
    row = generate(n_rows=1, seed=3).drop(columns=[TARGET, TIMESTAMP_COLUMN]).iloc[0].to_dict()
    return {k: (None if v != v else v) for k, v in row.items()}  # NaN -> null, as JSON would carry it


def test_good_records_become_the_model_input(validator, good_record):
    frame = validator.frame(validator.validate([good_record, {**good_record, "age": None}]))
    assert list(frame.columns) == validator.features and len(frame) == 2
    assert frame["monthly_charges"].dtype == "float64"


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        ({"tenure_months": "ten"}, "tenure_months", "expected an integer"),
        ({"tenure_months": 3.5}, "tenure_months", "expected an integer"),
        ({"monthly_charges": "12"}, "monthly_charges", "expected a number"),
        ({"monthly_charges": None}, "monthly_charges", "must not be null"),
        ({"age": 250}, "age", "out of range [18, 110]"),
        ({"contract": "lifetime"}, "contract", "unknown category 'lifetime'"),
        ({"region": 5}, "region", "expected a string"),
        ({"nickname": "bob"}, "nickname", "unknown field"),
        ({ID_COLUMN: "not-an-id"}, ID_COLUMN, "does not match"),
        ({"support_tickets": True}, "support_tickets", "expected an integer"),
        # found by the HTTP fuzz (tests/integration/test_serving.py): these used to raise inside the server
        ({"tenure_months": 10**400}, "tenure_months", "number too large"),
        ({"monthly_charges": 10**400}, "monthly_charges", "number too large"),
        ({"monthly_charges": float("inf")}, "monthly_charges", "expected a finite number"),
        ({ID_COLUMN: "C1234-\ud800"}, ID_COLUMN, "not valid Unicode"),
        ({"contract": "x" * 10_000}, "contract", "(10002 characters)"),
    ],
)
def test_each_mistake_is_named(validator, good_record, change, field, phrase):
    with pytest.raises(RequestValidationError) as info:
        validator.validate([good_record, {**good_record, **change}])
    assert [(p.record, p.field) for p in info.value.problems] == [(1, field)]
    assert phrase in info.value.problems[0].problem


def test_missing_field_and_non_object(validator, good_record):
    missing = {k: v for k, v in good_record.items() if k != "contract"}
    with pytest.raises(RequestValidationError) as info:
        validator.validate([missing, "not a record"])
    assert {(p.record, p.field, p.problem) for p in info.value.problems} == {
        (0, "contract", "field required"),
        (1, "", "each record must be a JSON object"),
    }


def test_every_schema_check_has_a_request_time_equivalent():
    frame = generate(n_rows=200, seed=5)
    inferred = schemas.infer_schema(frame, TARGET, classification=True, timestamp_column=TIMESTAMP_COLUMN)
    spec = feature_spec(inferred, TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    RecordValidator(inferred, spec.columns)  # raises if a check could not be compiled


def test_the_fast_pass_takes_ordinary_requests(validator):
    frame = generate(n_rows=300, seed=9).drop(columns=[TARGET, TIMESTAMP_COLUMN])
    records = [{k: (None if v != v else v) for k, v in row.items()} for row in frame.to_dict("records")]
    assert validator.accept_fast(records) is not None


ODD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.text(alphabet=st.characters(codec=None), max_size=4)  # lone surrogates too
    | st.just("\ud800")
    | st.sampled_from(["month-to-month", "one-year", "two-year", "north", "C00001", "C1234-\ud800", "0", "1"])
    | st.sampled_from([0, 1, 0.0, 1.0, 18, 110, 111, 17.5, -1, 1e308, float("inf"), float("-inf"), float("nan")])
)


def unchecked_validator() -> tuple[RecordValidator, dict]:
    """Columns with no checks at all, as an inferred schema can have: only the type tests stand guard."""
    schema = pa.DataFrameSchema(
        {
            "amount": pa.Column(float, nullable=True),
            "count": pa.Column(int),
            "name": pa.Column(str, nullable=True),
            "flag": pa.Column(bool),
        }
    )
    return RecordValidator(schema, ["amount", "count", "name", "flag"]), {
        "amount": 1.5,
        "count": 2,
        "name": "a",
        "flag": True,
    }


@pytest.mark.parametrize("schema_kind", ["demo", "unchecked"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_pass_never_accepts_what_the_checks_refuse(validator, good_record, schema_kind, data):
    """Generated near-valid records: whenever the vectorised pass accepts, the per-value checks agree, and both
    give the same columns. (Checked to fail when the fast pass skips its infinity, integer or Unicode test.)"""
    if schema_kind == "unchecked":
        validator, good_record = unchecked_validator()
    fields = sorted(validator.known | {"nickname"})
    records = []
    for _ in range(data.draw(st.integers(1, 4))):
        record = dict(good_record)
        for name in data.draw(st.lists(st.sampled_from(fields), max_size=2)):
            if data.draw(st.booleans()):
                record[name] = data.draw(ODD_VALUES)
            else:
                record.pop(name, None)
        records.append(json.loads(json.dumps(record)))  # plain JSON types, as a request body parses
    fast = validator.accept_fast(records)
    if fast is None:
        return
    validator.check_each(records)  # raises if the fast pass let a problem through
    reference = validator.columns_of(records)
    assert fast.keys() == reference.keys()
    for name in fast:
        np.testing.assert_array_equal(fast[name], reference[name])
