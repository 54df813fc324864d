"""Every bundle the platform writes is loaded and scored the same by MLeap's own JVM runtime
(`jvm/mleap/MleapScore.java`, MLeap's JARs from the cache `make` fills), within 1e-9."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from conftest import customers_contract, export_model

from jobs.bundle.format import read_bundle
from jobs.bundle.mleap_check import TOLERANCE, UNSEEN, compare, with_edge_rows
from jobs.sample_data import customers
from precompute.settings import Settings

KINDS = [
    ("logistic_regression", "classification"),
    ("linear_regression", "regression"),
    ("random_forest", "classification"),
    ("random_forest", "regression"),
    ("decision_tree", "classification"),
    ("decision_tree", "regression"),
]


def held_out_rows() -> pa.Table:
    """Customers with nulls in four columns, plus unseen and missing categories."""
    rows = customers(2000, seed=4, first_id=10_000, label=False)
    plan = rows.column("plan").to_pylist()
    plan[:40] = ["enterprise"] * 20 + [None] * 20
    return rows.set_column(rows.schema.get_field_index("plan"), "plan", pa.array(plan))


def test_every_model_kind_scores_the_same_in_mleaps_runtime(
    tmp_path: Path, settings: Settings
) -> None:
    train = customers(4000, seed=3)
    contract = customers_contract()
    rows = held_out_rows()
    bundles = []
    for kind, task in KINDS:
        target = (
            train.column("churned").to_numpy(zero_copy_only=False)
            if task == "classification"
            else train.column("monthly_spend").to_numpy() * 1.5 + train.column("age").to_numpy()
        )
        _, path = export_model(tmp_path, kind, train, target, contract=contract, task=task)
        bundles.append((path, with_edge_rows(rows, read_bundle(path))))
    assert bundles[0][1].column("plan").to_pylist()[-1] == UNSEEN
    results = compare(bundles, settings)
    for (kind, task), parity in zip(KINDS, results, strict=True):
        assert parity.rows == rows.num_rows + 2, (kind, task)
        assert parity.max_difference <= TOLERANCE, f"{kind} {task}: {parity.summary()}"
