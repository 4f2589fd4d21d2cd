"""Request validation compiled from the training schema: each client mistake named by field and problem."""

from __future__ import annotations

import pytest

from serving.validation import RecordValidator, RequestValidationError
from tasks import schemas
from tasks.demo_data import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, make_churn_data
from tasks.features import feature_spec


@pytest.fixture(scope="module")
def validator() -> RecordValidator:
    schema = schemas.demo_schema()
    spec = feature_spec(schema, TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    return RecordValidator(schema, spec.columns, optional=[ID_COLUMN, TIMESTAMP_COLUMN])


@pytest.fixture(scope="module")
def good_record() -> dict:
    row = make_churn_data(n_rows=1, seed=3).drop(columns=[TARGET, TIMESTAMP_COLUMN]).iloc[0].to_dict()
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
    frame = make_churn_data(n_rows=200, seed=5)
    inferred = schemas.infer_schema(frame, TARGET, classification=True, timestamp_column=TIMESTAMP_COLUMN)
    spec = feature_spec(inferred, TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    RecordValidator(inferred, spec.columns)  # raises if a check could not be compiled
