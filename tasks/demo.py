"""The demo: a deterministic, realistic customer-churn table with a drift knob, its schema and its defaults.

The only module that knows the demo. Generic code never imports it; the flows do where a run with no data
chooses the demo (`python flows/train.py` with no arguments).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa

from tasks.settings import Settings
from tasks.store import storage

CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENT_METHODS = ["electronic-check", "mailed-check", "bank-transfer", "credit-card"]
INTERNET_SERVICES = ["dsl", "fiber-optic", "none"]
REGIONS = ["north", "south", "east", "west"]
TARGET = "churned"
ID_COLUMN = "customer_id"
TIMESTAMP_COLUMN = "event_timestamp"
MODEL_NAME = "churn"  # the registered model (and experiment) of a flow that names no model
DATASET = "churn-demo"  # the name the demo's data versions are kept under
SOURCE = "demo data"  # how validation reports name the generated table


def generate(n_rows: int = 5000, seed: int = 42, drift: float = 0.0, start: str = "2026-01-01") -> pd.DataFrame:
    """Generate `n_rows` customers. `drift` in [0, 1] shifts prices, contract mix, support load and
    the churn relationship itself (0 = the training distribution)."""
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be within [0, 1], got {drift}")
    rng = np.random.default_rng(seed)
    n = n_rows

    contract = rng.choice(CONTRACTS, size=n, p=_mix([0.55, 0.25, 0.20], [0.80, 0.12, 0.08], drift))
    internet = rng.choice(INTERNET_SERVICES, size=n, p=[0.35, 0.45, 0.20])
    payment = rng.choice(PAYMENT_METHODS, size=n, p=[0.35, 0.20, 0.22, 0.23])
    region = rng.choice(REGIONS, size=n, p=[0.3, 0.25, 0.25, 0.2])
    senior = rng.random(n) < 0.16
    age = np.where(senior, rng.integers(65, 90, n), rng.integers(18, 65, n)).astype(float)

    max_tenure = np.select([contract == "two-year", contract == "one-year"], [72, 48], 36)
    tenure = np.floor(rng.random(n) * (max_tenure + 1)).astype(int)
    base_price = np.select([internet == "fiber-optic", internet == "dsl"], [80.0, 55.0], 25.0)
    monthly = np.clip(base_price + rng.normal(0, 12, n) + drift * 25.0, 18.0, 150.0).round(2)
    total = (monthly * np.maximum(tenure, 1) * rng.uniform(0.95, 1.05, n)).round(2)
    tickets = rng.poisson(1.2 + 2.5 * drift + (internet == "fiber-optic") * 0.8, n)
    usage = np.where(internet == "none", 0.0, rng.gamma(2.0, 60.0 + 40.0 * drift, n)).round(1)

    logit = (
        -1.2
        + 1.4 * (contract == "month-to-month")
        - 1.1 * (contract == "two-year")
        - 0.045 * tenure
        + 0.022 * (monthly - 65.0)
        + 0.35 * tickets
        + 0.6 * (payment == "electronic-check")
        + 0.4 * senior
        # concept drift: under drift, price sensitivity rises and contracts protect less
        + drift * (0.03 * (monthly - 65.0) + 0.8 * (contract == "two-year"))
    )
    churned = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame(
        {
            ID_COLUMN: [f"C{seed:04d}-{i:06d}" for i in range(n)],
            TIMESTAMP_COLUMN: pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.integers(0, 90 * 86400, n)), "s"),
            "age": age,
            "senior_citizen": senior.astype(int),
            "region": region,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_tickets": tickets,
            "data_usage_gb": usage,
            TARGET: churned,
        }
    )
    # Real exports have holes: a few ages unknown, some totals not yet billed, usage not metered.
    for column, share in {"age": 0.02, "total_charges": 0.01, "data_usage_gb": 0.03}.items():
        frame.loc[rng.random(n) < share, column] = np.nan
    return frame


def activity(customers: pd.DataFrame, seed: int = 7, weeks: int = 14) -> pd.DataFrame:
    """Weekly activity snapshots per customer (the demo's feature source): support tickets and data usage over
    the trailing 30 days, stamped with the time each value became known. Customers who churn call support more
    in the weeks before, so the features carry signal that the request's own columns do not."""
    rng = np.random.default_rng(seed)
    n = len(customers)
    start = pd.Timestamp(customers[TIMESTAMP_COLUMN].min()).floor("D") - pd.Timedelta(days=35)
    churned = customers[TARGET].to_numpy() if TARGET in customers.columns else np.zeros(n)
    frames = []
    for week in range(weeks):
        known_at = start + pd.Timedelta(weeks=week) + pd.to_timedelta(rng.integers(0, 86400, n), "s")
        frames.append(
            pd.DataFrame(
                {
                    ID_COLUMN: customers[ID_COLUMN].to_numpy(),
                    TIMESTAMP_COLUMN: known_at,
                    "tickets_30d": rng.poisson(0.8 + 1.6 * churned),
                    "usage_30d_gb": rng.gamma(2.0, 30.0 - 12.0 * churned).round(1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def activity_uri(settings: Settings) -> str:
    """Where the demo's activity lives: the source of the customer_activity view (features/churn.py)."""
    return storage.join(settings.storage_url, "features", "customer_activity.parquet")


def publish_activity(customers: pd.DataFrame, settings: Settings, seed: int = 7) -> pd.DataFrame:
    """Write the customers' activity to the feature source, stamped in UTC as Feast compares times."""
    events = activity(customers, seed=seed)
    events[TIMESTAMP_COLUMN] = events[TIMESTAMP_COLUMN].dt.tz_localize("UTC")
    storage.write_parquet(activity_uri(settings), events, settings)
    return events


def _mix(base: list[float], drifted: list[float], drift: float) -> list[float]:
    weights = (1 - drift) * np.asarray(base) + drift * np.asarray(drifted)
    return list(weights / weights.sum())


def schema(feature_columns: Sequence[str] = ()) -> pa.DataFrameSchema:
    """The contract the demo data (and every request scored by its model) must meet, declared by hand; with
    the feature-store columns a model joins (missing where no value was known at the row's time)."""
    looked_up = {name: pa.Column(float, pa.Check.ge(0), nullable=True) for name in feature_columns}
    return pa.DataFrameSchema(
        {
            ID_COLUMN: pa.Column(str, pa.Check.str_matches(r"^C\d{4}-\d{6}$")),
            TIMESTAMP_COLUMN: pa.Column("datetime64[ns]"),
            "age": pa.Column(float, pa.Check.in_range(18, 110), nullable=True),
            "senior_citizen": pa.Column(int, pa.Check.isin([0, 1])),
            "region": pa.Column(str, pa.Check.isin(REGIONS)),
            "contract": pa.Column(str, pa.Check.isin(CONTRACTS)),
            "payment_method": pa.Column(str, pa.Check.isin(PAYMENT_METHODS)),
            "internet_service": pa.Column(str, pa.Check.isin(INTERNET_SERVICES)),
            "tenure_months": pa.Column(int, pa.Check.in_range(0, 120)),
            "monthly_charges": pa.Column(float, pa.Check.in_range(0, 1000)),
            "total_charges": pa.Column(float, pa.Check.in_range(0, 200_000), nullable=True),
            "support_tickets": pa.Column(int, pa.Check.in_range(0, 100)),
            "data_usage_gb": pa.Column(float, pa.Check.in_range(0, 10_000), nullable=True),
            TARGET: pa.Column(int, pa.Check.isin([0, 1])),
            **looked_up,
        },
        coerce=True,
        strict=True,
        name=DATASET,
    )


def model_name(explicit: str | None = None, configured: str | None = None) -> str:
    """The model a flow works on: the one it was given, else the configured one, else the demo's."""
    return explicit or configured or MODEL_NAME
