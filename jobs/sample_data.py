"""Synthetic customers that meet `contracts/customers/v1.toml`, for tests, benchmarks and the
demo. Churn depends on the features through a known formula, so a model has something to learn.
"""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa

PLANS = ("basic", "plus", "premium")
REGIONS = ("north", "south", "east", "west")


def customers(rows: int, *, seed: int = 0, first_id: int = 0, label: bool = True) -> pa.Table:
    """`rows` customers with ids c<first_id>...; with the `churned` label when `label`."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 90, rows).round(1)
    tenure = rng.integers(0, 240, rows)
    spend = rng.gamma(2.0, 35.0, rows).round(2)
    calls = rng.poisson(1.5, rows)
    calls_known = rng.random(rows) >= 0.08
    discount = rng.uniform(0, 0.4, rows).round(3)
    discount_known = rng.random(rows) >= 0.05
    plan = rng.choice(len(PLANS), rows, p=[0.5, 0.3, 0.2])
    region = rng.integers(0, len(REGIONS), rows)
    autopay = rng.random(rows) < 0.55
    autopay_known = rng.random(rows) >= 0.1
    updated = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    columns = {
        "customer_id": pa.array(np.char.add("c", np.arange(first_id, first_id + rows).astype(str))),
        "updated_at": pa.array([updated] * rows, pa.timestamp("us", tz="UTC")),
        "age": pa.array(age),
        "tenure_months": pa.array(tenure),
        "monthly_spend": pa.array(spend),
        "support_calls": pa.array(calls, mask=~calls_known),
        "discount_rate": pa.array(discount, mask=~discount_known),
        "plan": pa.array(np.asarray(PLANS, dtype=object)[plan]),
        "region": pa.array(np.asarray(REGIONS, dtype=object)[region]),
        "autopay": pa.array(autopay, mask=~autopay_known),
    }
    if label:
        logit = (
            -1.0
            - 0.015 * (age - 50)
            - 0.012 * tenure
            + 0.004 * spend
            + 0.45 * np.where(calls_known, calls, 1.5)
            - 2.0 * np.where(discount_known, discount, 0.2)
            + np.array([0.4, 0.0, -0.5])[plan]
            + np.array([0.0, 0.2, -0.1, 0.1])[region]
            - 0.6 * (autopay & autopay_known)
        )
        churned = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
        columns["churned"] = pa.array(churned)
    return pa.table(columns)


def with_bad_rows(table: pa.Table, bad: int) -> pa.Table:
    """The first `bad` rows get an age outside the contract's range: ingest quarantines them."""
    age = table.column("age").to_numpy().copy()
    age[:bad] = 150.0
    return table.set_column(table.schema.get_field_index("age"), "age", pa.array(age))
