"""Loading, validation reports, schema inference and content-hash versioning, on small frames."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from tasks.demo import ID_COLUMN, TARGET, generate
from tasks.demo import schema as demo_schema
from tasks.model import schemas
from tasks.store import data


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    return generate(n_rows=400, seed=7)


def problem_checks(err: schemas.DataValidationError) -> dict[str, str]:
    return {p.column: p.check for p in err.problems}


def test_demo_data_is_deterministic_and_valid(demo):
    again = generate(n_rows=400, seed=7)
    pd.testing.assert_frame_equal(demo, again)
    accepted = schemas.validate(demo, demo_schema(), "demo")
    assert len(accepted) == 400
    assert demo["age"].isna().any(), "the demo has missing values, like real exports"
    assert set(demo[TARGET].unique()) == {0, 1}


def test_drift_knob_moves_the_distribution():
    base = generate(n_rows=3000, seed=1)
    drifted = generate(n_rows=3000, seed=1, drift=1.0)
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 15
    assert (drifted["contract"] == "month-to-month").mean() > (base["contract"] == "month-to-month").mean() + 0.15
    schemas.validate(drifted, demo_schema(), "drifted")  # drifted, yet still valid data


@pytest.mark.parametrize(
    ("corrupt", "column", "check"),
    [
        (lambda f: f.drop(columns=["contract"]), "contract", "column_in_dataframe"),
        (lambda f: f.drop(columns=[TARGET]), TARGET, "column_in_dataframe"),
        (
            lambda f: f.assign(tenure_months=f["tenure_months"].astype(object).where(f.index != 3, "ten")),
            "tenure_months",
            "coerce_dtype('int64')",
        ),
        (
            lambda f: f.assign(monthly_charges=f["monthly_charges"].where(f.index != 5)),
            "monthly_charges",
            "not_nullable",
        ),
        (lambda f: f.assign(age=f["age"].where(f.index != 2, 250.0)), "age", "in_range(18, 110)"),
        (lambda f: f.assign(region=f["region"].where(f.index != 1, "atlantis")), "region", "isin"),
        (lambda f: f.assign(extra=1), "extra", "column_in_schema"),
    ],
    ids=[
        "missing-column",
        "missing-target",
        "wrong-type",
        "null-not-allowed",
        "out-of-range",
        "unknown-category",
        "unexpected-column",
    ],
)
def test_each_bad_input_gets_a_specific_problem(demo, corrupt, column, check):
    with pytest.raises(schemas.DataValidationError) as info:
        schemas.validate(corrupt(demo.copy()), demo_schema(), "bad.csv")
    checks = problem_checks(info.value)
    assert column in checks, str(info.value)
    assert checks[column].startswith(check)
    assert "bad.csv" in str(info.value)


def test_all_failures_are_reported_at_once_with_counts_and_examples(demo):
    bad = demo.copy()
    bad.loc[:9, "age"] = -1.0
    bad.loc[20:22, "contract"] = "lifetime"
    with pytest.raises(schemas.DataValidationError) as info:
        schemas.validate(bad, demo_schema(), "batch.csv")
    by_column = {p.column: p for p in info.value.problems}
    assert by_column["age"].rows == 10 and by_column["age"].examples == [-1.0]
    assert by_column["contract"].rows == 3 and by_column["contract"].examples == ["lifetime"]
    table = info.value.as_table()
    assert {row["column"] for row in table} == {"age", "contract"}
    assert "10 rows" in str(info.value) and "'lifetime'" in str(info.value)


def test_empty_frame_is_rejected(demo):
    with pytest.raises(schemas.DataValidationError, match="no rows"):
        schemas.validate(demo.iloc[:0], demo_schema(), "empty")


def test_inferred_schema_round_trips_and_holds_later_data_to_it(demo):
    inferred = schemas.infer_schema(demo, TARGET, classification=True, timestamp_column="event_timestamp")
    restored = schemas.schema_from_json(schemas.schema_to_json(inferred))
    schemas.validate(generate(n_rows=300, seed=8), restored, "later")
    later = generate(n_rows=300, seed=9)
    later.loc[0, "payment_method"] = "bitcoin"
    later.loc[1, "tenure_months"] = -4
    later.loc[2, TARGET] = 2
    with pytest.raises(schemas.DataValidationError) as info:
        schemas.validate(later, restored, "later")
    assert set(problem_checks(info.value)) == {"payment_method", "tenure_months", TARGET}


def write(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "file is empty"),
        ("header.csv", b"a,b,c\n", "header but no rows"),
        ("broken.parquet", b"PAR1 this is not parquet", "unreadable as parquet"),
        ("latin1.csv", "name,city\nJosé,Zürich\n".encode("latin-1"), "not valid UTF-8"),
        ("dup.csv", b"a,b,a\n1,2,3\n", "duplicated column names"),
        ("table.xlsx", b"whatever", "unsupported file type"),
    ],
)
def test_unloadable_files_get_a_specific_error(tmp_path, settings, name, content, message):
    with pytest.raises(data.DataLoadError, match=message):
        data.load_table(write(tmp_path, name, content), settings)


def test_missing_file(tmp_path, settings):
    with pytest.raises(data.DataLoadError, match="file not found"):
        data.load_table(str(tmp_path / "nope.csv"), settings)


def test_csv_and_parquet_load_the_same_table(tmp_path, settings, demo):
    demo.to_csv(tmp_path / "d.csv", index=False)
    demo.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv = data.load_table(str(tmp_path / "d.csv"), settings)
    from_parquet = data.load_table(str(tmp_path / "d.parquet"), settings)
    assert list(from_csv.columns) == list(from_parquet.columns) and len(from_csv) == len(from_parquet)


def test_a_csv_column_of_numbers_with_blank_cells_reads_as_numbers(tmp_path, settings):
    """The Telco churn data's TotalCharges: numbers, with a few cells holding only a space. pandas reads such a
    column as text (and an id-like text column is no feature); it is numbers with those values missing. A text
    column with blank cells stays text, blanks and all."""
    content = b"id,total,plan,note\n1,29.85,basic, \n2, ,pro,x\n3,1889.5,basic,  \n4,  ,pro,y\n"
    frame = data.load_table(write(tmp_path, "telco.csv", content), settings)
    assert frame["total"].dtype == "float64"
    assert frame["total"].tolist()[::2] == [29.85, 1889.5] and frame["total"].isna().tolist() == [0, 1, 0, 1]
    assert frame["note"].tolist() == [" ", "x", "  ", "y"]
    schema = schemas.infer_schema(frame, target="plan", classification=True)
    assert schemas.column_kind(schema.columns["total"].dtype) == "number" and schema.columns["total"].nullable


def test_a_number_column_read_as_text_validates_with_blank_cells_missing(tmp_path, settings):
    """Files to score meet the training schema: a number column that arrives as text (a CSV chunk with a blank
    cell, an Arrow block) has its blank cells missing and its numbers parsed; a word in it is named."""
    schema = pa.DataFrameSchema({"total": pa.Column(float, nullable=True)}, coerce=True)
    accepted = schemas.validate(pd.DataFrame({"total": ["29.85", " ", None]}), schema, "chunk")
    assert accepted["total"].dtype == "float64" and accepted["total"].isna().tolist() == [False, True, True]
    with pytest.raises(schemas.DataValidationError, match="total"):
        schemas.validate(pd.DataFrame({"total": ["29.85", "n/a yet"]}), schema, "chunk")


def test_content_hash_depends_on_values_not_on_the_index(demo):
    assert data.content_hash(demo) == data.content_hash(demo.set_axis(range(100, 500)))
    changed = demo.copy()
    changed.loc[0, "tenure_months"] += 1
    assert data.content_hash(changed) != data.content_hash(demo)


def test_snapshot_is_written_once(settings, demo):
    first = data.snapshot(demo, "churn", settings)
    second = data.snapshot(demo.copy(), "churn", settings)
    assert first.created and not second.created and first.uri == second.uri
    files = list((settings.local_state_dir / "datasets" / "churn").iterdir())
    assert [f.name for f in files] == [f"{first.digest}.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(first.uri), demo.reset_index(drop=True))


def test_split_is_stable_by_row_key_across_data_versions(demo):
    _, test_a = data.split(demo, 0.25, [ID_COLUMN])
    bigger = pd.concat([demo, generate(n_rows=200, seed=99)], ignore_index=True)
    train_b, test_b = data.split(bigger, 0.25, [ID_COLUMN])
    assert set(test_a[ID_COLUMN]) <= set(test_b[ID_COLUMN])
    assert not set(train_b[ID_COLUMN]) & set(test_a[ID_COLUMN])
    assert 0.15 < len(test_a) / len(demo) < 0.35


def test_training_fitness_beyond_the_schema():
    frame = pd.DataFrame(
        {
            "x": [1.0, float("inf"), -float("inf"), 2.0, 3.0, 4.0],
            "empty": [None] * 6,
            "label": ["a", "a", "a", "a", "a", "b"],
            "amount": [1.5, 1.5, 1.5, 1.5, 1.5, 1.5],
        }
    )
    found = {p.check: p for p in schemas.fitness_problems(frame, "label", "binary", min_class_rows=3)}
    assert found["finite"].column == "x" and found["finite"].rows == 2
    assert found["not_all_null"].column == "empty"
    assert found["at_least_3_rows_per_class"].examples == ["b"]
    assert "column 'empty': every value is null" in found["not_all_null"].describe()

    regression = {p.check for p in schemas.fitness_problems(frame.drop(columns="x"), "amount", "regression", 3)}
    assert "target_varies" in regression
    single = schemas.fitness_problems(frame.assign(label="a")[["label"]], "label", "binary", 3)
    assert [p.check for p in single] == ["at_least_two_classes"]
    assert schemas.fitness_problems(generate(n_rows=300, seed=2), TARGET, "binary", 3) == []
