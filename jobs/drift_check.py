"""A scoring run's feature drift, as its check measures and records it: the batch's profile
against the training profile of the model version that scored it (`jobs.feature_drift`), one
row per feature in `precompute.feature_drift`; and the retraining signal it gives."""

from __future__ import annotations

from psycopg2.extras import Json

from jobs import profile_store
from jobs.feature_drift import FeatureDrift, as_detail, feature_drift, thresholds_for
from precompute.contracts import ContractError, load_contract
from precompute.database import Database
from precompute.settings import Settings


def measure_run(
    settings: Settings, db: Database, run_id: str, min_rows: int
) -> list[FeatureDrift] | None:
    """Measure and record the run's feature drift, most drifted first; None when there is
    nothing to compare (no batch, no profile on one side, or fewer than `min_rows` rows)."""
    rows = db.fetch(
        "writer",
        """
        SELECT r.batch_id, r.model_version_id, v.input_schema ->> 'dataset',
               (v.input_schema ->> 'version')::int
          FROM precompute.runs r
          JOIN precompute.model_versions v ON v.version_id = r.model_version_id
         WHERE r.run_id = %s
        """,
        (run_id,),
    )
    if not rows or rows[0][0] is None:
        return None
    batch_id, version_id, dataset, contract_version = rows[0]
    batch = profile_store.batch_profile(db, dataset, batch_id)
    training = profile_store.version_profile(db, version_id)
    if not batch or not training or batch[0].rows < min_rows:
        return None
    try:
        contract = load_contract(settings.contracts_dir, dataset, contract_version)
    except ContractError as exc:
        raise ContractError(f"run {run_id}: cannot judge feature drift: {exc}") from exc
    drift = feature_drift(training, batch, thresholds_for(settings, contract))
    _record(db, run_id, drift)
    return drift


def _record(db: Database, run_id: str, drift: list[FeatureDrift]) -> None:
    with db.transaction("writer") as cursor:
        cursor.execute("DELETE FROM precompute.feature_drift WHERE run_id = %s", (run_id,))
        for d in drift:
            cursor.execute(
                """
                INSERT INTO precompute.feature_drift
                    (run_id, feature, measure, psi, estimated, missing_share,
                     training_missing_share, level, thresholds, detail)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    run_id,
                    d.feature,
                    d.measure,
                    d.psi,
                    d.estimated,
                    d.missing_share,
                    d.training_missing_share,
                    d.level,
                    Json(vars(d.thresholds)),
                    Json(as_detail(d)),
                ),
            )


def describe(drift: FeatureDrift) -> str:
    """One feature's drift in a line, with the threshold it crossed."""
    limits = drift.thresholds
    psi_limit = limits.fail if drift.level == "fail" else limits.warn
    missing_limit = limits.missing_fail if drift.level == "fail" else limits.missing_warn
    parts = []
    if drift.psi > psi_limit:
        parts.append(f"PSI {drift.psi:.3f} > {psi_limit}")
    if abs(drift.missing_change) > missing_limit:
        parts.append(f"missing share {drift.missing_change:+.1%} > {missing_limit:.0%}")
    return f"{drift.feature} ({', '.join(parts)})"


def retraining_due(settings: Settings, db: Database, run_ids: list[str]) -> list[str]:
    """The runs whose recorded feature drift failed, when the retraining signal is on: the
    check emits DRIFT_ASSET for them. Empty when the signal is off."""
    if not settings.retrain_on_drift or not run_ids:
        return []
    rows = db.fetch(
        "writer",
        "SELECT DISTINCT run_id FROM precompute.feature_drift "
        "WHERE run_id = ANY(%s) AND level = 'fail' ORDER BY run_id",
        (list(run_ids),),
    )
    return [r[0] for r in rows]
