"""Datasets that are not the demo: what inference makes of their columns, and what validation refuses, by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.model import contract, schemas
from tasks.model.features import excluded_columns, feature_spec
from tasks.runtime.validation import RecordValidator, RequestValidationError


def people(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "name": [f"Person {i} {rng.integers(1_000_000)}" for i in range(n)],  # one value per row
            "city": rng.choice(["Oslo", "Lima", "Pune"], n),
            "signed_up": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 300, n), "D"),
            "active": rng.random(n) < 0.5,
            "visits": rng.integers(0, 40, n),
            "spend": rng.gamma(2.0, 30.0, n).round(2),
            "bought": rng.choice(["No", "Yes"], n, p=[0.7, 0.3]),
        }
    )


def test_an_id_like_text_column_and_a_datetime_are_left_out_with_their_reasons():
    frame = people()
    schema = schemas.infer_schema(frame, "bought", classification=True)
    spec = feature_spec(schema, "bought")
    assert spec.categorical == ("city",) and set(spec.numeric) == {"active", "visits", "spend"}
    reasons = excluded_columns(schema, "bought")
    assert "200 distinct values in 200 rows" in reasons["name"] and "identifier or free text" in reasons["name"]
    assert "datetime" in reasons["signed_up"] and reasons["bought"] == "the target"
    # the reason travels with the stored schema, so later runs (and a user's edit) decide the same way
    assert excluded_columns(schemas.schema_from_json(schemas.schema_to_json(schema)), "bought") == reasons


def test_a_user_can_declare_a_column_not_a_feature_in_the_schema():
    schema = schemas.infer_schema(people(), "bought", classification=True)
    schema.columns["city"].description = f"{schemas.NOT_A_FEATURE}too sensitive to use"
    assert excluded_columns(schema, "bought")["city"] == "too sensitive to use"
    assert "city" not in feature_spec(schema, "bought").columns


def test_a_missing_target_is_named_and_counted_or_dropped_on_request():
    frame = people().astype({"bought": object})
    frame.loc[[3, 7, 11], "bought"] = None
    schema = schemas.infer_schema(frame.dropna(subset=["bought"]), "bought", classification=True)
    with pytest.raises(schemas.DataValidationError) as refused:
        schemas.validate_for_training(frame, schema, "people.csv", "bought", "binary", min_class_rows=3)
    message = str(refused.value)
    assert "column 'bought' is the target and is missing in 3 rows" in message
    assert "drop_missing_target=True" in message and "not_nullable" not in message
    accepted, dropped = schemas.validate_for_training(
        frame, schema, "people.csv", "bought", "binary", min_class_rows=3, drop_missing_target=True
    )
    assert (len(accepted), dropped) == (len(frame) - 3, 3)


@pytest.mark.parametrize("value", [1e308, 1e200, np.inf])
def test_values_that_would_overflow_a_model_are_refused_naming_column_and_rows(value):
    frame = people()
    schema = schemas.infer_schema(frame, "bought", classification=True)
    frame.loc[[5, 6], "spend"] = value
    with pytest.raises(schemas.DataValidationError) as refused:
        schemas.validate_for_training(frame, schema, "people.csv", "bought", "binary", min_class_rows=3)
    (problem,) = refused.value.problems
    assert problem.column == "spend" and problem.rows == 2
    assert problem.check in {"finite", f"magnitude_at_most_{schemas.MAX_MAGNITUDE:g}"}


def test_a_request_with_an_overflowing_number_gets_a_field_level_answer():
    frame = people()
    schema = schemas.infer_schema(frame, "bought", classification=True)
    validator = RecordValidator(schema, feature_spec(schema, "bought").columns)
    good = {"city": "Oslo", "active": True, "visits": 3, "spend": 12.5}
    validator.validate([good] * 10)  # accepted, by the fast pass
    for records in ([{**good, "spend": 1e308}], [good] * 9 + [{**good, "spend": -1e300}]):
        with pytest.raises(RequestValidationError) as refused:
            validator.validate(records)
        assert "magnitude beyond" in str(refused.value)


@pytest.mark.parametrize(
    ("classes", "given", "chosen"),
    [(["No", "Yes"], None, "Yes"), (["No", "Yes"], "No", "No"), ([1, 2], "1", 1), ([False, True], None, True)],
)
def test_the_positive_class_is_a_parameter_checked_against_the_classes(classes, given, chosen):
    assert contract._positive("binary", classes, given, "y") == chosen


def test_a_positive_class_that_is_not_a_class_is_refused_with_the_classes():
    with pytest.raises(ValueError, match=r"positive_class 'maybe' is not one of the classes of 'y': \['No', 'Yes'\]"):
        contract._positive("binary", ["No", "Yes"], "maybe", "y")
    with pytest.raises(ValueError, match="only for binary"):
        contract._positive("multiclass", ["a", "b", "c"], "a", "y")
