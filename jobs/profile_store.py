"""Feature profiles in PostgreSQL (sql/0018_feature_profiles.sql): a batch's, stored by its
ingest, and a model version's training data's, stored by training; and the training bin edges
an ingest counts a batch on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg2.extras import Json

from jobs.profiles import FeatureProfile, training_profile
from precompute.contracts import Contract
from precompute.database import Database

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = (
    "feature",
    "type",
    "rows",
    "missing",
    "min_value",
    "max_value",
    "mean",
    "std",
    "quantiles",
    "bins",
    "top_values",
    "outside_share",
    "first_time",
    "last_time",
)


def store_batch_profile(
    db: Database,
    dataset: str,
    contract_version: int,
    batch_id: str,
    run_id: str,
    profiles: Sequence[FeatureProfile],
) -> None:
    """The batch's profile, replacing one an earlier attempt at the same batch stored."""
    with db.transaction("writer") as cursor:
        cursor.execute(
            "DELETE FROM precompute.feature_profiles "
            "WHERE subject = 'batch' AND dataset = %s AND batch_id = %s",
            (dataset, batch_id),
        )
        for p in profiles:
            cursor.execute(
                f"""
                INSERT INTO precompute.feature_profiles
                    (subject, dataset, contract_version, batch_id, run_id, {", ".join(COLUMNS)})
                VALUES ('batch', %s, %s, %s, %s, {", ".join(["%s"] * len(COLUMNS))})
                """,
                (dataset, contract_version, batch_id, run_id, *_values(p)),
            )


def store_training_profile(
    db: Database,
    dataset: str,
    contract_version: int,
    model_version_id: int,
    profiles: Sequence[FeatureProfile],
) -> None:
    """A model version's training profile (a version is registered once, so is this)."""
    with db.transaction("writer") as cursor:
        for p in profiles:
            cursor.execute(
                f"""
                INSERT INTO precompute.feature_profiles
                    (subject, dataset, contract_version, model_version_id, {", ".join(COLUMNS)})
                VALUES ('training', %s, %s, %s, {", ".join(["%s"] * len(COLUMNS))})
                """,
                (dataset, contract_version, model_version_id, *_values(p)),
            )


@dataclass(frozen=True)
class TrainingFigures:
    """What the ingest takes from the dataset's newest training profile (the model most likely
    to score the batch): bin edges per numeric feature, to count the batch on them so its PSI
    is exact, and means, to centre the sums the mean and deviation come from."""

    edges: dict[str, list[float]]
    means: dict[str, float]


def newest_training_figures(db: Database, dataset: str) -> TrainingFigures:
    rows = db.fetch(
        "writer",
        """
        SELECT feature, bins -> 'edges', mean FROM precompute.feature_profiles
         WHERE subject = 'training' AND dataset = %s
           AND model_version_id = (
               SELECT max(model_version_id) FROM precompute.feature_profiles
                WHERE subject = 'training' AND dataset = %s)
        """,
        (dataset, dataset),
    )
    return TrainingFigures(
        edges={f: [float(e) for e in edges] for f, edges, _ in rows if edges is not None},
        means={f: float(mean) for f, _, mean in rows if mean is not None},
    )


def batch_profile(db: Database, dataset: str, batch_id: str) -> list[FeatureProfile]:
    return _profiles(
        db,
        "subject = 'batch' AND dataset = %s AND batch_id = %s",
        (dataset, batch_id),
    )


def version_profile(db: Database, model_version_id: int) -> list[FeatureProfile]:
    return _profiles(db, "subject = 'training' AND model_version_id = %s", (model_version_id,))


def _profiles(db: Database, where: str, params: tuple[object, ...]) -> list[FeatureProfile]:
    rows = db.fetch(
        "writer",
        f"SELECT {', '.join(COLUMNS)} FROM precompute.feature_profiles WHERE {where} "
        "ORDER BY profile_id",
        params,
    )
    return [
        FeatureProfile(
            feature=r[0],
            type=r[1],
            rows=r[2],
            missing=r[3],
            minimum=r[4],
            maximum=r[5],
            mean=r[6],
            std=r[7],
            quantiles=r[8],
            bins=r[9],
            top_values=r[10],
            outside_share=r[11],
            first=r[12],
            last=r[13],
        )
        for r in rows
    ]


def _values(p: FeatureProfile) -> tuple[Any, ...]:
    def as_json(value: Any) -> Json | None:
        return None if value is None else Json(value)

    return (
        p.feature,
        p.type,
        p.rows,
        p.missing,
        p.minimum,
        p.maximum,
        p.mean,
        p.std,
        as_json(p.quantiles),
        as_json(p.bins),
        as_json(p.top_values),
        p.outside_share,
        p.first,
        p.last,
    )


def profile_training_data(
    db: Database, contract: Contract, model_version_id: int, table: pa.Table
) -> None:
    """Profile a model version's training rows and store it with the version."""
    profiles = training_profile(table, contract)
    store_training_profile(db, contract.name, contract.version, model_version_id, profiles)
