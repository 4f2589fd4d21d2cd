"""Pandera schemas: inference for a dataset seen the first time, validation with readable reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

ColumnKind = Literal["boolean", "integer", "number", "timestamp", "text"]
MAX_CATEGORIES = 50
ID_LIKE_SHARE = 0.9  # a text column with this share of distinct values or more names rows, it does not group them
MAX_MAGNITUDE = 10**38  # float32 ends near 3.4e38 (XGBoost, LightGBM); an int, so big JSON integers compare exactly
NOT_A_FEATURE = "not a feature: "  # a column description starting so keeps the column out of the model
MAX_EXAMPLES = 5
TARGET_MISSING = "target_not_missing"
TABLE_CHECKS = {
    "column_in_dataframe": "required column is missing",
    "column_in_schema": "unexpected column, not in the schema",
    "has_rows": "no rows to validate",
    "not_all_null": "every value is null",
}


def column_kind(dtype: object) -> ColumnKind:
    """What a column holds, from a pandas or Pandera dtype: the one mapping features, inference and request
    validation share."""
    name = str(dtype).lower()
    if name.startswith("bool"):
        return "boolean"
    if name.startswith(("int", "uint")):
        return "integer"
    if name.startswith("float"):
        return "number"
    if name.startswith("datetime"):
        return "timestamp"
    return "text"


def infer_schema(
    frame: pd.DataFrame, target: str, classification: bool, timestamp_column: str | None = None
) -> pa.DataFrameSchema:
    """A schema learned from the first accepted data: types, which columns may be null, the categories
    of low-cardinality text columns, non-negativity of numbers that were never negative, and the classes
    of a classification target. Later data is held to it."""
    columns: dict[str, pa.Column] = {}
    for name in frame.columns:
        series = frame[name]
        nullable = bool(series.isna().any()) and name != target
        kind = column_kind(series.dtype)
        if name == timestamp_column or kind == "timestamp" or (kind == "text" and name != target and _dates(series)):
            columns[name] = pa.Column("datetime64[ns]", nullable=nullable)
        elif kind == "boolean":
            columns[name] = pa.Column(bool, nullable=nullable)
        elif kind in ("integer", "number"):
            columns[name] = _numeric_column(series, nullable, is_class_target=classification and name == target)
        else:
            columns[name] = _text_column(series.astype("string"), nullable, force_categories=name == target)
    return pa.DataFrameSchema(columns, coerce=True, strict=True, name="inferred")


def _dates(series: pd.Series, sample: int = 1000) -> bool:
    """Text that is all ISO 8601 dates or times (a CSV's datetime column): a datetime, not categories."""
    values = series.dropna().astype(str)
    if values.empty or not values.str.contains(r"^\d{4}-\d{2}-\d{2}", regex=True).all():
        return False
    try:
        parsed = pd.to_datetime(values.head(sample), format="ISO8601", errors="coerce")
    except ValueError:  # mixed time zones: leave it text rather than guess an offset
        return False
    return bool(parsed.notna().all()) and getattr(parsed.dt, "tz", None) is None


def _numeric_column(series: pd.Series, nullable: bool, is_class_target: bool) -> pa.Column:
    values = series.dropna()
    is_integer = pd.api.types.is_integer_dtype(series) or (
        len(values) > 0 and bool((values == values.round()).all()) and not nullable
    )
    dtype: type = int if is_integer and not nullable else float
    checks: list[pa.Check] = []
    if is_class_target:
        checks.append(pa.Check.isin(sorted(values.astype(dtype).unique().tolist())))
    elif len(values) and values.min() >= 0:
        checks.append(pa.Check.ge(0))
    return pa.Column(dtype, checks=checks, nullable=nullable)


def _text_column(series: pd.Series, nullable: bool, force_categories: bool) -> pa.Column:
    values = series.dropna()
    categories = sorted(values.unique().tolist())
    looks_categorical = len(categories) <= MAX_CATEGORIES and len(categories) < max(2, 0.5 * len(values))
    checks = [pa.Check.isin(categories)] if (looks_categorical or force_categories) else []
    description = None
    if not force_categories and len(categories) > MAX_CATEGORIES and len(categories) >= ID_LIKE_SHARE * len(values):
        description = (
            f"{NOT_A_FEATURE}{len(categories)} distinct values in {len(values)} rows: an identifier or free text, "
            "which one-hot encoding cannot generalise from"
        )
    return pa.Column(str, checks=checks, nullable=nullable, description=description)


def not_a_feature(column: pa.Column) -> str | None:
    """Why a column stays out of the model, when its description says so (inferred, or written by a user)."""
    description = column.description or ""
    return description.removeprefix(NOT_A_FEATURE) if description.startswith(NOT_A_FEATURE) else None


def schema_to_json(schema: pa.DataFrameSchema) -> str:
    return schema.to_json()


def schema_from_json(text: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema.from_json(text)


@dataclass(frozen=True)
class Problem:
    """One kind of failure: a check on a column and the rows it failed on."""

    column: str
    check: str
    rows: int
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        if self.check in TABLE_CHECKS:
            return f"{where}: {TABLE_CHECKS[self.check]}"
        shown = ", ".join(repr(e) for e in self.examples)
        rows = f"{self.rows} row{'s' if self.rows != 1 else ''}" if self.rows else "the table"
        if self.check == TARGET_MISSING:
            return (
                f"{where} is the target and is missing in {rows}: fill it in, or train without those rows "
                "(drop_missing_target=True, --drop-missing-target)"
            )
        return f"{where}: check {self.check} failed for {rows}" + (f", e.g. {shown}" if shown else "")


class DataValidationError(ValueError):
    """Data broke its schema. Carries every problem found (validation is lazy), grouped and counted."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p.describe()}" for p in problems)
        super().__init__(f"Data validation failed for {source}: {len(problems)} problem(s)\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (Ray workers) whole
        return type(self), (self.source, self.problems)

    def as_table(self) -> list[dict[str, Any]]:
        return [
            {"column": p.column, "check": p.check, "failing_rows": p.rows, "examples": ", ".join(map(repr, p.examples))}
            for p in self.problems
        ]


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate all checks at once and return the coerced frame, or raise DataValidationError."""
    if frame.empty:
        raise DataValidationError(source, [Problem(column="", check="has_rows", rows=0)])
    try:
        return schema.validate(with_datetimes(with_numbers(frame, schema), schema), lazy=True)
    except SchemaErrors as err:
        raise DataValidationError(source, summarize_failures(err.failure_cases)) from None


def blank_cells(column: pd.Series) -> pd.Series:
    """Text cells holding nothing but spaces: a CSV's way of leaving a value out that pandas does not read as
    missing (the Telco churn data's TotalCharges has them)."""
    if column_kind(column.dtype) != "text":
        return pd.Series(False, index=column.index)
    try:
        stripped = column.str.strip()  # NaN where a cell is not a string
    except AttributeError:  # no strings at all
        return pd.Series(False, index=column.index)
    return stripped.eq("").fillna(False).astype(bool)


def with_numbers(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Number columns read as text: blank cells are missing values; coercion parses the rest, and validation
    names a value that is not a number."""
    blanks = {
        name: blank
        for name, column in schema.columns.items()
        if column_kind(column.dtype) in ("integer", "number")
        and name in frame.columns
        and (blank := blank_cells(frame[name])).any()
    }
    if not blanks:
        return frame
    frame = frame.copy()
    for name, blank in blanks.items():
        frame[name] = frame[name].mask(blank)
    return frame


def with_datetimes(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Datetime columns read as text (CSV) parsed as ISO 8601, whatever each value's precision; a value that
    does not parse stays as it was, so validation names it."""
    text = [
        name
        for name, column in schema.columns.items()
        if column_kind(column.dtype) == "timestamp"
        and name in frame.columns
        and column_kind(frame[name].dtype) == "text"
    ]
    if not text:
        return frame
    frame = frame.copy()
    for name in text:
        parsed = pd.to_datetime(frame[name], format="ISO8601", errors="coerce")
        frame[name] = parsed if not (parsed.isna() & frame[name].notna()).any() else frame[name]
    return frame


def validate_for_training(
    frame: pd.DataFrame,
    schema: pa.DataFrameSchema,
    source: str,
    target: str,
    task_type: str,
    min_class_rows: int,
    drop_missing_target: bool = False,
) -> tuple[pd.DataFrame, int]:
    """The schema, then what training needs beyond it; every problem of both kinds in one report. Rows whose
    target is missing are refused as such (named, counted), or dropped with `drop_missing_target`: returns the
    accepted rows and how many were dropped."""
    missing = frame[target].isna() if target in frame.columns else pd.Series(False, index=frame.index)
    dropped = int(missing.sum()) if drop_missing_target else 0
    if dropped:
        frame = frame[~missing]
    problems: list[Problem] = []
    try:
        accepted = validate(frame, schema, source)
    except DataValidationError as err:
        accepted, problems = None, err.problems
    if missing.any() and not drop_missing_target:
        problems = [p for p in problems if not (p.column == target and p.check == "not_nullable")]
        problems.insert(0, Problem(column=target, check=TARGET_MISSING, rows=int(missing.sum())))
    if accepted is not None:
        problems += fitness_problems(accepted, target, task_type, min_class_rows)
    if problems:
        raise DataValidationError(source, problems)
    return accepted, dropped


def summarize_failures(failure_cases: pd.DataFrame) -> list[Problem]:
    """Group pandera's row-per-failure table into one problem per (column, check), leaving out the echoes
    of a value that could not be coerced (the dtype check and range checks that then crash on it)."""
    cases = failure_cases.copy()
    cases["column"] = cases["column"].fillna("").astype(str)
    cases = cases[~cases.apply(_is_echo, axis=1, cases=cases)]
    problems = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        if group["schema_context"].iloc[0] == "DataFrameSchema":
            # table-level checks (missing or unexpected columns) name the column in failure_case
            column = ", ".join(str(c) for c in group["failure_case"])
            problems.append(Problem(column=column, check=str(check), rows=0))
            continue
        examples = group["failure_case"].drop_duplicates().head(MAX_EXAMPLES).tolist()
        problems.append(Problem(column=str(column), check=str(check), rows=len(group), examples=examples))
    return problems


def _is_echo(row: pd.Series, cases: pd.DataFrame) -> bool:
    same_column = cases[cases["column"] == row["column"]]["check"].astype(str)
    check, case = str(row["check"]), row["failure_case"]
    if check.startswith("dtype(") and same_column.str.startswith("coerce_dtype(").any():
        return True
    if isinstance(case, str) and case.startswith(("TypeError(", "ValueError(")):
        return True
    # a null that also failed not_nullable is reported once, as a null
    return check.startswith("coerce_dtype(") and pd.isna(case) and (same_column == "not_nullable").any()


def fitness_problems(frame: pd.DataFrame, target: str, task_type: str, min_class_rows: int) -> list[Problem]:
    """What a schema cannot say but training needs: finite numbers, no all-null column, and a target a model
    can learn (two classes or more, each with enough rows for the cross-validation folds; a varying number)."""
    problems: list[Problem] = []
    for name in frame.columns:
        series = frame[name]
        if series.isna().all():
            problems.append(Problem(column=str(name), check="not_all_null", rows=len(series)))
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            infinite = series[np.isinf(values)]
            if len(infinite):
                examples = infinite.drop_duplicates().head(MAX_EXAMPLES).tolist()
                problems.append(Problem(column=str(name), check="finite", rows=len(infinite), examples=examples))
            huge = series[np.isfinite(values) & (np.abs(values) > MAX_MAGNITUDE)]
            if len(huge):
                examples = huge.drop_duplicates().head(MAX_EXAMPLES).tolist()
                check = f"magnitude_at_most_{MAX_MAGNITUDE:g}"
                problems.append(Problem(column=str(name), check=check, rows=len(huge), examples=examples))
    if target not in frame.columns or frame[target].isna().all():
        return problems
    labels = frame[target].dropna()
    if task_type == "regression":
        if labels.nunique() < 2:
            problems.append(Problem(target, "target_varies", len(labels), labels.head(1).tolist()))
        return problems
    counts = labels.value_counts()
    if len(counts) < 2:
        problems.append(Problem(target, "at_least_two_classes", len(labels), counts.index.tolist()))
    else:
        rare = counts[counts < min_class_rows]
        if len(rare):
            check = f"at_least_{min_class_rows}_rows_per_class"
            problems.append(Problem(target, check, int(rare.sum()), rare.index.tolist()[:MAX_EXAMPLES]))
    return problems
